//! Attacks on the files API, the disk quota, tenancy and the server's own state, each made as
//! a hostile session or caller would make it, and each answered exactly.
//!
//! The sandbox's attacks need the server to run as root (as the sandbox does); CI runs as root.

mod common;

use std::time::{Duration, Instant};

use common::{Api, Server, root, shared_server, state_dir_of};
use serde_json::{Value, json};

/// The sandbox's attacks meet the production sandbox (`network = "none"`) as root; as
/// another user they are skipped, and the others run on the host network.
static CONFIG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let network = if nix::unistd::geteuid().is_root() {
        "none"
    } else {
        "host"
    };
    format!(
        "[pool]\nwarm_workers = 2\n\n\
         [limits]\nfile_size_mb = 64\n\n\
         [files]\nmax_bytes = 16777216\nmax_total_bytes = 33554432\nmax_list_entries = 1000\n\n\
         [sandbox]\nnetwork = \"{network}\"\n"
    )
});

fn base() -> &'static str {
    &shared_server(&CONFIG).base
}

fn server_pid() -> u32 {
    shared_server(&CONFIG).pid
}

fn ename(reply: &Value) -> &str {
    reply["error"]["ename"].as_str().unwrap_or("")
}

async fn put(api: &Api, session: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    api.put_file(session, path, body).await
}

