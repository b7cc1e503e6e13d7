//! The server's own watch on a cell's CPU time, behind the worker's soft RLIMIT_CPU.

use std::time::Duration;

use tokio::time::Instant;

use crate::process;

/// CPU seconds past the cell's limit before the server ends a worker whose code lifted its
/// soft limit (or ignores CPUTimeLimitExceeded), and how often it looks.
const CPU_CEILING_GRACE: f64 = 2.0;
const CPU_CEILING_POLL: Duration = Duration::from_secs(1);

/// Resolves (with the limit) once a cell has used clearly more CPU time than its limit;
/// never without one.
///
/// The worker's own soft RLIMIT_CPU gives the clean CPUTimeLimitExceeded, but code may lift a
/// soft limit (and only a server with CAP_SYS_RESOURCE could lower the hard one and raise it
/// again after the cell), so the server watches the worker's CPU time as well. It first looks
/// after a second, and counts from there: a short cell costs nothing, and the ceiling ends up
/// between the limit plus the grace and that plus the first second's CPU time.
pub(super) async fn cpu_ceiling_reached(pid: u32, limit: Option<u64>) -> u64 {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval_at(Instant::now() + CPU_CEILING_POLL, CPU_CEILING_POLL);
    tick.tick().await;
    let ceiling = process::cpu_seconds(pid).unwrap_or(0.0) + limit as f64 + CPU_CEILING_GRACE;
    loop {
        tick.tick().await;
        if process::cpu_seconds(pid).is_some_and(|used| used >= ceiling) {
            return limit;
        }
    }
}
