//! Sessions that survive what user code does to them: deadlines, ignored interrupts, dying
//! workers, memory hogs, runaway output. Against one shared real server.

mod common;

use std::time::{Duration, Instant};

use common::{Api, is_dead, ok_reply, shared_with};
use serde_json::{Value, json};

const CONFIG: &str = "[pool]\nwarm_workers = 2\n\n\
                      [execution]\ninterrupt_grace_ms = 1000\n\n\
                      [limits]\nmemory_mb = 1024\nfile_size_mb = 16\ncpu_seconds = 3\n";

fn api() -> Api {
    Api::new(shared_with(CONFIG))
}

/// The reply with its traceback checked (it ends with `last_line`) and removed.
fn without_traceback(mut reply: Value, last_line: &str) -> Value {
    let traceback = reply["error"]["traceback"].take();
    let lines = traceback.as_array().expect("traceback");
    assert_eq!(
        lines.last().and_then(Value::as_str),
        Some(last_line),
        "{lines:?}"
    );
    reply["error"]
        .as_object_mut()
        .expect("error")
        .remove("traceback");
    reply
}

#[tokio::test]
async fn a_deadline_interrupts_and_keeps_the_state() {
    let api = api();
    let s = api.session().await;
    api.run(&s, "x = 5").await;
    let started = Instant::now();
    let reply = api
        .exec(
            &s,
            json!({"code": "while True:\n    pass", "timeout_ms": 500}),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        without_traceback(reply, "KeyboardInterrupt"),
        ok_reply(
            2,
            json!({"status": "timeout", "category": "timeout", "error": {"ename": "KeyboardInterrupt", "evalue": ""}})
        )
    );
    assert_eq!(
        api.run(&s, "x").await,
        ok_reply(3, json!({"result": {"text/plain": "5"}}))
    );
}

#[tokio::test]
async fn code_ignoring_the_interrupt_is_killed_and_the_session_goes_on() {
    let api = api();
    let s = api.session().await;
    let code = "import time\nwhile True:\n    try:\n        time.sleep(1)\n    except BaseException:\n        pass";
    let started = Instant::now();
    let reply = api.exec(&s, json!({"code": code, "timeout_ms": 500})).await;
    // timeout + grace + 1 s
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        reply,
        ok_reply(
            1,
            json!({"status": "timeout", "category": "timeout", "session_reset": true, "error": {
                "ename": "TimeoutError",
                "evalue": "execution exceeded 500 ms and ignored the interrupt; the worker was killed",
                "traceback": [],
            }})
        )
    );
    let reply = api.run(&s, "1 + 1").await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["result"]["text/plain"], "2");
    assert_eq!(
        reply["session_reset"], false,
        "the reset was already reported"
    );
}

#[tokio::test]
async fn interrupt_on_request() {
    let api = api();
    let s = api.session().await;
    let (status, body) = api
        .post(&format!("/v1/sessions/{s}/interrupt"), json!({}))
        .await;
    assert_eq!((status, body), (200, json!({"interrupted": false})));

    let running = {
        let api = Api::new(&api.base);
        let s = s.clone();
        tokio::spawn(async move { api.run(&s, "import time\ny = 1\ntime.sleep(60)").await })
    };
    api.wait_for_pending(&s, 1).await;
    // The cell is running once it has set y... but `pending` only says it was sent. Interrupt
    // until the execution ends: a SIGINT that lands before user code starts is ignored.
    let (api_ref, path, task) = (&api, &format!("/v1/sessions/{s}/interrupt"), &running);
    let ended = common::eventually_some(Duration::from_secs(30), || async move {
        let (status, _) = api_ref.post(path, json!({})).await;
        assert_eq!(status, 200);
        task.is_finished().then_some(())
    })
    .await
    .is_some();
    assert!(ended, "the interrupted cell never ended");
    let reply = running.await.expect("task");
    assert_eq!(
        without_traceback(reply, "KeyboardInterrupt"),
        ok_reply(
            1,
            json!({"status": "error", "category": "interrupted", "error": {"ename": "KeyboardInterrupt", "evalue": ""}})
        )
    );
    assert_eq!(api.run(&s, "y").await["result"]["text/plain"], "1");
}

