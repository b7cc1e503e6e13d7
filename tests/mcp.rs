//! The MCP server, driven by a real client: the official MCP Python SDK (`mcp` from PyPI,
//! tests/mcp/client.py) against `/mcp` on the real server (streamable HTTP) and against
//! `replpool mcp` on stdio, which the SDK's stdio client starts. The client prints what it
//! saw as JSON; the assertions are here.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Api, shared_with};
use serde_json::{Value, json};

const TOKEN_A: &str = "mcp-token-a-0123456789";
const TOKEN_B: &str = "mcp-token-b-0123456789";
/// Two owners; a small inline limit, so that a noisy 800×800 plot is linked and a tiny one is
/// not; progress every 200 ms.
const CONFIG: &str = "[pool]\nwarm_workers = 2\n\n[auth]\ntokens = [\"mcp-token-a-0123456789\", \"mcp-token-b-0123456789\"]\n\n[mcp]\nmax_inline_image_bytes = 20000\nprogress_interval_ms = 200\n";

fn base() -> &'static str {
    shared_with(CONFIG)
}

/// The interpreter with the `mcp` SDK: `REPLPOOL_TEST_CHECK_PYTHON` when set, else the
/// tests' (`.venv`, where `make test` installs tests/requirements.txt).
fn client_python() -> PathBuf {
    std::env::var_os("REPLPOOL_TEST_CHECK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(common::python)
}

/// Runs tests/mcp/client.py with `args`; what it printed, as JSON. Killed if the test ends
/// first.
async fn client(args: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
    let run = tokio::process::Command::new(client_python())
        .arg(&script)
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the MCP client finished within 4 minutes")
        .expect("the MCP client ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client.py {args:?}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("client.py printed ({e}): {stdout}"))
}

async fn over_http(token: &str, args: &[&str]) -> Value {
    let url = format!("{}/mcp", base());
    let mut all = vec![args[0], "--url", &url, "--token", token];
    all.extend_from_slice(&args[1..]);
    client(&all).await
}

/// The text of a tool result's content.
fn text(result: &Value) -> String {
    result["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

fn types(result: &Value) -> Vec<&str> {
    result["content"]
        .as_array()
        .map(|blocks| blocks.iter().filter_map(|b| b["type"].as_str()).collect())
        .unwrap_or_default()
}

/// What tests/mcp/client.py's `tour` saw, the same over HTTP and stdio.
fn assert_tour(out: &Value) {
    assert_eq!(out["server"], "replpool", "{out}");
    let tools = out["tools"].as_object().expect("tools");
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "close_session",
            "create_session",
            "install_packages",
            "list_files",
            "read_file",
            "reset_session",
            "run_python",
            "upload_file"
        ]
    );
    for (name, tool) in tools {
        assert!(
            tool["description"].as_str().is_some_and(|d| d.len() > 20),
            "{name}: {tool}"
        );
        assert_eq!(tool["schema"]["type"], "object", "{name}: {tool}");
    }
    let run = &tools["run_python"]["schema"];
    assert_eq!(run["required"], json!(["code"]), "{run}");
    for field in ["session_id", "code", "timeout_s", "python"] {
        assert!(
            run["properties"][field]["description"].is_string(),
            "{field}: {run}"
        );
    }
    let create = &tools["create_session"]["schema"];
    assert!(
        create["properties"]["python"]["description"].is_string(),
        "{create}"
    );

    let session_id = out["session_id"].as_str().expect("create_session's id");
    assert!(text(&out["create"]).contains(session_id), "{out}");
    assert_eq!(out["first"]["is_error"], false, "{out}");
    let second = text(&out["second"]);
    assert!(
        second.contains("x is 41") && second.contains("result:\n42"),
        "{second}"
    );
    assert_eq!(types(&out["plot"]), ["text", "image"], "{}", out["plot"]);
    let image = &out["plot"]["content"][1];
    assert_eq!(
        (&image["mimeType"], &image["png"]),
        (&json!("image/png"), &json!(true)),
        "{image}"
    );

    assert_eq!(out["error"]["is_error"], true, "{out}");
    let error = text(&out["error"]);
    assert!(
        error.contains("error (runtime)") && error.contains("ZeroDivisionError: division by zero"),
        "{error}"
    );
    assert_eq!(out["timeout"]["is_error"], true, "{out}");
    assert!(
        text(&out["timeout"]).contains("error (timeout)"),
        "{}",
        out["timeout"]
    );
    assert!(text(&out["one_shot"]).contains("42"), "{}", out["one_shot"]);

    assert_eq!(out["upload"]["is_error"], false, "{out}");
    assert!(
        text(&out["list"]).contains("data/hello.txt\t11 bytes"),
        "{out}"
    );
    assert_eq!(text(&out["read"]), "hello, file");
    assert_eq!(out["reset"]["is_error"], false, "{out}");
    // A fresh interpreter: `x` is gone.
    assert!(
        text(&out["after_reset"]).contains("NameError"),
        "{}",
        out["after_reset"]
    );
    assert_eq!(out["close"]["is_error"], false, "{out}");
    assert_eq!(out["closed"]["is_error"], true, "{out}");
    assert_eq!(
        out["closed"]["structured"]["error"]["code"], "session_not_found",
        "{out}"
    );
}

#[tokio::test]
async fn the_tools_work_over_streamable_http() {
    let out = over_http(TOKEN_A, &["tour"]).await;
    assert_tour(&out);
}

#[tokio::test]
async fn the_tools_work_over_stdio_with_the_core_in_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(
        dir.path(),
        "[pool]\nwarm_workers = 1\n\n[mcp]\nmax_inline_image_bytes = 20000\n",
    );
    let binary = env!("CARGO_BIN_EXE_replpool");
    let config = config.display().to_string();
    let out = client(&["tour", "--stdio", binary, "--config", &config]).await;
    assert_tour(&out);
}

/// `replpool mcp --url`: the SDK's stdio client, through the bridge, to the shared server's
/// `/mcp` (its sessions, the token's).
#[tokio::test]
async fn the_tools_work_over_stdio_bridged_to_a_server() {
    let url = format!("{}/mcp", base());
    let binary = env!("CARGO_BIN_EXE_replpool");
    let out = client(&[
        "tour",
        "--stdio",
        binary,
        "--bridge-url",
        &url,
        "--token",
        TOKEN_A,
    ])
    .await;
    assert_tour(&out);
}

#[tokio::test]
async fn a_large_figure_is_a_resource_link_that_resources_read_returns() {
    let out = over_http(TOKEN_A, &["large_figure"]).await;
    let run = &out["run"];
    assert_eq!(types(run), ["text", "resource_link"], "{run}");
    let link = &run["content"][1];
    let session_id = out["session_id"].as_str().expect("session id");
    let uri = link["uri"].as_str().expect("uri");
    assert!(
        uri.starts_with(&format!("replpool://sessions/{session_id}/outputs/1/")),
        "{uri}"
    );
    assert_eq!(link["mimeType"], "image/png", "{link}");
    let size = link["size"].as_u64().expect("size");
    assert!(size > 20_000, "{link}");
    assert_eq!(
        out["read"],
        json!([{"uri": uri, "mimeType": "image/png", "png": true, "bytes": size}]),
        "{out}"
    );
    // resource_not_found, JSON-RPC's code for it.
    assert_eq!(out["missing"]["code"], -32002, "{out}");

    // An ordinary session of the token's owner: listed for it, not for the other token.
    let listed = |sessions: &Value| {
        sessions["sessions"]
            .as_array()
            .is_some_and(|all| all.iter().any(|s| s["session_id"] == session_id))
    };
    let (status, mine) = Api::with_token(base(), TOKEN_A).get("/v1/sessions").await;
    assert_eq!(status, 200);
    assert!(listed(&mine), "{mine}");
    let (_, theirs) = Api::with_token(base(), TOKEN_B).get("/v1/sessions").await;
    assert!(!listed(&theirs), "{theirs}");
}

#[tokio::test]
async fn cancelling_a_call_interrupts_its_cell_after_progress_was_reported() {
    let out = over_http(TOKEN_A, &["cancel"]).await;
    let progress = out["progress"].as_array().expect("progress");
    assert!(!progress.is_empty(), "{out}");
    assert!(out.get("call").is_none(), "the call was abandoned: {out}");
    assert!(text(&out["after"]).contains("after"), "{out}");
    let session_id = out["session_id"].as_str().expect("session id");
    let (status, history) = Api::with_token(base(), TOKEN_A)
        .get(&format!("/v1/sessions/{session_id}/history"))
        .await;
    assert_eq!(status, 200, "{history}");
    let cells = history["history"].as_array().expect("history");
    assert_eq!(cells.len(), 2, "{history}");
    assert_eq!(cells[0]["category"], "interrupted", "{history}");
    assert_eq!(cells[1]["status"], "ok", "{history}");
}

#[tokio::test]
async fn another_owners_session_is_not_found() {
    let theirs = Api::with_token(base(), TOKEN_B).session().await;
    let arguments = json!({"session_id": theirs, "code": "1 + 1"}).to_string();
    let out = over_http(
        TOKEN_A,
        &["call", "--tool", "run_python", "--arguments", &arguments],
    )
    .await;
    let result = &out["result"];
    assert_eq!(result["is_error"], true, "{out}");
    assert_eq!(
        result["structured"]["error"],
        json!({
            "code": "session_not_found",
            "category": "request",
            "message": format!("no session with id `{theirs}`"),
        }),
        "{out}"
    );
    assert!(
        text(result).starts_with("session_not_found (request)"),
        "{out}"
    );
}

/// Without a token, `/mcp` is refused like every route; with one, the same `initialize` is
/// answered by replpool's MCP server.
#[tokio::test]
async fn mcp_needs_the_token() {
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "0"}},
    });
    let response = reqwest::Client::new()
        .post(format!("{}/mcp", base()))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    assert_eq!(body["error"]["category"], "request", "{body}");

    let response = Api::with_token(base(), TOKEN_A)
        .http
        .post(format!("{}/mcp", base()))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.expect("body");
    // One JSON-RPC message, as JSON or as the data of one SSE event.
    let message: Value = body
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .chain(std::iter::once(body.as_str()))
        .find_map(|data| serde_json::from_str(data.trim()).ok())
        .unwrap_or_else(|| panic!("no JSON-RPC message in {body}"));
    assert_eq!(message["id"], 1, "{message}");
    assert_eq!(
        message["result"]["serverInfo"]["name"], "replpool",
        "{message}"
    );
}

