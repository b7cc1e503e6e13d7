//! A real replpool server for integration tests: the built binary, real Python workers, real
//! HTTP on a free loopback port.
//!
//! Most tests share one server per test binary ([`shared`]), since every start pays the
//! preload; tests that need their own configuration start a [`Server`] of their own, which is
//! ended (by pid) when it drops.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod launcher;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The interpreter the tests' workers use: the project's venv unless overridden.
pub fn python() -> PathBuf {
    std::env::var_os("REPLPOOL_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// Whether the sandbox can be tested here (the server changes user, makes namespaces and
/// cgroups only as root); says on stderr that the calling test is skipped when it cannot.
/// Written to the stderr stream itself, not through `eprintln!`, which the test harness
/// captures and shows only for a failing test.
#[track_caller]
pub fn root() -> bool {
    use std::io::Write;
    let root = nix::unistd::geteuid().is_root();
    if !root {
        let _ = writeln!(
            std::io::stderr(),
            "skipped ({}): needs root, as the sandbox does",
            std::panic::Location::caller()
        );
    }
    root
}

/// A config file for a test server: a `[python]` section pointing at the test interpreter,
/// then `extra`. The server is on the host network unless `extra` says otherwise: only
/// root may make the namespace of `sandbox.network = "none"`, and tests that are not about
/// the sandbox run as anyone.
pub fn write_config(dir: &std::path::Path, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let mut table: toml::Table = extra.parse().expect("test config is TOML");
    let sandbox = table
        .entry("sandbox")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(sandbox) = sandbox {
        sandbox
            .entry("network")
            .or_insert_with(|| toml::Value::String("host".into()));
        // The blockers' sockets must be in the workers' filesystem view.
        sandbox.entry("expose").or_insert_with(|| {
            toml::Value::Array(vec![toml::Value::String(
                blocker_parent().display().to_string(),
            )])
        });
    }
    let python_section = table
        .entry("python")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(section) = python_section {
        section
            .entry("executable")
            .or_insert_with(|| toml::Value::String(python().display().to_string()));
    }
    let text = toml::to_string(&table).expect("test config serializes");
    std::fs::write(&path, text).expect("write test config");
    path
}

pub struct Server {
    child: std::process::Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server with `extra` config TOML (see [`write_config`]), and waits until it
    /// listens.
    pub fn start(extra: &str) -> Server {
        Server::start_with_env(extra, &[])
    }

    /// A server that runs as an unprivileged user: as `nobody` (with what it needs made
    /// reachable: `tests/unprivileged/launch.py`) when the tests run as root, else as the
    /// tests' own user.
    pub fn start_unprivileged(extra: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), extra);
        let wrapper = unprivileged_wrapper(dir.path(), &config);
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_replpool"));
        let launched = launcher::launch_through(&wrapper, binary, &config, &[])
            .expect("start replpool unprivileged");
        Server {
            child: launched.child,
            base: launched.base,
            _dir: dir,
        }
    }

    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), extra);
        let launched = launcher::launch(
            std::path::Path::new(env!("CARGO_BIN_EXE_replpool")),
            &config,
            env,
        )
        .expect("start replpool");
        Server {
            child: launched.child,
            base: launched.base,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits for the server to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        launcher::wait_exit(&mut self.child, within)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        launcher::stop(&mut self.child, Duration::from_secs(10));
        // A server killed by the test (kill -9) could not remove its own state directory.
        if let Some(dir) = state_dir_of(self.child.id()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What runs a command as an unprivileged user: empty when the tests are not root; as root,
/// `tests/unprivileged/launch.py` in a mount namespace of its own, as `nobody`, with the
/// server binary, `dir` (holding `config`), the blockers' directory and the test interpreter
/// made reachable. The command follows the returned arguments.
pub fn unprivileged_wrapper(
    dir: &std::path::Path,
    config: &std::path::Path,
) -> Vec<std::ffi::OsString> {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        return Vec::new();
    }
    for (path, mode) in [(dir, 0o755), (config, 0o644)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let launch = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/unprivileged/launch.py");
    let mut wrapper: Vec<std::ffi::OsString> = vec![
        "unshare".into(),
        "--mount".into(),
        "--".into(),
        python().into(),
        launch.into(),
        "nobody".into(),
        env!("CARGO_BIN_EXE_replpool").into(),
        dir.into(),
        blocker_parent().into(),
    ];
    wrapper.extend(python_installation().into_iter().map(Into::into));
    wrapper.push("--".into());
    wrapper
}

/// The test interpreter's installation: its prefixes and the real executable.
fn python_installation() -> Vec<PathBuf> {
    let output = std::process::Command::new(python())
        .args([
            "-c",
            "import os, sys; print(sys.prefix); print(sys.base_prefix); print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("ask the test interpreter where it lives");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// Whether this machine lets an unprivileged user make user namespaces (what a server that
/// is not root needs for its isolation); says on stderr that the calling test is skipped when
/// it does not.
#[track_caller]
pub fn user_namespaces() -> bool {
    use std::io::Write;
    let allowed = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .map_or(true, |n| n.trim() != "0")
        && std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
            .map_or(true, |n| n.trim() != "0");
    if !allowed {
        let _ = writeln!(
            std::io::stderr(),
            "skipped ({}): this machine allows no unprivileged user namespaces",
            std::panic::Location::caller()
        );
    }
    allowed
}

/// The state directory of the server `pid`: the one whose `server.lock` holds that pid.
pub fn state_dir_of(pid: u32) -> Option<PathBuf> {
    let entries = std::fs::read_dir(std::env::temp_dir()).ok()?;
    entries.flatten().map(|e| e.path()).find(|dir| {
        dir.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("replpool-"))
            && std::fs::read_to_string(dir.join("server.lock"))
                .is_ok_and(|text| text.trim() == pid.to_string())
    })
}

/// The server shared by the tests of one binary.
///
/// It is started from a thread that lives as long as the test process, because the death
/// signal that ends the server with the tests is tied to the thread that started it, and test
/// threads end with their test.
pub fn shared() -> &'static str {
    shared_with("[pool]\nwarm_workers = 2\n")
}

/// The shared server of a test binary whose tests need a configuration of their own; the
/// first call's `config` wins.
pub fn shared_with(config: &'static str) -> &'static str {
    &shared_server(config).base
}

/// What the tests know of a shared server.
pub struct Shared {
    pub base: String,
    pub pid: u32,
}

/// [`shared_with`], with the server's pid.
pub fn shared_server(config: &'static str) -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    start_shared(&SHARED, config, Server::start)
}

/// The shared unprivileged server of a test binary: see [`Server::start_unprivileged`].
pub fn shared_unprivileged(config: &'static str) -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    start_shared(&SHARED, config, Server::start_unprivileged)
}

fn start_shared(
    cell: &'static OnceLock<Shared>,
    config: &'static str,
    start: fn(&str) -> Server,
) -> &'static Shared {
    cell.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let server = start(config);
            tx.send(Shared {
                base: server.base.clone(),
                pid: server.pid(),
            })
            .expect("send base url");
            // Never returns: the server lives until the test process exits.
            let _server = server;
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("shared server started")
    })
}

/// A small HTTP client with the helpers the tests use. One per test: a client's connections
/// belong to the runtime of the test that made them.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// A client that sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(base: &str, token: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .expect("a header-safe token");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        Api {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request sent");
        decode(response).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        decode(response).await
    }

    pub async fn delete(&self, path: &str) -> u16 {
        let response = self
            .http
            .delete(self.url(path))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        if let Ok(body) = serde_json::from_str::<Value>(&text) {
            assert_categorized(status, &body);
        }
        status
    }

    /// Uploads a file into a session (`PUT …/files/{path}`): the status and the JSON body
    /// (null when there is none).
    pub async fn put_file(&self, session: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .http
            .put(self.url(&format!("/v1/sessions/{session}/files/{path}")))
            .body(body)
            .send()
            .await
            .expect("upload sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_categorized(status, &body);
        (status, body)
    }

    /// Sends `request` (one that makes a session and runs a cell held by `blocker`), goes
    /// away while the cell is held, then lets it go: returns whether the session the request
    /// made ended all the same. Checks on the way that exactly that session was alive.
    pub async fn leave_mid_cell(
        &self,
        request: reqwest::RequestBuilder,
        blocker: &Blocker,
    ) -> bool {
        let client = tokio::spawn(async move { request.send().await });
        let release = blocker.accept().await;
        client.abort();
        let _ = client.await;
        let (_, sessions) = self.get("/v1/sessions").await;
        assert_eq!(
            sessions["sessions"].as_array().map(Vec::len),
            Some(1),
            "{sessions}"
        );
        drop(release);
        eventually_some(Duration::from_secs(10), || async move {
            (self.get("/v1/sessions").await.1["sessions"] == serde_json::json!([])).then_some(())
        })
        .await
        .is_some()
    }

    /// Creates a session and returns its id.
    pub async fn session(&self) -> String {
        let (status, body) = self.post("/v1/sessions", serde_json::json!({})).await;
        assert_eq!(status, 201, "create session: {body}");
        body["session_id"].as_str().expect("session_id").to_owned()
    }

    /// Executes code in a session; the reply with `duration_ms` checked and removed, so the
    /// rest can be compared exactly.
    pub async fn exec(&self, session: &str, body: Value) -> Value {
        let (status, reply) = self
            .post(&format!("/v1/sessions/{session}/execute"), body)
            .await;
        assert_eq!(status, 200, "execute: {reply}");
        without_duration(reply)
    }

    pub async fn run(&self, session: &str, code: &str) -> Value {
        self.exec(session, serde_json::json!({ "code": code }))
            .await
    }
}

