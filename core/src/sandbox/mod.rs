//! What keeps user code in its place: the user it runs as, what it sees of the machine
//! (network, filesystem), and the limits that hold for everything a session starts.
//!
//! [`Sandbox`] is set up once at start; each session gets a [`SessionSandbox`] (its uid, its
//! directory's owner and mode, its cgroup), which every worker the session uses enters before
//! it runs the session's code. A worker is forked as root, idle and anonymous; binding it to a
//! session (the `attach` request) is where it becomes the session's user, for good.

pub mod cgroup;
mod error;
pub mod isolation;
pub mod mounts;
pub mod seccomp;
pub mod uids;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::{Config, Network};
use crate::reaper;
pub use cgroup::{CgroupLimits, Cgroups, Counters, SessionCgroup};
pub use error::SandboxError;
pub use isolation::Isolation;
pub use seccomp::SyscallFilter;
pub use uids::{Credentials, UidLease, UidPool};

pub struct Sandbox {
    uids: Option<UidPool>,
    /// Directories workers must reach (canonical): the Python installation, the state
    /// directory, the scripts.
    reach: Vec<PathBuf>,
    isolation: Arc<Isolation>,
    cgroups: Option<Cgroups>,
    /// RLIMIT_NPROC per session uid, where no pids cgroup limits processes.
    nproc: Option<u64>,
    memory_mb: u64,
    processes: Option<u64>,
    /// What user code may not call, in every worker (`None`: an architecture without a list).
    syscall_filter: Option<Arc<SyscallFilter>>,
}

impl Sandbox {
    /// `needed`: directories the workers must be able to reach (the state directory, the
    /// scripts); the Python installation is found by asking the interpreter.
    pub fn setup(config: &Config, needed: &[PathBuf]) -> Result<Sandbox, SandboxError> {
        let root = nix::unistd::geteuid().is_root();
        let sandbox = &config.sandbox;
        if sandbox.network == Network::None && !root {
            return Err(SandboxError::NetworkNeedsRoot);
        }
        let uids = if !root || sandbox.user.is_empty() {
            if !root {
                tracing::warn!(
                    "the server does not run as root: workers run as its own user, and sessions can read each other's files"
                );
            }
            None
        } else {
            let user = uids::lookup_user(&sandbox.user).map_err(SandboxError::User)?;
            match config
                .sandbox
                .session_uid_range()
                .map_err(SandboxError::UidRange)?
            {
                Some((first, last)) => Some(UidPool::range(first, last, user.gid)),
                None => Some(UidPool::shared(user)),
            }
        };
        // The user whose view decides what must be covered: any uid of the pool has the same
        // (no file belongs to it), so a probe lease serves.
        let probe_user = uids
            .as_ref()
            .and_then(UidPool::lease)
            .map(|l| l.credentials());
        let mut reach = needed.to_vec();
        if probe_user.is_some() {
            reach.extend(python_paths(&config.python.executable)?);
        }
        let isolation = Isolation::new(sandbox.network == Network::None, &reach, probe_user)
            .map_err(SandboxError::Isolation)?;
        // For every server, root or not: it takes nothing user code needs, and an embedding
        // program's workers should not make namespaces or use io_uring either.
        let syscall_filter = seccomp::worker_filter()
            .map_err(SandboxError::SyscallFilter)?
            .map(Arc::new);
        if syscall_filter.is_none() {
            tracing::warn!(
                "no syscall filter for {}: user code may make namespaces, use io_uring, ptrace…",
                std::env::consts::ARCH
            );
        }
        let processes = config.limits.processes();
        let cgroups = if sandbox.cgroups && root {
            Cgroups::setup(CgroupLimits {
                session: config.limits.per_session(),
                sessions: config.sessions.max,
            })
        } else {
            None
        };
        match &cgroups {
            Some(c) => tracing::info!("per-session cgroups: {}", c.describe()),
            None if sandbox.cgroups => {
                tracing::warn!("no writable cgroup hierarchy: sessions are limited by rlimits only")
            }
            None => {}
        }
        let pids_by_cgroup = cgroups.as_ref().is_some_and(Cgroups::limits_processes);
        // RLIMIT_NPROC counts a uid's processes: a limit per session only when the uid is.
        let per_session_uid = !config.sandbox.session_uids.trim().is_empty();
        let nproc = (!pids_by_cgroup && per_session_uid && uids.is_some())
            .then_some(processes)
            .flatten();
        Ok(Sandbox {
            uids,
            reach,
            isolation: Arc::new(isolation),
            cgroups,
            nproc,
            memory_mb: config.limits.memory_mb,
            processes,
            syscall_filter,
        })
    }