#[tokio::test]
async fn a_worker_dying_mid_cell_is_reported_and_replaced() {
    let api = api();
    let s = api.session().await;
    assert_eq!(
        api.run(&s, "import os\nos._exit(3)").await,
        ok_reply(
            1,
            json!({"status": "error", "category": "worker_died", "session_reset": true, "error": {
                "ename": "WorkerDied",
                "evalue": "the worker process died during the execution (exit code 3)",
                "traceback": [],
            }})
        )
    );
    let reply = api.run(&s, "1 + 1").await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["session_reset"], false);

    assert_eq!(
        api.run(&s, "import ctypes\nctypes.string_at(0)").await,
        ok_reply(
            3,
            json!({"status": "error", "category": "worker_died", "session_reset": true, "error": {
                "ename": "WorkerDied",
                "evalue": "the worker process died during the execution (signal 11 (SIGSEGV))",
                "traceback": [],
            }})
        )
    );
    assert_eq!(
        api.run(&s, "'next'").await["result"]["text/plain"],
        "'next'"
    );
}

#[tokio::test]
async fn a_worker_killed_between_requests_is_replaced() {
    let api = api();
    let s = api.session().await;
    api.run(&s, "x = 1").await;
    let (_, info) = api.get(&format!("/v1/sessions/{s}")).await;
    let pid = info["pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the worker");
    assert!(common::eventually(Duration::from_secs(10), || is_dead(pid as u32)).await);

    let reply = api.run(&s, "'x' in globals(), 6 * 7").await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["result"]["text/plain"], "(False, 42)");
    assert_eq!(reply["session_reset"], true);
    assert!(
        reply["mode"] == "warm" || reply["mode"] == "cold",
        "{reply}"
    );
}

#[tokio::test]
async fn memory_hogs_get_memory_error_and_the_session_lives() {
    let api = api();
    let s = api.session().await;
    api.run(&s, "x = 1").await;
    let reply = api.run(&s, "b = bytearray(10 * 1024**3)").await;
    assert_eq!(
        without_traceback(reply, "MemoryError"),
        ok_reply(
            2,
            json!({"status": "error", "category": "memory", "error": {"ename": "MemoryError", "evalue": ""}})
        )
    );
    assert_eq!(api.run(&s, "x").await["result"]["text/plain"], "1");
}

#[tokio::test]
async fn a_gigabyte_of_output_is_truncated() {
    let api = api();
    let s = api.session().await;
    let reply = api
        .run(
            &s,
            "chunk = 'y' * 1_000_000\nfor _ in range(1000):\n    print(chunk)",
        )
        .await;
    assert_eq!(reply["status"], "ok");
    assert_eq!(reply["truncated"], true);
    let stdout = reply["stdout"].as_str().expect("stdout");
    assert_eq!(stdout.len(), 1 << 20);
    assert_eq!(api.run(&s, "2").await["result"]["text/plain"], "2");
}

#[tokio::test]
async fn file_size_and_cpu_limits_end_the_cell_not_the_session() {
    let api = api();
    let s = api.session().await;
    let reply = api
        .run(
            &s,
            "with open('big.bin', 'wb') as f:\n    f.write(b'0' * (32 << 20))",
        )
        .await;
    assert_eq!(
        without_traceback(reply, "OSError: [Errno 27] File too large"),
        ok_reply(
            1,
            json!({"status": "error", "category": "disk_quota", "error": {"ename": "OSError", "evalue": "[Errno 27] File too large"}})
        )
    );
    let reply = api
        .exec(
            &s,
            json!({"code": "while True:\n    pass", "timeout_ms": 60000}),
        )
        .await;
    assert_eq!(
        without_traceback(
            reply,
            "CPUTimeLimitExceeded: CPU time limit of 3 s exceeded"
        ),
        ok_reply(
            2,
            json!({"status": "error", "category": "cpu_limit", "error": {
                "ename": "CPUTimeLimitExceeded", "evalue": "CPU time limit of 3 s exceeded"}})
        )
    );
    // The limit is per cell: the next one has its own.
    assert_eq!(
        api.run(&s, "sum(range(1000))").await["result"]["text/plain"],
        "499500"
    );
}

