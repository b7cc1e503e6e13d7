//! Per-session packages (issue 22): installs into one session's own layer with uv, from a
//! shared cache, against the real package index. The tests that need the index skip, saying
//! so, when it cannot be reached; the refusals need no network and always run.
//!
//! Each test installs a package of its own (none of them in the base environment), so that
//! the cache's first and second use are known whatever order the tests run in.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use common::{Api, shared_with};
use serde_json::{Value, json};

use common::uv;

/// One server for the binary, with a cache of its own (empty at start: a first install
/// really downloads) and a deny list.
fn api() -> Api {
    static CONFIG: OnceLock<String> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("uv-cache-{}", std::process::id()));
        assert!(uv().exists(), "uv is not at {} (make venv installs it)", uv().display());
        format!(
            "[pool]\nwarm_workers = 2\n\n[packages]\nuv = {:?}\ncache_dir = {:?}\ndeny = [\"evil-*\", \"torch\", \"text-unidecode\"]\n",
            uv().display().to_string(),
            cache.display().to_string(),
        )
    });
    Api::new(shared_with(config))
}

/// Whether the package index answers; says on stderr that `test` is skipped when it does not
/// (on the stderr stream itself: the harness shows `eprintln!` only for failing tests).
async fn index_reachable(test: &str) -> bool {
    use std::io::Write;
    let connect = tokio::net::TcpStream::connect(("pypi.org", 443));
    let reachable = matches!(
        tokio::time::timeout(Duration::from_secs(5), connect).await,
        Ok(Ok(_))
    );
    if !reachable {
        let _ = writeln!(
            std::io::stderr(),
            "skipped ({test}): the package index https://pypi.org/simple/ cannot be reached in 5 s"
        );
    }
    reachable
}

async fn install(api: &Api, session: &str, requirements: Value) -> (u16, Value) {
    api.post(
        &format!("/v1/sessions/{session}/packages"),
        json!({ "requirements": requirements }),
    )
    .await
}

