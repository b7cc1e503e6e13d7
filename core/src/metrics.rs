//! Every metric the core reports: each family named once here, with one function per event,
//! so that the places where things happen make one-line calls.
//!
//! The core only reports, through the `metrics` facade; it never installs a recorder. The
//! server installs one (Prometheus, `src/metrics.rs`) and renders `GET /metrics` from it.
//! Where nothing is installed (the Python package embeds the core) every call here is a
//! no-op. Names follow Prometheus' conventions: one `replpool_` prefix, base units, `_total`
//! on counters. No label carries a session id: a series per session would grow without bound.

use std::time::Duration;

use ::metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::execution::{Category, Execution, Mode, Status};
use crate::pool::PoolStatus;
use crate::worker::WorkerError;

pub const EXECUTIONS: &str = "replpool_executions_total";
pub const QUEUE_WAIT: &str = "replpool_execution_queue_wait_seconds";
pub const EXECUTION_DURATION: &str = "replpool_execution_duration_seconds";
pub const END_TO_END: &str = "replpool_execution_end_to_end_seconds";
pub const SESSIONS_LIVE: &str = "replpool_sessions_live";
pub const SESSIONS_CREATED: &str = "replpool_sessions_created_total";
pub const SESSIONS_ENDED: &str = "replpool_sessions_ended_total";
pub const POOL_TARGET: &str = "replpool_pool_target_workers";
pub const POOL_READY: &str = "replpool_pool_ready_workers";
pub const POOL_REFILLS: &str = "replpool_pool_refills_total";
pub const POOL_ACQUIRE_WAITS: &str = "replpool_pool_acquire_waits_total";
pub const TEMPLATE_STATE: &str = "replpool_template_state";
pub const TEMPLATE_FORKS: &str = "replpool_template_forks_total";
pub const TEMPLATE_RESTARTS: &str = "replpool_template_restarts_total";
pub const WORKERS_DIED: &str = "replpool_workers_died_total";
pub const COLD_FALLBACKS: &str = "replpool_cold_fallbacks_total";
pub const COLD_STARTS_WAITING: &str = "replpool_cold_starts_waiting";
pub const LIMIT_REFUSALS: &str = "replpool_limit_refusals_total";

/// The core's histograms, all in seconds.
pub const HISTOGRAMS: [&str; 3] = [QUEUE_WAIT, EXECUTION_DURATION, END_TO_END];

/// Their buckets (upper bounds, seconds): from a warm trivial cell (a millisecond) to the
/// longest deadline worth telling apart (five minutes); a cold start lands near one second.
pub const SECONDS_BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// The `pool` label of the sessions' pool and of the one-shots' lean pool.
pub const SESSIONS_POOL: &str = "sessions";
pub const LEAN_POOL: &str = "lean";

/// The `pool` label of an interpreter's sessions pool: [`SESSIONS_POOL`] for the default one
/// (the series a single-interpreter server has always had), `sessions@<name>` for the others.
pub fn sessions_pool(interpreter: &str, default: bool) -> String {
    if default {
        SESSIONS_POOL.to_owned()
    } else {
        format!("{SESSIONS_POOL}@{interpreter}")
    }
}

const OUTCOMES: [&str; 6] = [
    "ok",
    "error",
    "timeout",
    "interrupted",
    "worker_died",
    "limit",
];
const MODES: [&str; 3] = ["warm", "cold", "one_shot"];
const TEMPLATE_STATES: [&str; 3] = ["starting", "running", "down"];

/// How an execution ended, as the `outcome` label says it: its error category folded into
/// the six outcomes (every limit is `limit`; syntax and runtime errors are `error`).
pub fn outcome(execution: &Execution) -> &'static str {
    match (execution.status, execution.category) {
        (Status::Ok, _) => "ok",
        (Status::Timeout, _) | (_, Some(Category::Timeout)) => "timeout",
        (_, Some(Category::Interrupted)) => "interrupted",
        (_, Some(Category::WorkerDied)) => "worker_died",
        (
            _,
            Some(
                Category::Memory | Category::CpuLimit | Category::DiskQuota | Category::OutputLimit,
            ),
        ) => "limit",
        _ => "error",
    }
}

/// An execution answered. One-shots are their own `mode` (a thrown-away worker, whether it
/// came from a pool or ran cold); a session's execution is `warm` or `cold`.
pub fn execution_finished(execution: &Execution, one_shot: bool) {
    let mode = match (one_shot, execution.mode) {
        (true, _) => "one_shot",
        (false, Mode::Warm) => "warm",
        (false, Mode::Cold) => "cold",
    };
    counter!(EXECUTIONS, "outcome" => outcome(execution), "mode" => mode).increment(1);
}

