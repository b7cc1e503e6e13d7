//! Lifecycle, each on a server of its own: the session limit and LRU eviction, the queue
//! bound, idle eviction, the cold fallback when warm workers cannot start, and no process or
//! fd left behind — after deletes, after the server is killed, after SIGTERM.

mod common;

use std::time::Duration;

use common::{Api, Server, eventually, eventually_some, fd_count, processes_of, zombies_of};
use serde_json::json;

/// A server whose workers import nothing: they start in milliseconds, and these tests are
/// about processes, not imports. (`[python]` is written by the harness, so the preload comes
/// as an environment override.)
fn bare(extra: &str) -> Server {
    Server::start_with_env(extra, &[("REPLPOOL_PYTHON_PRELOAD", "[]")])
}

#[tokio::test]
async fn session_limit_evicts_the_least_recently_used_idle_session() {
    let server = bare("[sessions]\nmax = 2\nqueue_depth = 1\n\n[pool]\nwarm_workers = 1\n");
    let api = Api::new(&server.base);
    let a = api.session().await;
    let b = api.session().await;
    api.run(&a, "1").await; // b is now the least recently used
    let c = api.session().await;
    let (status, body) = api.get(&format!("/v1/sessions/{b}")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "session_not_found");
    assert_eq!(api.get(&format!("/v1/sessions/{a}")).await.0, 200);

    // Both sessions busy: a new one is refused, and nothing is evicted.
    let (listener, code) = common::blocker().await;
    let mut running = Vec::new();
    let mut conns = Vec::new();
    for s in [&a, &c] {
        let api2 = Api::new(&api.base);
        let (s2, code2) = (s.clone(), code.clone());
        running.push(tokio::spawn(async move { api2.run(&s2, &code2).await }));
        conns.push(listener.accept().await);
    }
    let (status, body) = api.post("/v1/sessions", json!({})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "too_many_sessions");
    assert_eq!(body["error"]["category"], "unavailable");

    // Queue depth 1: one running, one waiting, the next is refused.
    let waiting = {
        let api2 = Api::new(&api.base);
        let a2 = a.clone();
        tokio::spawn(async move { api2.run(&a2, "'waited'").await })
    };
    api.wait_for_pending(&a, 2).await;
    let (status, body) = api
        .post(&format!("/v1/sessions/{a}/execute"), json!({"code": "1"}))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "queue_full");

    use tokio::io::AsyncWriteExt;
    for mut conn in conns {
        conn.write_all(b"x").await.expect("release");
    }
    for task in running {
        assert_eq!(task.await.expect("task")["status"], "ok");
    }
    assert_eq!(
        waiting.await.expect("task")["result"]["text/plain"],
        "'waited'"
    );
}

#[tokio::test]
async fn idle_sessions_are_evicted() {
    let server = bare("[sessions]\nidle_ttl_secs = 1\n\n[pool]\nwarm_workers = 1\n");
    let api = Api::new(&server.base);
    let s = api.session().await;
    let (api, path) = (&api, &format!("/v1/sessions/{s}"));
    let gone = common::eventually_some(Duration::from_secs(5), || async move {
        (api.get(path).await.0 == 404).then_some(())
    })
    .await;
    assert!(gone.is_some(), "an idle session outlived its TTL");
}

