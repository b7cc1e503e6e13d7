//! The owner of all sessions: creates, finds, lists, evicts and deletes them, and runs one-shot
//! executions. Front ends hold no session state of their own; they call this.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::cold::ColdRunner;
use crate::config::Config;
use crate::error::Error;
use crate::execution::{ExecRequest, Execution};
use crate::files::{FileInfo, FileLimits};
use crate::notebook;
use crate::pool::{PoolStatus, WarmPool};
use crate::reaper;
use crate::sandbox::{Sandbox, SessionSandbox};
use crate::session::{HistoryEntry, Limits, Session, SessionInfo, Workers};
use crate::template::Template;
use crate::worker::{EventSender, PrivateTmp, ResourceLimits, WorkerSpec};

/// The file the worker runs, compiled into the binary so the server cannot run against a
/// mismatched copy. It is written into the state directory at start.
pub const WORKER_SCRIPT: &str = include_str!("../../bootstrap/worker.py");

pub struct SessionManager {
    sessions: DashMap<String, Arc<Session>>,
    /// Sessions alive or being created: reserved before the (slow) worker start, so that
    /// concurrent creates cannot overshoot the limit.
    reserved: AtomicUsize,
    max_sessions: usize,
    idle_ttl: Option<Duration>,
    max_code_bytes: usize,
    max_frame_bytes: usize,
    workers: Arc<Workers>,
    sessions_dir: PathBuf,
    sandbox: Sandbox,
    shutdown: CancellationToken,
    /// Keeps the state directory (worker script, session directories) until the manager goes.
    _state_dir: tempfile::TempDir,
}

/// What `/healthz` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    /// `ok`, or `degraded` while warm workers cannot be started (requests then run cold).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub sessions: usize,
    pub pool: PoolStatus,
}