/// Where an answered execution's time went: waiting (behind the session's other executions,
/// and for a worker), running (the worker's part, `duration_ms`), and both with what the
/// server did after the reply (its limits' checks).
pub fn execution_timed(queue_wait: Duration, running: Duration, end_to_end: Duration) {
    histogram!(QUEUE_WAIT).record(queue_wait.as_secs_f64());
    histogram!(EXECUTION_DURATION).record(running.as_secs_f64());
    histogram!(END_TO_END).record(end_to_end.as_secs_f64());
}

pub fn session_created() {
    counter!(SESSIONS_CREATED).increment(1);
}

/// Why the manager ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    Deleted,
    /// Idle longer than `sessions.idle_ttl_secs`.
    Idle,
    /// Its owner's least recently used idle session, ended to make room at a limit.
    Evicted,
    Shutdown,
}

impl SessionEnd {
    const ALL: [SessionEnd; 4] = [
        SessionEnd::Deleted,
        SessionEnd::Idle,
        SessionEnd::Evicted,
        SessionEnd::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SessionEnd::Deleted => "deleted",
            SessionEnd::Idle => "idle",
            SessionEnd::Evicted => "evicted",
            SessionEnd::Shutdown => "shutdown",
        }
    }

    /// The words the log and the session's worker are given.
    pub fn why(self) -> &'static str {
        match self {
            SessionEnd::Deleted => "deleted",
            SessionEnd::Idle => "evicted (idle)",
            SessionEnd::Evicted => "evicted (least recently used, session limit reached)",
            SessionEnd::Shutdown => "ended at shutdown",
        }
    }
}

pub fn session_ended(reason: SessionEnd) {
    counter!(SESSIONS_ENDED, "reason" => reason.label()).increment(1);
}

/// The sessions alive now (read at each scrape).
pub fn sessions_live(count: usize) {
    gauge!(SESSIONS_LIVE).set(count as f64);
}

/// A pool's state now, and its template's (read at each scrape). The template keeps its own
/// counts of forks and restarts; they are copied, not counted twice.
pub fn pool_state(pool: &str, status: &PoolStatus) {
    gauge!(POOL_TARGET, "pool" => pool.to_owned()).set(status.target as f64);
    gauge!(POOL_READY, "pool" => pool.to_owned()).set(status.ready as f64);
    if let Some(template) = &status.template {
        for state in TEMPLATE_STATES {
            let value = if template.state == state { 1.0 } else { 0.0 };
            gauge!(TEMPLATE_STATE, "pool" => pool.to_owned(), "state" => state).set(value);
        }
        counter!(TEMPLATE_FORKS, "pool" => pool.to_owned()).absolute(template.forks);
        counter!(TEMPLATE_RESTARTS, "pool" => pool.to_owned()).absolute(template.restarts);
    }
}

/// Makes `pool`'s counters exist (at zero, or as they are) from the pool's start: pools of
/// interpreters other than the default are not among the label sets known in advance.
pub fn pool_started(pool: &str) {
    counter!(POOL_REFILLS, "pool" => pool.to_owned()).increment(0);
    counter!(POOL_ACQUIRE_WAITS, "pool" => pool.to_owned()).increment(0);
}

/// A pool's background task bound one more worker.
pub fn pool_refilled(pool: &str) {
    counter!(POOL_REFILLS, "pool" => pool.to_owned()).increment(1);
}

/// A worker was wanted from `pool` and none was ready: one is started for the caller, who
/// waits for it (a session made without a bound worker, a replacement, a reset).
pub fn pool_acquire_waited(pool: &str) {
    counter!(POOL_ACQUIRE_WAITS, "pool" => pool.to_owned()).increment(1);
}

/// Why a worker died (or was given up for dead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerDeath {
    /// Killed by a signal (not the OOM killer's, as far as the session's cgroup tells).
    Signal,
    /// Exited by itself (`os._exit`, a closed protocol descriptor, ...).
    Exit,
    /// The kernel's OOM killer, at the session's memory limit.
    Oom,
    /// Killed by the server: it went on past its CPU limit.
    CpuLimit,
    /// Killed by the server: it did not stop after an interrupt.
    Unresponsive,
    /// Killed by the server: it broke the protocol, or its pipes failed.
    Lost,
    /// Found dead between executions (in the pool, or in its session); the cause is not read.
    Idle,
}