    /// The seccomp filter for every worker.
    pub fn syscall_filter(&self) -> Option<Arc<SyscallFilter>> {
        self.syscall_filter.clone()
    }

    /// What every process started for Python sets up before exec.
    pub fn isolation(&self) -> Arc<Isolation> {
        Arc::clone(&self.isolation)
    }

    /// The server's cgroup directories (empty without cgroups), for a watcher that ends
    /// everything below them if the server dies without cleaning up.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroups.as_ref().map(Cgroups::dirs).unwrap_or_default()
    }

    /// What a worker must bind back into a /tmp and /var/tmp of its own: the directories it
    /// needs that live in either, outermost only.
    pub fn tmp_keeps(&self) -> Vec<PathBuf> {
        outermost_under_tmp(&self.reach)
    }

    /// Whether workers change user (the server runs as root and `sandbox.user` is set).
    pub fn changes_user(&self) -> bool {
        self.uids.is_some()
    }

    /// A session's share: a uid, its directory made its own (mode 0700), a cgroup.
    pub fn session(&self, dir: &Path) -> Result<SessionSandbox, SandboxError> {
        let lease = match &self.uids {
            None => None,
            Some(pool) => Some(pool.lease().ok_or(SandboxError::NoFreeUid)?),
        };
        if let Some(lease) = &lease {
            let c = lease.credentials();
            std::os::unix::fs::chown(dir, Some(c.uid), Some(c.gid))
                .and_then(|()| {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(SandboxError::SessionDir)?;
        }
        let cgroup = match &self.cgroups {
            None => None,
            Some(cgroups) => Some(cgroups.session().map_err(SandboxError::SessionCgroup)?),
        };
        Ok(SessionSandbox {
            lease,
            cgroup,
            nproc: self.nproc,
            memory_mb: self.memory_mb,
            processes: self.processes,
            seen: Mutex::default(),
        })
    }
}

/// One session's identity and limits.
pub struct SessionSandbox {
    lease: Option<UidLease>,
    cgroup: Option<SessionCgroup>,
    nproc: Option<u64>,
    memory_mb: u64,
    processes: Option<u64>,
    /// The cgroup's counters when last looked at.
    seen: Mutex<Counters>,
}

impl SessionSandbox {
    /// No user change, no cgroup: for a core embedded without a sandbox.
    pub fn none() -> SessionSandbox {
        SessionSandbox {
            lease: None,
            cgroup: None,
            nproc: None,
            memory_mb: 0,
            processes: None,
            seen: Mutex::default(),
        }
    }

    /// Who the session's code runs as (`None`: the server's user).
    pub fn credentials(&self) -> Option<Credentials> {
        self.lease.as_ref().map(UidLease::credentials)
    }

    /// RLIMIT_NPROC the worker sets for itself before it changes user.
    pub fn nproc(&self) -> Option<u64> {
        self.nproc
    }

    /// Puts a worker into the session's cgroup, before it runs anything of the session's.
    pub fn enter(&self, pid: u32) -> std::io::Result<()> {
        match &self.cgroup {
            Some(cgroup) => cgroup.add(pid),
            None => Ok(()),
        }
    }

    /// Ends every process of the session, however detached (nothing without a cgroup).
    pub fn kill_all(&self) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
    }

    /// CPU time all of the session's processes have used so far, from its cgroup (`None`
    /// without one).
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.cgroup.as_ref().and_then(SessionCgroup::cpu_seconds)
    }

    /// What the limits refused since the last call.
    pub fn refusals(&self) -> Refusals {
        let Some(cgroup) = &self.cgroup else {
            return Refusals::default();
        };
        let now = cgroup.counters();
        let before = std::mem::replace(&mut *self.seen.lock(), now);
        let mut said = Vec::new();
        if now.forks_refused > before.forks_refused {
            said.push(format!(
                "process limit ({}) refused {} new processes",
                self.processes.unwrap_or(0),
                now.forks_refused - before.forks_refused
            ));
        }
        if now.oom_kills > before.oom_kills {
            said.push(format!(
                "memory limit ({} MiB) reached: the kernel killed {} processes",
                self.memory_mb,
                now.oom_kills - before.oom_kills
            ));
        }
        Refusals {
            oom_kills: now.oom_kills - before.oom_kills,
            described: said,
        }
    }

    pub fn memory_mb(&self) -> u64 {
        self.memory_mb
    }
}

