//! The HTTP surface: session lifecycle, one-shot executes, health, and the exact errors of
//! bad requests, against the shared real server.

mod common;

use common::{Api, ok_reply, shared, without_duration};
use serde_json::{Value, json};

fn api() -> Api {
    Api::new(shared())
}

#[tokio::test]
async fn session_lifecycle() {
    let api = api();
    let (status, created) = api.post("/v1/sessions", json!({})).await;
    assert_eq!(status, 201);
    let id = created["session_id"].as_str().expect("id").to_owned();
    let (_, health) = api.get("/healthz").await;
    let node = health["node"].as_str().expect("the node's name");
    let (id_node, random) = id.split_once('.').expect("<node>.<random>");
    assert_eq!(id_node, node, "the id names this node");
    assert_eq!(random.len(), 32, "128 bits in hex");
    assert!(random.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(created["state"], "idle");
    assert_eq!(created["execution_count"], 0);
    assert!(created["pid"].as_u64().is_some());

    api.run(&id, "1").await;
    let (status, info) = api.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(info["execution_count"], 1);
    assert!(info["memory_pss_bytes"].as_u64().expect("pss") > 0);

    let (status, list) = api.get("/v1/sessions").await;
    assert_eq!(status, 200);
    assert!(
        list["sessions"]
            .as_array()
            .expect("list")
            .iter()
            .any(|s| s["session_id"] == id.as_str())
    );

    assert_eq!(api.delete(&format!("/v1/sessions/{id}")).await, 204);
    let (status, body) = api.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "session_not_found");
    assert_eq!(api.delete(&format!("/v1/sessions/{id}")).await, 404);
}

#[tokio::test]
async fn one_shot_execute_keeps_no_state() {
    let api = api();
    let (status, reply) = api
        .post("/v1/execute", json!({"code": "y = 2\ny * 21"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        without_duration(reply),
        ok_reply(1, json!({"result": {"text/plain": "42"}}))
    );
    let (_, reply) = api.post("/v1/execute", json!({"code": "y"})).await;
    assert_eq!(reply["error"]["ename"], "NameError");
}

#[tokio::test]
async fn health_reports_the_pool() {
    let api = api();
    let (status, health) = api.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["pool"]["target"], 2);
}

fn error_body(code: &str) -> impl Fn(&Value) -> bool + '_ {
    move |body| body["error"]["code"] == code && body["error"]["message"].is_string()
}

#[tokio::test]
async fn unknown_session_is_404() {
    let api = api();
    let (status, body) = api
        .post(
            "/v1/sessions/0123456789abcdef/execute",
            json!({"code": "1"}),
        )
        .await;
    assert_eq!(status, 404);
    assert!(error_body("session_not_found")(&body), "{body}");
}

#[tokio::test]
async fn malformed_requests_get_json_errors() {
    let api = api();
    let s = api.session().await;
    let path = format!("/v1/sessions/{s}/execute");

    let send_raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = api.http.post(api.url(&path)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        async move {
            let response = request.send().await.expect("sent");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("JSON error body");
            (status, body)
        }
    };

    let (status, body) = send_raw("{\"code\": ", Some("application/json")).await;
    assert_eq!(status, 400);
    assert!(error_body("invalid_json")(&body), "{body}");

    let (status, body) = send_raw("{\"cod\": \"1\"}", Some("application/json")).await;
    assert_eq!(status, 422);
    assert!(error_body("invalid_request")(&body), "{body}");

    let (status, body) = send_raw("{\"code\": 1}", Some("application/json")).await;
    assert_eq!(status, 422);
    assert!(error_body("invalid_request")(&body), "{body}");

    let (status, body) = send_raw("{\"code\": \"1\"}", None).await;
    assert_eq!(status, 415);
    assert!(error_body("unsupported_media_type")(&body), "{body}");

    let (status, body) = api.post(&path, json!({"code": "1", "timeout_ms": 0})).await;
    assert_eq!(status, 422);
    assert!(error_body("invalid_request")(&body), "{body}");

    let (status, body) = api.post("/v1/sessions", json!({"bogus": 1})).await;
    assert_eq!(status, 422);
    assert!(error_body("invalid_request")(&body), "{body}");

    let (status, body) = api.get("/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert!(error_body("not_found")(&body), "{body}");

    let response = api
        .http
        .put(api.url("/v1/sessions"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await.expect("JSON");
    assert!(error_body("method_not_allowed")(&body), "{body}");
}

#[tokio::test]
async fn oversized_code_is_413() {
    let api = api();
    let s = api.session().await;
    let code = "#".repeat((1 << 20) + 1);
    let (status, body) = api
        .post(&format!("/v1/sessions/{s}/execute"), json!({"code": code}))
        .await;
    assert_eq!(status, 413);
    assert!(error_body("code_too_large")(&body), "{body}");
    // The session is unaffected.
    assert_eq!(api.run(&s, "1").await["status"], "ok");
}