#[tokio::test]
async fn without_warm_workers_everything_runs_cold_and_health_says_why() {
    let server = Server::start_with_env(
        "[pool]\nwarm_workers = 1\nacquire_timeout_ms = 500\n",
        &[(
            "REPLPOOL_PYTHON_PRELOAD",
            r#"["numpy as np", "no_such_module_for_replpool"]"#,
        )],
    );
    let api = Api::new(&server.base);
    let s = api.session().await;
    let reply = api.run(&s, "int(np.arange(4).sum())").await;
    assert_eq!(
        reply,
        common::ok_reply(1, json!({"result": {"text/plain": "6"}, "mode": "cold"}))
    );
    // A cold cell's variables do not persist, and the next reply says so.
    let reply = api.run(&s, "'again'").await;
    assert_eq!(reply["mode"], "cold");
    assert_eq!(reply["session_reset"], true);

    let (status, reply) = api
        .post("/v1/execute", json!({"code": "print('one-shot')"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply["mode"], "cold");
    assert_eq!(reply["stdout"], "one-shot\n");

    let (status, health) = api.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "degraded");
    let reason = health["reason"].as_str().expect("reason");
    assert!(reason.contains("no_such_module_for_replpool"), "{reason}");
}

/// `replpool_cold_starts_waiting` from /metrics.
async fn cold_starts_waiting(api: &Api) -> Option<f64> {
    let response = api.http.get(api.url("/metrics")).send().await.ok()?;
    let text = response.text().await.ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("replpool_cold_starts_waiting "))
        .and_then(|value| value.trim().parse().ok())
}