/// A client that asks for progress and then reads nothing of its reply must not hold up the
/// call: the notifications fill the call's response stream (rmcp holds 16, the socket a few
/// kilobytes, kept small here), yet the one-shot still meets its deadline and is answered,
/// which the server's metrics (another connection) count. A server of its own, so that no
/// other test's executions are counted.
#[tokio::test]
async fn a_client_that_reads_no_progress_does_not_stall_the_call() {
    let server = common::Server::start(&format!(
        "[auth]\ntokens = [\"{TOKEN_A}\"]\n\n[mcp]\nprogress_interval_ms = 1\n"
    ));
    let api = Api::with_token(&server.base, TOKEN_A);
    let response = initialize(&api.http, &server.base).await;
    assert_eq!(response.status().as_u16(), 200);
    let mcp_session = mcp_session_id(&response);
    response.text().await.expect("initialize answered");
    let response = api
        .http
        .post(server.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &mcp_session)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .expect("initialized sent");
    assert_eq!(response.status().as_u16(), 202);

    // Prints 64 KiB chunks as fast as it can, each a progress notification, as is every
    // millisecond: megabytes of them before the deadline, more than the sockets buffer.
    let code = "import sys, time\nend = time.monotonic() + 120\nwhile time.monotonic() < end:\n    sys.stdout.write(('x' * 150 + '\\n') * 1000)\n";
    let call = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "run_python", "_meta": {"progressToken": "noisy"},
                   "arguments": {"code": code, "timeout_s": 15}},
    })
    .to_string();
    let addr: std::net::SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the test server listens on an address");
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    let mut unread = socket.connect(addr).await.expect("connected");
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN_A}\r\n\
         accept: application/json, text/event-stream\r\ncontent-type: application/json\r\n\
         mcp-session-id: {mcp_session}\r\nmcp-protocol-version: 2025-06-18\r\n\
         content-length: {}\r\n\r\n{call}",
        call.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut unread, request.as_bytes())
        .await
        .expect("tools/call sent");

    let api = &api;
    let answered = common::eventually_some(Duration::from_secs(45), || async move {
        let response = api
            .http
            .get(api.url("/metrics"))
            .send()
            .await
            .expect("scrape sent");
        assert_eq!(response.status().as_u16(), 200);
        let body = response.text().await.expect("the scrape");
        body.lines()
            .find(|line| {
                line.starts_with("replpool_executions_total{")
                    && line.contains("mode=\"one_shot\"")
                    && line.contains("outcome=\"timeout\"")
            })
            // The series is there from the start, at 0.
            .filter(|line| !line.ends_with(" 0"))
            .map(str::to_owned)
    })
    .await
    .expect("the one-shot ended at its deadline and was answered, within a margin");
    assert!(answered.ends_with(" 1"), "{answered}");
    drop(unread);
}

