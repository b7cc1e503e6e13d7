//! Workers forked from the preloaded template: fresh random streams, the preload already paid,
//! the template's death survived, and nothing left behind.

mod common;

use std::time::Duration;

use common::{Api, Server, eventually, fd_count, processes_of, shared, zombies_of};

#[tokio::test]
async fn forked_sessions_do_not_share_random_streams() {
    let api = Api::new(shared());
    let mut draws = Vec::new();
    for _ in 0..2 {
        let s = api.session().await;
        let reply = api
            .run(
                &s,
                "import random\n(float(np.random.rand()), random.random())",
            )
            .await;
        assert_eq!(reply["status"], "ok", "{reply}");
        draws.push(
            reply["result"]["text/plain"]
                .as_str()
                .expect("draws")
                .to_owned(),
        );
    }
    let parse = |s: &str| -> Vec<String> {
        s.trim_matches(|c| c == '(' || c == ')')
            .split(", ")
            .map(str::to_owned)
            .collect()
    };
    let (a, b) = (parse(&draws[0]), parse(&draws[1]));
    assert_ne!(a[0], b[0], "numpy streams are shared: {draws:?}");
    assert_ne!(a[1], b[1], "random streams are shared: {draws:?}");
}

#[tokio::test]
async fn the_preload_is_already_paid_in_a_new_session() {
    let api = Api::new(shared());
    let s = api.session().await;
    let reply = api
        .run(
            &s,
            "import sys\nbefore = all(m in sys.modules for m in ('numpy', 'pandas', 'matplotlib.pyplot'))\nimport pandas\nbefore",
        )
        .await;
    assert_eq!(reply["result"]["text/plain"], "True", "{reply}");
    // And it came from the template: the worker's parent is the server, not a fresh exec.
    let (_, health) = api.get("/healthz").await;
    assert_eq!(health["pool"]["template"]["state"], "running", "{health}");
    assert!(
        health["pool"]["template"]["forks"].as_u64().unwrap_or(0) > 0,
        "{health}"
    );
}

async fn template_pid(api: &Api) -> Option<u32> {
    let (_, health) = api.get("/healthz").await;
    health["pool"]["template"]["pid"].as_u64().map(|p| p as u32)
}

#[tokio::test]
async fn sessions_keep_coming_while_the_template_is_dead_and_it_comes_back() {
    let server = Server::start("[pool]\nwarm_workers = 1\n");
    let api = Api::new(&server.base);
    let first = common::eventually_some(Duration::from_secs(20), || template_pid(&api))
        .await
        .expect("the template started");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the template");
    // More sessions than the pool holds: some must be made while the template is down.
    for i in 0..4 {
        let s = api.session().await;
        let reply = api.run(&s, &format!("int(np.int64({i}) * 2)")).await;
        assert_eq!(
            reply["result"]["text/plain"],
            (i * 2).to_string(),
            "{reply}"
        );
        assert_eq!(api.delete(&format!("/v1/sessions/{s}")).await, 204);
    }
    let api = &api;
    let restarted = common::eventually_some(Duration::from_secs(30), || async move {
        let (_, health) = api.get("/healthz").await;
        let template = &health["pool"]["template"];
        (template["state"] == "running" && template["pid"].as_u64() != Some(u64::from(first)))
            .then(|| template.clone())
    })
    .await
    .expect("the template never came back");
    assert!(
        restarted["restarts"].as_u64().unwrap_or(0) >= 1,
        "{restarted}"
    );
}

/// A fork whose caller gave up halfway (a session deleted while its lost worker's replacement
/// was being forked) leaves no answer behind for the next fork to take as its own: that made
/// the template look stuck, and it was restarted, again and again under churn (found by the
/// soak).
#[tokio::test]
async fn a_fork_abandoned_by_a_deleted_session_does_not_derail_the_next() {
    // No pool: every session's worker, and every replacement, is forked on demand.
    let server = Server::start("[pool]\nwarm_workers = 0\n");
    let api = Api::new(&server.base);
    for _ in 0..10 {
        let s = api.session().await;
        let reply = api.run(&s, "import os\nos._exit(1)").await;
        assert_eq!(reply["error"]["ename"], "WorkerDied", "{reply}");
        // At once, while the replacement is being forked.
        assert_eq!(api.delete(&format!("/v1/sessions/{s}")).await, 204);
    }
    let s = api.session().await;
    assert_eq!(api.run(&s, "6 * 7").await["result"]["text/plain"], "42");
    let (_, health) = api.get("/healthz").await;
    let template = &health["pool"]["template"];
    assert_eq!(template["state"], "running", "{health}");
    assert_eq!(template["restarts"], 0, "{health}");
}

