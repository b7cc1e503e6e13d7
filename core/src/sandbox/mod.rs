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
pub mod probe;
pub mod seccomp;
pub mod uids;
pub mod view;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::{Config, FilesystemMode, Network};
use crate::reaper;
pub use cgroup::{CgroupLimits, Cgroups, Counters, SessionCgroup};
pub use error::SandboxError;
pub use isolation::{Isolation, Levels};
pub use seccomp::SyscallFilter;
pub use uids::{Credentials, UidLease, UidPool};

pub struct Sandbox {
    uids: Option<UidPool>,
    /// Directories workers must reach (canonical): the Python installation, the state
    /// directory, the scripts.
    reach: Vec<PathBuf>,
    isolation: Arc<Isolation>,
    levels: Levels,
    cgroups: Option<Cgroups>,
    /// RLIMIT_NPROC per session uid, where no pids cgroup limits processes.
    nproc: Option<u64>,
    memory_mb: u64,
    processes: Option<u64>,
    /// What user code may not call, in every worker (`None`: an architecture without a list).
    syscall_filter: Option<Arc<SyscallFilter>>,
}

/// The server's directories the sandbox is built around.
pub struct SandboxDirs<'a> {
    /// The state directory (holds the worker script; read-only to workers).
    pub state: &'a Path,
    pub script: &'a Path,
    /// Session directories live here; a worker sees only its own.
    pub sessions: &'a Path,
    /// One-shot executions of one request share a directory here (the judge's program).
    pub scratch: &'a Path,
}