#[tokio::test]
async fn standard_streams_a_cell_closed_are_back_in_the_next_cell() {
    let api = api();
    let s = api.session().await;
    assert_eq!(
        api.run(&s, "import os, sys\nos.close(1)").await,
        ok_reply(1, json!({}))
    );
    assert_eq!(
        api.run(&s, "print('back')").await,
        ok_reply(2, json!({"stdout": "back\n"}))
    );
    // What a print into a closed fd 1 left in the stream's buffer is not the next cell's.
    let reply = api.run(&s, "os.close(1)\nprint('lost')").await;
    assert_eq!(
        without_traceback(reply, "OSError: [Errno 9] Bad file descriptor"),
        ok_reply(
            3,
            json!({"status": "error", "category": "runtime", "error": {"ename": "OSError", "evalue": "[Errno 9] Bad file descriptor"}})
        )
    );
    assert_eq!(
        api.run(&s, "print('again')").await,
        ok_reply(4, json!({"stdout": "again\n"}))
    );
    assert_eq!(api.run(&s, "os.close(2)").await, ok_reply(5, json!({})));
    assert_eq!(
        api.run(
            &s,
            "print('to stderr', file=sys.stderr)\nos.write(2, b'raw\\n')"
        )
        .await,
        ok_reply(
            6,
            json!({"stderr": "to stderr\nraw\n", "result": {"text/plain": "4"}})
        )
    );
    assert_eq!(
        api.run(&s, "sys.stdout = None\nsys.stderr = None").await,
        ok_reply(7, json!({}))
    );
    assert_eq!(
        api.run(&s, "print('out')\nprint('err', file=sys.stderr)")
            .await,
        ok_reply(8, json!({"stdout": "out\n", "stderr": "err\n"}))
    );
    // fd 0 closed, then a cell sent with stdin reads it; and one without reads nothing.
    assert_eq!(api.run(&s, "os.close(0)").await, ok_reply(9, json!({})));
    assert_eq!(
        api.exec(
            &s,
            json!({"code": "input() + sys.stdin.read()", "stdin": "line\nrest"})
        )
        .await,
        ok_reply(10, json!({"result": {"text/plain": "'linerest'"}}))
    );
    assert_eq!(
        api.run(&s, "os.close(0)\nsys.stdin.close()").await,
        ok_reply(11, json!({}))
    );
    assert_eq!(
        api.run(&s, "sys.stdin.read()").await,
        ok_reply(12, json!({"result": {"text/plain": "''"}}))
    );
}

#[tokio::test]
async fn unbounded_recursion_under_a_high_limit_is_a_recursion_error() {
    let api = api();
    let s = api.session().await;
    api.run(&s, "x = 7").await;
    let code = "import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return f(n + 1)\nf(0)";
    let reply = api
        .exec(&s, json!({"code": code, "timeout_ms": 20000}))
        .await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["session_reset"], false, "{reply}");
    assert_eq!(
        reply["error"]["ename"], "RecursionError",
        "{}",
        reply["error"]
    );
    let traceback = reply["error"]["traceback"].as_array().expect("traceback");
    assert!(traceback.len() < 100, "{} lines", traceback.len());
    assert!(
        traceback.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.ends_with("frames omitted ...]"))),
        "{traceback:?}"
    );
    assert_eq!(
        traceback.last().and_then(Value::as_str),
        Some("RecursionError: maximum recursion depth exceeded")
    );
    assert_eq!(api.run(&s, "x").await["result"]["text/plain"], "7");
}

#[tokio::test]
async fn a_worker_killed_for_not_stopping_is_told_why() {
    let api = api();
    let s = api.session().await;
    let code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass";
    let reply = api.exec(&s, json!({"code": code, "timeout_ms": 500})).await;
    assert_eq!(
        reply,
        ok_reply(
            1,
            json!({"status": "timeout", "category": "timeout", "session_reset": true, "error": {
                "ename": "TimeoutError",
                "evalue": "execution exceeded 500 ms and did not stop after the interrupt: the code set SIGINT to be ignored; the worker was killed",
                "traceback": [],
            }})
        )
    );
}