/// A bare `initialize` (what opens an MCP session) to the server at `base`.
async fn initialize(http: &reqwest::Client, base: &str) -> reqwest::Response {
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "0"}},
    });
    http.post(format!("{base}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .expect("initialize sent")
}

fn mcp_session_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("an MCP session id")
        .to_owned()
}

/// Past `mcp.max_sessions` open MCP sessions, `initialize` is refused in our error shape; a
/// closed one makes room again.
#[tokio::test]
async fn an_initialize_over_mcp_max_sessions_is_refused() {
    let server = common::Server::start(&format!(
        "[auth]\ntokens = [\"{TOKEN_A}\"]\n\n[mcp]\nmax_sessions = 1\n"
    ));
    let api = Api::with_token(&server.base, TOKEN_A);
    let first = initialize(&api.http, &server.base).await;
    assert_eq!(first.status().as_u16(), 200);
    let first_id = mcp_session_id(&first);
    first.text().await.expect("initialize answered");

    let refused = initialize(&api.http, &server.base).await;
    assert_eq!(refused.status().as_u16(), 503);
    let body: Value = refused.json().await.expect("JSON body");
    let over = json!({"error": {
        "code": "too_many_sessions",
        "category": "unavailable",
        "message": "the MCP session limit (1, mcp.max_sessions) is reached: close one (DELETE /mcp) or wait for an idle one to expire",
    }});
    assert_eq!(body, over);
    // An Mcp-Session-Id that is not text names no session (for rmcp too, which opens one):
    // such an initialize is counted like any other.
    let disguised = api
        .http
        .post(server.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header(
            "mcp-session-id",
            reqwest::header::HeaderValue::from_bytes(b"\xff").expect("header value"),
        )
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "test", "version": "0"}},
        }))
        .send()
        .await
        .expect("initialize sent");
    assert_eq!(disguised.status().as_u16(), 503);
    assert_eq!(disguised.json::<Value>().await.expect("JSON body"), over);

    let closed = api
        .http
        .delete(server.url("/mcp"))
        .header("mcp-session-id", &first_id)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .expect("DELETE sent");
    assert!(closed.status().is_success(), "{}", closed.status());
    let again = initialize(&api.http, &server.base).await;
    assert_eq!(again.status().as_u16(), 200);
}

