//! How a worker can fail.

use std::borrow::Cow;
use std::time::Duration;

use super::Interrupt;
use crate::protocol::ErrorInfo;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start the Python worker `{python}`: {source}")]
    Spawn {
        python: String,
        source: std::io::Error,
    },
    #[error("the worker did not become ready within {0:?}")]
    StartTimeout(Duration),
    #[error("the worker's preload failed: {}: {}", .0.ename, .0.evalue)]
    Preload(ErrorInfo),
    #[error("the worker died ({reason}){}", stderr_suffix(.stderr))]
    Died { reason: String, stderr: String },
    #[error("the worker did not stop after an interrupt{}", .1.map(|why| format!(" ({why})")).unwrap_or_default())]
    Unresponsive(Interrupt, Option<&'static str>),
    /// The worker said something the protocol does not allow.
    #[error("worker protocol error: {0}")]
    Protocol(String),
    /// A system call on the worker's pipes, pidfd or cgroup failed.
    #[error("{context}: {source}")]
    Io {
        context: Cow<'static, str>,
        #[source]
        source: std::io::Error,
    },
    #[error("the template is not running")]
    TemplateDown,
    #[error("the code used more than {seconds} s of CPU time and ignored the limit")]
    CpuCeiling { seconds: u64 },
}

impl WorkerError {
    /// Makes a [`WorkerError::Io`] saying what was being done, for `map_err`.
    pub fn io(context: impl Into<Cow<'static, str>>) -> impl FnOnce(std::io::Error) -> WorkerError {
        let context = context.into();
        move |source| WorkerError::Io { context, source }
    }

    /// The worker never got to run anything.
    pub fn is_start_failure(&self) -> bool {
        matches!(
            self,
            WorkerError::Spawn { .. }
                | WorkerError::StartTimeout(_)
                | WorkerError::Preload(_)
                | WorkerError::TemplateDown
        )
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with: {stderr}")
    }
}
