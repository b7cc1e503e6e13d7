//! What a client asks to run and what comes back: the reply shape every front end shares.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::{Done, DoneStatus, ErrorInfo, MimeBundle};
use crate::worker::Interrupt;

/// One execute request, after the front end has parsed it.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub code: String,
    pub stdin: Option<String>,
    /// Asked-for deadline; `None` takes the configured default, and it is capped by the maximum.
    pub timeout: Option<Duration>,
    /// The file name tracebacks give the code, for code that is a script (default `<cell-N>`).
    pub filename: Option<String>,
    /// Tables and charts as data beside their pictures (on unless a request turns it off).
    pub data: bool,
    /// The code is a notebook's cell: its top-level `%pip install` / `!pip install` lines
    /// install into the session (see `packages::pip_lines`). Off for programs (the judge's,
    /// python-executor's, scripts'), whose text is never rewritten.
    pub pip_magic: bool,
}

impl Default for ExecRequest {
    fn default() -> Self {
        ExecRequest {
            code: String::new(),
            stdin: None,
            timeout: None,
            filename: None,
            data: true,
            pip_magic: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Error,
    Timeout,
}

/// What kind of failure an error was: the one word a client (or the model behind it) can act
/// on without reading a traceback. Every error reply carries one: an execution whose status
/// is not `ok`, and every HTTP error (`request` and `internal` are for those: the caller's
/// request was refused, or the server failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ErrorCategory))]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// The code does not parse: SyntaxError (IndentationError, TabError) compiling the cell.
    Syntax,
    /// Any other exception the code raised.
    Runtime,
    /// The execution reached its deadline.
    Timeout,
    /// A client interrupted it (`POST …/interrupt`).
    Interrupted,
    /// MemoryError, or the kernel's OOM killer ended the worker at the session's memory limit.
    Memory,
    /// The cell's CPU-time limit (`limits.cpu_seconds`).
    CpuLimit,
    /// Output too large to be sent (a displayed bundle over `execution.max_frame_bytes`).
    OutputLimit,
    /// A write the session's disk quota or file size limit refused.
    DiskQuota,
    /// The worker process died during the execution.
    WorkerDied,
    /// A package install failed: the installer's refusal (an unknown package or version, no
    /// wheel, a conflict with the base environment), its timeout, or the disk quota.
    Install,
    /// Nothing could run it: no worker could be started, the server is at capacity, draining
    /// or shutting down.
    Unavailable,
    /// The request was refused as it was (every 4xx: bad input, unknown id, a limit of the
    /// caller's own).
    Request,
    /// The server failed (500).
    Internal,
}

impl Category {
    pub const ALL: [Category; 13] = [
        Category::Syntax,
        Category::Runtime,
        Category::Timeout,
        Category::Interrupted,
        Category::Memory,
        Category::CpuLimit,
        Category::OutputLimit,
        Category::DiskQuota,
        Category::WorkerDied,
        Category::Install,
        Category::Unavailable,
        Category::Request,
        Category::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Syntax => "syntax",
            Category::Runtime => "runtime",
            Category::Timeout => "timeout",
            Category::Interrupted => "interrupted",
            Category::Memory => "memory",
            Category::CpuLimit => "cpu_limit",
            Category::OutputLimit => "output_limit",
            Category::DiskQuota => "disk_quota",
            Category::WorkerDied => "worker_died",
            Category::Install => "install",
            Category::Unavailable => "unavailable",
            Category::Request => "request",
            Category::Internal => "internal",
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the code ran: a preloaded session worker, or a fresh interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Warm,
    Cold,
}

/// The reply to an execute, the same for every front end.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Execution {
    pub status: Status,
    pub execution_count: u64,
    pub stdout: String,
    pub stderr: String,
    /// The value of the last expression, as a MIME bundle (`text/plain`, `text/html`, …).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>, required = true))]
    pub result: Option<MimeBundle>,
    /// What the code displayed, MIME bundles in order (plots as `image/png`).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub display: Vec<MimeBundle>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub error: Option<ErrorInfo>,
    /// What kind of failure it was; absent when the status is `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    pub duration_ms: f64,
    /// CPU time the cell used, milliseconds: the worker's own (all its threads) and that of
    /// the processes it started and waited for. `null` when the worker did not answer (it
    /// died or was killed).
    pub cpu_ms: Option<f64>,
    pub mode: Mode,
    pub truncated: bool,
    /// Variables from earlier executions are gone: the session's worker was lost (and
    /// replaced), or the previous execution ran cold.
    pub session_reset: bool,
    /// Why the session was reset, where the server itself chose to (its background CPU
    /// budget); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_reason: Option<String>,
}

impl Execution {
    /// The reply for a cell the worker answered. An interrupt that the deadline caused
    /// turns the KeyboardInterrupt into `timeout`, a client's into `interrupted`; otherwise
    /// the worker's own word for the exception stands.
    pub fn from_done(
        done: Done,
        interrupted: Option<Interrupt>,
        execution_count: u64,
        elapsed: Duration,
    ) -> Self {
        let interrupted_by_deadline = interrupted == Some(Interrupt::Deadline)
            && done
                .error
                .as_ref()
                .is_some_and(|e| e.ename == "KeyboardInterrupt");
        let interrupted_by_client = interrupted == Some(Interrupt::Requested)
            && done
                .error
                .as_ref()
                .is_some_and(|e| e.ename == "KeyboardInterrupt");
        let (status, category) = match done.status {
            DoneStatus::Ok => (Status::Ok, None),
            DoneStatus::Error if interrupted_by_deadline => {
                (Status::Timeout, Some(Category::Timeout))
            }
            DoneStatus::Error if interrupted_by_client => {
                (Status::Error, Some(Category::Interrupted))
            }
            DoneStatus::Error => (
                Status::Error,
                Some(done.category.unwrap_or(Category::Runtime)),
            ),
        };
        Execution {
            status,
            execution_count,
            stdout: done.stdout,
            stderr: done.stderr,
            result: done.result,
            display: done.display,
            error: done.error,
            category,
            duration_ms: millis(elapsed),
            cpu_ms: done.cpu_ms,
            mode: Mode::Warm,
            truncated: done.truncated,
            session_reset: false,
            reset_reason: None,
        }
    }

