//! A session: one worker, one namespace, and a FIFO of executions waiting for it.
//!
//! The worker sits behind a `tokio::sync::Mutex`, held for a whole execution: that lock *is*
//! the session's queue, since tokio's mutex hands itself out in the order it was asked for. A
//! counter of waiters bounds the queue.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::execution::{ExecRequest, Execution, Status};
use crate::pool::WarmPool;
use crate::protocol::ErrorInfo;
use crate::worker::{Cell, EventSender, Worker, WorkerError};

/// What the session needs to know of the configuration to run a cell.
#[derive(Debug, Clone)]
pub struct Limits {
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub interrupt_grace: Duration,
    pub max_output_bytes: usize,
    pub queue_depth: usize,
}

pub struct Session {
    id: String,
    dir: PathBuf,
    created_at: SystemTime,
    last_used_at: Mutex<SystemTime>,
    execution_count: AtomicU64,
    /// Executions waiting for or holding the worker.
    pending: AtomicUsize,
    /// The worker's pid, readable without waiting for the lock (0: none yet).
    worker_pid: AtomicU32,
    /// `None` after the worker was lost; the next execution gets a new one.
    worker: tokio::sync::Mutex<Option<Worker>>,
    closed: CancellationToken,
}

/// What `GET /v1/sessions/{id}` shows.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub session_id: String,
    pub state: &'static str,
    pub execution_count: u64,
    pub pending: usize,
    pub created_at: String,
    pub last_used_at: String,
    pub pid: Option<u32>,
    /// Proportional set size of the worker, bytes (shared pages split between sharers).
    pub memory_pss_bytes: Option<u64>,
}

/// Decrements the waiting count however the execution ends (including a dropped request).
struct QueueTicket<'a>(&'a AtomicUsize);

impl Drop for QueueTicket<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Session {
    pub fn new(id: String, dir: PathBuf, worker: Worker) -> Session {
        let now = SystemTime::now();
        Session {
            id,
            dir,
            created_at: now,
            last_used_at: Mutex::new(now),
            execution_count: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            worker_pid: AtomicU32::new(worker.pid()),
            worker: tokio::sync::Mutex::new(Some(worker)),
            closed: CancellationToken::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn info(&self) -> SessionInfo {
        let pending = self.pending.load(Ordering::Acquire);
        let pid = match self.worker_pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        };
        SessionInfo {
            session_id: self.id.clone(),
            state: if pending > 0 { "busy" } else { "idle" },
            execution_count: self.execution_count.load(Ordering::Acquire),
            pending,
            created_at: rfc3339(self.created_at),
            last_used_at: rfc3339(*self.last_used_at.lock()),
            pid,
            memory_pss_bytes: pid.and_then(pss_bytes),
        }
    }

    /// Runs one execution after those already queued.
    #[tracing::instrument(name = "execution", skip_all, fields(session = %self.id))]
    pub async fn execute(
        &self,
        request: &ExecRequest,
        pool: &WarmPool,
        limits: &Limits,
        events: Option<&EventSender>,
    ) -> Result<Execution, Error> {
        let _ticket = self.enter_queue(limits.queue_depth)?;
        let mut slot = tokio::select! {
            slot = self.worker.lock() => slot,
            _ = self.closed.cancelled() => return Err(Error::SessionClosed),
        };
        let started = Instant::now();
        let mut session_reset = false;
        if slot.is_none() {
            let mut worker = pool.acquire().await.map_err(Error::WorkerUnavailable)?;
            worker
                .attach(&self.dir)
                .await
                .map_err(Error::WorkerUnavailable)?;
            self.worker_pid.store(worker.pid(), Ordering::Release);
            *slot = Some(worker);
            session_reset = true;
        }
        let Some(worker) = slot.as_mut() else {
            return Err(Error::Internal("session worker vanished".into()));
        };
        let count = self.execution_count.fetch_add(1, Ordering::AcqRel) + 1;
        let timeout = request
            .timeout
            .unwrap_or(limits.default_timeout)
            .min(limits.max_timeout);
        let cell = Cell {
            code: &request.code,
            stdin: request.stdin.as_deref(),
            count,
            max_output_bytes: limits.max_output_bytes,
            deadline: started + timeout,
            interrupt_grace: limits.interrupt_grace,
        };
        let outcome = tokio::select! {
            outcome = worker.execute(&cell, events) => Some(outcome),
            _ = self.closed.cancelled() => None,
        };
        let Some(outcome) = outcome else {
            *slot = None; // kills the worker mid-cell
            return Err(Error::SessionClosed);
        };
        *self.last_used_at.lock() = SystemTime::now();
        let elapsed = started.elapsed();
        let mut execution = match outcome {
            Ok(outcome) => Execution::from_done(outcome.done, outcome.interrupted, count, elapsed),
            Err(e) => {
                // The worker is lost either way: drop (and so kill) it; the next execution
                // starts a new one. The code is never run again behind the caller's back.
                *slot = None;
                self.worker_pid.store(0, Ordering::Release);
                let (status, error) = lost_worker_error(&e, timeout);
                tracing::warn!("worker lost during execution: {e}");
                Execution::without_reply(status, error, count, elapsed)
            }
        };
        execution.session_reset |= session_reset;
        Ok(execution)
    }

    /// Ends the session: a running execution is abandoned and the worker killed.
    pub fn close(&self) {
        self.closed.cancel();
        if let Ok(mut slot) = self.worker.try_lock() {
            slot.take();
        }
        self.worker_pid.store(0, Ordering::Release);
    }

    fn enter_queue(&self, depth: usize) -> Result<QueueTicket<'_>, Error> {
        // One execution runs and `depth` wait: `depth + 1` may hold tickets.
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        let ticket = QueueTicket(&self.pending);
        if before > depth {
            return Err(Error::QueueFull { depth });
        }
        Ok(ticket)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The worker (a field) is killed by its own drop; the directory is ours to remove.
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(session = %self.id, "cannot remove session directory: {e}");
        }
    }
}

fn lost_worker_error(e: &WorkerError, timeout: Duration) -> (Status, ErrorInfo) {
    match e {
        WorkerError::Unresponsive => (
            Status::Timeout,
            ErrorInfo {
                ename: "TimeoutError".into(),
                evalue: format!(
                    "execution exceeded {} ms and ignored the interrupt; the worker was killed",
                    timeout.as_millis()
                ),
                traceback: Vec::new(),
            },
        ),
        WorkerError::Died { reason, .. } => (
            Status::Error,
            ErrorInfo {
                ename: "WorkerDied".into(),
                evalue: format!("the worker process died during the execution ({reason})"),
                traceback: Vec::new(),
            },
        ),
        other => (
            Status::Error,
            ErrorInfo {
                ename: "WorkerDied".into(),
                evalue: format!("the worker was lost during the execution: {other}"),
                traceback: Vec::new(),
            },
        ),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `Pss:` of `/proc/<pid>/smaps_rollup`, in bytes.
pub fn pss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
