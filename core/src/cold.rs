//! The fallback the mission asks for: when no warm worker can serve, code still runs, in a
//! fresh interpreter started for this one execution and ended after it.
//!
//! It is the same `worker.py` with the same reply format, so a cold reply differs from a warm
//! one only in `mode` and in its cost (the interpreter start and imports, about a second). A
//! cold worker imports what it can of the preload list: the preload failing is one of the
//! reasons to run cold, so it must not stop the fallback too.
//!
//! Cold starts are few at a time (`pool.cold_starts`): each costs about a second of CPU, and
//! they happen most when the server is already short of it (warm workers not refilled in
//! time). Unbounded, an overloaded server started more of them, which slowed everything
//! further, until starts passed their own timeout and cells were refused. An execution past
//! its acquire timeout waits for a start permit or its warm worker, whichever comes first.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::metrics;
use crate::sandbox::SessionSandbox;
use crate::worker::{Cell, CellOutcome, EventSender, Worker, WorkerError, WorkerSpec};

#[derive(Debug, Clone)]
pub struct ColdRunner {
    spec: WorkerSpec,
    starts: ColdStarts,
}

/// The permits for cold starts, one set for the whole server: every interpreter's starts
/// take the same CPUs.
#[derive(Debug, Clone)]
pub struct ColdStarts {
    permits: Arc<Semaphore>,
}

/// The right to start one cold interpreter; given back once it has started (its cell runs
/// without it).
#[derive(Debug)]
pub struct ColdStart {
    _permit: Option<OwnedSemaphorePermit>,
}

impl ColdStarts {
    /// `at_once` starts at a time; 0: one per CPU the server may use.
    pub fn new(at_once: usize) -> ColdStarts {
        let at_once = match at_once {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        tracing::info!(at_once, "cold starts at once (pool.cold_starts)");
        ColdStarts {
            permits: Arc::new(Semaphore::new(at_once)),
        }
    }

    /// Waits for a permit. Counted in `replpool_cold_starts_waiting` while it waits (a
    /// dropped wait, e.g. the warm worker came first, counts off too).
    pub async fn permit(&self) -> ColdStart {
        let _waiting = metrics::ColdStartWait::begin();
        // The semaphore is never closed, so this cannot fail; if it did, the start goes
        // ahead unbounded rather than never.
        ColdStart {
            _permit: Arc::clone(&self.permits).acquire_owned().await.ok(),
        }
    }
}

impl ColdRunner {
    /// A runner starting workers like `spec`, but cold, `starts` at a time.
    pub fn new(spec: &WorkerSpec, starts: ColdStarts) -> ColdRunner {
        ColdRunner {
            spec: WorkerSpec {
                cold: true,
                ..spec.clone()
            },
            starts,
        }
    }

    /// Waits for the right to start a cold interpreter (see the module's comment).
    pub async fn permit(&self) -> ColdStart {
        self.starts.permit().await
    }

    /// Starts an interpreter in `dir` as the session's user (holding `start` until it has),
    /// runs the cell, and ends the interpreter.
    pub async fn run(
        &self,
        start: ColdStart,
        dir: &Path,
        sandbox: &SessionSandbox,
        cell: &Cell<'_>,
        events: Option<&EventSender>,
        interrupt: &Notify,
    ) -> Result<CellOutcome, WorkerError> {
        let mut worker = Worker::start(&self.spec).await?;
        tracing::info!(pid = worker.pid(), "running cold");
        // Bounded as the start is: a permit is never held by a start that hangs.
        let attached = match tokio::time::timeout(
            self.spec.start_timeout,
            worker.attach(dir, sandbox),
        )
        .await
        {
            Ok(attached) => attached,
            Err(_) => Err(WorkerError::StartTimeout(self.spec.start_timeout)),
        };
        drop(start);
        let outcome = match attached {
            Ok(()) => worker.execute(cell, events, interrupt).await,
            Err(e) => Err(e),
        };
        worker.kill(match &outcome {
            Ok(_) => "its cold execution is over",
            Err(_) => "its cold execution failed",
        });
        outcome
    }
}