async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body ({e}): {text}"))
    };
    assert_categorized(status, &value);
    (status, value)
}

/// Every kind of failure an error reply may say it was (`category`).
pub const CATEGORIES: [&str; 13] = [
    "syntax",
    "runtime",
    "timeout",
    "interrupted",
    "memory",
    "cpu_limit",
    "output_limit",
    "disk_quota",
    "worker_died",
    "install",
    "unavailable",
    "request",
    "internal",
];

/// That every error in a reply says what kind it was, and nothing else says it failed: every
/// reply the tests get through [`Api`] passes here, so the whole suite checks it. An HTTP error
/// (`{"error": {"code", …}}`, python-executor's `{"error": "message"}`) has a `category`;
/// inside any body, an execution reply (`execution_count`), a script wrapper's `{"status":
/// "error"}`, a python-executor result that did not exit cleanly and a judge case that timed
/// out have one, and an execution that ended well has none.
#[track_caller]
pub fn assert_categorized(status: u16, body: &Value) {
    let is_category = |c: &Value| c.as_str().is_some_and(|c| CATEGORIES.contains(&c));
    if !(200..300).contains(&status) {
        let category = match &body["error"] {
            Value::Object(error) => error.get("category"),
            Value::String(_) => body.get("category"),
            _ => None,
        };
        // `/readyz`'s 503 is a state, not an error reply.
        if !body["error"].is_null() {
            assert!(
                category.is_some_and(is_category),
                "an error reply ({status}) without a category from the list: {body}"
            );
        }
    }
    let mut pending = vec![body];
    while let Some(value) = pending.pop() {
        match value {
            Value::Array(items) => pending.extend(items),
            Value::Object(object) => {
                let status = object.get("status").and_then(Value::as_str);
                let failed = if object.contains_key("execution_count") {
                    status.map(|s| s != "ok")
                } else if object.contains_key("execution_id") && status.is_some() {
                    Some(
                        matches!(status, Some("failed" | "killed"))
                            || object.get("exit_code").and_then(Value::as_i64) > Some(0),
                    )
                } else if status == Some("error")
                    || object.get("timed_out") == Some(&Value::Bool(true))
                {
                    Some(true)
                } else {
                    None
                };
                match (failed, object.get("category")) {
                    (Some(true), category) => assert!(
                        category.is_some_and(is_category),
                        "a failure without a category from the list: {value}"
                    ),
                    (Some(false), Some(category)) if object.contains_key("execution_count") => {
                        panic!("an execution that ended well has a category ({category}): {value}")
                    }
                    _ => {}
                }
                pending.extend(object.values());
            }
            _ => {}
        }
    }
}