/// One request to `/mcp` naming MCP session `id`, with `accept` and, for a POST, `body`: its
/// status and its body (a GET's open stream: a placeholder, as it does not end).
async fn to_mcp_session(
    api: &Api,
    method: reqwest::Method,
    id: &str,
    accept: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let streams = method == reqwest::Method::GET;
    let mut request = api
        .http
        .request(method, api.url("/mcp"))
        .header("accept", accept)
        .header("mcp-session-id", id)
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    if streams && response.status().is_success() {
        return (status, "(an open event stream)".to_owned());
    }
    (status, response.text().await.expect("body"))
}

/// An MCP session is the caller's whose `initialize` opened it: another token naming its id
/// (in a call, a GET of its stream, a DELETE, or a request rmcp refuses before it looks at
/// the session) is answered exactly as a made-up id is, and the session lives on for its
/// owner.
#[tokio::test]
async fn another_owners_mcp_session_is_answered_as_an_unknown_one() {
    let owner = Api::with_token(base(), TOKEN_A);
    let other = Api::with_token(base(), TOKEN_B);
    let opened = initialize(&owner.http, base()).await;
    assert_eq!(opened.status().as_u16(), 200);
    let theirs = mcp_session_id(&opened);
    opened.text().await.expect("initialize answered");
    let both = "application/json, text/event-stream";
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _) = to_mcp_session(
        &owner,
        reqwest::Method::POST,
        &theirs,
        both,
        Some(&initialized),
    )
    .await;
    assert_eq!(status, 202);

    let made_up = "5f0c8d3e-2b7a-4e19-9c61-0d4f3a2b1e7c";
    let call = |code: &str| {
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "run_python", "arguments": {"code": code}}})
    };
    let not_found = (404, "Not Found: Session not found".to_owned());
    let tries = [
        (
            "a tools/call",
            reqwest::Method::POST,
            both,
            Some(call("6 * 7")),
            Some(&not_found),
        ),
        (
            "a GET of its stream",
            reqwest::Method::GET,
            "text/event-stream",
            None,
            Some(&not_found),
        ),
        // rmcp looks at `Accept` before the session: so must the answer to another owner.
        (
            "a POST without SSE in Accept",
            reqwest::Method::POST,
            "application/json",
            Some(call("1")),
            None,
        ),
        // rmcp closes an unknown session as if it were there.
        ("a DELETE", reqwest::Method::DELETE, both, None, None),
    ];
    for (what, method, accept, body, expected) in &tries {
        let answer = to_mcp_session(&other, method.clone(), &theirs, accept, body.as_ref()).await;
        let unknown = to_mcp_session(&other, method.clone(), made_up, accept, body.as_ref()).await;
        assert_eq!(answer, unknown, "{what}");
        if let Some(expected) = expected {
            assert_eq!(&answer, *expected, "{what}");
        }
    }

    let (status, reply) = to_mcp_session(
        &owner,
        reqwest::Method::POST,
        &theirs,
        both,
        Some(&call("6 * 7")),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("result:\\n42"), "{reply}");
    let (status, _) = to_mcp_session(&owner, reqwest::Method::DELETE, &theirs, both, None).await;
    assert_eq!(status, 202);
    let (status, _) = to_mcp_session(
        &owner,
        reqwest::Method::POST,
        &theirs,
        both,
        Some(&call("1")),
    )
    .await;
    assert_eq!(status, 404, "a closed session is gone");
}

