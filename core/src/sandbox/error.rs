//! What can go wrong setting up the sandbox, or a session's share of it.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::sandbox::seccomp::FilterError;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `sandbox.require` asks for what the machine does not allow: the message names the
    /// missing capability and how to grant it.
    #[error("sandbox: {0}")]
    Unmet(String),
    #[error("sandbox: the isolation probe failed (exit {status}): {output}")]
    Probe { status: String, output: String },
    #[error("sandbox: sandbox.user: {0}")]
    User(String),
    #[error("sandbox: {0}")]
    UidRange(#[source] ConfigError),
    #[error("sandbox: {0}")]
    Isolation(String),
    #[error("sandbox: {0}")]
    SyscallFilter(#[source] FilterError),
    #[error("sandbox: cannot run {}: {source}", .python.display())]
    PythonSpawn {
        python: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox: {} failed to report its paths: {stderr}", .python.display())]
    PythonFailed { python: PathBuf, stderr: String },
    #[error("sandbox: {} reported its paths unreadably: {source}", .python.display())]
    PythonPaths {
        python: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("sandbox: every uid of sandbox.session_uids is in use")]
    NoFreeUid,
    #[error("internal error: cannot give the session its directory: {0}")]
    SessionDir(#[source] std::io::Error),
    #[error("internal error: cannot make the session's cgroup: {0}")]
    SessionCgroup(#[source] std::io::Error),
}

impl SandboxError {
    /// The server failed at something it should be able to do (rather than the sandbox
    /// being unavailable as configured, or out of uids).
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            SandboxError::SessionDir(_) | SandboxError::SessionCgroup(_)
        )
    }
}