    /// The reply when the worker never answered: it died, or ignored the interrupt and was killed.
    pub fn without_reply(
        status: Status,
        category: Category,
        error: ErrorInfo,
        execution_count: u64,
        elapsed: Duration,
    ) -> Self {
        Execution {
            status,
            execution_count,
            stdout: String::new(),
            stderr: String::new(),
            result: None,
            display: Vec::new(),
            error: Some(error),
            category: Some(category),
            duration_ms: millis(elapsed),
            cpu_ms: None,
            mode: Mode::Warm,
            truncated: false,
            session_reset: true,
            reset_reason: None,
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_category_is_its_name_both_ways() {
        for category in Category::ALL {
            let name = serde_json::to_value(category).expect("serializes");
            assert_eq!(name, json!(category.as_str()));
            let back: Category = serde_json::from_value(name).expect("deserializes");
            assert_eq!(back, category);
        }
    }

    fn done(ename: &str, category: &str) -> Done {
        serde_json::from_value(json!({
            "id": 1, "status": "error", "category": category, "cpu_ms": 1.5,
            "error": {"ename": ename, "evalue": "", "traceback": []},
        }))
        .expect("a done frame")
    }

    #[test]
    fn the_interrupts_the_server_sent_are_its_to_name() {
        let elapsed = Duration::from_millis(3);
        let by = |interrupt| {
            let ex =
                Execution::from_done(done("KeyboardInterrupt", "runtime"), interrupt, 1, elapsed);
            (ex.status, ex.category)
        };
        assert_eq!(
            by(Some(Interrupt::Deadline)),
            (Status::Timeout, Some(Category::Timeout))
        );
        assert_eq!(
            by(Some(Interrupt::Requested)),
            (Status::Error, Some(Category::Interrupted))
        );
        assert_eq!(by(None), (Status::Error, Some(Category::Runtime)));
        // Anything else is the worker's word, whatever interrupted it.
        let ex = Execution::from_done(
            done("MemoryError", "memory"),
            Some(Interrupt::Deadline),
            1,
            elapsed,
        );
        assert_eq!(
            (ex.status, ex.category, ex.cpu_ms),
            (Status::Error, Some(Category::Memory), Some(1.5))
        );
        let ok: Done = serde_json::from_value(json!({"id": 1, "status": "ok"})).expect("done");
        let ex = Execution::from_done(ok, None, 1, elapsed);
        assert_eq!(
            (ex.status, ex.category, ex.cpu_ms),
            (Status::Ok, None, None)
        );
    }
}
