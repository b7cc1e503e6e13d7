//! Every kind of failure a cell can have says what kind it was (`category`), on the native
//! API and on the compatibility surfaces. (That every error reply of every test carries a
//! category from the list is checked for the whole suite in `common::assert_categorized`.)

mod common;

use common::{Api, ename, root, shared_with};
use serde_json::{Value, json};

/// Small frames, so that a displayed output can be too large to send; the limits of
/// `survival.rs`; a disk quota of 32 MiB.
const CONFIG: &str = "[pool]\nwarm_workers = 2\n\n\
                      [execution]\ninterrupt_grace_ms = 1000\nmax_output_bytes = 4096\n\
                      max_code_bytes = 4096\nmax_frame_bytes = 16384\n\n\
                      [limits]\nmemory_mb = 1024\nfile_size_mb = 16\ncpu_seconds = 3\n\n\
                      [files]\nmax_bytes = 1048576\nmax_total_bytes = 33554432\n\n\
                      [judge]\nrun_timeout_ms = 2000\n";

fn api() -> Api {
    Api::new(shared_with(CONFIG))
}

/// The reply's status and category, and its error's name.
fn kind(reply: &Value) -> (&str, &str, &str) {
    (
        reply["status"].as_str().unwrap_or(""),
        reply["category"].as_str().unwrap_or(""),
        ename(reply),
    )
}

#[tokio::test]
async fn code_that_does_not_parse_is_syntax_and_what_it_raises_is_runtime() {
    let api = api();
    let s = api.session().await;
    // SyntaxError, IndentationError, TabError.
    for code in [
        "x = (",
        "if True:\nprint(1)",
        "if 1:\n\tx = 1\n        y = 2",
    ] {
        let reply = api.run(&s, code).await;
        assert_eq!(reply["status"], "error", "{code:?}: {reply}");
        assert_eq!(reply["category"], "syntax", "{code:?}: {reply}");
    }
    // A SyntaxError raised by code the cell runs is the cell's runtime error.
    assert_eq!(
        kind(&api.run(&s, "exec('x = (')").await),
        ("error", "runtime", "SyntaxError")
    );
    assert_eq!(
        kind(&api.run(&s, "1 / 0").await),
        ("error", "runtime", "ZeroDivisionError")
    );
    assert_eq!(
        kind(&api.run(&s, "import sys\nsys.exit(2)").await),
        ("error", "runtime", "SystemExit")
    );
    // A KeyboardInterrupt nobody sent is the code's own.
    assert_eq!(
        kind(&api.run(&s, "raise KeyboardInterrupt").await),
        ("error", "runtime", "KeyboardInterrupt")
    );
    let ok = api.run(&s, "1 + 1").await;
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok.get("category"), None, "{ok}");
}

#[tokio::test]
async fn deadlines_and_interrupts_are_timeout_and_interrupted() {
    let api = api();
    let s = api.session().await;
    let reply = api
        .exec(
            &s,
            json!({"code": "while True:\n    pass", "timeout_ms": 300}),
        )
        .await;
    assert_eq!(kind(&reply), ("timeout", "timeout", "KeyboardInterrupt"));

    let (blocker, code) = common::blocker().await;
    let running = {
        let api = Api::new(&api.base);
        let s = s.clone();
        tokio::spawn(async move { api.run(&s, &code).await })
    };
    // Held in the cell's own code from here on: the interrupt lands in it.
    let _held = blocker.accept().await;
    let (status, body) = api
        .post(&format!("/v1/sessions/{s}/interrupt"), json!({}))
        .await;
    assert_eq!((status, &body), (200, &json!({"interrupted": true})));
    let reply = running.await.expect("the interrupted cell");
    assert_eq!(kind(&reply), ("error", "interrupted", "KeyboardInterrupt"));
}

