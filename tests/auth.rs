//! Tokens and session ownership: every route but /healthz and /readyz needs a token, and a
//! session is visible only to the token that made it (others get 404, not 403).

mod common;

use common::{Api, shared_with};
use serde_json::json;

const TOKEN_A: &str = "token-a-0123456789abcdef";
const TOKEN_B: &str = "token-b-0123456789abcdef";
const CONFIG: &str = "[pool]\nwarm_workers = 2\n\n[auth]\ntokens = [\"token-a-0123456789abcdef\", \"token-b-0123456789abcdef\"]\n";

fn base() -> &'static str {
    shared_with(CONFIG)
}

#[tokio::test]
async fn no_token_is_401_except_for_health() {
    let anonymous = Api::new(base());
    let (status, body) = anonymous.get("/v1/sessions").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = anonymous
        .post(
            "/execute",
            json!({"code": "1", "stdin_stdout": [], "language": "python"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let wrong = Api::with_token(base(), "token-c-0123456789abcdef");
    assert_eq!(wrong.get("/v1/sessions").await.0, 401);
    assert_eq!(anonymous.get("/healthz").await.0, 200);
    // Readiness is a probe's too: answered without a token, ready or starting.
    let (status, ready) = anonymous.get("/readyz").await;
    assert!(matches!(status, 200 | 503), "{status} {ready}");
    assert!(
        matches!(ready["status"].as_str(), Some("ready" | "starting")),
        "{ready}"
    );
}

#[tokio::test]
async fn another_token_cannot_see_or_touch_a_session() {
    let a = Api::with_token(base(), TOKEN_A);
    let b = Api::with_token(base(), TOKEN_B);
    let s = a.session().await;
    a.run(&s, "secret = 42").await;
    let path = format!("/v1/sessions/{s}");

    let (status, body) = b.get(&path).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("session_not_found"))
    );
    let (status, _) = b
        .post(&format!("{path}/execute"), json!({"code": "secret"}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = b.get(&format!("{path}/files")).await;
    assert_eq!(status, 404);
    let (status, _) = b.get(&format!("{path}/history")).await;
    assert_eq!(status, 404);
    assert_eq!(b.delete(&path).await, 404);
    let (_, list) = b.get("/v1/sessions").await;
    assert!(
        !list["sessions"]
            .as_array()
            .expect("list")
            .iter()
            .any(|x| x["session_id"] == s.as_str()),
        "{list}"
    );

    // Still there for its owner.
    assert_eq!(a.run(&s, "secret").await["result"]["text/plain"], "42");
    let (_, list) = a.get("/v1/sessions").await;
    assert!(
        list["sessions"]
            .as_array()
            .expect("list")
            .iter()
            .any(|x| x["session_id"] == s.as_str())
    );
    assert_eq!(a.delete(&path).await, 204);
}

#[tokio::test]
async fn guessed_session_ids_are_all_404() {
    let a = Api::with_token(base(), TOKEN_A);
    for _ in 0..1000 {
        let id = format!("{:032x}", rand::random::<u128>());
        let (status, _) = a.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(status, 404, "{id}");
    }
}