impl WorkerDeath {
    const ALL: [WorkerDeath; 7] = [
        WorkerDeath::Signal,
        WorkerDeath::Exit,
        WorkerDeath::Oom,
        WorkerDeath::CpuLimit,
        WorkerDeath::Unresponsive,
        WorkerDeath::Lost,
        WorkerDeath::Idle,
    ];

    /// How a worker that failed during an execution was lost; `None` when none was (it never
    /// started).
    pub fn of(error: &WorkerError) -> Option<WorkerDeath> {
        match error {
            // `process::describe_*`: "signal 9 (SIGKILL)" or "exit code 3".
            WorkerError::Died { reason, .. } if reason.starts_with("signal") => {
                Some(WorkerDeath::Signal)
            }
            WorkerError::Died { .. } => Some(WorkerDeath::Exit),
            WorkerError::CpuCeiling { .. } => Some(WorkerDeath::CpuLimit),
            WorkerError::Unresponsive(..) => Some(WorkerDeath::Unresponsive),
            WorkerError::Protocol(_) | WorkerError::Io { .. } => Some(WorkerDeath::Lost),
            WorkerError::Spawn { .. }
            | WorkerError::StartTimeout(_)
            | WorkerError::Preload(_)
            | WorkerError::TemplateDown => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            WorkerDeath::Signal => "signal",
            WorkerDeath::Exit => "exit",
            WorkerDeath::Oom => "oom",
            WorkerDeath::CpuLimit => "cpu_limit",
            WorkerDeath::Unresponsive => "unresponsive",
            WorkerDeath::Lost => "lost",
            WorkerDeath::Idle => "idle",
        }
    }
}

pub fn worker_died(cause: WorkerDeath) {
    counter!(WORKERS_DIED, "cause" => cause.label()).increment(1);
}

/// An execution ran cold: no warm worker could serve it.
pub fn cold_fallback() {
    counter!(COLD_FALLBACKS).increment(1);
}

/// An execution waiting for a cold start permit (`pool.cold_starts`), for as long as this
/// lives: the gauge says how many wait now.
pub struct ColdStartWait(());

impl ColdStartWait {
    pub fn begin() -> ColdStartWait {
        gauge!(COLD_STARTS_WAITING).increment(1.0);
        ColdStartWait(())
    }
}

impl Drop for ColdStartWait {
    fn drop(&mut self) {
        gauge!(COLD_STARTS_WAITING).decrement(1.0);
    }
}

/// What a session's limits refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// New processes the pids cgroup refused (each one counts).
    Pids,
    /// Processes the OOM killer ended, or an allocation `RLIMIT_AS` refused (a MemoryError).
    Memory,
    /// A cell that ended on its CPU limit.
    Cpu,
    /// An execution that found the session's files at or over its quota.
    DiskQuota,
    /// An execution whose output was cut at `execution.max_output_bytes`.
    OutputTruncated,
}

impl Limit {
    const ALL: [Limit; 5] = [
        Limit::Pids,
        Limit::Memory,
        Limit::Cpu,
        Limit::DiskQuota,
        Limit::OutputTruncated,
    ];

    fn label(self) -> &'static str {
        match self {
            Limit::Pids => "pids",
            Limit::Memory => "memory",
            Limit::Cpu => "cpu",
            Limit::DiskQuota => "disk_quota",
            Limit::OutputTruncated => "output_truncated",
        }
    }
}

pub fn limit_refused(limit: Limit, times: u64) {
    if times > 0 {
        counter!(LIMIT_REFUSALS, "limit" => limit.label()).increment(times);
    }
}

