//! Several Pythons side by side (`[[python.interpreters]]`): the venv's Python with the
//! preload, and Debian's `/usr/bin/python3` without it. Sessions choose one by name or version
//! and run on it (their resets too), each interpreter keeps its own warm pool, an unknown one
//! is refused, and python-executor's `python_version` / `docker_image` map onto them.

mod common;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use common::{Api, eventually_some, shared_with};
use serde_json::{Value, json};

/// Debian's interpreter; the tests skip (saying so) where it is not installed.
const DEBIAN: &str = "/usr/bin/python3";

/// The venv's Python first (the default), Debian's second, one warm worker each.
fn config() -> &'static str {
    static CONFIG: OnceLock<String> = OnceLock::new();
    CONFIG.get_or_init(|| {
        format!(
            "[pool]\nwarm_workers = 1\n\n\
             [[python.interpreters]]\nname = \"venv\"\nexecutable = {venv:?}\n\n\
             [[python.interpreters]]\nname = \"debian\"\nexecutable = {DEBIAN:?}\npreload = []\n",
            venv = common::python().display().to_string(),
        )
    })
}

/// A client of the shared two-interpreter server, or `None` (the test skipped) without
/// Debian's interpreter.
#[track_caller]
fn api() -> Option<Api> {
    if !Path::new(DEBIAN).exists() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped ({}): {DEBIAN} is not installed, and these tests need a second interpreter",
            std::panic::Location::caller()
        );
        return None;
    }
    Some(Api::new(shared_with(config())))
}

const WHICH_PYTHON: &str = "import sys\nprint(sys.version.split()[0], sys.executable)";

/// A new session on `python` (`None`: the default), its info.
async fn session_on(api: &Api, python: Option<&str>) -> Value {
    let body = python.map_or(json!({}), |p| json!({ "python": p }));
    let (status, info) = api.post("/v1/sessions", body).await;
    assert_eq!(status, 201, "{info}");
    info
}

async fn stdout_of(api: &Api, session: &str, code: &str) -> String {
    let reply = api.run(session, code).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    reply["stdout"].as_str().expect("stdout").to_owned()
}

#[tokio::test]
async fn sessions_of_each_interpreter_report_their_own_python() {
    let Some(api) = api() else { return };
    let venv = common::python();
    let cases = [
        (None, "venv", venv.as_path()),
        (Some("venv"), "venv", venv.as_path()),
        (Some("debian"), "debian", Path::new(DEBIAN)),
    ];
    for (asked, name, executable) in cases {
        let version = common::version_of(executable);
        let info = session_on(&api, asked).await;
        assert_eq!(
            info["python"],
            json!({"name": name, "version": version}),
            "{asked:?}: {info}"
        );
        let id = info["session_id"].as_str().expect("id");
        let expected = format!("{version} {}\n", executable.display());
        assert_eq!(
            stdout_of(&api, id, WHICH_PYTHON).await,
            expected,
            "{asked:?}"
        );
        // A reset starts the session over on its own interpreter.
        let (status, reset) = api
            .post(&format!("/v1/sessions/{id}/reset"), json!({}))
            .await;
        assert_eq!(status, 200, "{reset}");
        assert_eq!(reset["python"]["name"], name, "{reset}");
        assert_eq!(
            stdout_of(&api, id, WHICH_PYTHON).await,
            expected,
            "{asked:?}"
        );
        assert_eq!(api.delete(&format!("/v1/sessions/{id}")).await, 204);
    }
    // Without the preload, Debian's sessions have no numpy bound (nor installed).
    let debian = session_on(&api, Some("debian")).await;
    let id = debian["session_id"].as_str().expect("id");
    assert_eq!(
        stdout_of(&api, id, "print('np' in globals())").await,
        "False\n"
    );
    assert_eq!(api.delete(&format!("/v1/sessions/{id}")).await, 204);
}

#[tokio::test]
async fn a_version_chooses_the_first_interpreter_that_has_it() {
    let Some(api) = api() else { return };
    let venv_version = common::version_of(&common::python());
    let debian_version = common::version_of(Path::new(DEBIAN));
    let minor: String = venv_version
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    let info = session_on(&api, Some(&minor)).await;
    assert_eq!(info["python"]["name"], "venv", "{info}");
    api.delete(&format!(
        "/v1/sessions/{}",
        info["session_id"].as_str().expect("id")
    ))
    .await;
    if debian_version != venv_version {
        let info = session_on(&api, Some(&debian_version)).await;
        assert_eq!(info["python"]["name"], "debian", "{info}");
        api.delete(&format!(
            "/v1/sessions/{}",
            info["session_id"].as_str().expect("id")
        ))
        .await;
    }
}

