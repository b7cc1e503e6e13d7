//! The script wrapper's API (`/python/...`): load, list, call, installPackage.

mod common;

use std::sync::OnceLock;

use common::{Api, shared_with};
use serde_json::json;

fn api() -> Api {
    static CONFIG: OnceLock<String> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        format!(
            "[pool]\nwarm_workers = 2\n\n[scripts]\ndir = {:?}\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scripts")
        )
    });
    Api::new(shared_with(config))
}

async fn load(api: &Api, alias: &str) -> serde_json::Value {
    let (status, body) = api
        .post(
            "/python/load",
            json!({"script_name": "geometry", "alias": alias}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn load_list_and_call() {
    let api = api();
    let body = load(&api, "geo").await;
    assert_eq!(
        body,
        json!({"status": "success", "alias": "geo", "script_name": "geometry",
               "functions": ["area", "explode", "get_tool_info", "opaque", "scale"]})
    );
    let (status, list) = api.get("/python/list").await;
    assert_eq!(status, 200);
    let entry = list["scripts"]
        .as_array()
        .expect("scripts")
        .iter()
        .find(|s| s["alias"] == "geo")
        .expect("geo is listed")
        .clone();
    assert_eq!(entry["info"]["version"], "1.0.0");
    assert_eq!(entry["functions"].as_array().map(Vec::len), Some(5));

    let (status, body) = api
        .post("/python/call", json!({"alias": "geo", "function_name": "scale", "args": [[1, 2.5]], "kwargs": {"factor": 3}}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["result"], json!([3, 7.5]));
    let (_, body) = api
        .post(
            "/python/call",
            json!({"alias": "geo", "function_name": "area", "args": [1]}),
        )
        .await;
    assert_eq!(body["result"], json!(std::f64::consts::PI));
    let (_, body) = api
        .post(
            "/python/call",
            json!({"alias": "geo", "function_name": "opaque"}),
        )
        .await;
    assert_eq!(body["repr"], true);
    assert!(
        body["result"]
            .as_str()
            .expect("repr")
            .starts_with("<object object at")
    );
}

#[tokio::test]
async fn errors() {
    let api = api();
    load(&api, "geo2").await;
    let (status, body) = api
        .post(
            "/python/call",
            json!({"alias": "nope", "function_name": "area"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("alias_not_found"))
    );
    let (status, body) = api
        .post(
            "/python/call",
            json!({"alias": "geo2", "function_name": "_private"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("function_not_found"))
    );
    let (status, body) = api
        .post(
            "/python/call",
            json!({"alias": "geo2", "function_name": "explode", "args": ["boom"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"]["ename"], "ValueError");
    assert_eq!(body["error"]["evalue"], "boom");
    assert_eq!(body["category"], "runtime");
    for name in ["../etc/passwd", "/etc/passwd", "sub/geometry"] {
        let (status, body) = api
            .post("/python/load", json!({"script_name": name, "alias": "x"}))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_script_name")),
            "{name}"
        );
    }
    let (status, body) = api
        .post(
            "/python/load",
            json!({"script_name": "missing", "alias": "x"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("script_not_found"))
    );
}

#[tokio::test]
async fn installing_packages_is_refused_unless_enabled() {
    let (status, body) = api()
        .post("/python/installPackage", json!({"package_name": "astropy"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("install_disabled"))
    );
}

fn scripts_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scripts")
}

#[tokio::test]
async fn a_load_that_fails_ends_its_session() {
    // Code this small lets the first set-up cell through and refuses the import cell.
    let server = common::Server::start(&format!(
        "[pool]\nwarm_workers = 1\n\n[execution]\nmax_code_bytes = 400\n\n[scripts]\ndir = {:?}\n",
        scripts_dir()
    ));
    let api = Api::new(&server.base);
    let (status, body) = api
        .post(
            "/python/load",
            json!({"script_name": "geometry", "alias": "geo"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("code_too_large")),
        "{body}"
    );
    let (status, list) = api.get("/v1/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(list["sessions"], json!([]), "the load's session is left");
}

#[tokio::test]
async fn aliases_belong_to_the_token_that_loaded_them() {
    const A: &str = "token-a-0123456789abcdef";
    const B: &str = "token-b-0123456789abcdef";
    let server = common::Server::start(&format!(
        "[pool]\nwarm_workers = 2\n\n[auth]\ntokens = [{A:?}, {B:?}]\n\n[scripts]\ndir = {:?}\n",
        scripts_dir()
    ));
    let a = Api::with_token(&server.base, A);
    let b = Api::with_token(&server.base, B);
    load(&a, "geo").await;

    let (status, body) = b
        .post(
            "/python/call",
            json!({"alias": "geo", "function_name": "area", "args": [1]}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("alias_not_found")),
        "{body}"
    );
    let (_, list) = b.get("/python/list").await;
    assert_eq!(list["scripts"], json!([]), "{list}");
    // B's own `geo` is another alias: A's is neither replaced nor ended.
    load(&b, "geo").await;
    let (_, list) = b.get("/python/list").await;
    assert_eq!(list["scripts"].as_array().map(Vec::len), Some(1), "{list}");
    for caller in [&a, &b] {
        let (status, body) = caller
            .post(
                "/python/call",
                json!({"alias": "geo", "function_name": "area", "args": [1]}),
            )
            .await;
        assert_eq!(
            (status, &body["status"]),
            (200, &json!("success")),
            "{body}"
        );
    }
    // The alias's session is its loader's: it counts as theirs, and only theirs.
    let (_, sessions) = a.get("/v1/sessions").await;
    assert_eq!(
        sessions["sessions"].as_array().map(Vec::len),
        Some(1),
        "{sessions}"
    );
}

#[tokio::test]
async fn an_install_cut_short_by_max_timeout_says_so() {
    let server = common::Server::start(
        "[pool]\nwarm_workers = 1\n\n[sandbox]\nnetwork = \"host\"\nfilesystem = \"host\"\nuser = \"\"\n\n[packages]\nallow_install = true\n\n[execution]\ndefault_timeout_ms = 100\nmax_timeout_ms = 100\n\n[judge]\nrun_timeout_ms = 100\ncompile_timeout_ms = 100\n",
    );
    let api = Api::new(&server.base);
    // Already installed, so pip needs no network; it cannot even start in 100 ms.
    let (status, body) = api
        .post("/python/installPackage", json!({"package_name": "pip"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    let error = body["error"].as_str().expect("error says why");
    assert!(
        error.contains("execution.max_timeout_ms") && error.contains("600"),
        "{error}"
    );
    assert_eq!(body["timeout_ms"], 100, "{body}");
}

#[tokio::test]
async fn a_load_whose_client_left_still_ends_its_session_if_it_fails() {
    use std::os::unix::fs::PermissionsExt;
    // A script that blocks at import until the test lets it go, then raises. Not under /tmp,
    // which each worker has of its own.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scripts dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (blocker, code) = common::blocker().await;
    std::fs::write(
        dir.path().join("slow.py"),
        format!("{code}\nraise RuntimeError('cannot load')\n"),
    )
    .expect("write the script");
    let server = common::Server::start(&format!(
        "[pool]\nwarm_workers = 1\n\n[scripts]\ndir = {:?}\n",
        dir.path().display().to_string()
    ));
    let api = Api::new(&server.base);
    let request = api
        .http
        .post(api.url("/python/load"))
        .json(&json!({"script_name": "slow", "alias": "slow"}));
    // The import runs; its client goes away, then the import fails.
    assert!(
        api.leave_mid_cell(request, &blocker).await,
        "the load's session was left behind"
    );
}