/// Describes every family and makes every series of a known label set exist at zero, so
/// that a scrape shows each family from the start (a rate over a series that appears only at
/// its first event misses that event). Called by whoever installs a recorder, after it did.
pub fn register() {
    describe_counter!(
        EXECUTIONS,
        "Executions answered, by outcome and by mode (warm, cold, one_shot)"
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time an execution waited behind its session's other executions and for a worker"
    );
    describe_histogram!(
        EXECUTION_DURATION,
        Unit::Seconds,
        "Time an execution ran on its worker (duration_ms)"
    );
    describe_histogram!(
        END_TO_END,
        Unit::Seconds,
        "Time from an execution's arrival at its session to its reply"
    );
    describe_gauge!(SESSIONS_LIVE, "Sessions alive");
    describe_counter!(SESSIONS_CREATED, "Sessions created");
    describe_counter!(SESSIONS_ENDED, "Sessions ended, by reason");
    describe_gauge!(POOL_TARGET, "Bound workers a pool keeps ready");
    describe_gauge!(POOL_READY, "Bound workers ready in a pool");
    describe_counter!(POOL_REFILLS, "Workers a pool bound ahead of need");
    describe_counter!(
        POOL_ACQUIRE_WAITS,
        "Workers wanted from a pool with none ready, started while the caller waited"
    );
    describe_gauge!(
        TEMPLATE_STATE,
        "A pool's template: 1 for the state it is in (starting, running, down)"
    );
    describe_counter!(TEMPLATE_FORKS, "Workers a pool's template forked");
    describe_counter!(TEMPLATE_RESTARTS, "Restarts of a pool's template");
    describe_counter!(
        WORKERS_DIED,
        "Workers that died or were killed as lost, by cause"
    );
    describe_counter!(
        COLD_FALLBACKS,
        "Executions that ran cold (in a fresh interpreter) for want of a warm worker"
    );
    describe_gauge!(
        COLD_STARTS_WAITING,
        "Executions waiting for a cold start permit (pool.cold_starts) or their warm worker"
    );
    describe_counter!(LIMIT_REFUSALS, "What sessions' limits refused, by limit");

    for outcome in OUTCOMES {
        for mode in MODES {
            counter!(EXECUTIONS, "outcome" => outcome, "mode" => mode).absolute(0);
        }
    }
    for name in HISTOGRAMS {
        // A histogram handle exists from its registration: it renders with empty buckets.
        let _ = histogram!(name);
    }
    counter!(SESSIONS_CREATED).absolute(0);
    for reason in SessionEnd::ALL {
        counter!(SESSIONS_ENDED, "reason" => reason.label()).absolute(0);
    }
    for pool in [SESSIONS_POOL, LEAN_POOL] {
        counter!(POOL_REFILLS, "pool" => pool).absolute(0);
        counter!(POOL_ACQUIRE_WAITS, "pool" => pool).absolute(0);
    }
    for cause in WorkerDeath::ALL {
        counter!(WORKERS_DIED, "cause" => cause.label()).absolute(0);
    }
    counter!(COLD_FALLBACKS).absolute(0);
    gauge!(COLD_STARTS_WAITING).set(0.0);
    for limit in Limit::ALL {
        counter!(LIMIT_REFUSALS, "limit" => limit.label()).absolute(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorInfo;

    fn execution(status: Status, category: Option<Category>) -> Execution {
        let mut execution = Execution::without_reply(
            status,
            category.unwrap_or(Category::Runtime),
            ErrorInfo {
                ename: String::new(),
                evalue: String::new(),
                traceback: Vec::new(),
            },
            1,
            Duration::ZERO,
        );
        execution.category = category;
        execution
    }

    #[test]
    fn outcomes_follow_status_and_error() {
        let cases = [
            (Status::Ok, None, "ok"),
            (Status::Timeout, Some(Category::Timeout), "timeout"),
            (Status::Error, Some(Category::Syntax), "error"),
            (Status::Error, Some(Category::Runtime), "error"),
            (Status::Error, Some(Category::Interrupted), "interrupted"),
            (Status::Error, Some(Category::WorkerDied), "worker_died"),
            (Status::Error, Some(Category::Memory), "limit"),
            (Status::Error, Some(Category::CpuLimit), "limit"),
            (Status::Error, Some(Category::DiskQuota), "limit"),
            (Status::Error, Some(Category::OutputLimit), "limit"),
        ];
        for (status, category, expected) in cases {
            assert_eq!(
                outcome(&execution(status, category)),
                expected,
                "{category:?}"
            );
            assert!(OUTCOMES.contains(&expected));
        }
    }

    #[test]
    fn deaths_are_told_apart_by_how_the_worker_ended() {
        let died = |reason: &str| WorkerError::Died {
            reason: reason.into(),
            stderr: String::new(),
        };
        assert_eq!(
            WorkerDeath::of(&died("signal 9 (SIGKILL)")),
            Some(WorkerDeath::Signal)
        );
        assert_eq!(
            WorkerDeath::of(&died("exit code 3")),
            Some(WorkerDeath::Exit)
        );
        assert_eq!(
            WorkerDeath::of(&WorkerError::CpuCeiling { seconds: 1 }),
            Some(WorkerDeath::CpuLimit)
        );
        assert_eq!(WorkerDeath::of(&WorkerError::TemplateDown), None);
    }
}