#[tokio::test]
async fn one_shots_run_on_the_interpreter_asked_for() {
    let Some(api) = api() else { return };
    let venv = common::python();
    for (asked, executable) in [
        (None, venv.as_path()),
        (Some("debian"), Path::new(DEBIAN)),
        (Some("venv"), venv.as_path()),
    ] {
        let mut body = json!({ "code": WHICH_PYTHON });
        if let Some(asked) = asked {
            body["python"] = json!(asked);
        }
        let (status, reply) = api.post("/v1/execute", body).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["status"], "ok", "{reply}");
        assert_eq!(
            reply["stdout"],
            format!(
                "{} {}\n",
                common::version_of(executable),
                executable.display()
            ),
            "{asked:?}"
        );
    }
    let (status, body) = api
        .post("/v1/execute", json!({"code": "1", "python": "2.7"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unknown_python", "{body}");
}

#[tokio::test]
async fn an_unknown_python_is_refused_naming_what_there_is() {
    let Some(api) = api() else { return };
    // `3.1` is no prefix of 3.11.x: versions match whole parts only.
    for asked in ["2.7", "3.1", "pypy"] {
        let (status, body) = api.post("/v1/sessions", json!({ "python": asked })).await;
        assert_eq!(status, 400, "{asked}: {body}");
        assert_eq!(body["error"]["code"], "unknown_python", "{body}");
        assert_eq!(body["error"]["category"], "request", "{body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("venv (") && message.contains("debian ("),
            "{message}"
        );
    }
    let (status, body) = api.post("/v1/sessions", json!({ "python": 3.11 })).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
}

#[tokio::test]
async fn both_pools_stay_warm() {
    let Some(api) = api() else { return };
    for name in ["venv", "debian"] {
        // Take the interpreter's ready worker, then see its pool make another.
        wait_for_pool_of(&api, name).await;
        let info = session_on(&api, Some(name)).await;
        let id = info["session_id"].as_str().expect("id");
        let reply = api.run(id, "1 + 1").await;
        assert_eq!(reply["mode"], "warm", "{name}: {reply}");
        wait_for_pool_of(&api, name).await;
        assert_eq!(api.delete(&format!("/v1/sessions/{id}")).await, 204);
    }
    let (_, health) = api.get("/healthz").await;
    let interpreters = health["interpreters"].as_array().expect("interpreters");
    assert_eq!(
        interpreters
            .iter()
            .map(|i| (i["name"].as_str(), i["default"].as_bool()))
            .collect::<Vec<_>>(),
        [(Some("venv"), Some(true)), (Some("debian"), Some(false))],
        "{health}"
    );
    assert_eq!(interpreters[1]["executable"], DEBIAN, "{health}");
    // The default interpreter's pool keeps its series; the others' are labelled by name.
    let scrape = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    for series in [
        "replpool_pool_ready_workers{pool=\"sessions\"}",
        "replpool_pool_ready_workers{pool=\"sessions@debian\"}",
    ] {
        assert!(scrape.contains(series), "no {series} in:\n{scrape}");
    }
}

/// Waits until `/healthz` shows the interpreter's pool full, with a running template.
async fn wait_for_pool_of(api: &Api, name: &str) {
    let full = eventually_some(Duration::from_secs(60), || async move {
        let (_, health) = api.get("/healthz").await;
        let pool = health["interpreters"]
            .as_array()?
            .iter()
            .find(|i| i["name"] == name)?["pool"]
            .clone();
        (pool["ready"] == 1 && pool["target"] == 1 && pool["template"]["state"] == "running")
            .then_some(())
    })
    .await;
    assert!(full.is_some(), "the pool of {name} never refilled");
}

/// A multipart python-executor request: a tar of `main.py` and its metadata.
async fn exec_sync(api: &Api, code: &str, metadata: Value) -> (u16, Value) {
    common::submit(api, "/api/v1/exec/sync", &[("main.py", code)], metadata).await
}

#[tokio::test]
async fn python_executor_images_and_versions_map_to_interpreters() {
    let Some(api) = api() else { return };
    let venv = common::python();
    let minor: String = common::version_of(&venv)
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    // The image python-executor documents as its default: the first interpreter of 3.11.
    let (status, result) = exec_sync(
        &api,
        "import sys\nprint(sys.executable)",
        json!({"entrypoint": "main.py", "docker_image": format!("python:{minor}-slim")}),
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(
        result["stdout"],
        format!("{}\n", venv.display()),
        "{result}"
    );
    // The same through `/api/v1/eval`'s python_version.
    let (status, result) = api
        .post(
            "/api/v1/eval",
            json!({"code": "import sys\nprint(sys.executable)", "python_version": minor}),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        result["stdout"],
        format!("{}\n", venv.display()),
        "{result}"
    );

    // A version python-executor takes, but no interpreter here has.
    let (status, body) = api
        .post(
            "/api/v1/eval",
            json!({"code": "1", "python_version": "3.13"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().expect("error");
    assert!(
        message.contains("python_version") && message.contains("3.13"),
        "{body}"
    );
    for (metadata, field) in [
        (json!({"docker_image": "python:3.13-slim"}), "docker_image"),
        (json!({"docker_image": "ubuntu:22.04"}), "docker_image"),
        (
            json!({"docker_image": format!("python:{minor}"), "python_version": "3.13"}),
            "disagree",
        ),
    ] {
        let mut metadata = metadata;
        metadata["entrypoint"] = json!("main.py");
        let (status, body) = exec_sync(&api, "print(1)", metadata.clone()).await;
        assert_eq!(status, 400, "{metadata}: {body}");
        let message = body["error"].as_str().expect("error");
        assert!(message.contains(field), "{metadata}: {body}");
    }
}

/// `replpool <args> --config <config_extra's file>`: its exit code, stdout and stderr.
fn replpool_with(args: &[&str], config_extra: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), config_extra);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_replpool"))
        .args(args)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run replpool");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_interpreter_that_does_not_exist_stops_the_start_naming_its_entry() {
    let venv = common::python().display().to_string();
    let config = format!(
        "[[python.interpreters]]\nname = \"venv\"\nexecutable = {venv:?}\n\n\
         [[python.interpreters]]\nname = \"gone\"\nexecutable = \"/nonexistent/bin/python3.99\"\n"
    );
    let (code, _, stderr) = replpool_with(&["serve", "--bind", "127.0.0.1:0"], &config);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("python.interpreters[1].executable")
            && stderr.contains("/nonexistent/bin/python3.99"),
        "{stderr}"
    );
    let twice = format!(
        "[[python.interpreters]]\nname = \"venv\"\nexecutable = {venv:?}\n\n\
         [[python.interpreters]]\nname = \"venv\"\nexecutable = {venv:?}\n"
    );
    let (code, _, stderr) = replpool_with(&["serve", "--bind", "127.0.0.1:0"], &twice);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("python.interpreters[1].name"), "{stderr}");
    // There, but not a Python: named by its entry before anything else looks at it.
    let not_python = format!(
        "[[python.interpreters]]\nname = \"venv\"\nexecutable = {venv:?}\n\n\
         [[python.interpreters]]\nname = \"true\"\nexecutable = \"/bin/true\"\n"
    );
    let (code, _, stderr) = replpool_with(&["serve", "--bind", "127.0.0.1:0"], &not_python);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("python.interpreters[1] (true) (/bin/true): it did not tell its version"),
        "{stderr}"
    );
}

#[test]
fn without_entries_the_effective_config_shows_the_one_interpreter() {
    let (code, stdout, stderr) = replpool_with(&["config"], "[python]\npreload = []\n");
    assert_eq!(code, 0, "{stderr}");
    // Printed as given (no entries: a file saved from it still follows python.executable),
    // and the effective interpreter beside it as a comment.
    let printed: toml::Table = stdout.parse().expect("TOML");
    assert!(printed["python"].get("interpreters").is_none(), "{stdout}");
    let line = format!(
        "#   default = {} (preload [], warm_workers 2)",
        common::python().display()
    );
    assert!(
        stdout.lines().any(|l| l == line),
        "{line:?} not in {stdout}"
    );
}