async fn get_raw(api: &Api, session: &str, path: &str) -> (u16, Vec<u8>) {
    let response = api
        .http
        .get(api.url(&format!("/v1/sessions/{session}/files/{path}")))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("download answered within 10 s");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

fn code_of(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value["error"]["code"].as_str().map(str::to_owned)
}

/// A directory of the host's /tmp, writable by anyone, with a file the session must never
/// be served: what a swapped-in symlink would lead the server to.
struct Canary {
    dir: tempfile::TempDir,
}

impl Canary {
    fn plant() -> Canary {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("replpool-canary-")
            .tempdir_in("/tmp")
            .expect("canary dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        std::fs::write(dir.path().join("c.json"), b"CANARY").expect("canary file");
        Canary { dir }
    }

    fn files(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .expect("canary dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

#[tokio::test]
async fn a_directory_swapped_for_a_link_never_leads_the_files_api_out() {
    if !root() {
        return;
    }
    let api = Api::new(base());
    let s = api.session().await;
    let canary = Canary::plant();
    let outside = canary.dir.path().display().to_string();
    // A thread swaps `sub` (a real directory) and `alt` (a link to the host's directory)
    // for three seconds, as fast as it can; the cell returns while it runs.
    let code = format!(
        "import ctypes, os, threading, time\n\
         os.makedirs('sub', exist_ok=True)\n\
         open('sub/c.json', 'w').write('inside')\n\
         os.symlink({outside:?}, 'alt')\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         def swap():\n\
         \x20   end = time.monotonic() + 3\n\
         \x20   while time.monotonic() < end:\n\
         \x20       libc.renameat2(-100, b'sub', -100, b'alt', 2)\n\
         threading.Thread(target=swap, daemon=True).start()"
    );
    let reply = api.run(&s, &code).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let deadline = Instant::now() + Duration::from_millis(2500);
    let (mut served, mut refused, mut i) = (0, 0, 0);
    while Instant::now() < deadline {
        let (status, body) = get_raw(&api, &s, "sub/c.json").await;
        assert_ne!(body, b"CANARY", "the files API read the host's file");
        match status {
            200 => {
                assert_eq!(body, b"inside");
                served += 1;
            }
            _ => {
                let code = code_of(&body);
                assert!(
                    matches!(code.as_deref(), Some("invalid_path" | "file_not_found")),
                    "{status} {code:?}"
                );
                refused += 1;
            }
        }
        let (status, body) = put(&api, &s, &format!("sub/evil{i}.txt"), b"x".to_vec()).await;
        assert!(
            status == 204 || (status == 400 && body["error"]["code"] == "invalid_path"),
            "{status} {body}"
        );
        i += 1;
    }
    assert_eq!(
        canary.files(),
        ["c.json"],
        "the files API wrote into the host's /tmp"
    );
    assert!(
        served + refused > 10,
        "the race ran: {served} served, {refused} refused"
    );
    assert_eq!(api.delete(&format!("/v1/sessions/{s}")).await, 204);
}

#[tokio::test]
async fn a_fifo_is_refused_at_once_and_stalls_nobody() {
    if !root() {
        return;
    }
    let api = Api::new(base());
    let (s, neighbour) = (api.session().await, api.session().await);
    let reply = api.run(&s, "import os; os.mkfifo('fifo')").await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let gets = (0..200).map(|_| get_raw(&api, &s, "fifo"));
    for (status, body) in futures::future::join_all(gets).await {
        assert_eq!(
            (status, code_of(&body).as_deref()),
            (400, Some("not_a_regular_file")),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    // Nothing is left holding a thread: the neighbour and the health check answer, and the
    // server did not grow a thread per request.
    let reply = api.run(&neighbour, "1 + 1").await;
    assert_eq!(reply["result"]["text/plain"], "2", "{reply}");
    let (status, health) = api.get("/healthz").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );
    let threads = std::fs::read_to_string(format!("/proc/{}/status", server_pid()))
        .expect("server status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:").map(|n| n.trim().parse::<u32>()))
        .expect("Threads line")
        .expect("a number");
    assert!(threads < 64, "the server runs {threads} threads");
    // A PUT over the FIFO replaces it without opening it.
    assert_eq!(put(&api, &s, "fifo", b"data".to_vec()).await.0, 204);
    assert_eq!(get_raw(&api, &s, "fifo").await, (200, b"data".to_vec()));
}

#[tokio::test]
async fn the_quota_holds_while_the_cell_writes() {
    if !root() {
        return;
    }
    let api = Api::new(base());
    let s = api.session().await;
    // Five files of 10 MiB, each under the file size limit: together over the 32 MiB quota.
    let reply = api
        .run(
            &s,
            "for i in range(5):\n    open(f'part{i}', 'wb').write(b'0' * (10 << 20))",
        )
        .await;
    assert_eq!(ename(&reply), "DiskQuotaExceeded", "{reply}");
    let (status, list) = api.get(&format!("/v1/sessions/{s}/files")).await;
    assert_eq!(status, 200, "{list}");
    let total: u64 = list["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["size"].as_u64().expect("size"))
        .sum();
    assert!(
        total <= 32 << 20,
        "the cell wrote {total} bytes past a 32 MiB quota"
    );
}

#[tokio::test]
async fn a_directory_closed_to_its_own_user_hides_no_usage() {
    if !root() {
        return;
    }
    let api = Api::new(base());
    let s = api.session().await;
    let reply = api
        .run(
            &s,
            "import os\nos.makedirs('locked')\nopen('locked/big', 'wb').write(b'0' * (20 << 20))\n\
             os.chmod('locked', 0)",
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (status, list) = api.get(&format!("/v1/sessions/{s}/files")).await;
    assert_eq!(
        status, 200,
        "a listing never fails on what it cannot read: {list}"
    );
    // 20 MiB hidden + 16 MiB would pass the 32 MiB quota.
    let (status, body) = put(&api, &s, "more", vec![0; 16 << 20]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (507, Some("quota_exceeded")),
        "{body}"
    );
    let (status, body) = put(&api, &s, "small", vec![0; 1 << 20]).await;
    assert_eq!(status, 204, "{body}");
    // Nor can the API delete what the session's own user may not: a clear 403, not a 500.
    let response = api
        .http
        .delete(api.url(&format!("/v1/sessions/{s}/files/locked")))
        .send()
        .await
        .expect("delete sent");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("permission_denied")),
        "{body}"
    );
}

#[tokio::test]
async fn names_too_long_for_the_filesystem_are_invalid_paths() {
    let api = Api::new(base());
    let s = api.session().await;
    let long = "a".repeat(256);
    let (status, body) = put(&api, &s, &long, b"x".to_vec()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_path")),
        "{body}"
    );
    let (status, body) = get_raw(&api, &s, &format!("dir/{long}")).await;
    assert_eq!(
        (status, code_of(&body).as_deref()),
        (400, Some("invalid_path"))
    );
    // The longest name the filesystem takes is fine: the upload's temporary name does not
    // push it over.
    let longest = "b".repeat(255);
    let (status, body) = put(&api, &s, &longest, b"x".to_vec()).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(get_raw(&api, &s, &longest).await, (200, b"x".to_vec()));
}

#[tokio::test]
async fn listings_are_capped_and_say_so() {
    let api = Api::new(base());
    let s = api.session().await;
    let reply = api
        .run(
            &s,
            "import os\nos.makedirs('many')\nfor i in range(3000):\n    open(f'many/{i}', 'w').close()",
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (status, list) = api.get(&format!("/v1/sessions/{s}/files")).await;
    assert_eq!(status, 200);
    assert_eq!(list["files"].as_array().expect("files").len(), 1000);
    assert_eq!(list["truncated"], true);
    assert_eq!(
        api.delete(&format!("/v1/sessions/{s}/files/many")).await,
        204
    );
    let (_, list) = api.get(&format!("/v1/sessions/{s}/files")).await;
    assert_eq!(list, json!({"files": [], "truncated": false}));
}

const TOKEN_A: &str = "token-a-0123456789abcdef";
const TOKEN_B: &str = "token-b-0123456789abcdef";

#[tokio::test]
async fn one_tenant_cannot_evict_another() {
    let server = Server::start(
        "[pool]\nwarm_workers = 1\n\n[sessions]\nmax = 4\n\n\
         [auth]\ntokens = [\"token-a-0123456789abcdef\", \"token-b-0123456789abcdef\"]\n",
    );
    let (a, b) = (
        Api::with_token(&server.base, TOKEN_A),
        Api::with_token(&server.base, TOKEN_B),
    );
    let kept = b.session().await;
    assert_eq!(b.run(&kept, "x = 'mine'").await["status"], "ok");
    // A's fair share is 2 of the 4: its sessions beyond that end its own oldest idle one.
    let mut mine = Vec::new();
    for _ in 0..6 {
        mine.push(a.session().await);
    }
    let reply = b.run(&kept, "x").await;
    assert_eq!(reply["result"]["text/plain"], "'mine'", "{reply}");
    let (_, listed) = a.get("/v1/sessions").await;
    assert_eq!(listed["sessions"].as_array().expect("sessions").len(), 2);
    // With both of A's sessions busy, one more is refused, naming the limit.
    let (blocker, hold) = common::blocker().await;
    let busy = mine[4..].to_vec();
    let mut running = Vec::new();
    for s in &busy {
        let a = Api::with_token(&server.base, TOKEN_A);
        let (s, hold) = (s.clone(), hold.clone());
        running.push(tokio::spawn(async move { a.run(&s, &hold).await }));
    }
    let mut held = Vec::new();
    for _ in &busy {
        held.push(blocker.accept().await);
    }
    let (status, body) = a.post("/v1/sessions", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_sessions")),
        "{body}"
    );
    // The caller's own limit: its request, not the server's capacity.
    assert_eq!(body["error"]["category"], "request");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_sessions_per_token")),
        "{body}"
    );
    drop(held);
    for run in running {
        assert_eq!(run.await.expect("cell")["status"], "ok");
    }
    assert_eq!(b.run(&kept, "x").await["result"]["text/plain"], "'mine'");
}

#[tokio::test]
async fn a_killed_servers_state_is_removed_by_the_next_start() {
    let config = "[pool]\nwarm_workers = 0\ntemplate = false\n";
    let first = Server::start(config);
    let dir = state_dir_of(first.pid()).expect("the first server's state directory");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    assert!(
        common::eventually(Duration::from_secs(10), || common::is_dead(first.pid())).await,
        "the first server died"
    );
    assert!(dir.exists(), "a killed server cannot clean up after itself");
    let second = Server::start(config);
    assert!(
        common::eventually(Duration::from_secs(20), || !dir.exists()).await,
        "{} outlived its server",
        dir.display()
    );
    let own = state_dir_of(second.pid()).expect("the second server's state directory");
    assert!(own.exists(), "a live server's directory stays");
    drop(first);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("server status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn the_servers_memory_comes_back_after_a_burst() {
    let server = Server::start(
        "[pool]\nwarm_workers = 1\n\n[files]\nmax_bytes = 16777216\nmax_total_bytes = 67108864\n",
    );
    let api = Api::new(&server.base);
    let s = api.session().await;
    assert_eq!(api.run(&s, "1").await["status"], "ok");
    let baseline = rss_kib(server.pid());
    assert_eq!(put(&api, &s, "big", vec![7; 16 << 20]).await.0, 204);
    // Twenty downloads of 16 MiB at once: over 300 MiB of replies in flight.
    let gets = (0..20).map(|_| get_raw(&api, &s, "big"));
    for (status, body) in futures::future::join_all(gets).await {
        assert_eq!((status, body.len()), (200, 16 << 20));
    }
    let peak = rss_kib(server.pid());
    // The client's pooled connections go too: what they hold is the client's to keep.
    drop(api);
    let back = common::eventually(Duration::from_secs(30), || {
        rss_kib(server.pid()) < baseline + 32 * 1024
    })
    .await;
    assert!(
        back,
        "the server's RSS stayed at {} KiB (baseline {baseline} KiB, peak {peak} KiB)",
        rss_kib(server.pid())
    );
}
