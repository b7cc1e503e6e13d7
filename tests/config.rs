//! Start-up configuration: bad values stop the server with a message naming the field.

mod common;

use std::process::Command;

fn serve_with(config_extra: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), config_extra);
    let output = Command::new(env!("CARGO_BIN_EXE_replpool"))
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&config)
        .envs(env.iter().copied())
        .output()
        .expect("run replpool");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_value_names_the_field() {
    let (code, stderr) = serve_with("[pool]\nwarm_workers = \"lots\"\n", &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("pool.warm_workers"), "{stderr}");
}

#[test]
fn a_node_name_that_is_not_a_dns_label_names_the_field() {
    for bad in ["Node_A", "node.a", "-a", ""] {
        let (code, stderr) = serve_with(&format!("[server]\nnode = {bad:?}\n"), &[]);
        assert_eq!(code, 1, "{bad:?}: {stderr}");
        assert!(stderr.contains("server.node"), "{bad:?}: {stderr}");
        assert!(stderr.contains("not a DNS label"), "{bad:?}: {stderr}");
    }
}

#[test]
fn unknown_field_names_the_field() {
    let (code, stderr) = serve_with("[sessions]\nmax_sesions = 3\n", &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("max_sesions"), "{stderr}");
}

#[test]
fn bad_environment_override_names_the_field() {
    let (code, stderr) = serve_with("", &[("REPLPOOL_EXECUTION_MAX_CODE_BYTES", "-5")]);
    assert_ne!(code, 0);
    assert!(stderr.contains("execution.max_code_bytes"), "{stderr}");
}

#[test]
fn missing_config_file_is_reported() {
    let output = Command::new(env!("CARGO_BIN_EXE_replpool"))
        .args(["serve", "--config", "/nonexistent/replpool.toml"])
        .output()
        .expect("run replpool");
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/replpool.toml"), "{stderr}");
}

#[test]
fn help_explains_itself() {
    let output = Command::new(env!("CARGO_BIN_EXE_replpool"))
        .arg("--help")
        .output()
        .expect("run replpool");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("serve"), "{stdout}");
    assert!(stdout.contains("Python"), "{stdout}");
}

#[test]
fn a_public_bind_without_tokens_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), "");
    let output = Command::new(env!("CARGO_BIN_EXE_replpool"))
        .args(["serve", "--bind", "0.0.0.0:0", "--config"])
        .arg(&config)
        .output()
        .expect("run replpool");
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.bind"), "{stderr}");
    assert!(stderr.contains("reachable from other machines"), "{stderr}");
}

#[tokio::test]
async fn unrelated_replpool_variables_do_not_stop_the_start() {
    let server = common::Server::start_with_env(
        "[pool]\nwarm_workers = 0\ntemplate = false\n",
        &[("REPLPOOL_CHECKOUT", "x"), ("REPLPOOL_TEST_THING", "y")],
    );
    let (status, _) = common::Api::new(&server.base).get("/healthz").await;
    assert_eq!(status, 200);
}

#[test]
fn unknown_key_in_a_known_section_names_the_variable() {
    let (code, stderr) = serve_with("", &[("REPLPOOL_POOL_WARM_WRKERS", "3")]);
    assert_ne!(code, 0);
    assert!(stderr.contains("REPLPOOL_POOL_WARM_WRKERS"), "{stderr}");
    assert!(stderr.contains("warm_wrkers"), "{stderr}");
}
