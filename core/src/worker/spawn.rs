//! What a worker is started with, and what every process started for Python gets before exec.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

use super::WorkerError;
use crate::config::ProcessLimits;
use crate::reaper;
use crate::sandbox::{Isolation, SyscallFilter};

/// Everything needed to start a worker; shared by the pool and the cold runner.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub python: PathBuf,
    pub script: PathBuf,
    /// Working directory of a worker not yet attached to a session.
    pub cwd: PathBuf,
    pub preload: Vec<String>,
    pub blas_threads: u32,
    pub max_frame_bytes: usize,
    pub start_timeout: Duration,
    pub limits: ProcessLimits,
    /// A cold worker imports what it can of the preload instead of failing on a bad entry.
    pub cold: bool,
    /// The namespaces and filesystem view every worker makes for itself (`worker.py`'s
    /// `enter_namespaces`), before any import.
    pub isolation: Arc<Isolation>,
    /// A /tmp and /dev/shm of each worker's own (sessions must not share them); made by the
    /// worker itself, while it is still privileged and has one thread.
    pub private_tmp: Option<PrivateTmp>,
    /// The seccomp filter each worker installs on itself before it runs user code.
    pub syscall_filter: Option<Arc<SyscallFilter>>,
}

/// What a worker needs to make its own /tmp: the directories under /tmp it must still reach
/// (the server's state directory, a venv that lives there), and the size of the tmpfs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrivateTmp {
    pub keep: Vec<PathBuf>,
    pub size_bytes: u64,
}

/// Sets the per-process limits (`[limits]`' per-process view) between fork and exec, soft and
/// hard alike, so that user code inherits them and cannot raise them.
fn apply_rlimits(limits: &ProcessLimits) -> std::io::Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    let limits = [
        (Resource::RLIMIT_AS, limits.address_space_bytes),
        (Resource::RLIMIT_FSIZE, limits.file_size_bytes),
        (Resource::RLIMIT_NOFILE, limits.open_files),
    ];
    for (resource, limit) in limits {
        if let Some(limit) = limit {
            setrlimit(resource, limit, limit)?;
        }
    }
    Ok(())
}

impl WorkerSpec {
    /// The settings `worker.py` takes as its argument, for a worker or (`template`) the
    /// template.
    pub fn settings(&self, template: bool) -> serde_json::Value {
        serde_json::json!({
            "template": template,
            "preload": self.preload,
            "max_frame_bytes": self.max_frame_bytes,
            "cold": self.cold,
            "server_pid": std::process::id(),
            // Forked workers can be re-parented to the server only if it is a subreaper; else
            // the template keeps them as its own children (see `template.rs`).
            "keep_workers": !reaper::children().is_subreaper(),
            "private_tmp": self.private_tmp,
            "isolation": (!self.isolation.is_empty()).then_some(&*self.isolation),
            "seccomp": self.syscall_filter.as_deref(),
        })
    }

    /// What every process the server starts for Python gets: the environment, its own process
    /// group, the death signal tied to the server, and the resource limits.
    fn prepare(&self, command: &mut Command) {
        let threads = self.blas_threads.to_string();
        // The server's own configuration can come in REPLPOOL_* variables, bearer tokens
        // among them (REPLPOOL_AUTH_TOKENS, the usual way to give a container a secret): user
        // code would read them in os.environ and act as any client.
        for (key, _) in std::env::vars_os() {
            if key.as_encoded_bytes().starts_with(b"REPLPOOL_") {
                command.env_remove(key);
            }
        }
        command
            .current_dir(&self.cwd)
            .env("MPLBACKEND", "Agg")
            .env("OPENBLAS_NUM_THREADS", &threads)
            .env("OMP_NUM_THREADS", &threads)
            .env("MKL_NUM_THREADS", &threads)
            .env("PYTHONUNBUFFERED", "1")
            // Marks the worker and everything it starts as this server's (for tests and ops).
            .env("REPLPOOL_SERVER_PID", std::process::id().to_string())
            .process_group(0)
            .kill_on_drop(true);
        let server_pid = std::process::id();
        let limits = self.limits;
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (prctl, getppid, setrlimit); it does not allocate.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The server may have died before prctl took effect; then nobody would kill us.
                if nix::unistd::getppid().as_raw() as u32 != server_pid {
                    return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
                }
                // No setuid program can give user code back what it is about to lose.
                nix::sys::prctl::set_no_new_privs()?;
                apply_rlimits(&limits)
            });
        }
    }

    /// Starts `python worker.py` as a worker or (`template`) the template, through the
    /// reaper's registry, with the protocol on `stdin`/`stdout` and its stderr piped.
    ///
    /// Call it on a runtime worker thread, never in `spawn_blocking`: the death signal is tied
    /// to the thread that forks, and blocking-pool threads exit when idle.
    pub fn spawn(&self, template: bool, stdin: Stdio, stdout: Stdio) -> Result<Child, WorkerError> {
        let mut command = Command::new(&self.python);
        command
            .arg(&self.script)
            .arg(self.settings(template).to_string())
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped());
        self.prepare(&mut command);
        reaper::children()
            .spawn(&mut command)
            .map_err(|source| WorkerError::Spawn {
                python: self.python.display().to_string(),
                source,
            })
    }
}