/// Removes `duration_ms` and `cpu_ms` after checking they are sane numbers (`cpu_ms` is null
/// when the worker did not answer).
pub fn without_duration(mut reply: Value) -> Value {
    let duration = reply["duration_ms"]
        .as_f64()
        .expect("duration_ms is a number");
    assert!(duration >= 0.0, "duration_ms {duration}");
    let object = reply.as_object_mut().expect("reply is an object");
    let cpu_ms = object.remove("cpu_ms").expect("cpu_ms in every reply");
    assert!(
        cpu_ms.is_null() || cpu_ms.as_f64().is_some_and(|ms| ms >= 0.0),
        "cpu_ms {cpu_ms}"
    );
    object.remove("duration_ms");
    reply
}

/// The reply of a successful cell with the given fields; everything else at its default.
pub fn ok_reply(count: u64, overrides: Value) -> Value {
    let mut reply = serde_json::json!({
        "status": "ok", "execution_count": count, "stdout": "", "stderr": "",
        "result": null, "display": [], "error": null, "mode": "warm",
        "truncated": false, "session_reset": false,
    });
    if let (Some(reply), Some(overrides)) = (reply.as_object_mut(), overrides.as_object()) {
        for (k, v) in overrides {
            reply.insert(k.clone(), v.clone());
        }
    }
    reply
}

