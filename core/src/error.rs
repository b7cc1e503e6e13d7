//! The core's error: what a front end (HTTP, the Python package) can be told went wrong.
//!
//! Errors in user code are not here: they are a normal [`crate::Execution`] with
//! `status: "error"`. These are the service's own refusals and failures.

use crate::files::FileError;
use crate::packages::PackageError;
use crate::sandbox::SandboxError;
use crate::worker::WorkerError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no session with id `{0}`")]
    SessionNotFound(String),
    #[error("the session limit ({max}) is reached")]
    TooManySessions { max: usize },
    #[error("this token holds its limit of {max} sessions (auth.max_sessions_per_token), all busy")]
    TooManySessionsForOwner { max: usize },
    #[error("the session already has {depth} executions waiting")]
    QueueFull { depth: usize },
    #[error("the session was deleted while the request waited or ran")]
    SessionClosed,
    #[error("code is {size} bytes; the limit is {max}")]
    CodeTooLarge { size: usize, max: usize },
    #[error("stdin is {size} bytes; the limit is {max}")]
    StdinTooLarge { size: usize, max: usize },
    #[error("no Python worker could be started: {0}")]
    WorkerUnavailable(#[source] WorkerError),
    #[error("no Python {requested:?} here; the interpreters are: {available}")]
    UnknownPython {
        requested: String,
        available: String,
    },
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error(
        "this node is draining (going away): it takes no new sessions; create one on another node"
    )]
    Draining,
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The server could not do something with its own files.
    #[error("internal error: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
    /// An interpreter of the configuration could not be used (at start).
    #[error("{field} ({executable}): {why}")]
    InterpreterUnusable {
        field: String,
        executable: String,
        why: String,
    },
}

impl Error {
    /// Makes an [`Error::Io`] saying what was being done, for `map_err`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
