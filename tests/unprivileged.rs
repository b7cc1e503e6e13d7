//! A server that is not root: through user namespaces its workers still get no network but
//! loopback, a filesystem view of their own with a private /tmp, and a pid namespace each, so
//! that sessions, which share one uid, can neither read each other's files nor signal each
//! other's processes. When the tests run as root (CI does) the server runs as `nobody`
//! (`tests/unprivileged/launch.py`); otherwise as the tests' own user.
//!
//! The server runs with the default `[sandbox]` (only `network`, which the tests' helper
//! writes as "host" otherwise, is set back to the default "none").

mod common;

use common::{Api, ename, processes_of, shared_unprivileged, user_namespaces, value_of};
use serde_json::json;

const CONFIG: &str = "[pool]\nwarm_workers = 2\n\n[sandbox]\nnetwork = \"none\"\n";

fn base() -> &'static str {
    &shared_unprivileged(CONFIG).base
}

#[tokio::test]
async fn an_unprivileged_server_reports_isolation_through_user_namespaces() {
    if !user_namespaces() {
        return;
    }
    let api = Api::new(base());
    let (status, health) = api.get("/healthz").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(
        health["isolation"],
        json!({
            "users": "shared",
            "network": "none",
            "filesystem": "private",
            "processes": "private",
            "cgroups": "none",
            "via": "user-namespace"
        }),
        "{health}"
    );
    // And it runs as who it says: not root, and its workers as its own uid.
    let s = api.session().await;
    let uid = value_of(&api, &s, "import os; os.getuid()").await;
    assert_ne!(uid, "0");
}

#[tokio::test]
async fn its_workers_have_only_loopback() {
    if !user_namespaces() {
        return;
    }
    let api = Api::new(base());
    let s = api.session().await;
    common::assert_only_loopback(&api, &s, base()).await;
}

#[tokio::test]
async fn sessions_cannot_see_each_others_files_or_tmp() {
    if !user_namespaces() {
        return;
    }
    let api = Api::new(base());
    let (a, b) = (api.session().await, api.session().await);
    let path = value_of(
        &api,
        &b,
        "import os\nopen('secret.txt', 'w').write('b only')\nopen('/tmp/b.txt', 'w').write('b')\nos.path.abspath('secret.txt')",
    )
    .await;
    let path = path.trim_matches('\'');
    // The same uid, so permissions do not stand between them: the view does.
    let reply = api.run(&a, &format!("open({path:?}).read()")).await;
    assert_eq!(ename(&reply), "FileNotFoundError", "{reply}");
    let listing = value_of(
        &api,
        &a,
        "import os\n[os.path.basename(os.getcwd())] == os.listdir('..')",
    )
    .await;
    assert_eq!(listing, "True", "the sessions directory shows only its own");
    // Nor does the judge's scratch area show anything.
    let scratch = value_of(&api, &a, "os.listdir('../../scratch')").await;
    assert_eq!(scratch, "[]");
    let reply = api.run(&a, "open('/tmp/b.txt').read()").await;
    assert_eq!(ename(&reply), "FileNotFoundError", "{reply}");
    // Nor through another process's root in /proc.
    let reply = api
        .run(
            &a,
            &format!("import glob\n[p for p in glob.glob('/proc/*/root{path}')]"),
        )
        .await;
    assert_eq!(reply["result"]["text/plain"], "[]", "{reply}");
}