impl SessionManager {
    /// Sets up the state directory, starts the warm pool and the idle-session sweep. Must be
    /// called inside a tokio runtime.
    pub fn start(config: &Config) -> Result<Arc<SessionManager>, Error> {
        let state_dir = tempfile::Builder::new()
            .prefix("replpool-")
            .tempdir()
            .map_err(|e| Error::Internal(format!("cannot create the state directory: {e}")))?;
        let script = state_dir.path().join("worker.py");
        std::fs::write(&script, WORKER_SCRIPT)
            .map_err(|e| Error::Internal(format!("cannot write {}: {e}", script.display())))?;
        // Canonical, so that the files API can compare resolved paths against it.
        let sessions_dir = std::fs::canonicalize(state_dir.path())
            .map_err(|e| Error::Internal(format!("cannot resolve the state directory: {e}")))?
            .join("sessions");
        std::fs::create_dir(&sessions_dir).map_err(|e| {
            Error::Internal(format!("cannot create {}: {e}", sessions_dir.display()))
        })?;
        // Workers of other users pass through to their own session directories (mode 0700
        // each), but cannot list who else is there.
        for dir in [state_dir.path(), &sessions_dir] {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))
                .map_err(|e| Error::Internal(format!("cannot open {}: {e}", dir.display())))?;
        }
        let sandbox = Sandbox::setup(config, &[sessions_dir.clone(), config.scripts.dir.clone()])?;
        let ex = &config.execution;
        let spec = WorkerSpec {
            python: config.python.executable.clone(),
            script,
            cwd: state_dir.path().to_owned(),
            preload: config.python.preload.clone(),
            blas_threads: config.python.blas_threads,
            max_frame_bytes: ex.max_frame_bytes,
            start_timeout: Duration::from_millis(config.pool.start_timeout_ms),
            limits: ResourceLimits {
                address_space_bytes: config.limits.address_space_bytes(),
                file_size_bytes: config.limits.file_size_bytes(),
                open_files: config.limits.open_files(),
            },
            cold: false,
            isolation: sandbox.isolation(),
            private_tmp: sandbox.changes_user().then(|| PrivateTmp {
                keep: sandbox.tmp_keeps(),
                size_bytes: config.files.max_total_bytes,
            }),
        };
        let shutdown = CancellationToken::new();
        let cold = ColdRunner::new(&spec);
        // Forked workers become the server's children by re-parenting, which needs the server
        // to be a child subreaper; without that, workers are started directly.
        let template = (config.pool.template && reaper::children().is_subreaper())
            .then(|| Template::start(spec.clone(), shutdown.clone()));
        let pool = WarmPool::start(spec, template, config.pool.warm_workers, shutdown.clone());
        let workers = Arc::new(Workers {
            pool,
            cold,
            limits: Limits {
                default_timeout: Duration::from_millis(ex.default_timeout_ms),
                max_timeout: Duration::from_millis(ex.max_timeout_ms),
                interrupt_grace: Duration::from_millis(ex.interrupt_grace_ms),
                max_output_bytes: ex.max_output_bytes,
                cpu_seconds: config.limits.cpu_seconds(),
                queue_depth: config.sessions.queue_depth,
                acquire_timeout: Duration::from_millis(config.pool.acquire_timeout_ms),
                history_max: config.sessions.history_max,
                files: FileLimits {
                    max_bytes: config.files.max_bytes,
                    max_total_bytes: config.files.max_total_bytes,
                },
            },
        });
        let manager = Arc::new(SessionManager {
            sessions: DashMap::new(),
            reserved: AtomicUsize::new(0),
            max_sessions: config.sessions.max,
            idle_ttl: (config.sessions.idle_ttl_secs > 0)
                .then(|| Duration::from_secs(config.sessions.idle_ttl_secs)),
            max_code_bytes: ex.max_code_bytes,
            max_frame_bytes: ex.max_frame_bytes,
            workers,
            sessions_dir,
            sandbox,
            shutdown,
            _state_dir: state_dir,
        });
        tokio::spawn(watch_background_cpu(
            Arc::downgrade(&manager),
            config.limits.background_cpu_budget(),
            manager.shutdown.clone(),
        ));
        if let Some(ttl) = manager.idle_ttl {
            tokio::spawn(evict_idle(
                Arc::downgrade(&manager),
                ttl,
                manager.shutdown.clone(),
            ));
        }
        Ok(manager)
    }

    /// Creates a session. At the session limit the least recently used idle session is ended
    /// to make room; if every session is busy, this fails.
    /// Creates a session for the server's own use (no owner).
    pub async fn create(&self) -> Result<SessionInfo, Error> {
        self.create_for(None).await
    }

    /// Creates a session that only `owner` may see and use.
    pub async fn create_for(&self, owner: Option<&str>) -> Result<SessionInfo, Error> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let reservation = self.reserve()?;
        let id = new_session_id();
        let dir = self.sessions_dir.join(&id);
        std::fs::create_dir(&dir)
            .map_err(|e| Error::Internal(format!("cannot create the session directory: {e}")))?;
        let sandbox = self.session_sandbox(&id, &dir)?;
        let session = Arc::new(Session::new(
            id.clone(),
            owner.map(str::to_owned),
            dir,
            sandbox,
            Arc::clone(&self.workers),
        ));
        session.wait_ready().await;
        let info = session.info();
        self.sessions.insert(id.clone(), session);
        reservation.keep();
        tracing::info!(session = %id, pid = ?info.pid, "session created");
        Ok(info)
    }

    /// A session's info, with its worker's memory.
    pub async fn get(&self, id: &str) -> Result<SessionInfo, Error> {
        let info = self.session(id)?.info();
        with_memory(vec![info])
            .await
            .pop()
            .ok_or_else(|| Error::Internal("no info".into()))
    }

    /// `owner`'s sessions: a session is visible only to its owner (all of them when auth is
    /// off, where every owner is `None`).
    pub async fn list_for(&self, owner: Option<&str>) -> Vec<SessionInfo> {
        let mut infos: Vec<SessionInfo> = self
            .sessions
            .iter()
            .filter(|s| s.owner() == owner)
            .map(|s| s.info())
            .collect();
        infos.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        with_memory(infos).await
    }

    /// Refuses another owner's session as if it did not exist: its existence is not leaked.
    pub fn authorize(&self, id: &str, owner: Option<&str>) -> Result<(), Error> {
        match self.sessions.get(id) {
            Some(session) if session.owner() == owner => Ok(()),
            _ => Err(Error::SessionNotFound(id.to_owned())),
        }
    }

    pub fn delete(&self, id: &str) -> Result<(), Error> {
        self.end(id, "deleted")
    }

    /// A fresh namespace (and worker) for the session, keeping its id, files and history.
    pub async fn reset(&self, id: &str) -> Result<SessionInfo, Error> {
        let session = self.session(id)?;
        session.reset().await?;
        Ok(session.info())
    }

    pub fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, Error> {
        Ok(self.session(id)?.history())
    }

    /// The session's history as an nbformat 4 notebook.
    pub fn notebook(&self, id: &str) -> Result<serde_json::Value, Error> {
        let session = self.session(id)?;
        Ok(notebook::to_notebook(
            &session.history(),
            session.python_version().as_deref(),
        ))
    }

    pub async fn put_file(&self, id: &str, path: &str, data: bytes::Bytes) -> Result<(), Error> {
        Ok(self.session(id)?.files().put(path, data).await?)
    }

    pub async fn get_file(&self, id: &str, path: &str) -> Result<Vec<u8>, Error> {
        Ok(self.session(id)?.files().get(path).await?)
    }

    pub async fn delete_file(&self, id: &str, path: &str) -> Result<(), Error> {
        Ok(self.session(id)?.files().delete(path).await?)
    }

    pub async fn list_files(&self, id: &str) -> Result<Vec<FileInfo>, Error> {
        Ok(self.session(id)?.files().list().await?)
    }

    /// Interrupts the session's running execution; returns whether one was running.
    pub fn interrupt(&self, id: &str) -> Result<bool, Error> {
        Ok(self.session(id)?.interrupt())
    }

    pub async fn execute(
        &self,
        id: &str,
        request: &ExecRequest,
        events: Option<&EventSender>,
    ) -> Result<Execution, Error> {
        self.check_request(request)?;
        let session = self.session(id)?;
        session.execute(request, events).await
    }

    /// Runs code in a fresh worker that is thrown away afterwards: no state is kept.
    pub async fn execute_once(
        &self,
        request: &ExecRequest,
        events: Option<&EventSender>,
    ) -> Result<Execution, Error> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        self.check_request(request)?;
        let dir = tempfile::Builder::new()
            .prefix("once-")
            .tempdir_in(&self.sessions_dir)
            .map_err(|e| Error::Internal(format!("cannot create a directory: {e}")))?;
        let id = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = dir.keep();
        let sandbox = self.session_sandbox(&id, &dir)?;
        let session = Session::new(id, None, dir, sandbox, Arc::clone(&self.workers));
        session.execute(request, events).await
    }

    /// A session's share of the sandbox; the directory is removed if there is none to be had.
    fn session_sandbox(&self, id: &str, dir: &Path) -> Result<SessionSandbox, Error> {
        self.sandbox.session(dir).inspect_err(|e| {
            tracing::warn!(session = %id, "refused: {e}");
            let _ = std::fs::remove_dir_all(dir);
        })
    }

    /// Makes the template start over (after a package install): new workers import afresh.
    /// Idle pooled workers are dropped too.
    pub fn restart_template(&self) {
        self.workers.pool.drain();
        self.workers.pool.restart_template();
    }

    /// The workers' Python version (`3.11.7`), once a worker has started.
    pub fn python_version(&self) -> Option<String> {
        self.workers.pool.python_version()
    }

    pub fn health(&self) -> Health {
        let pool = self.workers.pool.status();
        let reason = pool
            .last_error
            .as_ref()
            .map(|e| format!("warm workers cannot be started, executions run cold: {e}"));
        Health {
            status: if reason.is_some() { "degraded" } else { "ok" },
            reason,
            sessions: self.sessions.len(),
            pool,
        }
    }

    /// Stops the pool and ends every session and worker.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
        self.workers.pool.drain();
        let ids: Vec<String> = self.sessions.iter().map(|s| s.key().clone()).collect();
        for id in ids {
            let _ = self.end(&id, "ended at shutdown");
        }
    }

    /// The server's cgroup directories: see [`Sandbox::cgroup_dirs`].
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.sandbox.cgroup_dirs()
    }

    pub fn sessions_dir(&self) -> &Path {
        &self.sessions_dir
    }

    /// A fresh directory under the server's state directory, removed when dropped, for what
    /// one-shot executions of one request share (a judge's compiled program: made by one
    /// session's user, run by others). Like `/tmp`: anyone may add files, only their owner
    /// may replace or remove them, and nobody may list it.
    pub fn scratch_dir(&self) -> Result<tempfile::TempDir, Error> {
        let dir = tempfile::Builder::new()
            .prefix("scratch-")
            .tempdir_in(&self.sessions_dir)
            .map_err(|e| Error::Internal(format!("cannot create a directory: {e}")))?;
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o1733),
        )
        .map_err(|e| Error::Internal(format!("cannot open a directory: {e}")))?;
        Ok(dir)
    }

    fn end(&self, id: &str, why: &str) -> Result<(), Error> {
        let (_, session) = self
            .sessions
            .remove(id)
            .ok_or_else(|| Error::SessionNotFound(id.to_owned()))?;
        self.reserved.fetch_sub(1, Ordering::AcqRel);
        session.close();
        tracing::info!(session = %id, "session {why}");
        Ok(())
    }

    fn session(&self, id: &str) -> Result<Arc<Session>, Error> {
        self.sessions
            .get(id)
            .map(|s| Arc::clone(s.value()))
            .ok_or_else(|| Error::SessionNotFound(id.to_owned()))
    }

    fn check_request(&self, request: &ExecRequest) -> Result<(), Error> {
        if request.code.len() > self.max_code_bytes {
            return Err(Error::CodeTooLarge {
                size: request.code.len(),
                max: self.max_code_bytes,
            });
        }
        // The request frame carries code and stdin, JSON-escaped (up to 6 bytes per byte).
        let stdin = request.stdin.as_deref().map_or(0, str::len);
        let room =
            (self.max_frame_bytes.saturating_sub(4096) / 6).saturating_sub(request.code.len());
        if stdin > room {
            return Err(Error::StdinTooLarge {
                size: stdin,
                max: room,
            });
        }
        Ok(())
    }

    /// A place under the session limit, made by ending the least recently used idle session
    /// if need be.
    fn reserve(&self) -> Result<Reservation<'_>, Error> {
        loop {
            let before = self.reserved.fetch_add(1, Ordering::AcqRel);
            let reservation = Reservation {
                counter: &self.reserved,
                kept: false,
            };
            if before < self.max_sessions {
                return Ok(reservation);
            }
            drop(reservation);
            let lru = self
                .sessions
                .iter()
                .filter(|s| s.is_idle())
                .min_by_key(|s| s.last_used())
                .map(|s| s.key().clone());
            match lru {
                Some(id) => {
                    // Another create may have ended it first; then look again.
                    let _ = self.end(&id, "evicted (least recently used, session limit reached)");
                }
                None => {
                    return Err(Error::TooManySessions {
                        max: self.max_sessions,
                    });
                }
            }
        }
    }
}

