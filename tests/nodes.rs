//! Many nodes behind a proxy: ids that name their node, 421 `wrong_node` for another node's
//! ids on every route that takes one, `/readyz`, and draining on SIGTERM. Dedicated servers
//! named `node-a`.

mod common;

use std::time::Duration;

use common::{Api, Server, eventually_some};
use reqwest::Method;
use serde_json::{Value, json};

const NODE_A: &str = "[pool]\nwarm_workers = 1\n\n[server]\nnode = \"node-a\"\n";

/// An id of node-b's, of the form this node's are.
const OTHER_SESSION: &str = "node-b.0123456789abcdef0123456789abcdef";
const OTHER_EXECUTION: &str = "exe_node-b.01234567-89ab-cdef-0123-456789abcdef";

async fn send(api: &Api, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = api.http.request(method, api.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn ids_name_the_configured_node() {
    let server = Server::start(NODE_A);
    let api = Api::new(&server.base);
    let session = api.session().await;
    let (node, random) = session.split_once('.').expect("<node>.<random>");
    assert_eq!(node, "node-a", "{session}");
    assert!(is_hex(random, 32), "128 random bits in hex: {session}");
    // It is the id the session is known by.
    let (status, info) = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(
        (status, info["session_id"].as_str()),
        (200, Some(&*session))
    );

    let (status, result) = api.post("/api/v1/eval", json!({"code": "1"})).await;
    assert_eq!(status, 200, "{result}");
    let execution = result["execution_id"].as_str().expect("id");
    let rest = execution.strip_prefix("exe_node-a.").expect(execution);
    let groups: Vec<usize> = rest.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "a UUID's form: {execution}");
    assert!(rest.split('-').all(|g| is_hex(g, g.len())), "{execution}");
    let (status, found) = api.get(&format!("/api/v1/executions/{execution}")).await;
    assert_eq!((status, &found["status"]), (200, &json!("completed")));

    let (status, health) = api.get("/healthz").await;
    assert_eq!((status, &health["node"]), (200, &json!("node-a")));
    let (status, ready) = api.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready, json!({"status": "ready", "node": "node-a"}));
}

#[tokio::test]
async fn another_nodes_ids_are_421_wrong_node_on_every_route() {
    let server = Server::start(NODE_A);
    let api = Api::new(&server.base);
    let s = OTHER_SESSION;
    let routes = [
        (Method::GET, format!("/v1/sessions/{s}"), None),
        (Method::DELETE, format!("/v1/sessions/{s}"), None),
        (
            Method::POST,
            format!("/v1/sessions/{s}/execute"),
            Some(json!({"code": "1"})),
        ),
        (
            Method::POST,
            format!("/v1/sessions/{s}/execute?stream=true"),
            Some(json!({"code": "1"})),
        ),
        (Method::POST, format!("/v1/sessions/{s}/interrupt"), None),
        (Method::POST, format!("/v1/sessions/{s}/reset"), None),
        (Method::GET, format!("/v1/sessions/{s}/history"), None),
        (Method::GET, format!("/v1/sessions/{s}/notebook"), None),
        (Method::GET, format!("/v1/sessions/{s}/files"), None),
        (Method::PUT, format!("/v1/sessions/{s}/files/a.txt"), None),
        (Method::GET, format!("/v1/sessions/{s}/files/a.txt"), None),
        (
            Method::DELETE,
            format!("/v1/sessions/{s}/files/a.txt"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/executions/{OTHER_EXECUTION}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/executions/{OTHER_EXECUTION}"),
            None,
        ),
    ];
    for (method, path, body) in routes {
        let (status, reply) = send(&api, method.clone(), &path, body).await;
        assert_eq!(status, 421, "{method} {path}: {reply}");
        assert_eq!(reply["error"]["code"], "wrong_node", "{method} {path}");
        let message = reply["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("node node-b") && message.contains("node node-a"),
            "{method} {path}: {message}"
        );
    }
}

#[tokio::test]
async fn ids_of_no_node_are_unknown_as_before() {
    let server = Server::start(NODE_A);
    let api = Api::new(&server.base);
    for id in [
        "0123456789abcdef",
        "Node_B.0123",
        "node-a.0123456789abcdef0123456789abcdef",
    ] {
        let (status, reply) = api.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(status, 404, "{id}: {reply}");
        assert_eq!(reply["error"]["code"], "session_not_found", "{id}");
    }
    for id in ["exe_unknown", "exe_node-a.0123", "unknown"] {
        let (status, reply) = api.get(&format!("/api/v1/executions/{id}")).await;
        assert_eq!(status, 404, "{id}: {reply}");
        assert!(
            reply["error"].is_string(),
            "python-executor's shape: {reply}"
        );
    }
}

#[tokio::test]
async fn sigterm_drains_the_node_and_finishes_the_running_cell() {
    let mut server = Server::start(&format!("{NODE_A}shutdown_grace_ms = 30000\n"));
    let api = Api::new(&server.base);
    let session = api.session().await;
    let ready = eventually_some(Duration::from_secs(10), || async {
        let (status, body) = api.get("/readyz").await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(ready, Some(json!({"status": "ready", "node": "node-a"})));
    let (blocker, code) = common::blocker().await;
    let running = {
        let api = Api::new(&server.base);
        let session = session.clone();
        tokio::spawn(async move { api.run(&session, &format!("{code}\n'done'")).await })
    };
    let release = blocker.accept().await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let draining = eventually_some(Duration::from_secs(10), || async {
        let (status, body) = api.get("/readyz").await;
        (status == 503).then_some(body)
    })
    .await
    .expect("/readyz turned 503");
    assert_eq!(draining, json!({"status": "draining", "node": "node-a"}));

    let (status, refused) = api.post("/v1/sessions", json!({})).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "draining");
    assert_eq!(refused["error"]["category"], "unavailable");
    let (status, refused) = api.post("/v1/execute", json!({"code": "1"})).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (503, &json!("draining"))
    );
    // The node's own session is still served while its cell runs.
    let (status, info) = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!((status, &info["state"]), (200, &json!("busy")));

    drop(release);
    let reply = running.await.expect("the cell's client");
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["result"]["text/plain"], "'done'");
    let status = server.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "ends by itself, cleanly"
    );
}

#[tokio::test]
async fn a_node_that_cannot_start_a_warm_worker_is_not_ready() {
    // Every warm worker and the template fail their preload: sessions would run cold.
    let server = Server::start(
        "[server]\nnode = \"node-a\"\n\n[python]\npreload = [\"replpool_no_such_module\"]\n",
    );
    let api = Api::new(&server.base);
    let (status, ready) = api.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready, json!({"status": "starting", "node": "node-a"}));
}