/// `create_session` and a one-shot `run_python` take `python`, as the native API does: the
/// session and the one-shot run on the interpreter chosen (the venv's Python under another
/// path, without the preload); an unknown one is refused as `POST /v1/sessions` refuses it;
/// `python` beside a `session_id` is refused as invalid. A server of its own, with two
/// interpreters.
#[tokio::test]
async fn create_session_and_a_one_shot_run_on_the_python_chosen() {
    let first = common::python();
    // Another name of the same venv's interpreter: `sys.executable` tells them apart.
    let second = first.with_file_name("python3");
    let server = common::Server::start(&format!(
        "[pool]\nwarm_workers = 1\n\n\
         [[python.interpreters]]\nname = \"first\"\nexecutable = {:?}\n\n\
         [[python.interpreters]]\nname = \"second\"\nexecutable = {:?}\npreload = []\n",
        first.display().to_string(),
        second.display().to_string(),
    ));
    let version = common::version_of(&second);
    let url = server.url("/mcp");
    let out = client(&["pythons", "--url", &url, "--python", "second"]).await;

    let created = &out["create"];
    assert_eq!(created["is_error"], false, "{out}");
    assert_eq!(
        created["structured"]["python"],
        json!({"name": "second", "version": version}),
        "{out}"
    );
    assert!(
        text(created).contains(&format!("python: second ({version})")),
        "{out}"
    );
    let on_second = format!("{} False", second.display());
    assert!(text(&out["which"]).contains(&on_second), "{out}");
    assert!(text(&out["one_shot"]).contains(&on_second), "{out}");

    let (status, native) = Api::new(&server.base)
        .post("/v1/sessions", json!({"python": "no-such-python"}))
        .await;
    assert_eq!(status, 400, "{native}");
    assert_eq!(native["error"]["code"], "unknown_python", "{native}");
    for refused in [&out["unknown"], &out["unknown_one_shot"]] {
        assert_eq!(refused["is_error"], true, "{out}");
        assert_eq!(refused["structured"], native, "{out}");
        assert_eq!(
            text(refused),
            format!(
                "unknown_python (request): {}",
                native["error"]["message"].as_str().expect("message")
            ),
            "{out}"
        );
    }

    let with_session = &out["with_session"];
    assert_eq!(with_session["is_error"], true, "{out}");
    assert_eq!(
        with_session["structured"]["error"]["code"], "invalid_request",
        "{out}"
    );
    assert!(
        text(with_session).contains("already has its interpreter"),
        "{out}"
    );
}
