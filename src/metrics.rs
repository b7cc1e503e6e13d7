//! The server's Prometheus recorder: installed once per process as the `metrics` facade's
//! global recorder, so that what the core reports (`replpool_core::metrics`) and what the
//! server adds — HTTP requests, the process, the build — end up in one text rendering for
//! `GET /metrics`.
//!
//! The facade allows one global recorder per process: [`install`] makes it the first time
//! and hands out the same handle after. The core never installs one (the Python package
//! embeds it with none).

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use replpool_core::metrics as core_metrics;
use tokio_util::sync::CancellationToken;

pub const HTTP_REQUESTS: &str = "replpool_http_requests_total";
pub const PROCESS_RESIDENT_MEMORY: &str = "replpool_process_resident_memory_bytes";
pub const PROCESS_OPEN_FDS: &str = "replpool_process_open_fds";
pub const BUILD_INFO: &str = "replpool_build_info";

/// The git revision the binary was built from (`build.rs` always sets it, "unknown" at worst).
pub const REVISION: &str = env!("REPLPOOL_REVISION");

/// How often histogram samples are folded into their buckets between scrapes: until then
/// each sample is kept as it came, so a server nobody scrapes would grow with its traffic.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The recorder's handle, installing the recorder at the first call.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Every histogram is in seconds, and gets explicit buckets: the exporter would
            // make a summary of one without them.
            // (Only an empty list of buckets is refused, and this one is fixed.)
            let recorder = PrometheusBuilder::new()
                .set_buckets(&core_metrics::SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            match ::metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    core_metrics::register();
                    register();
                }
                Err(e) => tracing::warn!(
                    "another metrics recorder is installed in this process ({e}); /metrics shows none of its figures"
                ),
            }
            handle
        })
        .clone()
}

fn register() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status class"
    );
    describe_gauge!(
        PROCESS_RESIDENT_MEMORY,
        ::metrics::Unit::Bytes,
        "The server process's resident memory (VmRSS)"
    );
    describe_gauge!(
        PROCESS_OPEN_FDS,
        "The server process's open file descriptors"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1: the server's version and git revision"
    );
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "revision" => REVISION).set(1.0);
}

/// Folds histogram samples into their buckets every few seconds, until `stop`.
pub fn keep_up(handle: PrometheusHandle, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(UPKEEP_EVERY) => handle.run_upkeep(),
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// Counts one answered HTTP request. `route` is the router's template (`/v1/sessions/{id}`),
/// never the path itself, and methods outside HTTP's own are one value: whatever clients
/// send, the number of series stays bounded.
pub fn http_request(route: &str, method: &axum::http::Method, status: axum::http::StatusCode) {
    use axum::http::Method;
    let method = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let class = match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    counter!(HTTP_REQUESTS, "route" => route.to_owned(), "method" => method, "status" => class)
        .increment(1);
}

/// The process's own figures, read from `/proc/self` now: the scrape is their clock.
pub fn record_process() {
    if let Some(bytes) = resident_memory_bytes() {
        gauge!(PROCESS_RESIDENT_MEMORY).set(bytes as f64);
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        // Less the descriptor of the listing itself.
        let open = entries.count().saturating_sub(1);
        gauge!(PROCESS_OPEN_FDS).set(open as f64);
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