impl Sandbox {
    /// Decides the isolation (see `isolation.rs`): asks the interpreter for its paths, plans
    /// the filesystem view, probes what the machine allows, and refuses to start when
    /// `sandbox.require` asks for what cannot be had.
    pub fn setup(config: &Config, dirs: &SandboxDirs) -> Result<Sandbox, SandboxError> {
        let root = nix::unistd::geteuid().is_root();
        let sandbox = &config.sandbox;
        let uids = if !root || sandbox.user.is_empty() {
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
        // Every interpreter's installation is in the workers' view: a session may run any.
        let interpreters = config.interpreters();
        let mut python = Vec::new();
        for interpreter in &interpreters {
            for path in python_paths(&interpreter.executable)? {
                if !python.contains(&path) {
                    python.push(path);
                }
            }
        }
        // The probe's answers (namespaces, the view) hold for every interpreter's workers: they
        // are the same worker.py, in the same sandbox.
        let probe_python = interpreters
            .first()
            .map_or(config.python.executable.clone(), |i| i.executable.clone());
        let mut reach = python.clone();
        reach.extend([dirs.state.to_owned(), config.scripts.dir.clone()]);
        reach.extend(sandbox.expose.iter().cloned());
        let keep = outermost_under_tmp(&reach);
        let cgroups = if sandbox.cgroups {
            Cgroups::setup(CgroupLimits {
                session: config.limits.per_session(),
                sessions: config.sessions.max,
            })
        } else {
            None
        };
        let view = match sandbox.filesystem {
            FilesystemMode::Host => None,
            FilesystemMode::View => {
                let mut read_only = vec![config.scripts.dir.clone()];
                read_only.extend(sandbox.expose.iter().cloned());
                let users = view_users(root, &sandbox.user);
                let writable = [dirs.sessions.to_owned(), dirs.scratch.to_owned()];
                Some(
                    view::View::plan(&view::ViewPlan {
                        python: &python,
                        state: dirs.state,
                        writable: &writable,
                        sessions: dirs.sessions,
                        scratch: dirs.scratch,
                        read_only: &read_only,
                        users: &users,
                        cwd: dirs.state,
                    })
                    .map_err(SandboxError::Isolation)?,
                )
            }
        };
        let network_none = sandbox.network == Network::None;
        let probe = probe::run(
            &probe_python,
            dirs.script,
            &Isolation {
                user_namespace: !root,
                network_none,
                mount_namespace: true,
                view: view.clone(),
                pid_namespace: true,
                processes: None,
            },
            &keep,
        )?;
        let per_session_uids = uids.is_some() && !sandbox.session_uids.trim().is_empty();
        let (mut isolation, levels) = isolation::decide(
            isolation::Wanted {
                root,
                per_session_uids,
                network_none,
                view,
            },
            &probe,
            cgroups.as_ref().map_or("none", Cgroups::version),
        );
        report(
            &levels,
            &probe,
            &isolation,
            network_none,
            sandbox.filesystem,
        );
        if let Some(refusal) = isolation::unmet(&sandbox.require, &levels, &probe, root) {
            return Err(SandboxError::Unmet(refusal));
        }
        // Without a view, the workers' user must reach the installation on its own.
        if isolation.view.is_none()
            && let Some(user) = uids
                .as_ref()
                .and_then(UidPool::lease)
                .map(|l| l.credentials())
        {
            check_reachable(&python, user)?;
        }
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
        match &cgroups {
            Some(c) => tracing::info!("per-session cgroups: {}", c.describe()),
            None if sandbox.cgroups => {
                tracing::warn!("no writable cgroup hierarchy: sessions are limited by rlimits only")
            }
            None => {}
        }
        let pids_by_cgroup = cgroups.as_ref().is_some_and(Cgroups::limits_processes);
        if isolation.user_namespace && !pids_by_cgroup {
            isolation.processes = processes;
        }
        // RLIMIT_NPROC counts a uid's processes: a limit per session only when the uid is.
        let nproc = (!pids_by_cgroup && per_session_uids)
            .then_some(processes)
            .flatten();
        Ok(Sandbox {
            uids,
            reach,
            isolation: Arc::new(isolation),
            levels,
            cgroups,
            nproc,
            memory_mb: config.limits.memory_mb,
            processes,
            syscall_filter,
        })
    }

    /// What is in force, for `/healthz`.
    pub fn levels(&self) -> &Levels {
        &self.levels
    }

    /// Whether each worker gets a /tmp of its own: with the view, or where sessions run as
    /// different users (who must not share one); never without a mount namespace.
    pub fn private_tmp(&self) -> bool {
        self.isolation.mount_namespace && (self.isolation.view.is_some() || self.uids.is_some())
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
            shared: None,
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
    /// The scratch directory a one-shot shares with the rest of its request.
    shared: Option<PathBuf>,
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
            shared: None,
            nproc: None,
            memory_mb: 0,
            processes: None,
            seen: Mutex::default(),
        }
    }

    /// Lets the session's workers see `dir`, a directory of the scratch area (which is
    /// otherwise covered for them).
    pub fn share(&mut self, dir: &Path) {
        self.shared = Some(dir.to_owned());
    }

    pub fn shared_dir(&self) -> Option<&Path> {
        self.shared.as_deref()
    }

    /// Who the session's code runs as (`None`: the server's user).
    pub fn credentials(&self) -> Option<Credentials> {
        self.lease.as_ref().map(UidLease::credentials)
    }

    /// RLIMIT_NPROC the worker sets for itself before it changes user.
    pub fn nproc(&self) -> Option<u64> {
        self.nproc
    }