/// A process seen in `/proc`.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub state: char,
}

fn read_proc(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(Proc {
        pid,
        ppid,
        comm,
        state,
    })
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every live process started by the server `server_pid` or by its workers: workers carry
/// `REPLPOOL_SERVER_PID` in their environment, and whatever they start inherits it.
pub fn processes_of(server_pid: u32) -> Vec<Proc> {
    let marker = format!("REPLPOOL_SERVER_PID={server_pid}");
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
                .unwrap_or(false)
        })
        .filter_map(read_proc)
        .filter(|p| p.state != 'Z')
        .collect()
}

/// Live children of `parent`.
pub fn children_of(parent: u32) -> Vec<Proc> {
    all_pids()
        .into_iter()
        .filter_map(read_proc)
        .filter(|p| p.ppid == parent && p.state != 'Z')
        .collect()
}

/// Zombie children of `parent`.
pub fn zombies_of(parent: u32) -> Vec<Proc> {
    all_pids()
        .into_iter()
        .filter_map(read_proc)
        .filter(|p| p.ppid == parent && p.state == 'Z')
        .collect()
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// True when the process is gone, or a zombie whose threads have all exited too (the leader
/// shows `Z` while its other threads may still be tearing down the address space).
pub fn is_dead(pid: u32) -> bool {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    read_proc(pid).is_none_or(|p| (p.state == 'Z' || p.state == 'X') && threads <= 1)
}

/// Polls `condition` until it holds or `within` passes; returns whether it held. For waiting
/// on other processes, which give no event to wait for.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    eventually_some(within, || std::future::ready(condition().then_some(())))
        .await
        .is_some()
}

/// Polls `probe` until it gives a value or `within` passes: [`eventually`] for what takes a
/// request (or another await) to look at. The tests' one polling loop.
pub async fn eventually_some<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Api {
    /// Creates, uses and deletes `n` sessions, one after another.
    pub async fn churn(&self, n: usize) {
        for i in 0..n {
            let s = self.session().await;
            assert_eq!(self.run(&s, &format!("{i} + 1")).await["status"], "ok");
            assert_eq!(self.delete(&format!("/v1/sessions/{s}")).await, 204);
        }
    }

    /// Waits until the server's pool holds `ready` idle workers.
    pub async fn wait_for_pool(&self, ready: u64) {
        let health = eventually_some(Duration::from_secs(60), || async move {
            let (_, health) = self.get("/healthz").await;
            (health["pool"]["ready"].as_u64() == Some(ready)).then_some(())
        })
        .await;
        assert!(health.is_some(), "the pool never held {ready}");
    }

    /// Waits until the session has `pending` executions running or queued.
    pub async fn wait_for_pending(&self, session: &str, pending: u64) {
        let path = format!("/v1/sessions/{session}");
        let path = &path;
        let reached = eventually_some(Duration::from_secs(60), || async move {
            let (_, info) = self.get(path).await;
            (info["pending"].as_u64() == Some(pending)).then_some(())
        })
        .await;
        assert!(reached.is_some(), "session never reached {pending} pending");
    }
}

