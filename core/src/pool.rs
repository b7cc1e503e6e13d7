//! Ready workers, kept so that a new session does not wait for the preload, nor for anything
//! else that does not depend on which session it is.
//!
//! A background task keeps `target` workers *bound*: started, preloaded, then placed — a
//! session directory (with its quota filesystem), a uid lease, a cgroup with its limits — moved
//! into that cgroup and attached there (see [`crate::binding`]). Taking one is a pop, and the
//! session created with it only records its id; when the pool is empty the caller makes its
//! own, so a burst of new sessions is slower but never refused. A refill is mostly waiting —
//! the fork, the child's namespaces, and above all the move into the cgroup, which waits for an
//! RCU grace period (~10–20 ms) — so up to `parallel` run at once, and their waits overlap. The
//! sessions' pool keeps one at a time (each fork copies the preloaded template, and sessions
//! come one by one); the lean pool of one-shots, which a judge's batch empties at once, runs as
//! many as it holds.
//!
//! A worker for a place that exists already (a session's reset, a replacement after a death,
//! a one-shot sharing a directory) is started on demand by [`WarmPool::acquire`].
//!
//! Workers are forked from the template when it runs (milliseconds), and started directly
//! (`python worker.py`, a second or so) while it does not.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::binding::{BoundWorker, Places};
use crate::metrics;
use crate::template::{Template, TemplateStatus};
use crate::worker::{Worker, WorkerError, WorkerSpec};

/// After a failed start the refill task waits before trying again, doubling the wait up to the
/// maximum: a preload that always crashes must not keep a core busy.
const RETRY_DELAY: Duration = Duration::from_secs(1);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

pub struct WarmPool {
    /// The pool's `pool` label in the metrics ([`metrics::sessions_pool`] or [`metrics::LEAN_POOL`]).
    name: String,
    spec: WorkerSpec,
    template: Option<Arc<Template>>,
    /// Makes the places the pool's workers are bound to.
    places: Arc<Places>,
    target: usize,
    /// Refills that may run at once.
    parallel: usize,
    ready: Mutex<VecDeque<BoundWorker>>,
    /// Wakes the refill task when a worker was taken.
    taken: Notify,
    /// Why the last start failed, while starts keep failing.
    last_error: Mutex<Option<String>>,
    /// The workers' Python version (`3.11.7`), once one has started.
    python_version: Mutex<Option<String>>,
}

/// A snapshot for `/healthz`.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolStatus {
    pub ready: usize,
    pub target: usize,
    pub last_error: Option<String>,
    /// `None` when workers are always started directly.
    pub template: Option<TemplateStatus>,
}

impl WarmPool {
    /// Creates the pool and starts its refill task, which ends with `shutdown`.
    pub fn start(
        name: String,
        spec: WorkerSpec,
        template: Option<Arc<Template>>,
        places: Arc<Places>,
        target: usize,
        parallel: usize,
        shutdown: CancellationToken,
    ) -> Arc<WarmPool> {
        metrics::pool_started(&name);
        let pool = Arc::new(WarmPool {
            name,
            spec,
            template,
            places,
            target,
            parallel: parallel.max(1),
            ready: Mutex::new(VecDeque::new()),
            taken: Notify::new(),
            last_error: Mutex::new(None),
            python_version: Mutex::new(None),
        });
        // With several interpreters the logs must say whose pool failed.
        let span = tracing::info_span!("pool", pool = %pool.name);
        tokio::spawn(tracing::Instrument::instrument(
            Arc::clone(&pool).refill(shutdown),
            span,
        ));
        pool
    }

    /// What the pool's workers are started with (their interpreter, preload, sandbox).
    pub fn spec(&self) -> &WorkerSpec {
        &self.spec
    }

    /// A bound worker from the pool, if one is ready; the refill task makes another.
    pub fn take_bound(&self) -> Option<BoundWorker> {
        loop {
            let candidate = self.ready.lock().pop_front();
            self.taken.notify_one();
            let mut bound = candidate?;
            // An idle worker can have been killed from outside; never hand out a corpse.
            if bound.worker.is_alive() {
                return Some(bound);
            }
            tracing::warn!(
                pid = bound.worker.pid(),
                "idle pooled worker had died; discarded"
            );
            metrics::worker_died(metrics::WorkerDeath::Idle);
            bound.kill("it died while idle in the pool");
        }
    }

    /// A fresh worker, not bound to anything, for a place that exists already (the pool's
    /// workers are bound to places of their own): forked from the template, or started.
    pub async fn acquire(&self) -> Result<Worker, WorkerError> {
        // Every caller that found no bound worker ready ends up here (a session or one-shot
        // made in a place of its own, a replacement, a reset): this is the pool's miss.
        metrics::pool_acquire_waited(&self.name);
        let started = self.start_worker().await;
        if let Err(e) = &started {
            *self.last_error.lock() = Some(e.to_string());
        }
        started
    }

