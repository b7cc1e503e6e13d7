//! Workers bound ahead of need (see core/src/binding.rs): a pooled worker waits in a session
//! cgroup of its own, with the session's limits already set, and the session or one-shot that
//! takes it runs its first cell in that very cgroup. Needs root (the cgroups); as another user
//! each test says on stderr that it is skipped.

mod common;

use std::path::PathBuf;

use common::{Api, Server, processes_of, root};
use serde_json::json;

const CONFIG: &str = "[pool]\nwarm_workers = 1\n\n\
    [limits]\nprocesses = 48\nmemory_mb = 700\n\n\
    [sandbox]\nnetwork = \"none\"\n";

/// `/proc/<pid>/cgroup`, if the process is there.
fn cgroup_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

/// The server's processes that sit in one of its session cgroups (`…/replpool-<pid>/s<hex>`).
fn in_session_cgroups(server_pid: u32) -> Vec<(u32, String)> {
    let marker = format!("/replpool-{server_pid}/s");
    processes_of(server_pid)
        .into_iter()
        .filter_map(|p| cgroup_of(p.pid).map(|c| (p.pid, c)))
        .filter(|(_, c)| c.contains(&marker))
        .collect()
}

/// `file` of the cgroup `membership` (a `/proc/<pid>/cgroup` text) names in the hierarchy that
/// has `controller` (v1), else in the v2 hierarchy, where that file exists.
fn cgroup_file(membership: &str, controller: &str, file: &str) -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut after = after.split(' ');
        let fstype = after.next().unwrap_or("");
        let options = after.nth(1).unwrap_or("");
        let fields: Vec<&str> = before.split(' ').collect();
        let (root, point) = (fields[3], fields[4]);
        let key = match fstype {
            "cgroup" if options.split(',').any(|o| o == controller) => options
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                .collect::<Vec<_>>()
                .join(","),
            "cgroup2" => String::new(),
            _ => continue,
        };
        let Some(path) = membership.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            (controllers == key).then_some(path)
        }) else {
            continue;
        };
        let relative = path.strip_prefix(root).unwrap_or(path);
        let candidate = std::path::Path::new(point)
            .join(relative.trim_start_matches('/'))
            .join(file);
        if candidate.exists() {
            return Some(candidate);
        }
    }
    None
}

fn read_limit(membership: &str, controller: &str, files: &[&str]) -> String {
    files
        .iter()
        .find_map(|f| cgroup_file(membership, controller, f))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.trim().to_owned())
        .unwrap_or_else(|| panic!("no {files:?} for {membership}"))
}

/// The one pooled worker, waiting in a session cgroup whose limits are set.
async fn the_bound_worker(api: &Api, server_pid: u32) -> (u32, String) {
    api.wait_for_pool(1).await;
    let waiting = in_session_cgroups(server_pid);
    assert_eq!(
        waiting.len(),
        1,
        "the pooled worker should wait in a session cgroup of its own: {:?}",
        processes_of(server_pid)
    );
    let (pid, membership) = waiting.into_iter().next().expect("one");
    assert_eq!(read_limit(&membership, "pids", &["pids.max"]), "48");
    assert_eq!(
        read_limit(
            &membership,
            "memory",
            &["memory.max", "memory.limit_in_bytes"]
        ),
        (700u64 << 20).to_string()
    );
    (pid, membership)
}

#[tokio::test]
async fn a_new_sessions_first_cell_runs_in_the_cgroup_its_worker_waited_in() {
    if !root() {
        return;
    }
    let server = Server::start(CONFIG);
    let api = Api::new(&server.base);
    let (pid, membership) = the_bound_worker(&api, server.pid()).await;
    let s = api.session().await;
    let (_, info) = api.get(&format!("/v1/sessions/{s}")).await;
    assert_eq!(info["pid"], pid, "{info}");
    let reply = api
        .run(&s, "print(open('/proc/self/cgroup').read(), end='')")
        .await;
    assert_eq!(reply["stdout"], membership, "{reply}");
    // The limits hold in that first cell: a fork bomb stops at the pids limit.
    let reply = api
        .exec(
            &s,
            json!({"code": "import os\nwhile True:\n    os.fork()", "timeout_ms": 20000}),
        )
        .await;
    assert_eq!(common::ename(&reply), "BlockingIOError", "{reply}");
}

#[tokio::test]
async fn a_one_shot_runs_in_the_cgroup_its_worker_waited_in() {
    if !root() {
        return;
    }
    let server = Server::start(CONFIG);
    let api = Api::new(&server.base);
    let (_, membership) = the_bound_worker(&api, server.pid()).await;
    let (status, reply) = api
        .post(
            "/v1/execute",
            // `np`: code that may need the preload, so the main pool's worker (not the lean one's).
            json!({"code": "np\nprint(open('/proc/self/cgroup').read(), end='')"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["stdout"], membership, "{reply}");
}

#[tokio::test]
async fn a_drained_pool_leaves_no_cgroup_or_directory_of_its_bound_workers() {
    if !root() {
        return;
    }
    let mut server = Server::start(CONFIG);
    let api = Api::new(&server.base);
    let (_, membership) = the_bound_worker(&api, server.pid()).await;
    let pids = cgroup_file(&membership, "pids", "pids.max")
        .and_then(|p| p.parent().map(PathBuf::from))
        .expect("the bound worker's pids cgroup");
    let state = common::state_dir_of(server.pid()).expect("state directory");
    let sessions = state.join("sessions");
    let dirs = || {
        std::fs::read_dir(&sessions)
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    };
    assert_eq!(dirs(), 1, "the bound worker's directory");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = server.wait_exit(std::time::Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(!pids.exists(), "{} outlived the server", pids.display());
    assert!(!state.exists(), "{} outlived the server", state.display());
}