/// Holds a cell until the test lets it go: see [`blocker`].
pub struct Blocker {
    listener: tokio::net::UnixListener,
    _dir: tempfile::TempDir,
}

impl Blocker {
    /// The connection of the next blocked cell; writing a byte to it (or dropping it) lets
    /// the cell finish.
    pub async fn accept(&self) -> tokio::net::UnixStream {
        self.listener.accept().await.expect("blocker connected").0
    }

    /// Whether a connection is waiting to be accepted now (accepting it, and letting it go):
    /// the listening socket is non-blocking, so this asks the kernel, without waiting.
    #[allow(dead_code)] // not every test binary asks
    pub fn has_waiting(&self) -> bool {
        use std::os::fd::AsRawFd;
        match nix::sys::socket::accept(self.listener.as_raw_fd()) {
            Ok(fd) => {
                let _ = nix::unistd::close(fd);
                true
            }
            Err(nix::errno::Errno::EAGAIN) => false,
            Err(e) => panic!("accept on the blocker: {e}"),
        }
    }
}

/// What `python -c 'import sys; print(sys.version.split()[0])'` says (`3.11.7`).
#[allow(dead_code)] // not every test binary has several Pythons
pub fn version_of(python: &std::path::Path) -> String {
    let output = std::process::Command::new(python)
        .args(["-c", "import sys; print(sys.version.split()[0])"])
        .output()
        .expect("run the interpreter");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// uv, as the Makefile installs it into the venv (bootstrap/tools-requirements.txt), or
/// `REPLPOOL_TEST_UV`.
#[allow(dead_code)] // not every test binary installs
pub fn uv() -> PathBuf {
    std::env::var_os("REPLPOOL_TEST_UV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/uv"))
}

/// Where blockers' sockets live (made if missing): a directory everyone may enter, exposed
/// in every test server's filesystem view (see [`write_config`]). Not under /tmp or /var/tmp,
/// which a worker has of its own: under /run/replpool-tests when root (where workers change
/// user), else in the temp dir (bound back into a worker's own /tmp).
pub fn blocker_parent() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let parent = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/replpool-tests")
    } else {
        std::env::temp_dir().join(format!("replpool-tests-{}", nix::unistd::getuid()))
    };
    std::fs::create_dir_all(&parent).expect("create the blockers' directory");
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    parent
}

/// Python that blocks until the test writes a byte to the returned blocker's connection: a
/// way to hold a session busy for exactly as long as a test needs, without sleeping. A Unix
/// socket in a directory everyone may enter ([`blocker_parent`]), so that it reaches a worker
/// in its own network namespace and filesystem view, running as another user.
pub async fn blocker() -> (Blocker, String) {
    use std::os::unix::fs::PermissionsExt;
    let parent = blocker_parent();
    let dir = tempfile::Builder::new()
        .tempdir_in(&parent)
        .expect("tempdir for the blocker");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.path().join("blocker.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let code = format!(
        "import socket\nwith socket.socket(socket.AF_UNIX) as c:\n    c.connect({path:?})\n    c.recv(1)",
        path = path.display().to_string()
    );
    (
        Blocker {
            listener,
            _dir: dir,
        },
        code,
    )
}

/// That two sessions share neither loopback services, abstract unix sockets nor SysV IPC:
/// what one offers, the other cannot reach.
pub async fn assert_no_loopback_or_ipc_shared(api: &Api) {
    let (a, b) = (api.session().await, api.session().await);
    let port = value_of(api, &b, OFFER).await;
    assert_eq!(
        value_of(api, &b, &reach(&port)).await,
        "['tcp', 'unix', 'shm']"
    );
    assert_eq!(value_of(api, &a, &reach(&port)).await, "[]");
}