    pub fn status(&self) -> PoolStatus {
        PoolStatus {
            ready: self.ready.lock().len(),
            target: self.target,
            last_error: self.last_error.lock().clone(),
            template: self.template.as_ref().map(|t| t.status()),
        }
    }

    /// Whether the last attempt to start a worker failed.
    pub fn failing(&self) -> bool {
        self.last_error.lock().is_some()
    }

    /// The workers' Python version, once a worker has started.
    pub fn python_version(&self) -> Option<String> {
        self.python_version.lock().clone()
    }

    /// A new worker: forked from the template if it runs, else started directly.
    async fn start_worker(&self) -> Result<Worker, WorkerError> {
        let mut started = None;
        if let Some(template) = &self.template {
            match template.fork().await {
                Ok(worker) => started = Some(worker),
                Err(WorkerError::TemplateDown) => {}
                Err(e) => tracing::warn!("fork from the template failed, starting directly: {e}"),
            }
        }
        let worker = match started {
            Some(worker) => worker,
            None => Worker::start(&self.spec).await?,
        };
        let mut version = self.python_version.lock();
        if version.is_none() {
            *version = Some(worker.python_version().to_owned());
        }
        Ok(worker)
    }

    /// A new worker bound to a new place.
    async fn start_bound(&self) -> Result<BoundWorker, String> {
        let place = self
            .places
            .make_off_thread()
            .await
            .map_err(|e| e.to_string())?;
        let worker = self.start_worker().await.map_err(|e| e.to_string())?;
        BoundWorker::bind(worker, place)
            .await
            .map_err(|e| e.to_string())
    }

    async fn refill(self: Arc<Self>, shutdown: CancellationToken) {
        let mut retry_delay = RETRY_DELAY;
        // Dropped (and with it every start still running, worker and place killed) when the
        // task ends.
        let mut starting = tokio::task::JoinSet::new();
        loop {
            while starting.len() < self.parallel
                && self.ready.lock().len() + starting.len() < self.target
            {
                let pool = Arc::clone(&self);
                starting.spawn(async move { pool.start_bound().await });
            }
            tokio::select! {
                Some(done) = starting.join_next() => {
                    let started = done.unwrap_or_else(|e| Err(format!("the start was lost: {e}")));
                    match started {
                        Ok(bound) => {
                            metrics::pool_refilled(&self.name);
                            *self.last_error.lock() = None;
                            retry_delay = RETRY_DELAY;
                            self.ready.lock().push_back(bound);
                        }
                        Err(e) => {
                            tracing::error!(
                                "cannot start a pool worker (next try in {retry_delay:?}): {e}"
                            );
                            *self.last_error.lock() = Some(e);
                            tokio::select! {
                                _ = tokio::time::sleep(retry_delay) => {}
                                _ = shutdown.cancelled() => return,
                            }
                            retry_delay = (retry_delay * 2).min(MAX_RETRY_DELAY);
                        }
                    }
                }
                _ = self.taken.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Ends every idle worker (at shutdown, or when they are stale), saying why, and with
    /// each its place: cgroup, directory, mount.
    pub fn drain(&self, why: &str) {
        let idle = std::mem::take(&mut *self.ready.lock());
        for bound in idle {
            bound.kill(why);
        }
        self.taken.notify_one();
    }

    /// The pool's `pool` label in the metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn restart_template(&self) {
        if let Some(template) = &self.template {
            template.restart();
        }
    }
}

/// A warm pool (with its own template) made at its first use: a node that never needs it
/// (no one-shots, say) runs none of its processes.
pub struct OnDemandPool {
    spec: WorkerSpec,
    template: bool,
    places: Arc<Places>,
    target: usize,
    shutdown: CancellationToken,
    pool: std::sync::OnceLock<Arc<WarmPool>>,
}

impl OnDemandPool {
    pub fn new(
        spec: WorkerSpec,
        template: bool,
        places: Arc<Places>,
        target: usize,
        shutdown: CancellationToken,
    ) -> OnDemandPool {
        OnDemandPool {
            spec,
            template,
            places,
            target,
            shutdown,
            pool: std::sync::OnceLock::new(),
        }
    }

    /// The pool, started now if it was not yet. Must be called inside a tokio runtime.
    pub fn get(&self) -> &Arc<WarmPool> {
        self.pool.get_or_init(|| {
            let template = self
                .template
                .then(|| Template::start(self.spec.clone(), self.shutdown.clone()));
            WarmPool::start(
                metrics::LEAN_POOL.to_owned(),
                self.spec.clone(),
                template,
                Arc::clone(&self.places),
                self.target,
                self.target,
                self.shutdown.clone(),
            )
        })
    }

    /// The pool, if it was started.
    pub fn started(&self) -> Option<&Arc<WarmPool>> {
        self.pool.get()
    }
}
