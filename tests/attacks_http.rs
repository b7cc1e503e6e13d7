//! Clients that hold connections without finishing a request (issue 15, item 6): a slowloris
//! of a few hundred connections trickling a request head, silent connections, a body that
//! never ends, an idle kept-alive connection, and more clients than `server.max_connections`.
//! The attackers are plain TCP sockets on loopback, bounded in number and in time.

mod common;

use std::time::{Duration, Instant};

use common::{Api, Server, eventually, fd_count};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short deadlines, so that the attacks and the test end quickly.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How much later than its deadline a connection may be closed, on a busy machine.
const MARGIN: Duration = Duration::from_secs(3);
/// How long an attacker keeps at it before it gives up on being cut off (the test fails).
const ATTACK_BOUND: Duration = Duration::from_secs(12);
/// The pace of the trickle: one byte per attacker this often.
const TRICKLE: Duration = Duration::from_millis(250);

fn config(extra: &str) -> String {
    format!(
        "[pool]\nwarm_workers = 1\n\n[server]\nheader_read_timeout_ms = {}\n\
         body_read_timeout_ms = {}\nkeep_alive_timeout_ms = {}\n{extra}",
        HEADER_TIMEOUT.as_millis(),
        BODY_TIMEOUT.as_millis(),
        KEEP_ALIVE_TIMEOUT.as_millis(),
    )
}

fn address(server: &Server) -> String {
    server
        .base
        .strip_prefix("http://")
        .expect("an http:// base")
        .to_owned()
}

/// Reads until the server closes the connection (end of stream or reset) or `bound` passes;
/// what was read, and whether it was closed.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + bound;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (seen, false),
        }
    }
}

/// Sends `head`, then `trickle` one byte every [`TRICKLE`] until the server closes the
/// connection or [`ATTACK_BOUND`] passes. Returns what the server sent and how long after the
/// connect it closed the connection (None: it never did).
async fn trickle(address: &str, head: &[u8], trickle: u8) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(head).await.expect("send the head");
    let mut seen = Vec::new();
    while start.elapsed() < ATTACK_BOUND {
        // A write to a connection the server has closed may still succeed once; the read
        // below is what tells.
        let _ = stream.write_all(&[trickle]).await;
        let (read, closed) = read_until_closed(&mut stream, TRICKLE).await;
        seen.extend(read);
        if closed {
            return (seen, Some(start.elapsed()));
        }
    }
    (seen, None)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median latencies of `GET /healthz` and of a `1+1` cell in `session`, over `n` of each.
async fn latencies(api: &Api, session: &str, n: usize) -> (Duration, Duration) {
    let mut health = Vec::with_capacity(n);
    let mut cell = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (status, body) = api.get("/healthz").await;
        health.push(started.elapsed());
        assert_eq!(status, 200, "{body}");
        let started = Instant::now();
        let reply = api.run(session, "1+1").await;
        cell.push(started.elapsed());
        assert_eq!(reply["status"], "ok", "{reply}");
    }
    (median(health), median(cell))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_is_cut_off_at_the_header_timeout_and_slows_no_neighbour() {
    const SLOW: usize = 300;
    const SILENT: usize = 5;
    const SAMPLES: usize = 15;
    let server = Server::start(&config(""));
    let address = address(&server);
    let pid = server.pid();
    let api = Api::new(&server.base);
    let session = api.session().await;
    latencies(&api, &session, 3).await; // warm up the connection and the session
    let (health_base, cell_base) = latencies(&api, &session, SAMPLES).await;
    let fds_before = fd_count(pid);

    // The attackers run on a thread and runtime of their own, so that the neighbour's
    // requests are not queued behind them in the test's own scheduler.
    let attack = {
        let address = address.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("attack runtime");
            runtime.block_on(async move {
                let mut slow = tokio::task::JoinSet::new();
                for _ in 0..SLOW {
                    let address = address.clone();
                    slow.spawn(async move {
                        let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
                        trickle(&address, head, b'a').await
                    });
                }
                let mut silent = tokio::task::JoinSet::new();
                for _ in 0..SILENT {
                    let address = address.clone();
                    silent.spawn(async move {
                        let start = Instant::now();
                        let mut stream = TcpStream::connect(&address).await.expect("connect");
                        let (seen, closed) = read_until_closed(&mut stream, ATTACK_BOUND).await;
                        (seen, closed.then(|| start.elapsed()))
                    });
                }
                (slow.join_all().await, silent.join_all().await)
            })
        })
    };
    // The attack is in place once the server holds a descriptor for each of its connections.
    assert!(
        eventually(HEADER_TIMEOUT, || fd_count(pid)
            >= fds_before + SLOW + SILENT)
        .await,
        "the server accepted only {} of {} connections",
        fd_count(pid).saturating_sub(fds_before),
        SLOW + SILENT
    );
    let (health_attacked, cell_attacked) = latencies(&api, &session, SAMPLES).await;
    let still_attacked = fd_count(pid) >= fds_before + SLOW;
    eprintln!(
        "medians: /healthz {health_base:?} -> {health_attacked:?}, 1+1 {cell_base:?} -> \
         {cell_attacked:?} (attack still in place after sampling: {still_attacked})"
    );

    let (slow, silent) = tokio::task::spawn_blocking(move || attack.join())
        .await
        .expect("join the attack")
        .expect("the attack thread");
    let mut closed_after = Vec::new();
    for (seen, closed) in slow {
        let closed = closed.unwrap_or_else(|| {
            panic!(
                "a slow request head was still open after {ATTACK_BOUND:?} (server sent {:?})",
                String::from_utf8_lossy(&seen)
            )
        });
        closed_after.push(closed);
    }
    let latest = closed_after.iter().max().copied().unwrap_or_default();
    eprintln!(
        "slow heads closed after: median {:?}, latest {latest:?}",
        median(closed_after.clone())
    );
    assert!(
        latest < HEADER_TIMEOUT + MARGIN,
        "a slow request head was held {latest:?} (header timeout {HEADER_TIMEOUT:?})"
    );
    for (seen, closed) in silent {
        let closed = closed.expect("a silent connection was never closed");
        assert!(
            closed < KEEP_ALIVE_TIMEOUT + MARGIN,
            "a silent connection was held {closed:?} (keep-alive timeout {KEEP_ALIVE_TIMEOUT:?})"
        );
        assert!(seen.is_empty(), "{:?}", String::from_utf8_lossy(&seen));
    }
    assert!(
        eventually(Duration::from_secs(5), || fd_count(pid) <= fds_before + 16).await,
        "the server holds {} descriptors, {fds_before} before the attack",
        fd_count(pid)
    );

    assert!(
        still_attacked,
        "the neighbours were sampled after the attack had ended; nothing was measured"
    );
    assert!(
        health_attacked < health_base * 5,
        "/healthz median {health_attacked:?} under attack, {health_base:?} before"
    );
    assert!(
        cell_attacked < cell_base * 5,
        "1+1 median {cell_attacked:?} under attack, {cell_base:?} before"
    );
    // The neighbour's session is untouched.
    let reply = api.run(&session, "1+1").await;
    assert_eq!(reply["result"]["text/plain"], "2", "{reply}");
}