/// Python for the session that offers: a TCP service on loopback, an abstract unix socket and
/// a SysV shared memory segment, each a way for another session to reach it if they shared a
/// network or IPC namespace. Gives the TCP port.
pub const OFFER: &str = "import socket, ctypes\n\
    tcp = socket.create_server(('127.0.0.1', 0))\n\
    unix = socket.socket(socket.AF_UNIX)\n\
    unix.bind('\\0replpool-test-offer')\n\
    unix.listen()\n\
    libc = ctypes.CDLL(None, use_errno=True)\n\
    segment = libc.shmget(0x5eed17, 4096, 0o1666)\n\
    assert segment >= 0, ctypes.get_errno()\n\
    tcp.getsockname()[1]";

/// Python for the other session: what of the offer it reaches.
pub fn reach(port: &str) -> String {
    format!(
        "import socket, ctypes\n\
         reached = []\n\
         try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n    reached.append('tcp')\n\
         except OSError:\n    pass\n\
         try:\n    c = socket.socket(socket.AF_UNIX)\n    c.connect('\\0replpool-test-offer')\n    reached.append('unix')\n\
         except OSError:\n    pass\n\
         if ctypes.CDLL(None).shmget(0x5eed17, 0, 0) >= 0:\n    reached.append('shm')\n\
         reached"
    )
}

/// The `ename` of a reply's error ("" without one).
pub fn ename(reply: &Value) -> &str {
    reply["error"]["ename"].as_str().unwrap_or("")
}

/// Runs `code` in `session`, which must succeed, and gives its value's `text/plain`.
pub async fn value_of(api: &Api, session: &str, code: &str) -> String {
    let reply = api.run(session, code).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    reply["result"]["text/plain"]
        .as_str()
        .unwrap_or_else(|| panic!("a value: {reply}"))
        .to_owned()
}

/// The port of a server's base URL.
pub fn port_of(base: &str) -> u16 {
    base.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("port in base url")
}

/// That `session` of the server at `base` reaches nothing but its own loopback: not the
/// server's port; `lo` is its only interface, and up.
pub async fn assert_only_loopback(api: &Api, session: &str, base: &str) {
    let port = port_of(base);
    let reply = api
        .run(
            session,
            &format!("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)"),
        )
        .await;
    assert_eq!(ename(&reply), "ConnectionRefusedError", "{reply}");
    assert_eq!(
        value_of(api, session, "socket.if_nameindex()").await,
        "[(1, 'lo')]"
    );
    let echoed = value_of(
        api,
        session,
        "server = socket.create_server(('127.0.0.1', 0))\n\
         client = socket.create_connection(server.getsockname())\n\
         peer, _ = server.accept()\n\
         client.sendall(b'hi')\n\
         peer.recv(2)",
    )
    .await;
    assert_eq!(echoed, "b'hi'");
}

/// That what lies outside the workers' filesystem view (the checkout's source, the host's
/// secrets and homes, logs, /sys) and `more` does not exist for `session`'s code.
pub async fn assert_outside_the_view(api: &Api, session: &str, more: &[&str]) {
    let checkout = env!("CARGO_MANIFEST_DIR");
    let mut hidden: Vec<String> = vec![
        format!("{checkout}/src"),
        format!("{checkout}/Cargo.toml"),
        "/etc/shadow".into(),
        "/root/.bashrc".into(),
        "/var/log".into(),
        "/sys".into(),
    ];
    hidden.extend(more.iter().map(|p| (*p).to_owned()));
    let code = format!("import os\n[p for p in {hidden:?} if os.path.lexists(p)]");
    assert_eq!(value_of(api, session, &code).await, "[]");
}

/// python-executor: a tar archive of `files`; names are written as they are (even `../x`), as a hostile client
/// could.
pub fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, content.as_bytes()).expect("append");
    }
    builder.into_inner().expect("tar")
}

/// python-executor: `files` and `metadata` posted as multipart to `route` (`/api/v1/exec/sync`
/// or `/exec/async`).
pub async fn submit(
    api: &Api,
    route: &str,
    files: &[(&str, &str)],
    metadata: Value,
) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .part(
            "tar",
            reqwest::multipart::Part::bytes(tar_of(files)).file_name("files.tar"),
        )
        .text("metadata", metadata.to_string());
    let response = api
        .http
        .post(api.url(route))
        .multipart(form)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let body = response.json().await.expect("JSON body");
    assert_categorized(status, &body);
    (status, body)
}