#[tokio::test]
async fn a_package_goes_into_one_session_and_the_next_gets_it_from_the_cache() {
    if !index_reachable("a_package_goes_into_one_session_and_the_next_gets_it_from_the_cache").await
    {
        return;
    }
    let api = api();
    let first = api.session().await;
    let other = api.session().await;
    api.run(&first, "kept = 41").await;

    let (status, body) = install(&api, &first, json!(["tabulate==0.9.0"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["installed"], json!(["tabulate==0.9.0"]), "{body}");
    assert_eq!(body["packages"], json!(["tabulate==0.9.0"]), "{body}");
    assert_eq!(body["from_cache"], false, "a fresh cache: {body}");
    // Importable at once, the namespace kept.
    let value = common::value_of(
        &api,
        &first,
        "import tabulate\n(kept + 1, tabulate.__version__, tabulate.__file__.count('.replpool'))",
    )
    .await;
    assert_eq!(value, "(42, '0.9.0', 1)");
    let (_, info) = api.get(&format!("/v1/sessions/{first}")).await;
    assert_eq!(info["packages"], json!(["tabulate==0.9.0"]), "{info}");

    // Not in another session, nor in the base.
    let reply = api.run(&other, "import tabulate").await;
    assert_eq!(common::ename(&reply), "ModuleNotFoundError", "{reply}");

    // The same pin for a second session: from the cache, not the index.
    let (status, body) = install(&api, &other, json!(["tabulate==0.9.0"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["from_cache"], true, "{body}");
    assert_eq!(
        common::value_of(&api, &other, "import tabulate; tabulate.__version__").await,
        "'0.9.0'"
    );

    // And at creation.
    let (status, created) = api
        .post("/v1/sessions", json!({"requirements": ["tabulate==0.9.0"]}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["packages"], json!(["tabulate==0.9.0"]), "{created}");
    let third = created["session_id"].as_str().expect("id");
    assert_eq!(
        common::value_of(&api, third, "import tabulate; tabulate.__version__").await,
        "'0.9.0'"
    );
}

#[tokio::test]
async fn a_package_that_does_not_exist_fails_cleanly_and_the_session_goes_on() {
    if !index_reachable("a_package_that_does_not_exist_fails_cleanly_and_the_session_goes_on").await
    {
        return;
    }
    let api = api();
    let session = api.session().await;
    api.run(&session, "kept = 'still here'").await;
    let (status, body) = install(
        &api,
        &session,
        json!(["this-package-does-not-exist-replpool==1.0"]),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "install_failed", "{body}");
    assert_eq!(body["error"]["category"], "install", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("this-package-does-not-exist-replpool"),
        "the installer's message names the package: {message}"
    );
    // Nothing half-installed: no layer, no files of one, and the session runs on.
    let (_, info) = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(info["packages"], json!([]), "{info}");
    let (_, listing) = api.get(&format!("/v1/sessions/{session}/files")).await;
    assert_eq!(listing["files"], json!([]), "{listing}");
    assert_eq!(
        common::value_of(&api, &session, "kept").await,
        "'still here'"
    );
}

#[tokio::test]
async fn a_dependency_the_deny_list_keeps_out_is_refused_naming_it() {
    if !index_reachable("a_dependency_the_deny_list_keeps_out_is_refused_naming_it").await {
        return;
    }
    let api = api();
    let session = api.session().await;
    // python-slugify is allowed; it needs text-unidecode, which is denied.
    let (status, body) = install(&api, &session, json!(["python-slugify==8.0.4"])).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "package_not_allowed", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("`text-unidecode`") && message.contains("python-slugify==8.0.4"),
        "{message}"
    );
    let reply = api.run(&session, "import slugify").await;
    assert_eq!(common::ename(&reply), "ModuleNotFoundError", "{reply}");
}

#[tokio::test]
async fn pip_install_in_a_cell_installs_before_the_rest_of_the_cell() {
    if !index_reachable("pip_install_in_a_cell_installs_before_the_rest_of_the_cell").await {
        return;
    }
    let api = api();
    let session = api.session().await;
    let reply = api
        .run(
            &session,
            "%pip install -q humanize==4.9.0\nimport humanize\nprint(humanize.intcomma(1234567))",
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let stdout = reply["stdout"].as_str().expect("stdout");
    assert!(
        stdout.contains("Installed into this session: humanize==4.9.0"),
        "{stdout}"
    );
    assert!(stdout.ends_with("1,234,567\n"), "{stdout}");

    // A `!pip` line inside a string is the string's text, not a command.
    let value = common::value_of(
        &api,
        &session,
        "doc = \"\"\"Set-up:\n!pip install this-package-does-not-exist-replpool\n\"\"\"\ndoc",
    )
    .await;
    assert_eq!(
        value,
        "'Set-up:\\n!pip install this-package-does-not-exist-replpool\\n'"
    );

    // Only installs: another pip command is the cell's error, and nothing of it runs.
    let reply = api.run(&session, "%pip list\nprint('ran')").await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["category"], "install", "{reply}");
    assert_eq!(reply["stdout"], "", "{reply}");
    // A failing install in a cell: the same.
    let reply = api
        .run(
            &session,
            "!pip install this-package-does-not-exist-replpool==1.0\nprint('ran')",
        )
        .await;
    assert_eq!(
        (&reply["status"], &reply["category"]),
        (&json!("error"), &json!("install")),
        "{reply}"
    );
    assert!(
        reply["error"]["evalue"]
            .as_str()
            .is_some_and(|e| e.contains("this-package-does-not-exist-replpool")),
        "{reply}"
    );
}

#[tokio::test]
async fn python_executor_installs_requirements_txt_before_the_program() {
    if !index_reachable("python_executor_installs_requirements_txt_before_the_program").await {
        return;
    }
    let api = api();
    let metadata = json!({
        "entrypoint": "main.py",
        "requirements_txt": "# what the program needs\ntermcolor==2.4.0  # colours\n\n",
    });
    let (status, result) = common::submit(
        &api,
        "/api/v1/exec/sync",
        &[(
            "main.py",
            "import termcolor\nprint(termcolor.__name__, 'ok')\n",
        )],
        metadata,
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["stdout"], "termcolor ok\n", "{result}");
}

#[tokio::test]
async fn refused_requirements_never_reach_the_installer() {
    let api = api();
    let session = api.session().await;
    for (requirement, status, code) in [
        ("evil-tool==1.0", 403, "package_not_allowed"),
        ("Torch", 403, "package_not_allowed"),
        (
            "--index-url=https://evil.example/simple",
            400,
            "invalid_requirement",
        ),
        (
            "tabulate @ https://evil.example/t.whl",
            400,
            "invalid_requirement",
        ),
        ("../wheels/x.whl", 400, "invalid_requirement"),
    ] {
        let (got, body) = install(&api, &session, json!([requirement])).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{requirement}: {body}"
        );
        assert_eq!(body["error"]["category"], "request", "{body}");
        if status == 403 {
            let name = requirement
                .split('=')
                .next()
                .unwrap_or_default()
                .to_lowercase();
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("`{name}`"))),
                "the reply names the package: {body}"
            );
        }
    }
    // Nothing asked, nothing done: the installer is not even started (this server's uv would
    // answer, a missing one would be 503).
    let (status, body) = install(&api, &session, json!([])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["installed"], &body["packages"]),
        (&json!([]), &json!([])),
        "{body}"
    );
    // At creation too, before any session is made.
    let (status, body) = api
        .post("/v1/sessions", json!({"requirements": ["evil-tool"]}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("package_not_allowed")),
        "{body}"
    );
    let (status, body) = api
        .post(
            &format!("/v1/sessions/{session}/packages"),
            json!({"requirements": "tabulate"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (_, info) = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(info["packages"], json!([]), "{info}");
}

#[tokio::test]
async fn code_that_makes_its_package_directory_a_link_gets_a_failed_install_not_a_write_elsewhere()
{
    if !index_reachable(
        "code_that_makes_its_package_directory_a_link_gets_a_failed_install_not_a_write_elsewhere",
    )
    .await
    {
        return;
    }
    let api = api();
    let session = api.session().await;
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("layer-target-{}", std::process::id()));
    std::fs::create_dir_all(&target).expect("target dir");
    // Open to anyone, so that only the server's care (not the permissions) keeps it empty.
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let reply = api
        .run(
            &session,
            &format!(
                "import os\nos.symlink({:?}, '.replpool')",
                target.display().to_string()
            ),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (status, body) = install(&api, &session, json!(["toolz==0.12.1"])).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        (
            body["error"]["code"].as_str(),
            body["error"]["category"].as_str()
        ),
        (Some("install_failed"), Some("install")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(".replpool")),
        "{body}"
    );
    let written: Vec<_> = std::fs::read_dir(&target).expect("read").collect();
    assert!(
        written.is_empty(),
        "the install wrote through the link: {written:?}"
    );
    let (_, info) = api.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(info["packages"], json!([]), "{info}");
    let _ = std::fs::remove_dir_all(&target);
}

#[tokio::test]
async fn an_install_past_its_timeout_is_stopped_with_its_processes() {
    // An index that takes connections and never answers: uv waits on it until the server's
    // deadline ends it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("uv-cache-timeout-{}", std::process::id()));
    let server = common::Server::start(&format!(
        "[pool]\nwarm_workers = 1\n\n[packages]\nuv = {:?}\ncache_dir = {:?}\nindex_url = \"http://127.0.0.1:{port}/simple\"\ntimeout_ms = 1500\n",
        uv().display().to_string(),
        cache.display().to_string(),
    ));
    let api = Api::new(&server.base);
    let session = api.session().await;
    api.run(&session, "kept = 1").await;
    let (status, body) = install(&api, &session, json!(["tabulate==0.9.0"])).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        (
            body["error"]["code"].as_str(),
            body["error"]["category"].as_str()
        ),
        (Some("install_timeout"), Some("install")),
        "{body}"
    );
    // A `%pip install` in a cell ends at the cell's deadline, not the installer's.
    let (status, reply) = api
        .post(
            &format!("/v1/sessions/{session}/execute"),
            json!({"code": "%pip install tabulate==0.9.0\nprint('ran')", "timeout_ms": 300}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (&reply["category"], &reply["stdout"]),
        (&json!("install"), &json!("")),
        "{reply}"
    );
    assert!(
        reply["error"]["evalue"]
            .as_str()
            .is_some_and(|e| e.contains("reached its deadline (300 ms)")),
        "{reply}"
    );
    // A caller that gives up on a session being made with requirements leaves no session
    // behind (no one would have its id).
    let impatient = api
        .http
        .post(format!("{}/v1/sessions", server.base))
        .json(&json!({"requirements": ["tabulate==0.9.0"]}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(impatient.is_err(), "{impatient:?}");
    assert!(
        common::eventually_some(Duration::from_secs(10), || async {
            let (_, listing) = api.get("/v1/sessions").await;
            (listing["sessions"].as_array().map(Vec::len) == Some(1)).then_some(())
        })
        .await
        .is_some(),
        "the half-made session stayed"
    );
    let server_pid = server.pid();
    assert!(
        common::eventually(Duration::from_secs(10), || {
            common::children_of(server_pid)
                .iter()
                .all(|p| p.comm != "uv")
        })
        .await,
        "uv outlived its install"
    );
    assert_eq!(common::value_of(&api, &session, "kept").await, "1");
    let _ = std::fs::remove_dir_all(&cache);
    drop(silent);
}