/// The infos with their workers' memory, read on a blocking thread.
async fn with_memory(infos: Vec<SessionInfo>) -> Vec<SessionInfo> {
    let fallback = infos.clone();
    tokio::task::spawn_blocking(move || infos.into_iter().map(SessionInfo::with_memory).collect())
        .await
        .unwrap_or(fallback)
}

/// Ends sessions idle for longer than `ttl`, until shutdown or until the manager is gone.
async fn evict_idle(
    manager: std::sync::Weak<SessionManager>,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let interval = (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(manager) = manager.upgrade() else {
            return;
        };
        let expired: Vec<String> = manager
            .sessions
            .iter()
            .filter(|s| s.is_idle() && s.last_used().elapsed() >= ttl)
            .map(|s| s.key().clone())
            .collect();
        for id in expired {
            let _ = manager.end(&id, "evicted (idle)");
        }
    }
}

/// How often idle sessions' CPU time is sampled.
const BACKGROUND_CPU_SWEEP: Duration = Duration::from_secs(1);

/// Counts the CPU time each session uses while none of its cells runs (threads and processes
/// a cell left behind), and resets the worker of a session over `budget` seconds in the last
/// minute. A sweep reads one cgroup file (or `/proc` entry) per session, on a blocking thread;
/// executions themselves pay nothing for it.
async fn watch_background_cpu(
    manager: std::sync::Weak<SessionManager>,
    budget: Option<f64>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(BACKGROUND_CPU_SWEEP) => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(manager) = manager.upgrade() else {
            return;
        };
        let sessions: Vec<Arc<Session>> = manager
            .sessions
            .iter()
            .map(|s| Arc::clone(s.value()))
            .collect();
        drop(manager);
        let sampled = tokio::task::spawn_blocking(move || {
            sessions
                .into_iter()
                .map(|session| {
                    let used = session.sample_background_cpu();
                    (session, used)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let (Some(budget), Ok(sampled)) = (budget, sampled) else {
            continue;
        };
        for (session, used) in sampled {
            if used > budget && session.reset_for_background_cpu(used, budget) {
                tracing::warn!(
                    session = %session.id(),
                    used,
                    budget,
                    "limit reached: background CPU budget; the session's worker was reset"
                );
            }
        }
    }
}

/// A place under the session limit, given back unless the session was made.
struct Reservation<'a> {
    counter: &'a AtomicUsize,
    kept: bool,
}

impl Reservation<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.counter.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// 128 random bits, hex: unguessable, so an id is as good as a capability.
fn new_session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