#[tokio::test]
async fn three_hundred_forked_sessions_leave_nothing_behind() {
    let server = Server::start("[pool]\nwarm_workers = 2\n");
    let api = Api::new(&server.base);
    let pid = server.pid();
    api.churn(1).await;
    api.wait_for_pool(2).await;
    let baseline_fds = fd_count(pid);
    api.churn(300).await;
    api.wait_for_pool(2).await;
    // The template and the two pooled workers remain; nothing else, and no zombie.
    let settled = eventually(Duration::from_secs(20), || {
        processes_of(pid).len() == 3 && zombies_of(pid).is_empty()
    })
    .await;
    assert!(
        settled,
        "left: {:?}, zombies: {:?}",
        processes_of(pid),
        zombies_of(pid)
    );
    assert!(
        eventually(Duration::from_secs(10), || fd_count(pid) <= baseline_fds).await,
        "fds: {} now, {baseline_fds} at the start",
        fd_count(pid)
    );
}

#[tokio::test]
async fn a_killed_server_leaves_neither_template_nor_workers() {
    let server = Server::start("[pool]\nwarm_workers = 2\n");
    let api = Api::new(&server.base);
    let pid = server.pid();
    for _ in 0..3 {
        let s = api.session().await;
        api.run(&s, "x = 1").await;
    }
    assert!(template_pid(&api).await.is_some());
    assert!(processes_of(pid).len() >= 4, "{:?}", processes_of(pid));
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
}

/// matplotlib's font list is built once into the interpreter's installation (`make venv`,
/// worker.py's `font_cache_dir`); the template takes it from there instead of listing and
/// reading every font of the machine again at each start.
#[tokio::test]
async fn the_template_takes_matplotlibs_font_list_from_the_venvs_cache() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    let dir = tempfile::tempdir().expect("tempdir");
    // Reachable by sessions' users (the sandbox checks the interpreter's paths).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let venv = dir.path().join("venv");
    // A venv of its own, for a prefix of its own, that imports the test venv's packages.
    let made = Command::new(common::python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("run python -m venv");
    assert!(made.success());
    let purelib = |python: &std::path::Path| {
        let out = Command::new(python)
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ])
            .output()
            .expect("ask for site-packages");
        std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    };
    let python = venv.join("bin/python");
    std::fs::write(
        purelib(&python).join("test-venv.pth"),
        format!("{}\n", purelib(&common::python()).display()),
    )
    .expect("write .pth");
    // What `worker.py '{"font_cache": "build"}'` does (`make venv`), by hand.
    let cache = venv.join("share/replpool/matplotlib");
    let built = Command::new(&python)
        .args(["-c", "import matplotlib.font_manager"])
        .env("MPLCONFIGDIR", &cache)
        .status()
        .expect("build the font list");
    assert!(built.success());
    // A font that only the built list names: a process that lists the fonts itself has not.
    let list = std::fs::read_dir(&cache)
        .expect("the font cache directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".json"))
        .expect("a fontlist-*.json");
    let mut fonts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&list).expect("read the font list")).expect("JSON");
    let ttflist = fonts["ttflist"].as_array_mut().expect("ttflist");
    let mut marker = ttflist[0].clone();
    marker["name"] = "Replpool Prebuilt".into();
    ttflist.push(marker);
    std::fs::write(&list, fonts.to_string()).expect("write the font list");

    let server = Server::start(&format!(
        "[python]\nexecutable = {:?}\n[pool]\nwarm_workers = 1\n",
        python.display().to_string()
    ));
    let api = Api::new(&server.base);
    let s = api.session().await;
    let reply = api
        .run(
            &s,
            "import matplotlib.font_manager as fm\nany(f.name == 'Replpool Prebuilt' for f in fm.fontManager.ttflist)",
        )
        .await;
    assert_eq!(reply["result"]["text/plain"], "True", "{reply}");
    let (_, health) = api.get("/healthz").await;
    assert!(
        health["pool"]["template"]["forks"].as_u64().unwrap_or(0) > 0,
        "not a forked worker: {health}"
    );
}