    /// A worker's move into the session's cgroup, before it runs anything of the session's,
    /// to be made off the async threads (see
    /// [`SessionCgroup::entry`]); empty without a cgroup.
    pub fn entry(&self, pid: u32) -> cgroup::Entry {
        self.cgroup
            .as_ref()
            .map(|c| c.entry(pid))
            .unwrap_or_default()
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

    /// The most memory the session's processes held at once, from its cgroup (`None`
    /// without one, or without its memory controller).
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        self.cgroup
            .as_ref()
            .and_then(SessionCgroup::memory_peak_bytes)
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
            forks_refused: now.forks_refused.saturating_sub(before.forks_refused),
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
    /// New processes the pids limit refused.
    pub forks_refused: u64,
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

/// The start-up log's account of the isolation: one line of what is in force, and a warning
/// for each mechanism asked for that the machine refused, with the refusal.
fn report(
    levels: &Levels,
    probe: &probe::Probe,
    isolation: &Isolation,
    network_none: bool,
    filesystem: FilesystemMode,
) {
    tracing::info!(
        users = levels.users,
        network = levels.network,
        filesystem = levels.filesystem,
        processes = levels.processes,
        cgroups = levels.cgroups,
        via = levels.via,
        "isolation"
    );
    let failed = |r: &Result<(), String>| r.as_ref().err().cloned();
    if levels.via == "none"
        && let Some(e) = failed(&probe.user_namespace).filter(|_| !nix::unistd::geteuid().is_root())
    {
        tracing::warn!(
            "no user namespace can be made ({e}): workers run as the server's user, on the machine's network and filesystem; sessions can read each other's files"
        );
    }
    if network_none && !isolation.network_none {
        tracing::warn!(
            "sandbox.network = \"none\" cannot be had ({}): workers use the host's network",
            failed(&probe.network).unwrap_or_else(|| "no namespaces".into())
        );
    }
    if filesystem == FilesystemMode::View && isolation.view.is_none() {
        let why = failed(&probe.mount)
            .or_else(|| probe.view.as_ref().and_then(failed))
            .unwrap_or_else(|| "no namespaces".into());
        tracing::warn!("no private filesystem view ({why}): workers see the machine's files");
    }
    if let Some(view) = &isolation.view {
        tracing::info!("workers' view: {}", view.describe());
    }
    if levels.processes == "shared"
        && let Some(e) = failed(&probe.pid)
    {
        tracing::warn!(
            "no pid namespace with a /proc of its own ({e}): sessions of one uid can signal each other's processes"
        );
    }
}

/// The users the view's `/etc/passwd` names: the workers' (root: `sandbox.user`; otherwise the
/// server's own).
fn view_users(root: bool, user: &str) -> Vec<(String, u32, u32)> {
    let found = if root {
        uids::lookup_user(user)
            .ok()
            .map(|c| (user.to_owned(), c.uid, c.gid))
    } else {
        let uid = nix::unistd::getuid();
        let name = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| format!("u{uid}"), |u| u.name);
        Some((name, uid.as_raw(), nix::unistd::getgid().as_raw()))
    };
    found.into_iter().collect()
}

/// Without a view the workers' user passes through the real directories: refuse to start
/// when it cannot reach the interpreter, rather than fail at every worker start.
fn check_reachable(paths: &[PathBuf], user: Credentials) -> Result<(), SandboxError> {
    for path in paths {
        let mut ancestor = PathBuf::from("/");
        for component in path.components().skip(1) {
            if !searchable(&ancestor, user) {
                return Err(SandboxError::Isolation(format!(
                    "{} is closed to the workers' user (uid {}), and without a filesystem view (sandbox.filesystem = \"view\" and a mount namespace) nothing opens it; make the Python installation readable by that user",
                    ancestor.display(),
                    user.uid
                )));
            }
            ancestor.push(component);
        }
    }
    Ok(())
}

/// Whether `user` may pass through `dir` (its search bit).
fn searchable(dir: &Path, user: Credentials) -> bool {
    let Ok(meta) = std::fs::metadata(dir) else {
        return true;
    };
    let mode = meta.mode();
    if meta.uid() == user.uid {
        return mode & 0o100 != 0;
    }
    if meta.gid() == user.gid {
        return mode & 0o010 != 0;
    }
    mode & 0o001 != 0
}

/// Runs `command` (the interpreter `python`, asked something at start) to its end, as one of
/// the server's children, known to the orphan sweep.
fn ask_python(
    python: &Path,
    command: &mut std::process::Command,
) -> Result<std::process::Output, SandboxError> {
    reaper::children()
        .output(command)
        .map_err(|source| SandboxError::PythonSpawn {
            python: python.to_owned(),
            source,
        })
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
    let output = ask_python(python, &mut command)?;
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