#[tokio::test]
async fn a_body_that_never_ends_is_answered_408_at_the_body_timeout() {
    let server = Server::start(&config(""));
    let head = b"POST /v1/execute HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"code\": \"";
    let (seen, closed) = trickle(&address(&server), head, b'1').await;
    let seen = String::from_utf8_lossy(&seen);
    let closed = closed.unwrap_or_else(|| panic!("the upload was never cut off; got {seen:?}"));
    assert!(
        closed < BODY_TIMEOUT + MARGIN,
        "the upload was cut off after {closed:?} (body timeout {BODY_TIMEOUT:?})"
    );
    assert!(
        seen.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{seen}"
    );
    let body = seen.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_keep_alive_timeout() {
    let server = Server::start(&config(""));
    let mut stream = TcpStream::connect(address(&server)).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The whole answer: a head and a JSON object.
    while !answer.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed before the answer was complete");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let idle_from = Instant::now();
    let (seen, closed) = read_until_closed(&mut stream, ATTACK_BOUND).await;
    let idle = idle_from.elapsed();
    assert!(closed, "an idle connection was still open after {idle:?}");
    assert!(seen.is_empty(), "{:?}", String::from_utf8_lossy(&seen));
    assert!(
        idle < KEEP_ALIVE_TIMEOUT + MARGIN,
        "an idle connection was held {idle:?} (keep-alive timeout {KEEP_ALIVE_TIMEOUT:?})"
    );
}

#[tokio::test]
async fn beyond_max_connections_a_client_waits_for_a_free_slot() {
    const CAP: usize = 8;
    // Long deadlines: the connections holding the slots must not be closed meanwhile.
    let server = Server::start(&format!(
        "[pool]\nwarm_workers = 1\n\n[server]\nmax_connections = {CAP}\n\
         keep_alive_timeout_ms = 60000\nheader_read_timeout_ms = 60000\n"
    ));
    let address = address(&server);
    let request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let answered = async |stream: &mut TcpStream, within: Duration| {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, stream.read(&mut buf)).await,
            Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 200")
        )
    };
    // Each holder is known to be served once it is answered.
    let mut holders = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        stream.write_all(request).await.expect("send");
        assert!(answered(&mut stream, Duration::from_secs(10)).await);
        holders.push(stream);
    }
    // One more: the kernel completes the handshake, the server does not take it up.
    let mut waiting = TcpStream::connect(&address).await.expect("connect");
    waiting.write_all(request).await.expect("send");
    assert!(
        !answered(&mut waiting, Duration::from_secs(1)).await,
        "a connection beyond server.max_connections = {CAP} was served"
    );
    drop(holders.pop());
    assert!(
        answered(&mut waiting, Duration::from_secs(10)).await,
        "the waiting connection was not served once a slot was free"
    );
}
