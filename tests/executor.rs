//! The python-executor API (`/api/v1/...`), driven the way its client drives it: JSON eval,
//! multipart tar + metadata (sync and async), polling, kill, and its error shapes.

mod common;

use std::time::Duration;

use common::{Api, shared_with, submit, tar_of};
use serde_json::{Value, json};

const CONFIG: &str = "[pool]\nwarm_workers = 2\n";

fn api() -> Api {
    Api::new(shared_with(CONFIG))
}

async fn eval(api: &Api, body: Value) -> Value {
    let (status, result) = api.post("/api/v1/eval", body).await;
    assert_eq!(status, 200, "{result}");
    result
}

#[tokio::test]
async fn health() {
    assert_eq!(api().get("/health").await, (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn eval_returns_the_repr_of_the_last_expression() {
    let api = api();
    for (code, expected) in [
        ("2 + 2", json!("4")),
        ("\"hello\"", json!("'hello'")),
        ("x = 5", Value::Null),
        ("print(\"hi\")", Value::Null),
        ("x = 5\ny = 10\nx + y", json!("15")),
    ] {
        let result = eval(&api, json!({"code": code, "eval_last_expr": true})).await;
        assert_eq!(result["status"], "completed", "{code}: {result}");
        assert_eq!(result["exit_code"], 0);
        assert_eq!(result["result"], expected, "{code}");
        assert!(
            result["execution_id"]
                .as_str()
                .expect("id")
                .starts_with("exe_")
        );
        assert!(result["started_at"].is_string() && result["finished_at"].is_string());
    }
    let result = eval(&api, json!({"code": "print(\"hi\")"})).await;
    assert_eq!(result["stdout"], "hi\n");
    assert!(
        result.get("result").is_none(),
        "no result without eval_last_expr"
    );
}

#[tokio::test]
async fn a_raising_program_is_completed_with_its_exit_code_and_error() {
    let api = api();
    let result = eval(&api, json!({"code": "print(undefined_name)"})).await;
    assert_eq!(result["status"], "completed");
    assert_eq!(result["exit_code"], 1);
    assert_eq!(result["error_type"], "NameError");
    assert_eq!(result["error_line"], 1);
    let stderr = result["stderr"].as_str().expect("stderr");
    assert!(stderr.contains("File \"main.py\", line 1"), "{stderr}");
    assert!(
        stderr.ends_with("NameError: name 'undefined_name' is not defined\n"),
        "{stderr}"
    );

    let result = eval(
        &api,
        json!({"files": [
            {"name": "main.py", "content": "import helper\nhelper.go()\n"},
            {"name": "helper.py", "content": "def go():\n    raise SystemExit(3)\n"},
        ]}),
    )
    .await;
    assert_eq!(
        (result["status"].as_str(), result["exit_code"].as_i64()),
        (Some("completed"), Some(3))
    );
}

#[tokio::test]
async fn bad_eval_requests() {
    let api = api();
    let (status, body) = api.post("/api/v1/eval", json!({"stdin": "x"})).await;
    assert_eq!(status, 400);
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = api
        .post(
            "/api/v1/eval",
            json!({"code": "1", "python_version": "2.7"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("python_version"),
        "{body}"
    );
    let (status, body) = api
        .post("/api/v1/eval", json!({"code": "#".repeat(100 * 1024 + 1)}))
        .await;
    assert_eq!(status, 413, "{body}");
}

#[tokio::test]
async fn sync_execution_of_an_archive() {
    let api = api();
    let (status, result) = submit(
        &api,
        "/api/v1/exec/sync",
        &[
            ("main.py", "import os, sys\nfrom lib import twice\nprint(twice(int(input())), sys.argv[1:], os.environ['MODE'])\n"),
            ("lib.py", "def twice(x):\n    return 2 * x\n"),
        ],
        json!({"entrypoint": "main.py", "stdin": "21\n", "env_vars": ["MODE=test"], "script_args": ["--fast", "in.txt"]}),
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["status"], "completed");
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["stdout"], "42 ['--fast', 'in.txt'] test\n");
}

#[tokio::test]
async fn refused_archives_and_metadata() {
    let api = api();
    let (status, body) = submit(
        &api,
        "/api/v1/exec/sync",
        &[("main.py", "print(1)"), ("../evil.py", "print('escaped')")],
        json!({"entrypoint": "main.py"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("../evil.py"),
        "{body}"
    );

    for (field, value) in [
        // Only python:X.Y[-variant] images map to an interpreter (issue 22).
        ("docker_image", json!("ubuntu:22.04")),
        ("pre_commands", json!(["apt-get update"])),
    ] {
        let mut metadata = json!({"entrypoint": "main.py"});
        metadata[field] = value;
        let (status, body) = submit(
            &api,
            "/api/v1/exec/sync",
            &[("main.py", "print(1)")],
            metadata,
        )
        .await;
        assert_eq!(status, 400, "{field}: {body}");
        assert!(
            body["error"].as_str().expect("error").contains(field),
            "{body}"
        );
    }
}

async fn poll_until_done(api: &Api, id: &str) -> Value {
    let path = &format!("/api/v1/executions/{id}");
    common::eventually_some(Duration::from_secs(30), || async move {
        let (status, result) = api.get(path).await;
        assert_eq!(status, 200, "{result}");
        let done = !["pending", "running"].contains(&result["status"].as_str().expect("status"));
        done.then_some(result)
    })
    .await
    .unwrap_or_else(|| panic!("execution {id} never finished"))
}

#[tokio::test]
async fn async_execution_then_poll_and_kill() {
    let api = api();
    let (status, accepted) = submit(
        &api,
        "/api/v1/exec/async",
        &[("main.py", "print('async done')")],
        json!({"entrypoint": "main.py"}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["execution_id"].as_str().expect("id").to_owned();
    let result = poll_until_done(&api, &id).await;
    assert_eq!(result["status"], "completed");
    assert_eq!(result["stdout"], "async done\n");

    let (blocker, code) = common::blocker().await;
    let (_, accepted) = submit(
        &api,
        "/api/v1/exec/async",
        &[("main.py", &code)],
        json!({"entrypoint": "main.py"}),
    )
    .await;
    let id = accepted["execution_id"].as_str().expect("id").to_owned();
    // Killed while it runs (pending ones are killed too, but this is the interesting case):
    // the program is connected to the blocker, and stays so until the kill.
    let _held = blocker.accept().await;
    let (_, result) = api.get(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(result["status"], "running", "{result}");
    let response = api
        .http
        .delete(api.url(&format!("/api/v1/executions/{id}")))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"status": "killed"})
    );
    let result = poll_until_done(&api, &id).await;
    assert_eq!(result["status"], "killed");

    let (status, body) = api.get("/api/v1/executions/exe_unknown").await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn an_entrypoint_that_was_not_sent_is_400_naming_it() {
    let api = api();
    let (status, body) = api
        .post(
            "/api/v1/eval",
            json!({"files": [{"name": "lib.py", "content": "print('not me')"}], "entrypoint": "main.py"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("main.py"),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/api/v1/eval",
            json!({"code": "print(1)", "entrypoint": "other.py"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("other.py"),
        "{body}"
    );
    let (status, body) = submit(
        &api,
        "/api/v1/exec/sync",
        &[("lib.py", "print(1)")],
        json!({"entrypoint": "main.py"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("main.py"),
        "{body}"
    );
}

#[tokio::test]
async fn an_execution_that_cannot_get_a_session_fails_with_the_reason_and_is_pruned() {
    let server = common::Server::start(
        "[pool]\nwarm_workers = 1\n\n[sessions]\nmax = 1\n\n[executor]\nkeep_secs = 1\n",
    );
    let api = Api::new(&server.base);
    // The one session there may be, held busy so that it cannot be evicted to make room.
    let session = api.session().await;
    let (blocker, code) = common::blocker().await;
    let busy = {
        let http = api.http.clone();
        let url = api.url(&format!("/v1/sessions/{session}/execute"));
        tokio::spawn(async move { http.post(url).json(&json!({"code": code})).send().await })
    };
    let release = blocker.accept().await;

    let (status, accepted) = submit(
        &api,
        "/api/v1/exec/async",
        &[("main.py", "print('never')")],
        json!({"entrypoint": "main.py"}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["execution_id"].as_str().expect("id").to_owned();
    let result = poll_until_done(&api, &id).await;
    assert_eq!(result["status"], "failed", "{result}");
    assert!(
        result["error"]
            .as_str()
            .expect("error")
            .contains("session limit"),
        "{result}"
    );
    assert!(result["finished_at"].is_string(), "{result}");

    // Pruned once `executor.keep_secs` has passed, like any finished execution.
    let (api_ref, path) = (&api, &format!("/api/v1/executions/{id}"));
    let gone = common::eventually_some(Duration::from_secs(6), || async move {
        (api_ref.get(path).await.0 == 404).then_some(())
    })
    .await;
    assert!(gone.is_some(), "{id} was never pruned");
    drop(release);
    busy.await.expect("joined").expect("sent");
}

#[tokio::test]
async fn executions_belong_to_the_token_that_made_them() {
    const A: &str = "token-a-0123456789abcdef";
    const B: &str = "token-b-0123456789abcdef";
    let server = common::Server::start(&format!(
        "[pool]\nwarm_workers = 2\n\n[auth]\ntokens = [{A:?}, {B:?}]\n"
    ));
    let a = Api::with_token(&server.base, A);
    let b = Api::with_token(&server.base, B);
    let (status, accepted) = submit(
        &a,
        "/api/v1/exec/async",
        &[("main.py", "print('mine')")],
        json!({"entrypoint": "main.py"}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["execution_id"].as_str().expect("id").to_owned();
    let result = poll_until_done(&a, &id).await;
    assert_eq!(result["stdout"], "mine\n", "{result}");

    let path = format!("/api/v1/executions/{id}");
    let (status, body) = b.get(&path).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(b.delete(&path).await, 404);
    let (status, result) = a.get(&path).await;
    assert_eq!((status, &result["status"]), (200, &json!("completed")));
}

#[tokio::test]
async fn a_sync_execution_whose_client_left_still_ends_its_session() {
    let server = common::Server::start("[pool]\nwarm_workers = 1\n");
    let api = Api::new(&server.base);
    let (blocker, code) = common::blocker().await;
    let form = reqwest::multipart::Form::new()
        .part(
            "tar",
            reqwest::multipart::Part::bytes(tar_of(&[("main.py", &code)])).file_name("files.tar"),
        )
        .text("metadata", json!({"entrypoint": "main.py"}).to_string());
    let request = api.http.post(api.url("/api/v1/exec/sync")).multipart(form);
    // The program runs; its client goes away.
    assert!(
        api.leave_mid_cell(request, &blocker).await,
        "the execution's session was left behind"
    );
}

#[tokio::test]
async fn a_timeout_above_max_timeout_is_capped_and_the_result_says_so() {
    let server = common::Server::start(
        "[pool]\nwarm_workers = 1\n\n[execution]\ndefault_timeout_ms = 1000\nmax_timeout_ms = 1000\n\n[judge]\nrun_timeout_ms = 1000\ncompile_timeout_ms = 1000\n",
    );
    let api = Api::new(&server.base);
    let result = eval(
        &api,
        json!({"code": "while True:\n    pass", "config": {"timeout_seconds": 5}}),
    )
    .await;
    assert_eq!(
        (result["status"].as_str(), result["exit_code"].as_i64()),
        (Some("failed"), Some(124)),
        "{result}"
    );
    let error = result["error"].as_str().expect("error");
    assert!(
        error.contains("after 1 s") && error.contains("execution.max_timeout_ms"),
        "{error}"
    );
}
