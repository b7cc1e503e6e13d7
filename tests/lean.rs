//! One-shots from the lean pool (`python.lean_oneshots`): code that cannot need the preload
//! runs on a worker without it, code that may need it on a preloaded one, and lean one-shots
//! are as isolated from each other as any.

mod common;

use common::{Api, shared};
use serde_json::json;

fn api() -> Api {
    Api::new(shared())
}

/// Whether numpy's C core is mapped into the worker: read from `/proc/self/maps`, so that the
/// probe itself mentions neither the preload nor the module table.
const NUMPY_MAPPED: &str = "'_multiarray_umath' in open('/proc/self/maps').read()";

async fn one_shot_stdout(api: &Api, code: &str) -> String {
    let (status, reply) = api.post("/v1/execute", json!({"code": code})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["mode"], "warm", "{reply}");
    reply["stdout"].as_str().expect("stdout").to_owned()
}

#[tokio::test]
async fn one_shots_run_lean_unless_the_code_may_need_the_preload() {
    let api = api();
    // Preloaded workers take a while to make on a busy machine: a one-shot that waited
    // longer than the acquire timeout would run cold.
    api.wait_for_pool(2).await;
    // Plain Python: a worker without the preload.
    let lean = one_shot_stdout(&api, &format!("print({NUMPY_MAPPED})")).await;
    assert_eq!(lean, "False\n");
    // The preload's alias: the preloaded worker, with the name bound.
    let heavy = one_shot_stdout(
        &api,
        &format!(
            "import sys\nprint(int(np.arange(4).sum()), 'numpy' in sys.modules, {NUMPY_MAPPED})"
        ),
    )
    .await;
    assert_eq!(heavy, "6 True True\n");
    // A name reached without being spelled: the preloaded worker too.
    let indirect = one_shot_stdout(
        &api,
        &format!("print(int(globals()['n' + 'p'].arange(3).sum()), {NUMPY_MAPPED})"),
    )
    .await;
    assert_eq!(indirect, "3 True\n");
}

#[tokio::test]
async fn health_shows_the_lean_pool() {
    let api = api();
    // The lean pool starts at the first one-shot that can use it.
    assert_eq!(one_shot_stdout(&api, "print(2 + 2)").await, "4\n");
    let (status, health) = api.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["lean_pool"]["target"], 4, "{health}");
    assert_eq!(health["pool"]["target"], 2, "{health}");
}

#[tokio::test]
async fn lean_one_shots_share_nothing() {
    let api = api();
    // Names no other test (or other server on the machine) uses.
    let mark = format!("{}.{}", std::process::id(), 271828);
    // A variable, a file in the working directory and in /tmp, and a process left running.
    let first = one_shot_stdout(
        &api,
        &format!(
            "import subprocess\nleft = 'behind'\nopen('here.txt', 'w').write('x')\n\
             open('/tmp/lean-{mark}.txt', 'w').write('x')\n\
             p = subprocess.Popen(['sleep', '{mark}'], start_new_session=True)\n\
             print(p.pid > 0, {NUMPY_MAPPED})"
        ),
    )
    .await;
    assert_eq!(first, "True False\n");
    let second = one_shot_stdout(
        &api,
        &format!(
            "import os\n\
             try:\n    left\n    kept = True\nexcept NameError:\n    kept = False\n\
             def running(pid):\n    try:\n        with open(f'/proc/{{pid}}/cmdline', 'rb') as f:\n            return b'{mark}' in f.read()\n    except OSError:\n        return False\n\
             sleeping = any(running(p) for p in os.listdir('/proc') if p.isdigit())\n\
             print(kept, os.path.exists('here.txt'), os.path.exists('/tmp/lean-{mark}.txt'), sleeping, {NUMPY_MAPPED})"
        ),
    )
    .await;
    assert_eq!(second, "False False False False False\n");
}
