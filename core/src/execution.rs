//! What a client asks to run and what comes back: the reply shape every front end shares.

use std::time::Duration;

use serde::Serialize;

use crate::protocol::{Done, DoneStatus, ErrorInfo, MimeBundle};
use crate::worker::Interrupt;

/// One execute request, after the front end has parsed it.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub code: String,
    pub stdin: Option<String>,
    /// Asked-for deadline; `None` takes the configured default, and it is capped by the maximum.
    pub timeout: Option<Duration>,
    /// The file name tracebacks give the code, for code that is a script (default `<cell-N>`).
    pub filename: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Error,
    Timeout,
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
    pub duration_ms: f64,
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
    /// turns the KeyboardInterrupt into `timeout`.
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
        let status = match done.status {
            DoneStatus::Ok => Status::Ok,
            DoneStatus::Error if interrupted_by_deadline => Status::Timeout,
            DoneStatus::Error => Status::Error,
        };
        Execution {
            status,
            execution_count,
            stdout: done.stdout,
            stderr: done.stderr,
            result: done.result,
            display: done.display,
            error: done.error,
            duration_ms: millis(elapsed),
            mode: Mode::Warm,
            truncated: done.truncated,
            session_reset: false,
            reset_reason: None,
        }
    }

    /// The reply when the worker never answered: it died, or ignored the interrupt and was killed.
    pub fn without_reply(
        status: Status,
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
            duration_ms: millis(elapsed),
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