/// A server whose warm workers fail their preload, so that cells run cold, and whose cold
/// workers' preload waits on a blocker (`hold` is its code) until the test lets each go. The
/// modules' directory goes with the server.
fn server_of_held_cold_starts(pool: &str, hold: &str) -> (Server, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt;
    let modules = tempfile::Builder::new()
        .tempdir_in(common::blocker_parent())
        .expect("tempdir");
    std::fs::set_permissions(modules.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let module = modules.path().join("replpool_test_cold_hold.py");
    let code = format!(
        "import json, sys\n\
         if not json.loads(sys.argv[1]).get('cold'):\n    \
         raise ImportError('warm workers do not start in this test')\n\
         {hold}\n"
    );
    std::fs::write(&module, code).expect("write the module");
    std::fs::set_permissions(&module, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let server = Server::start_with_env(
        &format!("[pool]\nwarm_workers = 1\nacquire_timeout_ms = 100\n{pool}"),
        &[
            ("REPLPOOL_PYTHON_PRELOAD", r#"["replpool_test_cold_hold"]"#),
            ("PYTHONPATH", modules.path().to_str().expect("UTF-8 path")),
        ],
    );
    (server, modules)
}

#[tokio::test]
async fn cold_starts_wait_for_a_permit() {
    let (blocker, hold) = common::blocker().await;
    let (server, _modules) = server_of_held_cold_starts("cold_starts = 1\n", &hold);
    let api = Api::new(&server.base);
    let run = |session: String| {
        let api = Api::new(&server.base);
        tokio::spawn(async move { api.run(&session, "'ran'").await })
    };
    let (a, b) = (api.session().await, api.session().await);
    let (first, second) = (run(a), run(b));
    // One start holds the only permit; the other execution waits for one, and has started
    // nothing.
    let held = blocker.accept().await;
    let waiting = eventually_some(Duration::from_secs(30), || async {
        (cold_starts_waiting(&api).await == Some(1.0)).then_some(())
    })
    .await;
    assert!(waiting.is_some(), "the second cold start is not waiting");
    assert!(!blocker.has_waiting(), "two cold starts at once");
    drop(held);
    drop(blocker.accept().await);
    for cell in [first, second] {
        let reply = cell.await.expect("the cell");
        assert_eq!(
            (
                &reply["status"],
                &reply["mode"],
                &reply["result"]["text/plain"]
            ),
            (&json!("ok"), &json!("cold"), &json!("'ran'")),
            "{reply}"
        );
    }
    assert_eq!(cold_starts_waiting(&api).await, Some(0.0));
}

#[tokio::test]
async fn a_cell_interrupted_while_it_waits_for_a_cold_start_never_starts() {
    let (blocker, hold) = common::blocker().await;
    let (server, _modules) = server_of_held_cold_starts("cold_starts = 1\n", &hold);
    let api = Api::new(&server.base);
    let run = |session: &str, code: &'static str| {
        let api = Api::new(&server.base);
        let session = session.to_owned();
        tokio::spawn(async move { api.run(&session, code).await })
    };
    let (a, b) = (api.session().await, api.session().await);
    let first = run(&a, "'ran'");
    let held = blocker.accept().await;
    let second = run(&b, "open('started', 'w').close()");
    let waiting = eventually_some(Duration::from_secs(30), || async {
        (cold_starts_waiting(&api).await == Some(1.0)).then_some(())
    })
    .await;
    assert!(
        waiting.is_some(),
        "the second cell is not waiting for a start"
    );
    let (status, body) = api
        .post(&format!("/v1/sessions/{b}/interrupt"), json!({}))
        .await;
    assert_eq!((status, &body), (200, &json!({"interrupted": true})));
    // Answered while the first start is still held: it never waited for a start again.
    let reply = tokio::time::timeout(Duration::from_secs(60), second)
        .await
        .expect("the interrupted cell was not answered while the first start was held")
        .expect("the interrupted cell");
    assert_eq!(
        (
            &reply["status"],
            &reply["category"],
            &reply["error"]["ename"]
        ),
        (
            &json!("error"),
            &json!("interrupted"),
            &json!("KeyboardInterrupt")
        ),
        "{reply}"
    );
    assert!(!first.is_finished(), "the first start was let go early");
    assert_eq!(cold_starts_waiting(&api).await, Some(0.0));
    drop(held);
    assert_eq!(first.await.expect("the first cell")["status"], "ok");
    let (_, files) = api.get(&format!("/v1/sessions/{b}/files")).await;
    assert_eq!(files["files"], json!([]), "{files}");
}

#[tokio::test]
async fn an_install_in_a_cell_holds_no_cold_start() {
    // An index that takes connections and never answers: the install waits on it for as long
    // as the test wants.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("uv-cache-cold-{}", std::process::id()));
    let (blocker, hold) = common::blocker().await;
    let (server, _modules) = server_of_held_cold_starts(
        &format!(
            "cold_starts = 1\n\n[packages]\nuv = {:?}\ncache_dir = {:?}\n\
             index_url = \"http://127.0.0.1:{port}/simple\"\n",
            common::uv().display().to_string(),
            cache.display().to_string(),
        ),
        &hold,
    );
    let api = Api::new(&server.base);
    let (a, b) = (api.session().await, api.session().await);
    let installing = {
        let api = Api::new(&server.base);
        tokio::spawn(async move {
            api.exec(
                &a,
                json!({"code": "%pip install tabulate==0.9.0\nprint('ran')", "timeout_ms": 120000}),
            )
            .await
        })
    };
    // The install has reached the index (its connection is there to take)...
    let (held_index, _) = tokio::task::spawn_blocking(move || silent.accept())
        .await
        .expect("accept task")
        .expect("the installer connected");
    // ...and the other session's cell starts cold and ends meanwhile.
    let other = {
        let api = Api::new(&server.base);
        tokio::spawn(async move { api.run(&b, "'ran'").await })
    };
    drop(blocker.accept().await);
    let reply = tokio::time::timeout(Duration::from_secs(60), other)
        .await
        .expect("the other cell waited for the install")
        .expect("the other cell");
    assert_eq!(
        (&reply["status"], &reply["mode"]),
        (&json!("ok"), &json!("cold")),
        "{reply}"
    );
    assert!(!installing.is_finished(), "the install ended early");
    // The index goes away: the install fails, its cell with it.
    drop(held_index);
    let reply = installing.await.expect("the installing cell");
    assert_eq!(reply["category"], "install", "{reply}");
    let _ = std::fs::remove_dir_all(&cache);
}

#[tokio::test]
async fn a_cell_refused_for_a_failed_cold_start_takes_no_number() {
    let (blocker, hold) = common::blocker().await;
    // The start timeout is the test's own wait: the first cold start is held past it.
    let (server, _modules) = server_of_held_cold_starts("start_timeout_ms = 3000\n", &hold);
    let api = Api::new(&server.base);
    let s = api.session().await;
    let refused = {
        let api = Api::new(&server.base);
        let s = s.clone();
        tokio::spawn(async move {
            api.post(
                &format!("/v1/sessions/{s}/execute"),
                json!({"code": "'ran'"}),
            )
            .await
        })
    };
    let held = blocker.accept().await;
    let (status, body) = refused.await.expect("the refused cell");
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("worker_unavailable")),
        "{body}"
    );
    drop(held);
    let ran = {
        let api = Api::new(&server.base);
        let s = s.clone();
        tokio::spawn(async move { api.run(&s, "'ran'").await })
    };
    drop(blocker.accept().await);
    let reply = ran.await.expect("the cell");
    assert_eq!(
        (&reply["status"], &reply["mode"], &reply["execution_count"]),
        (&json!("ok"), &json!("cold"), &json!(1)),
        "{reply}"
    );
}

