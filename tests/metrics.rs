//! `GET /metrics`: after a run that exercised them, every family shows what happened, a real
//! Prometheus parser (`prometheus_client`, `tests/metrics/check.py`) reads the whole scrape
//! and finds each family with its type, and the route is behind the token unless
//! `metrics.public`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Api, Server, eventually_some, shared_with};
use serde_json::json;

const TOKEN: &str = "metrics-token-0123456789";
/// A small output cap, so that a cell can pass it cheaply.
const CONFIG: &str = "[pool]\nwarm_workers = 2\n\n[execution]\nmax_output_bytes = 1000\n\n[auth]\ntokens = [\"metrics-token-0123456789\"]\n";

fn api() -> Api {
    Api::with_token(shared_with(CONFIG), TOKEN)
}

/// The scrape: status, content type and text.
async fn scrape(api: &Api) -> (u16, String, String) {
    let response = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.expect("body"))
}

/// The sum of the samples named `name` whose labels include `labels`; `None` when there is
/// no such sample. Read from the text format's sample lines: `name{k="v",…} value`.
fn sum_of(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let Some((series, number)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').unwrap_or(rest)),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let pairs: Vec<(&str, &str)> = series_labels
            .split("\",")
            .filter_map(|pair| {
                let (key, value) = pair.split_once("=\"")?;
                Some((key, value.strip_suffix('"').unwrap_or(value)))
            })
            .collect();
        if labels.iter().all(|label| pairs.contains(label)) {
            let value: f64 = number.parse().expect("a sample's value is a number");
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

fn at_least(text: &str, name: &str, labels: &[(&str, &str)], least: f64) {
    let value = sum_of(text, name, labels);
    assert!(
        value.is_some_and(|v| v >= least),
        "{name}{labels:?} is {value:?}, expected at least {least}\n{text}"
    );
}

/// Runs `tests/metrics/check.py` on the scrape: the interpreter is `REPLPOOL_TEST_CHECK_PYTHON`
/// when set (one with `prometheus_client`), else the tests' interpreter (`.venv`, where
/// `make test` installs tests/requirements.txt).
fn check_with_prometheus_parser(text: &str) {
    let python = std::env::var_os("REPLPOOL_TEST_CHECK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(common::python);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("scrape.txt");
    std::fs::write(&file, text).expect("write the scrape");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/metrics/check.py");
    let output = std::process::Command::new(&python)
        .arg(&script)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        output.status.success(),
        "check.py: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn execute(api: &Api, session: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, reply) = api
        .post(&format!("/v1/sessions/{session}/execute"), body)
        .await;
    assert_eq!(status, 200, "{reply}");
    reply
}

#[tokio::test]
async fn every_family_shows_what_a_run_did_and_parses() {
    let api = api();
    // Forks are counted once the template runs: wait for it, so that the replacement below
    // is forked.
    let client = &api;
    let running = eventually_some(Duration::from_secs(60), || async move {
        let (_, _, text) = scrape(client).await;
        let labels = [("pool", "sessions"), ("state", "running")];
        (sum_of(&text, "replpool_template_state", &labels) == Some(1.0)).then_some(())
    })
    .await;
    assert!(running.is_some(), "the sessions' template never ran");

    let s = api.session().await;
    assert_eq!(
        execute(&api, &s, json!({"code": "1 + 1"})).await["status"],
        "ok"
    );
    assert_eq!(
        execute(&api, &s, json!({"code": "1 / 0"})).await["status"],
        "error"
    );
    let slow = json!({"code": "import time\ntime.sleep(30)", "timeout_ms": 300});
    assert_eq!(execute(&api, &s, slow).await["status"], "timeout");
    let loud = execute(&api, &s, json!({"code": "print('x' * 5000)"})).await;
    assert_eq!(loud["truncated"], true, "{loud}");
    assert_eq!(api.put_file(&s, "data.txt", b"1,2\n".to_vec()).await.0, 204);
    let died = execute(&api, &s, json!({"code": "import os\nos._exit(3)"})).await;
    assert_eq!(died["error"]["ename"], "WorkerDied", "{died}");
    // The next cell waits for the replacement (forked from the template).
    assert_eq!(
        execute(&api, &s, json!({"code": "2"})).await["status"],
        "ok"
    );
    let (status, once) = api.post("/v1/execute", json!({"code": "print(1)"})).await;
    assert_eq!((status, &once["status"]), (200, &json!("ok")), "{once}");
    assert_eq!(api.delete(&format!("/v1/sessions/{s}")).await, 204);

    let (status, content_type, text) = scrape(&api).await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");

    let executions = "replpool_executions_total";
    for (outcome, mode) in [
        ("ok", "warm"),
        ("error", "warm"),
        ("timeout", "warm"),
        ("worker_died", "warm"),
        ("ok", "one_shot"),
    ] {
        at_least(
            &text,
            executions,
            &[("outcome", outcome), ("mode", mode)],
            1.0,
        );
    }
    for histogram in [
        "replpool_execution_queue_wait_seconds",
        "replpool_execution_duration_seconds",
        "replpool_execution_end_to_end_seconds",
    ] {
        at_least(&text, &format!("{histogram}_count"), &[], 7.0);
        at_least(
            &text,
            &format!("{histogram}_bucket"),
            &[("le", "+Inf")],
            7.0,
        );
    }
    at_least(&text, "replpool_sessions_created_total", &[], 1.0);
    at_least(
        &text,
        "replpool_sessions_ended_total",
        &[("reason", "deleted")],
        1.0,
    );
    at_least(&text, "replpool_sessions_live", &[], 0.0);
    let sessions_pool = [("pool", "sessions")];
    assert_eq!(
        sum_of(&text, "replpool_pool_target_workers", &sessions_pool),
        Some(2.0)
    );
    at_least(&text, "replpool_pool_ready_workers", &sessions_pool, 0.0);
    at_least(&text, "replpool_pool_refills_total", &sessions_pool, 1.0);
    at_least(
        &text,
        "replpool_pool_acquire_waits_total",
        &sessions_pool,
        1.0,
    );
    at_least(&text, "replpool_template_forks_total", &sessions_pool, 1.0);
    at_least(
        &text,
        "replpool_template_restarts_total",
        &sessions_pool,
        0.0,
    );
    at_least(
        &text,
        "replpool_workers_died_total",
        &[("cause", "exit")],
        1.0,
    );
    at_least(&text, "replpool_cold_fallbacks_total", &[], 0.0);
    at_least(
        &text,
        "replpool_limit_refusals_total",
        &[("limit", "output_truncated")],
        1.0,
    );
    let http = "replpool_http_requests_total";
    let execute_route = "/v1/sessions/{id}/execute";
    let ok = ("status", "2xx");
    at_least(
        &text,
        http,
        &[("route", execute_route), ("method", "POST"), ok],
        6.0,
    );
    at_least(
        &text,
        http,
        &[
            ("route", "/v1/sessions/{id}/files/{*path}"),
            ("method", "PUT"),
            ok,
        ],
        1.0,
    );
    at_least(
        &text,
        http,
        &[("route", "/v1/sessions/{id}"), ("method", "DELETE"), ok],
        1.0,
    );
    // Ids are never labels: the session's id appears nowhere in the scrape.
    assert!(!text.contains(s.as_str()), "the session id leaked:\n{text}");
    at_least(&text, "replpool_process_resident_memory_bytes", &[], 1.0);
    at_least(&text, "replpool_process_open_fds", &[], 1.0);
    assert_eq!(
        sum_of(
            &text,
            "replpool_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{text}"
    );

    check_with_prometheus_parser(&text);
}

#[tokio::test]
async fn metrics_need_the_token_when_auth_is_on() {
    let anonymous = Api::new(shared_with(CONFIG));
    let (status, body) = anonymous.get("/metrics").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _, text) = scrape(&api()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("replpool_build_info"), "{text}");
}

#[tokio::test]
async fn metrics_public_serves_them_without_a_token_and_nothing_else() {
    let server = Server::start(
        "[pool]\nwarm_workers = 1\n\n[auth]\ntokens = [\"metrics-token-0123456789\"]\n\n[metrics]\npublic = true\n",
    );
    let anonymous = Api::new(&server.base);
    let (status, _, text) = scrape(&anonymous).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("replpool_build_info"), "{text}");
    let (status, body) = anonymous.get("/v1/sessions").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
}