/// What a session's limits refused over some time.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Processes the kernel's OOM killer ended.
    pub oom_kills: u64,
    /// Everything refused, in words (for the log).
    pub described: Vec<String>,
}

/// The directories each worker covers with a tmpfs of its own (`worker.py`'s `private_tmp`).
const PRIVATE_TMPS: [&str; 2] = ["/tmp", "/var/tmp"];

/// The paths under /tmp or /var/tmp (not those themselves), without those inside another of
/// them.
fn outermost_under_tmp(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut under_tmp: Vec<&PathBuf> = paths
        .iter()
        .filter(|p| {
            PRIVATE_TMPS
                .iter()
                .any(|tmp| p.starts_with(tmp) && p.as_path() != Path::new(tmp))
        })
        .collect();
    under_tmp.sort();
    let mut keeps: Vec<PathBuf> = Vec::new();
    for path in under_tmp {
        if !keeps.iter().any(|k| path.starts_with(k)) {
            keeps.push(path.clone());
        }
    }
    keeps
}

/// The directories of the interpreter's installation and of its `sys.path`, as it reports
/// them. The interpreter is one of the server's children, known to the orphan sweep.
fn python_paths(python: &Path) -> Result<Vec<PathBuf>, SandboxError> {
    let mut command = std::process::Command::new(python);
    command.args([
        "-I",
        "-c",
        "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]))",
    ]);
    let output =
        reaper::children()
            .output(&mut command)
            .map_err(|source| SandboxError::PythonSpawn {
                python: python.to_owned(),
                source,
            })?;
    if !output.status.success() {
        return Err(SandboxError::PythonFailed {
            python: python.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let paths: Vec<String> =
        serde_json::from_slice(&output.stdout).map_err(|source| SandboxError::PythonPaths {
            python: python.to_owned(),
            source,
        })?;
    let mut dirs: Vec<PathBuf> = paths
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .collect();
    if let Ok(real) = std::fs::canonicalize(python)
        && let Some(bin) = real.parent()
    {
        dirs.push(bin.to_owned());
    }
    if let Some(bin) = python.parent() {
        dirs.push(bin.to_owned());
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interpreter asked for its paths is one of the server's children like any other: an
    /// orphan sweep that runs meanwhile (the server sweeps from before the sandbox is set up)
    /// leaves it alone, however long it takes to answer.
    #[test]
    fn an_orphan_sweep_leaves_the_interpreter_asked_for_its_paths_alone() {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        let python = std::env::var("REPLPOOL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let dir = tempfile::tempdir().expect("tempdir");
        // Slower to answer than a sweep's grace for unknown children.
        let slow = dir.path().join("slow-python");
        let grace = crate::reaper::ORPHAN_GRACE + crate::reaper::SWEEP_INTERVAL;
        std::fs::write(
            &slow,
            format!(
                "#!/bin/sh\nsleep {}\nexec '{python}' \"$@\"\n",
                grace.as_secs_f64() * 2.0
            ),
        )
        .expect("write");
        std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let answered = AtomicBool::new(false);
        let paths = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !answered.load(Ordering::Acquire) {
                    crate::reaper::children().sweep();
                    std::thread::sleep(crate::reaper::SWEEP_INTERVAL / 5);
                }
            });
            let paths = python_paths(&slow);
            answered.store(true, Ordering::Release);
            paths
        });
        let paths = paths.expect("the interpreter reports its paths");
        assert!(paths.iter().any(|p| p.join("json").is_dir()), "{paths:?}");
    }

    #[test]
    fn only_the_outermost_paths_under_tmp_are_kept() {
        let paths: Vec<PathBuf> = [
            "/tmp",
            "/tmp/clone/.venv/lib/python3.11/site-packages",
            "/tmp/replpool-x/sessions",
            "/tmp/clone/.venv",
            "/tmpfoo/x",
            "/usr/lib/python3.11",
            "/tmp/replpool-x/sessions",
            "/var/tmp",
            "/var/tmp/venv/lib",
            "/var/tmp/venv",
            "/var/tmpx/y",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            outermost_under_tmp(&paths),
            [
                PathBuf::from("/tmp/clone/.venv"),
                PathBuf::from("/tmp/replpool-x/sessions"),
                PathBuf::from("/var/tmp/venv"),
            ]
        );
    }
}
