//! The Jupyter kernel API (`/api/kernelspecs`, `/api/kernels`, the channels' websocket),
//! driven by real Jupyter clients: nbclient through jupyter_server's gateway kernel manager,
//! and a `jupyter server --gateway-url` in front of replpool driven over its own REST and
//! websocket API (`tests/jupyter/clients.py`). The clients run on `REPLPOOL_TEST_CHECK_PYTHON`
//! when set (an interpreter with tests/requirements.txt), else on the tests' interpreter
//! (`.venv`, where `make test` installs them).

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Api, Server};
use serde_json::{Value, json};

const TOKEN: &str = "jupyter-test-token-0123456789";

fn shared() -> &'static str {
    common::shared()
}

/// The session id a kernel id stands for: the node name is hex before the `_`, the random
/// bits follow in a UUID's groups.
fn session_of(kernel_id: &str) -> String {
    let (node_hex, uuid) = kernel_id.split_once('_').expect("a kernel id has a `_`");
    let node: String = (0..node_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&node_hex[i..i + 2], 16).expect("hex") as char)
        .collect();
    format!("{node}.{}", uuid.replace('-', ""))
}

/// Asserts a Jupyter error reply: the status, jupyter_server's `message` and `reason`, and
/// replpool's `error` with its code.
#[track_caller]
fn assert_jupyter_error(status: u16, body: &Value, want_status: u16, code: &str, reason: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn one_kernel_spec_names_replpool_and_the_preload() {
    let api = Api::new(shared());
    let (status, specs) = api.get("/api/kernelspecs").await;
    assert_eq!(status, 200, "{specs}");
    assert_eq!(specs["default"], "python3");
    let names: Vec<&String> = specs["kernelspecs"]
        .as_object()
        .expect("kernelspecs")
        .keys()
        .collect();
    assert_eq!(names, ["python3"]);
    let spec = &specs["kernelspecs"]["python3"];
    assert_eq!(spec["name"], "python3");
    assert_eq!(spec["spec"]["language"], "python");
    assert_eq!(
        spec["spec"]["display_name"],
        "Python 3 (replpool: numpy as np, pandas as pd, matplotlib.pyplot as plt preloaded)"
    );
    let (status, one) = api.get("/api/kernelspecs/python3").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(&one, spec);

    let (status, body) = api.get("/api/kernelspecs/ir").await;
    assert_jupyter_error(status, &body, 404, "kernel_spec_not_found", "Not Found");
}

#[tokio::test]
async fn a_kernel_is_a_session_on_both_apis() {
    let api = Api::new(shared());
    let response = api
        .http
        .post(api.url("/api/kernels"))
        .json(&json!({"name": "python3", "env": {"KERNEL_USERNAME": "me"}}))
        .send()
        .await
        .expect("start a kernel");
    assert_eq!(response.status().as_u16(), 201);
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned);
    let kernel: Value = response.json().await.expect("a kernel model");
    let id = kernel["id"].as_str().expect("id").to_owned();
    assert_eq!(
        location.as_deref(),
        Some(format!("/api/kernels/{id}").as_str())
    );
    assert_eq!(kernel["name"], "python3");
    assert_eq!(kernel["execution_state"], "idle");
    assert_eq!(kernel["connections"], 0);
    // What jupyter_server's GatewayClient parses it with: `%Y-%m-%dT%H:%M:%S.%fZ`.
    let activity = kernel["last_activity"].as_str().expect("last_activity");
    assert!(
        activity.len() == 24 && activity.ends_with('Z') && activity.as_bytes()[19] == b'.',
        "{activity}"
    );
    // jupyter_server routes kernel ids by five groups of word characters.
    let groups: Vec<&str> = id.split('-').collect();
    assert_eq!(groups.len(), 5, "{id}");
    assert!(
        groups
            .iter()
            .all(|g| !g.is_empty() && g.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')),
        "{id}"
    );

    // The kernel is a session: the native API runs code in it.
    let session = session_of(&id);
    let reply = api.run(&session, "x = 6 * 7\nx").await;
    assert_eq!(reply["result"]["text/plain"], "42", "{reply}");
    let (status, got) = api.get(&format!("/api/kernels/{id}")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["id"], id.as_str());

    // A session made natively is a kernel.
    let native = api.session().await;
    let (status, kernels) = api.get("/api/kernels").await;
    assert_eq!(status, 200, "{kernels}");
    let sessions: Vec<String> = kernels
        .as_array()
        .expect("a list")
        .iter()
        .map(|k| session_of(k["id"].as_str().expect("id")))
        .collect();
    assert!(sessions.contains(&session), "{kernels}");
    assert!(sessions.contains(&native), "{kernels}");

    // Restart: a fresh namespace, the same kernel.
    let (status, restarted) = api
        .post(&format!("/api/kernels/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, 200, "{restarted}");
    assert_eq!(restarted["id"], id.as_str());
    let reply = api.run(&session, "x").await;
    assert_eq!(reply["error"]["ename"], "NameError", "{reply}");

    let response = api
        .http
        .post(api.url(&format!("/api/kernels/{id}/interrupt")))
        .send()
        .await
        .expect("interrupt");
    assert_eq!(response.status().as_u16(), 204);

    // Shut down: gone from both APIs.
    assert_eq!(api.delete(&format!("/api/kernels/{id}")).await, 204);
    let (status, body) = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api.get(&format!("/api/kernels/{id}")).await;
    assert_jupyter_error(status, &body, 404, "kernel_not_found", "Not Found");
    assert_eq!(api.delete(&format!("/v1/sessions/{native}")).await, 204);
}

#[tokio::test]
async fn bad_requests_get_exact_statuses() {
    let api = Api::new(shared());
    let post_raw = |body: &'static str| {
        let api = &api;
        async move {
            let response = api
                .http
                .post(api.url("/api/kernels"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("request sent");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("a JSON body");
            common::assert_categorized(status, &body);
            (status, body)
        }
    };
    let (status, body) = post_raw("{").await;
    assert_jupyter_error(status, &body, 400, "invalid_json", "Bad Request");
    let (status, body) = post_raw(r#"{"name": 3}"#).await;
    assert_jupyter_error(
        status,
        &body,
        422,
        "invalid_request",
        "Unprocessable Entity",
    );
    let (status, body) = post_raw(r#"{"name": "ir"}"#).await;
    assert_jupyter_error(status, &body, 404, "kernel_spec_not_found", "Not Found");

    let (status, kernel) = api.post("/api/kernels", json!({})).await;
    assert_eq!(status, 201, "{kernel}");
    let id = kernel["id"].as_str().expect("id");
    let (node_hex, _) = id.split_once('_').expect("a kernel id");

    // Ids that are no kernel's: garbage, and a well-formed one of this node nobody has.
    let unknown = format!("{node_hex}_00000000-0000-0000-0000-000000000000");
    for id in ["nope", unknown.as_str()] {
        let (status, body) = api.get(&format!("/api/kernels/{id}")).await;
        assert_jupyter_error(status, &body, 404, "kernel_not_found", "Not Found");
        for action in ["interrupt", "restart"] {
            let (status, body) = api
                .post(&format!("/api/kernels/{id}/{action}"), json!({}))
                .await;
            assert_jupyter_error(status, &body, 404, "kernel_not_found", "Not Found");
        }
        let (status, body) = api.get(&format!("/api/kernels/{id}/channels")).await;
        assert_jupyter_error(status, &body, 404, "kernel_not_found", "Not Found");
        let response = api
            .http
            .delete(api.url(&format!("/api/kernels/{id}")))
            .send()
            .await
            .expect("delete");
        assert_eq!(response.status().as_u16(), 404);
    }

    // Another node's kernel ("other" in hex): misrouted, as a session id of another node is.
    let (status, body) = api
        .get("/api/kernels/6f74686572_00000000-0000-0000-0000-000000000000")
        .await;
    assert_jupyter_error(status, &body, 421, "wrong_node", "Misdirected Request");

    // A kernel's channels, asked for without a websocket handshake.
    let (status, body) = api.get(&format!("/api/kernels/{id}/channels")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert_eq!(api.delete(&format!("/api/kernels/{id}")).await, 204);
}

/// A server with a token, so that the clients' `Authorization: token …` is what lets them in.
fn server_with_token() -> Server {
    Server::start(&format!(
        "[pool]\nwarm_workers = 2\n[auth]\ntokens = [\"{TOKEN}\"]\n"
    ))
}

#[tokio::test]
async fn jupyters_token_header_is_accepted() {
    let server = server_with_token();
    let http = reqwest::Client::new();
    for (header, want) in [
        (Some(format!("token {TOKEN}")), 200),
        (Some(format!("Bearer {TOKEN}")), 200),
        (Some("token wrong".to_owned()), 401),
        (None, 401),
    ] {
        let mut request = http.get(server.url("/api/kernelspecs"));
        if let Some(header) = &header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status().as_u16(), want, "{header:?}");
    }
}

/// The interpreter the Jupyter clients run on.
fn client_python() -> PathBuf {
    std::env::var_os("REPLPOOL_TEST_CHECK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(common::python)
}

fn clients_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/jupyter/clients.py")
}

/// Runs `clients.py MODE URL TOKEN` to its end (its own timeouts bound it); its JSON.
fn run_clients(mode: &str, url: &str, token: &str, jupyter_dir: &std::path::Path) -> Value {
    run_clients_with(mode, url, token, &[], jupyter_dir)
}

/// [`run_clients`] with the mode's further arguments.
fn run_clients_with(
    mode: &str,
    url: &str,
    token: &str,
    args: &[&str],
    jupyter_dir: &std::path::Path,
) -> Value {
    let mut command = Command::new(client_python());
    command
        .arg(clients_script())
        .args([mode, url, token])
        .args(args)
        .envs(jupyter_env(jupyter_dir))
        .stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe: the clients die with the test.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            Ok(())
        });
    }
    let output = command.output().expect("run tests/jupyter/clients.py");
    assert!(
        output.status.success(),
        "clients.py {mode}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "clients.py {mode} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Jupyter's own directories in the test's temporary one: no user config is read, nothing
/// is left in the home directory.
fn jupyter_env(dir: &std::path::Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("JUPYTER_CONFIG_DIR", dir.join("config")),
        ("JUPYTER_DATA_DIR", dir.join("data")),
        ("JUPYTER_RUNTIME_DIR", dir.join("runtime")),
        ("JUPYTER_PLATFORM_DIRS", PathBuf::from("1")),
    ]
}

#[tokio::test]
async fn nbclient_runs_a_notebook_against_replpool() {
    // The shared server, without tokens: jupyter_server's client-side gateway kernel client
    // opens its websocket without the `auth_token` its REST calls carry.
    let base = shared().to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    let result = tokio::task::spawn_blocking(move || run_clients("nbclient", &base, "-", &path))
        .await
        .expect("the client ran");
    let cells = result["cells"].as_array().expect("cells");
    let outputs: Vec<&Value> = cells.iter().map(|c| &c["outputs"]).collect();
    let counts: Vec<&Value> = cells.iter().map(|c| &c["execution_count"]).collect();
    assert_eq!(counts, [1, 2, 3, 4, 5, 6], "{result}");
    let expected = json!([
        [{"output_type": "execute_result", "execution_count": 1,
          "mime": ["application/vnd.dataresource+json", "text/html", "text/plain"],
          "text/plain": "   a  b\n0  1  x\n1  2  y\n2  3  z",
          "table_fields": ["index", "a", "b"]}],
        [{"output_type": "stream", "name": "stdout", "text": "hello\n"},
         {"output_type": "execute_result", "execution_count": 2, "mime": ["text/plain"],
          "text/plain": "np.int64(6)"}],
        [{"output_type": "stream", "name": "stderr", "text": "to stderr\n"}],
        [{"output_type": "display_data",
          "mime": ["application/vnd.replpool.chart+json", "image/png", "text/plain"],
          "text/plain": "<Figure size 640x480 with 1 Axes>",
          "chart_types": ["line"]}],
        [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
          "traceback_mentions_cell": true}],
        [{"output_type": "execute_result", "execution_count": 6, "mime": ["text/plain"],
          "text/plain": "42"}],
    ]);
    assert_eq!(json!(outputs), expected, "{result}");
}

/// `jupyter server --gateway-url=…`, in a process group of its own that dies with the test
/// (death signal) and is killed, group and all, when this drops.
struct JupyterServer {
    child: Child,
    url: String,
}

impl JupyterServer {
    fn start(gateway: &str, dir: &std::path::Path) -> JupyterServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new(client_python());
        command
            .args([
                "-m",
                "jupyter_server",
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg("--ServerApp.port_retries=0")
            .arg(format!("--IdentityProvider.token={TOKEN}"))
            .arg(format!("--ServerApp.root_dir={}", dir.display()))
            .arg(format!("--gateway-url={gateway}"))
            .arg(format!("--GatewayClient.auth_token={TOKEN}"))
            .envs(jupyter_env(dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                Ok(())
            });
        }
        let child = command.spawn().expect("start jupyter server");
        JupyterServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for JupyterServer {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn jupyter_server_in_gateway_mode_lists_the_spec_and_runs_a_cell() {
    let server = server_with_token();
    let dir = tempfile::tempdir().expect("tempdir");
    let jupyter = JupyterServer::start(&server.base, dir.path());
    let http = reqwest::Client::new();
    let status_url = format!("{}/api/status", jupyter.url);
    let up = common::eventually_some(Duration::from_secs(60), || {
        let request = http
            .get(&status_url)
            .header("authorization", format!("token {TOKEN}"));
        async move {
            let response = request.send().await.ok()?;
            (response.status().as_u16() == 200).then_some(())
        }
    })
    .await;
    assert!(up.is_some(), "jupyter server never answered");

    let url = jupyter.url.clone();
    let path = dir.path().to_owned();
    let result = tokio::task::spawn_blocking(move || run_clients("gateway", &url, TOKEN, &path))
        .await
        .expect("the client ran");
    assert_eq!(result["default"], "python3", "{result}");
    assert_eq!(
        result["specs"],
        json!({"python3": "Python 3 (replpool: numpy as np, pandas as pd, matplotlib.pyplot as plt preloaded)"}),
        "{result}"
    );
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(
        result["outputs"],
        json!([
            {"msg_type": "stream", "content": {"name": "stdout", "text": "through the gateway\n"}},
            {"msg_type": "execute_result", "content": {"data": {"text/plain": "42"}}},
        ]),
        "{result}"
    );
    // The kernel it ran in was one of replpool's sessions, shut down with the kernel.
    let kernel_id = result["kernel_id"].as_str().expect("kernel_id");
    let api = Api::with_token(&server.base, TOKEN);
    let (status, body) = api
        .get(&format!("/v1/sessions/{}", session_of(kernel_id)))
        .await;
    assert_eq!(status, 404, "{body}");
    drop(jupyter);
}

/// (channel, msg_type) of what a request was answered with, in order.
fn kinds(seen: &Value) -> Vec<(String, String)> {
    seen.as_array()
        .expect("a list of messages")
        .iter()
        .map(|m| {
            (
                m[0].as_str().unwrap_or_default().to_owned(),
                m[1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The content of the one message of that type.
fn content<'a>(seen: &'a Value, msg_type: &str) -> &'a Value {
    let found: Vec<&Value> = seen
        .as_array()
        .expect("a list of messages")
        .iter()
        .filter(|m| m[1] == msg_type)
        .collect();
    assert_eq!(found.len(), 1, "one {msg_type} in {seen}");
    &found[0][2]
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(c, t)| ((*c).to_owned(), (*t).to_owned()))
        .collect()
}

#[tokio::test]
async fn each_channel_message_is_answered_as_a_kernel_would() {
    let base = shared().to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    let url = base.clone();
    let r = tokio::task::spawn_blocking(move || run_clients("protocol", &url, "-", &path))
        .await
        .expect("the client ran");
    let busy_reply_idle =
        |reply: &str| pairs(&[("iopub", "status"), ("shell", reply), ("iopub", "status")]);

    let info = content(&r["kernel_info_request"], "kernel_info_reply");
    assert_eq!(info["status"], "ok", "{info}");
    assert_eq!(info["implementation"], "replpool", "{info}");
    assert_eq!(info["protocol_version"], "5.3", "{info}");
    assert_eq!(info["language_info"]["name"], "python", "{info}");
    for (request, reply, want) in [
        (
            "comm_info_request",
            "comm_info_reply",
            json!({"status": "ok", "comms": {}}),
        ),
        (
            "complete_request",
            "complete_reply",
            json!({"status": "ok", "matches": [], "cursor_start": 3, "cursor_end": 3, "metadata": {}}),
        ),
        (
            "inspect_request",
            "inspect_reply",
            json!({"status": "ok", "found": false, "data": {}, "metadata": {}}),
        ),
        (
            "is_complete_request",
            "is_complete_reply",
            json!({"status": "unknown"}),
        ),
    ] {
        assert_eq!(kinds(&r[request]), busy_reply_idle(reply), "{}", r[request]);
        assert_eq!(content(&r[request], reply), &want, "{}", r[request]);
    }

    assert_eq!(
        kinds(&r["execute"]),
        pairs(&[
            ("iopub", "status"),
            ("iopub", "execute_input"),
            ("iopub", "execute_result"),
            ("shell", "execute_reply"),
            ("iopub", "status"),
        ]),
        "{}",
        r["execute"]
    );
    assert_eq!(
        content(&r["execute"], "execute_input"),
        &json!({"code": "x = 1\nx + 1", "execution_count": 1})
    );
    assert_eq!(
        content(&r["execute"], "execute_result"),
        &json!({"execution_count": 1, "data": {"text/plain": "2"}, "metadata": {}})
    );
    assert_eq!(
        content(&r["execute"], "execute_reply"),
        &json!({"status": "ok", "execution_count": 1, "user_expressions": {}, "payload": []})
    );

    // silent: output, but no execute_input and no execute_result.
    assert_eq!(
        kinds(&r["silent"]),
        pairs(&[
            ("iopub", "status"),
            ("iopub", "stream"),
            ("shell", "execute_reply"),
            ("iopub", "status"),
        ]),
        "{}",
        r["silent"]
    );
    assert_eq!(
        content(&r["silent"], "stream"),
        &json!({"name": "stdout", "text": "quiet\n"})
    );

    // input(): stdin is not connected.
    assert_eq!(
        content(&r["input"], "error")["ename"],
        "EOFError",
        "{}",
        r["input"]
    );
    assert_eq!(content(&r["input"], "execute_reply")["status"], "error");

    assert_eq!(
        content(&r["history_request"], "history_reply"),
        &json!({"status": "ok", "history": [[0, 2, "print('quiet')\n5"], [0, 3, "input()"]]})
    );

    let failed = content(&r["failing"], "execute_reply");
    assert_eq!(failed["status"], "error", "{failed}");
    assert_eq!(failed["ename"], "ValueError", "{failed}");
    assert_eq!(failed["category"], "runtime", "{failed}");
    assert_eq!(kinds(&r["aborted"]), busy_reply_idle("execute_reply"));
    assert_eq!(
        content(&r["aborted"], "execute_reply"),
        &json!({"status": "aborted", "execution_count": null})
    );

    assert_eq!(
        kinds(&r["interrupt_request"]),
        pairs(&[
            ("iopub", "status"),
            ("control", "interrupt_reply"),
            ("iopub", "status")
        ])
    );
    let interrupted = content(&r["interrupted"], "execute_reply");
    assert_eq!(interrupted["ename"], "KeyboardInterrupt", "{interrupted}");
    assert_eq!(interrupted["category"], "interrupted", "{interrupted}");

    assert_eq!(
        content(&r["restart"], "shutdown_reply"),
        &json!({"status": "ok", "restart": true})
    );
    assert_eq!(
        content(&r["after_restart"], "error")["ename"],
        "NameError",
        "{}",
        r["after_restart"]
    );

    assert_eq!(
        kinds(&r["shutdown"]),
        pairs(&[
            ("iopub", "status"),
            ("control", "shutdown_reply"),
            ("iopub", "status")
        ])
    );
    assert_eq!(
        content(&r["shutdown"], "shutdown_reply"),
        &json!({"status": "ok", "restart": false})
    );
    assert_eq!(r["closed"], true);
    let api = Api::new(&base);
    let kernel = r["kernel_id"].as_str().expect("kernel_id");
    let (status, body) = api.get(&format!("/api/kernels/{kernel}")).await;
    assert_jupyter_error(status, &body, 404, "kernel_not_found", "Not Found");
}

/// A started kernel's id and its websocket URL on `base`.
async fn start_kernel(api: &Api, base: &str) -> (String, String) {
    let (status, kernel) = api.post("/api/kernels", json!({"name": "python3"})).await;
    assert_eq!(status, 201, "{kernel}");
    let id = kernel["id"].as_str().expect("id").to_owned();
    let url = format!(
        "{}/api/kernels/{id}/channels",
        base.replacen("http://", "ws://", 1)
    );
    (id, url)
}

/// A Jupyter request on `channel` as one text frame; its msg_id.
fn request(channel: &str, msg_type: &str, content: Value) -> (String, WsMessage) {
    let msg_id = format!("{msg_type}-{}", rand_suffix());
    let header = json!({"msg_id": msg_id, "msg_type": msg_type, "session": "test",
                        "username": "test", "date": "", "version": "5.3"});
    let frame = json!({"header": header, "parent_header": {}, "metadata": {},
                       "content": content, "channel": channel, "buffers": []});
    (msg_id, WsMessage::Text(frame.to_string().into()))
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn a_client_that_leaves_interrupts_its_cell_and_drops_its_queue() {
    let base = shared().to_owned();
    let api = Api::new(&base);
    let (kernel, url) = start_kernel(&api, &base).await;
    let session = session_of(&kernel);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("the channels connect");
    let (running, frame) = request(
        "shell",
        "execute_request",
        json!({"code": "import time\nprint('started', flush=True)\ntime.sleep(120)"}),
    );
    ws.send(frame).await.expect("send");
    // The cell runs once its output comes back.
    while let Some(Ok(message)) = ws.next().await {
        let WsMessage::Text(text) = message else {
            continue;
        };
        let msg: Value = serde_json::from_str(&text).expect("a message");
        if msg["parent_header"]["msg_id"] == running.as_str() && msg["msg_type"] == "stream" {
            break;
        }
    }
    let (_, frame) = request(
        "shell",
        "execute_request",
        json!({"code": "open('queued-ran', 'w').write('x')"}),
    );
    ws.send(frame).await.expect("send");
    drop(ws);

    let state = common::eventually_some(Duration::from_secs(30), || {
        let api = &api;
        let path = format!("/api/kernels/{kernel}");
        async move {
            let (status, model) = api.get(&path).await;
            (status == 200 && model["execution_state"] == "idle" && model["connections"] == 0)
                .then_some(model)
        }
    })
    .await;
    assert!(
        state.is_some(),
        "the kernel is still busy (or connected) after its client left"
    );
    let (status, history) = api.get(&format!("/v1/sessions/{session}/history")).await;
    assert_eq!(status, 200, "{history}");
    let entries = history["history"].as_array().expect("history");
    assert_eq!(entries.len(), 1, "the queued cell ran: {history}");
    assert_eq!(entries[0]["category"], "interrupted", "{history}");
    let exists = api
        .run(&session, "import os\nos.path.exists('queued-ran')")
        .await;
    assert_eq!(exists["result"]["text/plain"], "False", "{exists}");
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected() {
    let base = shared().to_owned();
    let api = Api::new(&base);
    let (kernel, url) = start_kernel(&api, &base).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("the channels connect");
    // Far more replies than the socket's buffers hold, and none of them read.
    for _ in 0..10_000 {
        let (_, frame) = request("shell", "kernel_info_request", json!({}));
        if ws.send(frame).await.is_err() {
            break; // the server ended the connection
        }
    }
    // Without a bound the server queues every reply and keeps the connection for ever.
    let path = format!("/api/kernels/{kernel}");
    let closed = common::eventually_some(Duration::from_secs(60), || {
        let (api, path) = (&api, &path);
        async move {
            let (status, model) = api.get(path).await;
            assert_eq!(status, 200, "another client is answered: {model}");
            (model["connections"] == 0).then_some(())
        }
    })
    .await;
    assert!(closed.is_some(), "the non-reading connection is still open");
    drop(ws);
    let response = api
        .http
        .delete(api.url(&path))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status().as_u16(), 204);
}

/// The venv's Python, and the same interpreter under its other name (`sys.executable` tells
/// them apart, and nothing depends on another Python being installed).
fn two_pythons() -> (PathBuf, PathBuf) {
    let first = common::python();
    let second = first.with_file_name("python3");
    (first, second)
}

/// A server with two interpreters: `first` (the default, with numpy) and `second` (without a
/// preload).
fn server_with_two_interpreters() -> Server {
    let (first, second) = two_pythons();
    Server::start(&format!(
        "[pool]\nwarm_workers = 1\n\n\
         [[python.interpreters]]\nname = \"first\"\nexecutable = {:?}\npreload = [\"numpy as np\"]\n\n\
         [[python.interpreters]]\nname = \"second\"\nexecutable = {:?}\npreload = []\n",
        first.display().to_string(),
        second.display().to_string(),
    ))
}

/// Each interpreter is a kernel spec: `python3` the default's, `python3-<name>` another's,
/// each saying its version and preload; names are compared ignoring case; an unknown one is
/// refused with the specs there are; a session made natively is a kernel of its
/// interpreter's spec.
#[tokio::test]
async fn each_interpreter_is_a_kernel_spec_of_its_own() {
    let server = server_with_two_interpreters();
    let (first, second) = two_pythons();
    let (v1, v2) = (common::version_of(&first), common::version_of(&second));
    let api = Api::new(&server.base);
    let (status, specs) = api.get("/api/kernelspecs").await;
    assert_eq!(status, 200, "{specs}");
    assert_eq!(specs["default"], "python3", "{specs}");
    let display: Vec<(&str, &Value, &Value)> = specs["kernelspecs"]
        .as_object()
        .expect("kernelspecs")
        .iter()
        .map(|(key, spec)| (key.as_str(), &spec["name"], &spec["spec"]["display_name"]))
        .collect();
    assert_eq!(
        display,
        [
            (
                "python3",
                &json!("python3"),
                &json!(format!(
                    "Python {v1} (replpool: first, numpy as np preloaded)"
                ))
            ),
            (
                "python3-second",
                &json!("python3-second"),
                &json!(format!("Python {v2} (replpool: second, no preload)"))
            ),
        ],
        "{specs}"
    );
    for name in ["python3-second", "PYTHON3-Second"] {
        let (status, one) = api.get(&format!("/api/kernelspecs/{name}")).await;
        assert_eq!(status, 200, "{one}");
        assert_eq!(one, specs["kernelspecs"]["python3-second"], "{name}");
    }

    // Unknown specs, the default interpreter's name under `python3-` among them: what
    // jupyter_server says of a missing spec, with replpool's error beside it.
    let unknown = |name: &str| {
        let message =
            format!("Kernel spec {name} not found (this server's specs: python3, python3-second)");
        json!({
            "message": message, "reason": "Not Found",
            "error": {"code": "kernel_spec_not_found", "message": message, "category": "request"},
        })
    };
    let (status, body) = api.get("/api/kernelspecs/python3-first").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body, unknown("python3-first"));
    let (status, body) = api
        .post("/api/kernels", json!({"name": "python3-third"}))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body, unknown("python3-third"));
    let (status, sessions) = api.get("/v1/sessions").await;
    assert_eq!(status, 200, "{sessions}");
    assert_eq!(
        sessions["sessions"],
        json!([]),
        "a refused kernel left a session"
    );

    // Sessions made natively are kernels of their interpreters' specs.
    let (status, on_second) = api.post("/v1/sessions", json!({"python": "second"})).await;
    assert_eq!(status, 201, "{on_second}");
    let on_second = on_second["session_id"]
        .as_str()
        .expect("session_id")
        .to_owned();
    let on_default = api.session().await;
    let (status, kernels) = api.get("/api/kernels").await;
    assert_eq!(status, 200, "{kernels}");
    let mut named: Vec<(String, Value)> = kernels
        .as_array()
        .expect("a list")
        .iter()
        .map(|k| (session_of(k["id"].as_str().expect("id")), k["name"].clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![
        (on_second.clone(), json!("python3-second")),
        (on_default.clone(), json!("python3")),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(named, want, "{kernels}");
    // Its notebook reopens on its spec, and the native API takes the name in any case.
    let (status, upper) = api.post("/v1/sessions", json!({"python": "SECOND"})).await;
    assert_eq!(status, 201, "{upper}");
    assert_eq!(upper["python"]["name"], "second", "{upper}");
    let upper = upper["session_id"].as_str().expect("session_id").to_owned();
    api.run(&on_second, "1 + 1").await;
    for (session, spec) in [(&on_second, "python3-second"), (&on_default, "python3")] {
        let (status, notebook) = api.get(&format!("/v1/sessions/{session}/notebook")).await;
        assert_eq!(status, 200, "{notebook}");
        assert_eq!(
            notebook["metadata"]["kernelspec"]["name"], spec,
            "{notebook}"
        );
    }
    assert_eq!(api.delete(&format!("/v1/sessions/{upper}")).await, 204);
    assert_eq!(api.delete(&format!("/v1/sessions/{on_second}")).await, 204);
    assert_eq!(api.delete(&format!("/v1/sessions/{on_default}")).await, 204);
}

/// Sends a request on `channel` and reads what it causes, up to its reply and the `idle`
/// after it: (msg_type, content) of each message parented to it.
async fn ask<S>(ws: &mut S, channel: &str, msg_type: &str, content: Value) -> Vec<(String, Value)>
where
    S: futures::Sink<WsMessage>
        + futures::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
    <S as futures::Sink<WsMessage>>::Error: std::fmt::Debug,
{
    let (msg_id, frame) = request(channel, msg_type, content);
    ws.send(frame).await.expect("send");
    let (mut replied, mut idle) = (false, false);
    let mut seen = Vec::new();
    while !(replied && idle) {
        let message = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("an answer within a minute")
            .expect("the socket is open")
            .expect("a frame");
        let WsMessage::Text(text) = message else {
            continue;
        };
        let msg: Value = serde_json::from_str(&text).expect("a message");
        if msg["parent_header"]["msg_id"] != msg_id.as_str() {
            continue;
        }
        let kind = msg["header"]["msg_type"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        replied |= kind.ends_with("_reply");
        idle |= kind == "status" && msg["content"]["execution_state"] == "idle";
        seen.push((kind, msg["content"].clone()));
    }
    seen
}

/// The content of the one message of `msg_type` among `seen`.
fn the<'a>(seen: &'a [(String, Value)], msg_type: &str) -> &'a Value {
    let found: Vec<&Value> = seen
        .iter()
        .filter(|(kind, _)| kind == msg_type)
        .map(|(_, content)| content)
        .collect();
    assert_eq!(found.len(), 1, "one {msg_type} in {seen:?}");
    found[0]
}

/// A kernel started with the second interpreter's spec runs on it — its kernel_info says its
/// version, `sys.executable` is its path — and keeps it through restarts over REST and over
/// the control channel; nbclient through jupyter_server's `GatewayKernelManager` picks it by
/// name too.
#[tokio::test]
async fn a_kernel_of_another_spec_runs_on_its_interpreter() {
    let server = server_with_two_interpreters();
    let (_, second) = two_pythons();
    let version = common::version_of(&second);
    let api = Api::new(&server.base);
    let (status, kernel) = api
        .post("/api/kernels", json!({"name": "python3-second"}))
        .await;
    assert_eq!(status, 201, "{kernel}");
    assert_eq!(kernel["name"], "python3-second", "{kernel}");
    let id = kernel["id"].as_str().expect("id").to_owned();
    let session = session_of(&id);
    let (status, info) = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        info["python"],
        json!({"name": "second", "version": version}),
        "{info}"
    );

    let url = format!(
        "{}/api/kernels/{id}/channels",
        server.base.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("the channels connect");
    let info = ask(&mut ws, "shell", "kernel_info_request", json!({})).await;
    let info = the(&info, "kernel_info_reply");
    assert_eq!(info["language_info"]["version"], version.as_str(), "{info}");
    assert_eq!(
        info["banner"],
        format!("Python {version} on replpool (interpreter second)"),
        "{info}"
    );
    let executable = json!({"text/plain": format!("'{}'", second.display())});
    let which = "import sys\nsys.executable";
    let ran = ask(&mut ws, "shell", "execute_request", json!({"code": which})).await;
    assert_eq!(the(&ran, "execute_result")["data"], executable, "{ran:?}");

    // Restarted over REST: a fresh namespace, the same spec and interpreter.
    ask(
        &mut ws,
        "shell",
        "execute_request",
        json!({"code": "x = 1"}),
    )
    .await;
    let (status, restarted) = api
        .post(&format!("/api/kernels/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, 200, "{restarted}");
    assert_eq!(restarted["name"], "python3-second", "{restarted}");
    let ran = ask(
        &mut ws,
        "shell",
        "execute_request",
        json!({"code": format!("print('x' in dir())\n{which}")}),
    )
    .await;
    assert_eq!(
        the(&ran, "stream"),
        &json!({"name": "stdout", "text": "False\n"}),
        "{ran:?}"
    );
    assert_eq!(the(&ran, "execute_result")["data"], executable, "{ran:?}");

    // Restarted over the control channel: the same.
    let restart = ask(
        &mut ws,
        "control",
        "shutdown_request",
        json!({"restart": true}),
    )
    .await;
    assert_eq!(
        the(&restart, "shutdown_reply"),
        &json!({"status": "ok", "restart": true})
    );
    let ran = ask(&mut ws, "shell", "execute_request", json!({"code": which})).await;
    assert_eq!(the(&ran, "execute_result")["data"], executable, "{ran:?}");
    let info = ask(&mut ws, "control", "kernel_info_request", json!({})).await;
    assert_eq!(
        the(&info, "kernel_info_reply")["language_info"]["version"],
        version.as_str()
    );
    drop(ws);
    let (status, model) = api.get(&format!("/api/kernels/{id}")).await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["name"], "python3-second", "{model}");
    assert_eq!(api.delete(&format!("/api/kernels/{id}")).await, 204);

    // nbclient through jupyter_server's GatewayKernelManager, on the second spec.
    let base = server.base.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    let result = tokio::task::spawn_blocking(move || {
        run_clients_with("nbclient-spec", &base, "-", &["python3-second"], &path)
    })
    .await
    .expect("the client ran");
    assert_eq!(
        result["outputs"],
        json!([{"output_type": "execute_result", "execution_count": 1,
                "mime": ["text/plain"], "text/plain": format!("'{}'", second.display())}]),
        "{result}"
    );
    // The kernel it ran in was a session of the second interpreter's, shut down after.
    let (status, kernels) = api.get("/api/kernels").await;
    assert_eq!(status, 200, "{kernels}");
    assert_eq!(kernels, json!([]), "{kernels}");
}