#[tokio::test]
async fn limits_name_themselves() {
    let api = api();
    let s = api.session().await;
    assert_eq!(
        kind(&api.run(&s, "b = bytearray(10 * 1024**3)").await),
        ("error", "memory", "MemoryError")
    );
    assert_eq!(
        kind(
            &api.exec(
                &s,
                json!({"code": "while True:\n    pass", "timeout_ms": 60000})
            )
            .await
        ),
        ("error", "cpu_limit", "CPUTimeLimitExceeded")
    );
    // Past limits.file_size_mb.
    assert_eq!(
        kind(
            &api.run(
                &s,
                "with open('big.bin', 'wb') as f:\n    f.write(b'0' * (32 << 20))"
            )
            .await
        ),
        ("error", "disk_quota", "OSError")
    );
    // Too large to be sent at all (a frame is 16 KiB here), whether streamed or not; output
    // over max_output_bytes is only cut.
    assert_eq!(
        kind(&api.run(&s, "display('x' * 20000)").await),
        ("error", "output_limit", "OutputLimitExceeded")
    );
    let cut = api.run(&s, "print('y' * 10000)").await;
    assert_eq!(
        (&cut["status"], &cut["truncated"]),
        (&json!("ok"), &json!(true))
    );
    assert_eq!(
        kind(&api.run(&s, "import os\nos._exit(3)").await),
        ("error", "worker_died", "WorkerDied")
    );
}

#[tokio::test]
async fn the_disk_quota_is_disk_quota_in_the_cell_and_on_upload() {
    if !root() {
        return;
    }
    let api = api();
    let s = api.session().await;
    // Three files of 12 MiB, each under the file size limit: together over the 32 MiB quota.
    let reply = api
        .run(
            &s,
            "for i in range(3):\n    open(f'part{i}', 'wb').write(b'0' * (12 << 20))",
        )
        .await;
    assert_eq!(kind(&reply), ("error", "disk_quota", "DiskQuotaExceeded"));
    let (status, body) = api.put_file(&s, "more", vec![0; 1 << 20]).await;
    assert_eq!(
        (status, &body["error"]["code"], &body["error"]["category"]),
        (507, &json!("quota_exceeded"), &json!("disk_quota"))
    );
}

#[tokio::test]
async fn refused_requests_are_request() {
    let api = api();
    let (status, body) = api.get("/v1/sessions/nosuchsession").await;
    assert_eq!(
        (status, &body["error"]["code"], &body["error"]["category"]),
        (404, &json!("session_not_found"), &json!("request"))
    );
    let (status, body) = api.post("/v1/execute", json!({"code": 1})).await;
    assert_eq!(
        (status, &body["error"]["code"], &body["error"]["category"]),
        (422, &json!("invalid_request"), &json!("request"))
    );
    let (status, body) = api
        .post("/v1/execute", json!({"code": "#".repeat(5000)}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"], &body["error"]["category"]),
        (413, &json!("code_too_large"), &json!("request"))
    );
}

#[tokio::test]
async fn the_compatibility_surfaces_say_it_where_their_formats_have_room() {
    let api = api();
    let (status, body) = api
        .post(
            "/execute",
            json!({"code": "print(", "stdin_stdout": [{"stdin": "", "stdout": ""}], "language": "python"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["compile_output"]["category"], "syntax", "{body}");
    let (status, body) = api
        .post(
            "/execute",
            json!({
                "code": "n = int(input())\nif n:\n    raise ValueError(n)\nwhile True:\n    pass",
                "stdin_stdout": [{"stdin": "1", "stdout": ""}, {"stdin": "0", "stdout": ""}],
                "language": "python",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["compile_output"].get("category"), None, "{body}");
    assert_eq!(body["exec_outputs"][0]["category"], "runtime", "{body}");
    assert_eq!(body["exec_outputs"][1]["category"], "timeout", "{body}");

    let (status, body) = api
        .post("/api/v1/eval", json!({"code": "print(undefined_name)"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["status"], &body["category"]),
        (&json!("completed"), &json!("runtime"))
    );
    let (status, body) = api.post("/api/v1/eval", json!({"code": "1"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.get("category"), None, "{body}");
    let (status, body) = api.post("/api/v1/eval", json!({"stdin": "x"})).await;
    assert_eq!((status, &body["category"]), (400, &json!("request")));
}
