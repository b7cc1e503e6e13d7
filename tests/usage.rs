//! What a session used (its info's `cpu_seconds`, `memory_peak_bytes`, `executions`,
//! `files_bytes`; each reply's `cpu_ms`), and the server's log as JSON lines.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Api, Server, eventually_some, shared};
use serde_json::{Value, json};

/// Python that uses `seconds` of CPU time of its own process, whatever the machine's speed.
fn burn(seconds: f64) -> String {
    format!(
        "import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}:\n    pass"
    )
}

/// The full reply to `code` (with its `cpu_ms`, which `Api::run` leaves out).
async fn execute(api: &Api, session: &str, code: &str) -> Value {
    let (status, reply) = api
        .post(
            &format!("/v1/sessions/{session}/execute"),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], "ok", "{reply}");
    reply
}

/// The session's info once its files were measured (where a walk measures them, it follows
/// the reply).
async fn info_with_files(api: &Api, session: &str) -> Value {
    let path = format!("/v1/sessions/{session}");
    let path = &path;
    eventually_some(Duration::from_secs(10), || async move {
        let (status, info) = api.get(path).await;
        assert_eq!(status, 200, "{info}");
        (!info["files_bytes"].is_null()).then_some(info)
    })
    .await
    .expect("the session's files were measured")
}

#[tokio::test]
async fn a_session_tells_what_it_used_and_each_reply_what_its_cell_used() {
    let api = Api::new(shared());
    let s = api.session().await;
    let (_, info) = api.get(&format!("/v1/sessions/{s}")).await;
    assert_eq!(info["executions"], 0, "{info}");

    let reply = execute(&api, &s, &burn(0.3)).await;
    let cpu_ms = reply["cpu_ms"].as_f64().expect("cpu_ms");
    assert!(cpu_ms >= 300.0, "{reply}");
    // A process the cell started and waited for is the cell's CPU time too.
    let child = format!(
        "import subprocess, sys\nsubprocess.run([sys.executable, '-c', {:?}], check=True)",
        burn(0.3)
    );
    let reply = execute(&api, &s, &child).await;
    let cpu_ms = reply["cpu_ms"].as_f64().expect("cpu_ms");
    assert!(cpu_ms >= 300.0, "{reply}");
    execute(&api, &s, "b = b'x' * (200 << 20)").await;
    execute(&api, &s, "open('f.bin', 'wb').write(b'x' * (1 << 20))").await;

    let info = info_with_files(&api, &s).await;
    assert_eq!(info["executions"], 4, "{info}");
    assert!(
        info["cpu_seconds"].as_f64().expect("cpu_seconds") >= 0.6,
        "{info}"
    );
    assert!(
        info["memory_peak_bytes"]
            .as_u64()
            .expect("memory_peak_bytes")
            >= 200 << 20,
        "{info}"
    );
    assert!(
        info["files_bytes"].as_u64().expect("files_bytes") >= 1 << 20,
        "{info}"
    );
    // The list says the same of it.
    let (_, list) = api.get("/v1/sessions").await;
    let listed = list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|i| i["session_id"] == s.as_str())
        .expect("listed");
    assert_eq!(listed["executions"], 4, "{listed}");
}

#[tokio::test]
async fn without_cgroups_a_lost_workers_use_still_counts() {
    let server = Server::start("[pool]\nwarm_workers = 1\n\n[sandbox]\ncgroups = false\n");
    let api = Api::new(&server.base);
    let s = api.session().await;
    execute(&api, &s, &burn(0.3)).await;
    let (status, died) = api
        .post(
            &format!("/v1/sessions/{s}/execute"),
            json!({"code": "import os\nos._exit(1)"}),
        )
        .await;
    assert_eq!((status, &died["category"]), (200, &json!("worker_died")));
    assert_eq!(died["cpu_ms"], Value::Null, "{died}");
    execute(&api, &s, "1 + 1").await;
    let info = info_with_files(&api, &s).await;
    assert_eq!(info["executions"], 3, "{info}");
    assert!(
        info["cpu_seconds"].as_f64().expect("cpu_seconds") >= 0.3,
        "{info}"
    );
    assert!(
        info["memory_peak_bytes"]
            .as_u64()
            .expect("memory_peak_bytes")
            > 0,
        "{info}"
    );
}

/// A server whose stderr goes to a file; SIGTERM then SIGKILL when dropped.
struct LoggingServer {
    child: Child,
    base: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggingServer {
    fn start(args: &[&str], env: &[(&str, &str)]) -> LoggingServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = common::write_config(dir.path(), "[pool]\nwarm_workers = 1\n");
        let log = dir.path().join("stderr.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_replpool"));
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--config"])
            .arg(&config)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        // SAFETY: prctl is async-signal-safe; the server dies with the test.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start replpool");
        let stdout = child.stdout.take().expect("stdout");
        let mut server = LoggingServer {
            child,
            base: String::new(),
            log,
            _dir: dir,
        };
        let mut lines = BufReader::new(stdout).lines();
        server.base = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("listening on ").map(str::to_owned))
            .expect("the server listens");
        std::thread::spawn(move || for _ in lines {});
        server
    }

    /// Every line of the log so far, each parsed as JSON (a line that is not fails the test).
    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .expect("the log")
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }
}

impl Drop for LoggingServer {
    fn drop(&mut self) {
        common::launcher::stop(&mut self.child, Duration::from_secs(10));
    }
}

/// The first log line whose message is `message`, once there is one.
async fn logged(server: &LoggingServer, message: &str) -> Value {
    eventually_some(Duration::from_secs(10), || {
        let found = server
            .lines()
            .into_iter()
            .find(|line| line["fields"]["message"] == message);
        std::future::ready(found)
    })
    .await
    .unwrap_or_else(|| panic!("no {message:?} in the log: {:?}", server.lines()))
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_fields_of_their_spans() {
    let server = LoggingServer::start(&["--log-format", "json"], &[("REPLPOOL_LOG", "info")]);
    let api = Api::new(&server.base);
    let s = api.session().await;
    let (status, reply) = api
        .post(
            &format!("/v1/sessions/{s}/execute"),
            json!({"code": "import os\nos._exit(3)"}),
        )
        .await;
    assert_eq!((status, &reply["category"]), (200, &json!("worker_died")));

    let created = logged(&server, "session created").await;
    assert_eq!(created["fields"]["session"], s.as_str(), "{created}");
    assert_eq!(
        created["spans"],
        json!([{"name": "request", "method": "POST", "path": "/v1/sessions", "route": "/v1/sessions"}])
    );
    let ended = logged(&server, "execution ended by a limit or a failure").await;
    assert_eq!(ended["level"], "INFO", "{ended}");
    assert_eq!(ended["fields"]["category"], "worker_died", "{ended}");
    assert_eq!(
        ended["spans"],
        json!([
            {
                "name": "request",
                "method": "POST",
                "path": format!("/v1/sessions/{s}/execute"),
                "route": "/v1/sessions/{id}/execute",
            },
            {"name": "execution", "session": s.as_str(), "execution": 1},
        ]),
        "{ended}"
    );
}

#[tokio::test]
async fn log_format_json_from_the_configuration_does_the_same() {
    let server = LoggingServer::start(&[], &[("REPLPOOL_LOG_FORMAT", "json")]);
    let api = Api::new(&server.base);
    api.session().await;
    let created = logged(&server, "session created").await;
    assert_eq!(created["spans"][0]["route"], "/v1/sessions", "{created}");
}
