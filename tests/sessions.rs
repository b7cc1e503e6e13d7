//! Sessions end to end: state, rich values, output capture, stdin, errors, ordering and
//! parallelism, against the shared real server.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{Api, ok_reply, shared};
use serde_json::{Value, json};

fn api() -> Api {
    Api::new(shared())
}

#[tokio::test]
async fn state_persists_within_a_session_and_not_across() {
    let api = api();
    let a = api.session().await;
    let b = api.session().await;
    assert_eq!(api.run(&a, "x = 41").await, ok_reply(1, json!({})));
    assert_eq!(
        api.run(&a, "x + 1").await,
        ok_reply(2, json!({"result": {"text/plain": "42"}}))
    );
    let reply = api.run(&b, "x").await;
    assert_eq!(reply["status"], "error");
    assert_eq!(reply["error"]["ename"], "NameError");
    assert_eq!(reply["error"]["evalue"], "name 'x' is not defined");
    assert_eq!(reply["execution_count"], 1);
}

#[tokio::test]
async fn dataframes_are_html_and_figures_are_png() {
    let api = api();
    let s = api.session().await;
    let reply = api
        .run(&s, "pd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
        .await;
    assert_eq!(reply["status"], "ok");
    let result = &reply["result"];
    assert_eq!(
        result["text/plain"], "   a  b\n0  1  x\n1  2  y",
        "plain text of the DataFrame"
    );
    let html = result["text/html"].as_str().expect("text/html");
    assert!(html.contains("<table"), "{html}");

    let reply = api.run(&s, "plt.plot([1, 2, 3])").await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let lines = reply["result"]["text/plain"].as_str().expect("result");
    assert!(
        lines.starts_with("[<matplotlib.lines.Line2D object at 0x"),
        "{lines}"
    );
    let display = reply["display"].as_array().expect("display list");
    assert_eq!(display.len(), 1, "{reply}");
    assert_eq!(
        display[0]["text/plain"],
        "<Figure size 640x480 with 1 Axes>"
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(display[0]["image/png"].as_str().expect("image/png"))
        .expect("valid base64");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // The figure was closed: the next cell has none open.
    assert_eq!(
        api.run(&s, "len(plt.get_fignums())").await["result"]["text/plain"],
        "0"
    );

    // As in IPython, a trailing semicolon hides the value (but not the figure).
    let reply = api.run(&s, "plt.plot([3, 2, 1]);").await;
    assert_eq!(reply["result"], Value::Null, "{reply}");
    assert_eq!(reply["display"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn output_is_captured_at_the_fd_level() {
    let api = api();
    let s = api.session().await;
    let code = "import os, subprocess, sys\n\
                print('a')\n\
                os.write(1, b'c\\n')\n\
                subprocess.run(['echo', 'hi'])\n\
                print('to stderr', file=sys.stderr)\n\
                os.write(2, b'raw stderr\\n')\n\
                subprocess.run(['sh', '-c', 'echo from child >&2'])\n\
                None";
    assert_eq!(
        api.run(&s, code).await,
        ok_reply(
            1,
            json!({"stdout": "a\nc\nhi\n", "stderr": "to stderr\nraw stderr\nfrom child\n"})
        )
    );
}

#[tokio::test]
async fn huge_output_is_truncated_and_the_session_survives() {
    let api = api();
    let s = api.session().await;
    let reply = api.run(&s, "print('x' * 50_000_000)").await;
    assert_eq!(reply["status"], "ok");
    assert_eq!(reply["truncated"], true);
    let stdout = reply["stdout"].as_str().expect("stdout");
    assert_eq!(stdout.len(), 1 << 20, "cut at the default cap of 1 MiB");
    assert!(stdout.bytes().all(|b| b == b'x'));
    assert_eq!(
        api.run(&s, "'still here'").await,
        ok_reply(2, json!({"result": {"text/plain": "'still here'"}}))
    );
}

#[tokio::test]
async fn input_reads_the_request_stdin() {
    let api = api();
    let s = api.session().await;
    let reply = api
        .exec(
            &s,
            json!({"code": "a = input()\nb = input()\na + '|' + b", "stdin": "first\nsecond\n"}),
        )
        .await;
    assert_eq!(
        reply,
        ok_reply(1, json!({"result": {"text/plain": "'first|second'"}}))
    );
    // Without stdin, input() hits end of file.
    let reply = api.run(&s, "input()").await;
    assert_eq!(reply["error"]["ename"], "EOFError");
}

#[tokio::test]
async fn syntax_errors_and_exceptions_are_reported_without_worker_frames() {
    let api = api();
    let s = api.session().await;
    let reply = api.run(&s, "def f(:\n    pass").await;
    assert_eq!(
        reply,
        ok_reply(
            1,
            json!({"status": "error", "category": "syntax", "error": {
                "ename": "SyntaxError",
                "evalue": "invalid syntax (<cell-1>, line 1)",
                "traceback": ["  File \"<cell-1>\", line 1", "    def f(:", "          ^",
                              "SyntaxError: invalid syntax"],
            }})
        )
    );

    let reply = api
        .run(&s, "def inner():\n    return 1 / 0\n\ninner()")
        .await;
    assert_eq!(reply["status"], "error");
    let error = &reply["error"];
    assert_eq!(error["ename"], "ZeroDivisionError");
    assert_eq!(error["evalue"], "division by zero");
    let traceback: Vec<&str> = error["traceback"]
        .as_array()
        .expect("traceback list")
        .iter()
        .map(|l| l.as_str().expect("line"))
        .collect();
    assert_eq!(traceback[0], "Traceback (most recent call last):");
    assert_eq!(traceback[1], "  File \"<cell-2>\", line 4, in <module>");
    assert!(traceback.contains(&"  File \"<cell-2>\", line 2, in inner"));
    assert_eq!(
        traceback.last(),
        Some(&"ZeroDivisionError: division by zero")
    );
    assert!(
        !traceback.iter().any(|l| l.contains("worker.py")),
        "{traceback:?}"
    );
}

#[tokio::test]
async fn sys_exit_does_not_end_the_session() {
    let api = api();
    let s = api.session().await;
    assert_eq!(
        api.run(&s, "import sys; sys.exit(0)").await,
        ok_reply(1, json!({}))
    );
    let reply = api.run(&s, "sys.exit(3)").await;
    assert_eq!(reply["error"]["ename"], "SystemExit");
    assert_eq!(reply["error"]["evalue"], "3");
    assert_eq!(
        api.run(&s, "'alive'").await["result"]["text/plain"],
        "'alive'"
    );
}

/// Executions in one session run one at a time, in the order they arrived.
#[tokio::test]
async fn queued_executions_run_in_arrival_order() {
    let api = api();
    let s = api.session().await;
    api.run(&s, "order = []").await;

    // The first execution holds the session until the test releases it over a socket, so the
    // next 20 queue up behind it; each is sent only once the previous one is seen queued.
    let (listener, code) = common::blocker().await;
    let blocker = {
        let api = Api::new(&api.base);
        let s = s.clone();
        tokio::spawn(async move { api.run(&s, &code).await })
    };
    let mut conn = listener.accept().await;

    let mut tasks = Vec::new();
    for i in 0..20 {
        let api2 = Api::new(&api.base);
        let s2 = s.clone();
        tasks.push(tokio::spawn(async move {
            api2.run(&s2, &format!("order.append({i})")).await
        }));
        api.wait_for_pending(&s, i + 2).await;
    }
    use tokio::io::AsyncWriteExt;
    conn.write_all(b"x").await.expect("release the blocker");
    assert_eq!(blocker.await.expect("blocker task")["status"], "ok");
    let mut counts = Vec::new();
    for task in tasks {
        let reply = task.await.expect("task");
        assert_eq!(reply["status"], "ok", "{reply}");
        counts.push(reply["execution_count"].as_u64().expect("count"));
    }
    assert_eq!(counts, (3..23).collect::<Vec<u64>>());
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(
        api.run(&s, "order").await["result"]["text/plain"],
        format!("[{}]", expected.join(", "))
    );
}

#[tokio::test]
async fn sessions_execute_in_parallel() {
    let api = api();
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(api.session().await);
    }
    let (blocker, hold) = common::blocker().await;
    let tasks: Vec<_> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let api = Api::new(&api.base);
            let s = s.clone();
            let code = format!("{hold}\nsum(range({i} * 1000))");
            tokio::spawn(async move { api.run(&s, &code).await })
        })
        .collect();
    // Every cell is held at once: they overlap, or the last accept would never come.
    let held = tokio::time::timeout(Duration::from_secs(60), async {
        let mut held = Vec::new();
        for _ in 0..sessions.len() {
            held.push(blocker.accept().await);
        }
        held
    })
    .await
    .expect("every session's cell running at once");
    drop(held);
    for (i, task) in tasks.into_iter().enumerate() {
        let expected: u64 = (0..(i as u64 * 1000)).sum();
        assert_eq!(
            task.await.expect("task"),
            ok_reply(1, json!({"result": {"text/plain": expected.to_string()}}))
        );
    }
    for s in &sessions {
        assert_eq!(api.delete(&format!("/v1/sessions/{s}")).await, 204);
    }
}
