//! The owner of all sessions: creates, finds, lists and deletes them, and runs one-shot
//! executions. Front ends hold no session state of their own; they call this.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::Error;
use crate::execution::{ExecRequest, Execution};
use crate::pool::{PoolStatus, WarmPool};
use crate::session::{Limits, Session, SessionInfo};
use crate::worker::{EventSender, WorkerSpec};

/// The file the worker runs, compiled into the binary so the server cannot run against a
/// mismatched copy. It is written into the state directory at start.
pub const WORKER_SCRIPT: &str = include_str!("../bootstrap/worker.py");

pub struct SessionManager {
    sessions: DashMap<String, Arc<Session>>,
    /// Sessions alive or being created: reserved before the (slow) worker start, so that
    /// concurrent creates cannot overshoot the limit.
    reserved: AtomicUsize,
    max_sessions: usize,
    max_code_bytes: usize,
    max_frame_bytes: usize,
    limits: Limits,
    pool: Arc<WarmPool>,
    sessions_dir: PathBuf,
    shutdown: CancellationToken,
    /// Keeps the state directory (worker script, session directories) until the manager goes.
    _state_dir: tempfile::TempDir,
}

/// What `/healthz` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    pub status: &'static str,
    pub sessions: usize,
    pub pool: PoolStatus,
}

impl SessionManager {
    /// Sets up the state directory and starts the warm pool. Must be called inside a tokio
    /// runtime.
    pub fn start(config: &Config) -> Result<Arc<SessionManager>, Error> {
        let state_dir = tempfile::Builder::new()
            .prefix("replpool-")
            .tempdir()
            .map_err(|e| Error::Internal(format!("cannot create the state directory: {e}")))?;
        let script = state_dir.path().join("worker.py");
        std::fs::write(&script, WORKER_SCRIPT)
            .map_err(|e| Error::Internal(format!("cannot write {}: {e}", script.display())))?;
        let sessions_dir = state_dir.path().join("sessions");
        std::fs::create_dir(&sessions_dir).map_err(|e| {
            Error::Internal(format!("cannot create {}: {e}", sessions_dir.display()))
        })?;
        let ex = &config.execution;
        let spec = WorkerSpec {
            python: config.python.executable.clone(),
            script,
            cwd: state_dir.path().to_owned(),
            preload: config.python.preload.clone(),
            blas_threads: config.python.blas_threads,
            max_frame_bytes: ex.max_frame_bytes,
            start_timeout: Duration::from_millis(config.pool.start_timeout_ms),
        };
        let shutdown = CancellationToken::new();
        let pool = WarmPool::start(spec, config.pool.warm_workers, shutdown.clone());
        Ok(Arc::new(SessionManager {
            sessions: DashMap::new(),
            reserved: AtomicUsize::new(0),
            max_sessions: config.sessions.max,
            max_code_bytes: ex.max_code_bytes,
            max_frame_bytes: ex.max_frame_bytes,
            limits: Limits {
                default_timeout: Duration::from_millis(ex.default_timeout_ms),
                max_timeout: Duration::from_millis(ex.max_timeout_ms),
                interrupt_grace: Duration::from_millis(ex.interrupt_grace_ms),
                max_output_bytes: ex.max_output_bytes,
                queue_depth: config.sessions.queue_depth,
            },
            pool,
            sessions_dir,
            shutdown,
            _state_dir: state_dir,
        }))
    }

    pub async fn create(&self) -> Result<SessionInfo, Error> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let reservation = self.reserve()?;
        let id = new_session_id();
        let dir = self.sessions_dir.join(&id);
        std::fs::create_dir(&dir)
            .map_err(|e| Error::Internal(format!("cannot create the session directory: {e}")))?;
        let worker = async {
            let mut worker = self.pool.acquire().await?;
            worker.attach(&dir).await?;
            Ok(worker)
        };
        let worker = match worker.await {
            Ok(worker) => worker,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Error::WorkerUnavailable(e));
            }
        };
        let session = Arc::new(Session::new(id.clone(), dir, worker));
        let info = session.info();
        self.sessions.insert(id.clone(), session);
        reservation.keep();
        tracing::info!(session = %id, "session created");
        Ok(info)
    }

    pub fn get(&self, id: &str) -> Result<SessionInfo, Error> {
        Ok(self.session(id)?.info())
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let mut infos: Vec<SessionInfo> = self.sessions.iter().map(|s| s.info()).collect();
        infos.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        infos
    }

    pub fn delete(&self, id: &str) -> Result<(), Error> {
        let (_, session) = self
            .sessions
            .remove(id)
            .ok_or_else(|| Error::SessionNotFound(id.to_owned()))?;
        self.reserved.fetch_sub(1, Ordering::AcqRel);
        session.close();
        tracing::info!(session = %id, "session deleted");
        Ok(())
    }

    pub async fn execute(
        &self,
        id: &str,
        request: &ExecRequest,
        events: Option<&EventSender>,
    ) -> Result<Execution, Error> {
        self.check_request(request)?;
        let session = self.session(id)?;
        session
            .execute(request, &self.pool, &self.limits, events)
            .await
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
        let mut worker = self
            .pool
            .acquire()
            .await
            .map_err(Error::WorkerUnavailable)?;
        worker
            .attach(dir.path())
            .await
            .map_err(Error::WorkerUnavailable)?;
        let session = Session::new(format!("once-{}", worker.pid()), dir.keep(), worker);
        session
            .execute(request, &self.pool, &self.limits, events)
            .await
    }

    pub fn health(&self) -> Health {
        let pool = self.pool.status();
        Health {
            status: if pool.last_error.is_some() {
                "degraded"
            } else {
                "ok"
            },
            sessions: self.sessions.len(),
            pool,
        }
    }

    /// Stops the pool and ends every session and worker.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
        self.pool.drain();
        let ids: Vec<String> = self.sessions.iter().map(|s| s.key().clone()).collect();
        for id in ids {
            let _ = self.delete(&id);
        }
    }

    pub fn sessions_dir(&self) -> &Path {
        &self.sessions_dir
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
        let room = self.max_frame_bytes.saturating_sub(4096) / 6;
        if stdin > room.saturating_sub(request.code.len()) {
            return Err(Error::StdinTooLarge {
                size: stdin,
                max: room.saturating_sub(request.code.len()),
            });
        }
        Ok(())
    }

    fn reserve(&self) -> Result<Reservation<'_>, Error> {
        let before = self.reserved.fetch_add(1, Ordering::AcqRel);
        let reservation = Reservation {
            counter: &self.reserved,
            kept: false,
        };
        if before >= self.max_sessions {
            return Err(Error::TooManySessions {
                max: self.max_sessions,
            });
        }
        Ok(reservation)
    }
}

/// A slot under the session limit, given back unless the session was made.
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
