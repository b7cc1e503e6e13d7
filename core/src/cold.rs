//! The fallback the mission asks for: when no warm worker can serve, code still runs, in a
//! fresh interpreter started for this one execution and ended after it.
//!
//! It is the same `worker.py` with the same reply format, so a cold reply differs from a warm
//! one only in `mode` and in its cost (the interpreter start and imports, about a second). A
//! cold worker imports what it can of the preload list: the preload failing is one of the
//! reasons to run cold, so it must not stop the fallback too.

use std::path::Path;

use tokio::sync::Notify;

use crate::sandbox::SessionSandbox;
use crate::worker::{Cell, CellOutcome, EventSender, Worker, WorkerError, WorkerSpec};

#[derive(Debug, Clone)]
pub struct ColdRunner {
    spec: WorkerSpec,
}

impl ColdRunner {
    /// A runner starting workers like `spec`, but cold.
    pub fn new(spec: &WorkerSpec) -> ColdRunner {
        ColdRunner {
            spec: WorkerSpec {
                cold: true,
                ..spec.clone()
            },
        }
    }

    /// Starts an interpreter in `dir` as the session's user, runs the cell, and ends the
    /// interpreter.
    pub async fn run(
        &self,
        dir: &Path,
        sandbox: &SessionSandbox,
        cell: &Cell<'_>,
        events: Option<&EventSender>,
        interrupt: &Notify,
    ) -> Result<CellOutcome, WorkerError> {
        let mut worker = Worker::start(&self.spec).await?;
        tracing::info!(pid = worker.pid(), "running cold");
        let outcome = match worker.attach(dir, sandbox).await {
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