#[tokio::test]
async fn nothing_is_left_behind_by_deleted_sessions() {
    let server = bare("[pool]\nwarm_workers = 1\n");
    let api = Api::new(&server.base);
    let pid = server.pid();
    // One client throughout, so that the server holds the same one connection at both counts.
    // Warm up, then take the baseline with the pool full.
    api.churn(1).await;
    api.wait_for_pool(1).await;
    let baseline_fds = fd_count(pid);

    api.churn(200).await;
    for _ in 0..50 {
        let s = api.session().await;
        let reply = api
            .run(
                &s,
                "import subprocess\np = subprocess.Popen(['sleep', '1000'], start_new_session=True)\np.pid > 0",
            )
            .await;
        assert_eq!(reply["result"]["text/plain"], "True", "{reply}");
        assert_eq!(api.delete(&format!("/v1/sessions/{s}")).await, 204);
    }

    let settled = eventually(Duration::from_secs(20), || {
        let left = processes_of(pid);
        let sleeps = left.iter().filter(|p| p.comm == "sleep").count();
        // The template and the one pooled worker stay.
        let pythons = left.iter().filter(|p| p.comm.starts_with("python")).count();
        sleeps == 0 && pythons <= 2 && zombies_of(pid).is_empty()
    })
    .await;
    assert!(
        settled,
        "left behind: {:?}, zombies: {:?}",
        processes_of(pid),
        zombies_of(pid)
    );
    api.wait_for_pool(1).await;
    assert!(
        eventually(Duration::from_secs(10), || fd_count(pid) <= baseline_fds).await,
        "fds: {} now, {baseline_fds} at the start",
        fd_count(pid)
    );
}

#[tokio::test]
async fn a_killed_server_leaves_no_worker() {
    let server = bare("[pool]\nwarm_workers = 1\n");
    let api = Api::new(&server.base);
    let pid = server.pid();
    let mut running = Vec::new();
    for _ in 0..4 {
        let s = api.session().await;
        let api2 = Api::new(&api.base);
        let s2 = s.clone();
        running.push(tokio::spawn(async move {
            let _ = api2
                .http
                .post(api2.url(&format!("/v1/sessions/{s2}/execute")))
                .json(&json!({"code": "import time\ntime.sleep(100)"}))
                .send()
                .await;
        }));
        api.wait_for_pending(&s, 1).await;
    }
    assert!(processes_of(pid).len() >= 4);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the server");
    assert!(
        eventually(Duration::from_secs(2), || processes_of(pid).is_empty()).await,
        "left behind: {:?}",
        processes_of(pid)
    );
    for task in running {
        let _ = task.await;
    }
}

#[tokio::test]
async fn sigterm_ends_the_server_cleanly() {
    let mut server = bare("[pool]\nwarm_workers = 1\n\n[server]\nshutdown_grace_ms = 2000\n");
    let api = Api::new(&server.base);
    let pid = server.pid();
    let s = api.session().await;
    api.run(&s, "1").await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = server.wait_exit(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(
        eventually(Duration::from_secs(2), || processes_of(pid).is_empty()).await,
        "left behind: {:?}",
        processes_of(pid)
    );
}