#[tokio::test]
async fn sessions_cannot_signal_or_see_each_others_processes() {
    if !user_namespaces() {
        return;
    }
    let shared = shared_unprivileged(CONFIG);
    let api = Api::new(&shared.base);
    let (a, b) = (api.session().await, api.session().await);
    let (status, info) = api.get(&format!("/v1/sessions/{b}")).await;
    assert_eq!(status, 200, "{info}");
    let b_pid = info["pid"].as_u64().expect("b's worker pid");
    assert!(
        processes_of(shared.pid)
            .iter()
            .any(|p| u64::from(p.pid) == b_pid),
        "b's worker {b_pid} is one of the server's processes"
    );
    // a's worker is the first process of its own pid namespace, and its /proc shows only it.
    assert_eq!(value_of(&api, &a, "import os; os.getpid()").await, "1");
    let pids = value_of(
        &api,
        &a,
        "sorted(int(p) for p in os.listdir('/proc') if p.isdigit())",
    )
    .await;
    assert_eq!(pids, "[1]", "a sees only its own worker");
    // The machine's pid of b's worker names nothing there.
    let reply = api
        .run(
            &a,
            &format!("import signal\nos.kill({b_pid}, signal.SIGKILL)"),
        )
        .await;
    assert_eq!(ename(&reply), "ProcessLookupError", "{reply}");
    assert_eq!(value_of(&api, &b, "'alive'").await, "'alive'");
}

#[tokio::test]
async fn paths_outside_the_view_do_not_exist_and_the_view_is_read_only() {
    if !user_namespaces() {
        return;
    }
    let api = Api::new(base());
    let s = api.session().await;
    common::assert_outside_the_view(&api, &s, &[]).await;
    // What it needs is there; what it may not change is read-only.
    let reply = api
        .run(
            &s,
            "import sys, errno\ntry:\n    open(os.path.join(sys.prefix, 'x'), 'w')\nexcept OSError as e:\n    r = errno.errorcode[e.errno]\nr",
        )
        .await;
    assert_eq!(reply["result"]["text/plain"], "'EROFS'", "{reply}");
    let reply = api
        .run(
            &s,
            "df = pd.DataFrame({'a': [1, 2]})\nplt.plot(df.a)\nint(df.a.sum())",
        )
        .await;
    assert_eq!(reply["result"]["text/plain"], "3", "{reply}");
    assert!(reply["display"][0]["image/png"].is_string(), "{reply}");
}

#[test]
fn a_requirement_that_cannot_be_met_refuses_to_start_and_says_why() {
    // Not root (as this server never is), so no uid per session can be had.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), "[sandbox]\nrequire = [\"users\"]\n");
    let wrapper = common::unprivileged_wrapper(dir.path(), &config);
    let binary = std::ffi::OsString::from(env!("CARGO_BIN_EXE_replpool"));
    let mut argv = wrapper;
    argv.push(binary);
    let output = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("REPLPOOL_LOG", "error")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run replpool");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].starts_with("Error: sandbox: sandbox.require has \"users\", but a uid per session needs the server to run as root"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sessions_share_no_loopback_sockets_or_ipc() {
    if !user_namespaces() {
        return;
    }
    common::assert_no_loopback_or_ipc_shared(&Api::new(base())).await;
}

#[tokio::test]
async fn a_fork_bomb_stops_at_limits_processes() {
    if !user_namespaces() {
        return;
    }
    // Sessions share the uid, and no pids cgroup holds them: each worker's own user namespace
    // counts its processes for RLIMIT_NPROC.
    let server = common::Server::start_unprivileged(
        "[pool]\nwarm_workers = 1\n\n[limits]\nprocesses = 32\n\n[sandbox]\nnetwork = \"none\"\n",
    );
    let api = Api::new(&server.base);
    let s = api.session().await;
    let outcome = value_of(
        &api,
        &s,
        "import os\n\
         r, w = os.pipe()\n\
         children, refused = [], None\n\
         for _ in range(100):\n    \
             try:\n        pid = os.fork()\n    \
             except BlockingIOError as e:\n        refused = type(e).__name__\n        break\n    \
             if pid == 0:\n        os.close(w)\n        os.read(r, 1)\n        os._exit(0)\n    \
             children.append(pid)\n\
         os.close(w)\n\
         for pid in children:\n    os.waitpid(pid, 0)\n\
         (len(children) < 32, refused)",
    )
    .await;
    assert_eq!(outcome, "(True, 'BlockingIOError')");
    // The session lives on, and so does another.
    assert_eq!(value_of(&api, &s, "1 + 1").await, "2");
    let other = api.session().await;
    assert_eq!(value_of(&api, &other, "2 + 2").await, "4");
}
