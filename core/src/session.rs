//! A session: one worker, one namespace, and a FIFO of executions waiting for it.
//!
//! The worker sits behind a `tokio::sync::Mutex`, held for a whole execution: that lock *is*
//! the session's queue, since tokio's mutex hands itself out in the order it was asked for. A
//! counter of waiters bounds the queue.
//!
//! A session outlives its workers. When one is lost (it died, or ignored an interrupt and was
//! killed) a replacement is prepared in the background; until it is ready, executions run cold
//! (see [`crate::cold`]), and the first reply after the loss says `session_reset: true`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::binding::BoundWorker;
use crate::cold::ColdStart;
use crate::error::Error;
use crate::execution::{Category, ExecRequest, Execution, Mode, Status};
use crate::files::{FileLimits, SessionFiles};
use crate::interpreter::{Interpreter, PythonInfo};
use crate::metrics::{self, Limit, WorkerDeath};
use crate::packages::{self, PackageError, Packages, Requirement};
use crate::pool::{OnDemandPool, WarmPool};
use crate::preload_use::PreloadUse;
use crate::process;
use crate::protocol::ErrorInfo;
use crate::sandbox::SessionSandbox;
use crate::session_dir::SessionDir;
use crate::worker::{Cell, CellOutcome, EventSender, Interrupt, Worker, WorkerError};

/// What the session needs to know of the configuration to run a cell.
#[derive(Debug, Clone)]
pub struct Limits {
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub interrupt_grace: Duration,
    pub max_output_bytes: usize,
    /// `execution.max_table_rows`: rows of a table, points of a chart's series.
    pub max_table_rows: usize,
    pub cpu_seconds: Option<u64>,
    pub queue_depth: usize,
    /// How long an execution waits for a warm worker before it runs cold.
    pub acquire_timeout: Duration,
    /// Executions kept in a session's history (the oldest are dropped).
    pub history_max: usize,
    pub files: FileLimits,
}

/// Where sessions get their workers; shared by all sessions.
pub struct Workers {
    /// The default interpreter's pool (`interpreters[0].pool`).
    pub pool: Arc<WarmPool>,
    /// Every configured interpreter, the default first.
    pub interpreters: Vec<Arc<Interpreter>>,
    /// Workers without the preload, for one-shots whose code cannot need it
    /// (`python.lean_oneshots`), started at the first such one-shot.
    pub lean: Option<OnDemandPool>,
    /// Which code may run on a lean worker.
    pub preload_use: PreloadUse,
    pub limits: Limits,
    /// Per-session package installs (`[packages]`).
    pub packages: Arc<Packages>,
}

impl Workers {
    /// The pool a one-shot of `code` takes its worker from: the lean one when there is one
    /// and the code cannot need the preload. While preloaded workers cannot be started, every
    /// one-shot takes the main pool's path (the cold fallback, which imports what it can of
    /// the preload): a degraded node answers one way, whatever the code mentions. Must be
    /// called inside a tokio runtime (it may start the lean pool).
    pub fn pool_for(&self, code: &str) -> &Arc<WarmPool> {
        match &self.lean {
            Some(lean) if !self.pool.failing() && !self.preload_use.needs_preload(code) => {
                lean.get()
            }
            _ => &self.pool,
        }
    }

    /// The lean pool, if it was started.
    pub fn lean_started(&self) -> Option<&Arc<WarmPool>> {
        self.lean.as_ref().and_then(OnDemandPool::started)
    }
}

pub struct Session {
    id: String,
    /// Who may see and use the session (a token's name); `None` when auth is off, and for the
    /// sessions the server's own front ends make.
    owner: Option<String>,
    dir: SessionDir,
    /// Turns for the session's file operations (see [`SessionFiles`]).
    file_turns: Arc<tokio::sync::Semaphore>,
    /// The session's user and cgroup; every worker it uses enters them.
    sandbox: Arc<SessionSandbox>,
    workers: Arc<Workers>,
    /// Where the session's workers come from (one of `workers`' pools).
    pool: Arc<WarmPool>,
    /// The Python the session runs, for its life: its pool is `pool` (or the lean pool of
    /// the default interpreter, for a one-shot), its cold fallback runs it too.
    interpreter: Arc<Interpreter>,
    created_at: SystemTime,
    last_used: Mutex<(SystemTime, Instant)>,
    execution_count: AtomicU64,
    /// Executions waiting for or holding the worker.
    queue: Queue,
    /// The worker's pid, readable without waiting for the lock (0: none).
    worker_pid: AtomicU32,
    slot: tokio::sync::Mutex<Slot>,
    /// Wakes the running execution to interrupt it.
    interrupt: Notify,
    closed: CancellationToken,
    history: Mutex<VecDeque<HistoryEntry>>,
    /// The Python version of the session's workers, once one was seen (for notebooks).
    python_version: Mutex<Option<String>>,
    background: Mutex<BackgroundCpu>,
    /// The disk quota where it is measured rather than enforced by the kernel.
    quota: Arc<QuotaWalks>,
    /// Executions run to their end.
    executions: AtomicU64,
    /// What the session's earlier workers used, read as each was let go: without a cgroup,
    /// a worker's count goes with it.
    retired: Mutex<WorkerUsage>,
    /// The session's own packages (changed only under the slot's lock).
    layer: Mutex<Layer>,
}

/// A session's installed packages: what it asked for, what that installed, and where.
#[derive(Debug, Default, Clone)]
struct Layer {
    requirements: Vec<Requirement>,
    /// `name==version` of each package in the layer.
    pins: Vec<String>,
    /// The layer's directory, relative to the session's (`None`: nothing installed).
    dir: Option<String>,
}

/// What an install into a session did.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Installed {
    /// `name==version` of each package this install added or changed in the session's layer.
    pub installed: Vec<String>,
    /// `name==version` of every package in the session's layer now.
    pub packages: Vec<String>,
    /// Resolved and installed from the shared cache alone, without asking the index.
    pub from_cache: bool,
    pub duration_ms: u64,
    /// The end of the installer's output.
    pub output: String,
}

/// CPU time and peak memory of a session's workers, where no cgroup counts them.
#[derive(Debug, Default, Clone, Copy)]
struct WorkerUsage {
    cpu_seconds: f64,
    memory_peak_bytes: u64,
}

/// Where the session directory is not a filesystem of its own, the quota is measured by a
/// walk of the directory. The walk runs after each execution but off its path: the reply
/// never waits for it. A walk that finds the files over the quota marks the session, and the
/// next execution measures again on its own path (only a session over its quota pays that),
/// so its reply says whether the files are still over.
#[derive(Debug, Default)]
struct QuotaWalks {
    state: Mutex<WalkState>,
    /// The last walk found the files over the quota.
    over: std::sync::atomic::AtomicBool,
    /// What the last walk found, bytes (`u64::MAX`: no walk yet), for the session's info.
    last: MeasuredBytes,
}

/// A byte count that starts as "not measured yet".
#[derive(Debug)]
struct MeasuredBytes(AtomicU64);

impl Default for MeasuredBytes {
    fn default() -> Self {
        MeasuredBytes(AtomicU64::new(u64::MAX))
    }
}

impl MeasuredBytes {
    fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            u64::MAX => None,
            bytes => Some(bytes),
        }
    }

    fn set(&self, bytes: u64) {
        self.0.store(bytes.min(u64::MAX - 1), Ordering::Release);
    }
}

#[derive(Debug, Default)]
struct WalkState {
    running: bool,
    /// An execution ended while a walk ran: what it wrote may have been missed, so the walk
    /// goes round again.
    again: bool,
}

impl QuotaWalks {
    /// Starts a walk in the background, or has the running one go round again.
    fn start(self: &Arc<Self>, files: SessionFiles) {
        {
            let mut state = self.state.lock();
            if state.running {
                state.again = true;
                return;
            }
            state.running = true;
        }
        let walks = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match files.usage().await {
                    Ok(used) => {
                        walks.last.set(used);
                        walks
                            .over
                            .store(used > files.max_total_bytes(), Ordering::Release);
                    }
                    Err(e) => tracing::debug!("cannot measure the session's files: {e}"),
                }
                let mut state = walks.state.lock();
                if !std::mem::take(&mut state.again) {
                    state.running = false;
                    return;
                }
            }
        });
    }
}

/// How far back the background CPU budget looks.
const BACKGROUND_WINDOW: Duration = Duration::from_secs(60);

/// CPU time the session used while none of its cells ran: what its code left running.
#[derive(Default)]
struct BackgroundCpu {
    last: Option<CpuSample>,
    /// What each sampled interval of the last minute added.
    window: VecDeque<(Instant, f64)>,
    total: f64,
}

struct CpuSample {
    /// Where the time was read: the session's cgroup (0), else the worker's pid.
    source: u32,
    used: f64,
    activity: u64,
}

/// One execution as the history keeps it: the code and the reply.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    pub code: String,
    pub started_at: String,
    #[serde(flatten)]
    pub execution: Execution,
}

/// The session's worker and what is known about its state.
#[derive(Default)]
struct Slot {
    worker: Option<Worker>,
    /// A warm worker being started and attached for this session.
    replacement: Option<AbortOnDropHandle<Result<Worker, WorkerError>>>,
    /// The namespace was lost and no reply has said so yet.
    unreported_reset: bool,
    /// Why, when the server itself reset the worker.
    reset_reason: Option<String>,
}

/// What `GET /v1/sessions/{id}` shows.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// CPU time the session's processes used while none of its cells ran, seconds, since the
    /// session began (sampled about every second).
    pub background_cpu_seconds: f64,
    /// CPU time all of the session's processes used since it began, seconds: its cgroup's
    /// count, else its workers' (each one's own and its waited-for children's, the
    /// replaced ones' included). `null` where neither can be read.
    pub cpu_seconds: Option<f64>,
    /// The most memory the session's processes held at once, bytes: its cgroup's peak
    /// (`memory.peak`, v1 `memory.max_usage_in_bytes`), else the largest of its workers' own
    /// peaks (`VmHWM`). `null` where neither can be read.
    pub memory_peak_bytes: Option<u64>,
    /// Executions the session has run to their end (a reply), failed ones included.
    pub executions: u64,
    /// Bytes the session's files take: its own filesystem's usage, or where the quota is
    /// measured by a walk, what the last walk found (after each execution; `null` before
    /// the first).
    pub files_bytes: Option<u64>,
    /// The interpreter the session runs (`[[python.interpreters]]`).
    pub python: PythonInfo,
    /// `name==version` of each package installed into the session's own layer (not the
    /// base environment's).
    pub packages: Vec<String>,
}

impl SessionInfo {
    /// Fills in the worker's PSS. Reading `smaps_rollup` of a preloaded worker takes a few
    /// milliseconds of blocking I/O, so it is done only where memory is asked for, off the
    /// async threads.
    pub fn with_memory(mut self) -> SessionInfo {
        self.memory_pss_bytes = self.pid.and_then(pss_bytes);
        self
    }
}

/// The executions waiting for or holding a session's worker: a count bounded by the queue
/// depth (the order itself is the slot mutex's, which tokio hands out first come, first
/// served), and how often it changed.
#[derive(Debug, Default)]
struct Queue {
    pending: AtomicUsize,
    /// Changes whenever an execution enters or leaves: an interval over which it did not
    /// change, with nothing pending, had no cell running (the background CPU sweep's test).
    activity: AtomicU64,
}

impl Queue {
    /// A place in the queue: one execution runs and `depth` wait, so `depth + 1` may hold
    /// tickets; one more is refused.
    fn enter(&self, depth: usize) -> Result<QueueTicket<'_>, Error> {
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        self.activity.fetch_add(1, Ordering::AcqRel);
        let ticket = QueueTicket(self);
        if before > depth {
            return Err(Error::QueueFull { depth });
        }
        Ok(ticket)
    }

    fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    fn activity(&self) -> u64 {
        self.activity.load(Ordering::Acquire)
    }
}

/// Leaves the queue however the execution ends (including a dropped request).
struct QueueTicket<'a>(&'a Queue);

impl Drop for QueueTicket<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
        self.0.activity.fetch_add(1, Ordering::AcqRel);
    }
}

impl Session {
    /// A session of `interpreter` whose worker starts being prepared at once; see
    /// [`Session::wait_ready`].
    pub fn new(
        id: String,
        owner: Option<String>,
        dir: SessionDir,
        sandbox: SessionSandbox,
        workers: Arc<Workers>,
        interpreter: Arc<Interpreter>,
    ) -> Session {
        let pool = Arc::clone(&interpreter.pool);
        Session::with_pool(id, owner, dir, sandbox, workers, interpreter, pool)
    }

    /// [`Session::new`], with workers from `pool` (of `interpreter`) rather than its
    /// sessions' pool.
    pub fn with_pool(
        id: String,
        owner: Option<String>,
        dir: SessionDir,
        sandbox: SessionSandbox,
        workers: Arc<Workers>,
        interpreter: Arc<Interpreter>,
        pool: Arc<WarmPool>,
    ) -> Session {
        let session = Session::with_slot(
            id,
            owner,
            dir,
            sandbox,
            workers,
            (interpreter, pool),
            Slot::default(),
        );
        if let Ok(mut slot) = session.slot.try_lock() {
            session.prepare_replacement(&mut slot);
        }
        session
    }

    /// A session on a worker bound ahead of need (see [`crate::binding`]): its place is the
    /// session's, and it is ready at once. `pool` gives its later workers (a replacement).
    pub fn bound(
        id: String,
        owner: Option<String>,
        bound: BoundWorker,
        workers: Arc<Workers>,
        interpreter: Arc<Interpreter>,
        pool: Arc<WarmPool>,
    ) -> Session {
        let BoundWorker { worker, place } = bound;
        let pid = worker.pid();
        let version = worker.python_version().to_owned();
        let session = Session::with_slot(
            id,
            owner,
            place.dir,
            place.sandbox,
            workers,
            (interpreter, pool),
            Slot {
                worker: Some(worker),
                ..Slot::default()
            },
        );
        session.worker_pid.store(pid, Ordering::Release);
        *session.python_version.lock() = Some(version);
        session
    }

    fn with_slot(
        id: String,
        owner: Option<String>,
        dir: SessionDir,
        sandbox: SessionSandbox,
        workers: Arc<Workers>,
        (interpreter, pool): (Arc<Interpreter>, Arc<WarmPool>),
        slot: Slot,
    ) -> Session {
        let now = (SystemTime::now(), Instant::now());
        Session {
            id,
            owner,
            dir,
            file_turns: SessionFiles::turns(),
            sandbox: Arc::new(sandbox),
            workers,
            pool,
            interpreter,
            created_at: now.0,
            last_used: Mutex::new(now),
            execution_count: AtomicU64::new(0),
            queue: Queue::default(),
            worker_pid: AtomicU32::new(0),
            slot: tokio::sync::Mutex::new(slot),
            interrupt: Notify::new(),
            closed: CancellationToken::new(),
            history: Mutex::new(VecDeque::new()),
            python_version: Mutex::new(None),
            background: Mutex::default(),
            quota: Arc::default(),
            executions: AtomicU64::new(0),
            retired: Mutex::default(),
            layer: Mutex::default(),
        }
    }

    /// Waits (up to the acquire timeout) for the session's first worker. A session is usable
    /// without one: its executions then run cold.
    pub async fn wait_ready(&self) {
        let mut slot = self.slot.lock().await;
        self.take_replacement(&mut slot).await;
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    pub fn is_idle(&self) -> bool {
        self.queue.pending() == 0
    }

    /// When the session was last created or used.
    pub fn last_used(&self) -> Instant {
        self.last_used.lock().1
    }

    /// What the session is, without its worker's PSS (see [`SessionInfo::with_memory`]).
    /// The usage counters are small reads of cgroup or `/proc` files and one `statvfs`.
    pub fn info(&self) -> SessionInfo {
        let pending = self.queue.pending();
        let pid = match self.worker_pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        };
        let (cgroup_cpu, cgroup_peak) =
            (self.sandbox.cpu_seconds(), self.sandbox.memory_peak_bytes());
        // Without a cgroup (or its memory controller), the workers' own counts.
        let worker = match (cgroup_cpu, cgroup_peak) {
            (Some(_), Some(_)) => None,
            _ => pid.map(process::usage),
        };
        let retired = *self.retired.lock();
        let cpu_seconds = cgroup_cpu.or_else(|| {
            let current = worker.and_then(|w| w.cpu_seconds);
            (current.is_some() || retired.cpu_seconds > 0.0)
                .then(|| retired.cpu_seconds + current.unwrap_or(0.0))
        });
        let memory_peak_bytes = cgroup_peak.or_else(|| {
            let current = worker.and_then(|w| w.memory_peak_bytes);
            (current.is_some() || retired.memory_peak_bytes > 0)
                .then(|| retired.memory_peak_bytes.max(current.unwrap_or(0)))
        });
        let files_bytes = if self.dir.own_fs() {
            self.files().filesystem_usage()
        } else {
            self.quota.last.get()
        };
        SessionInfo {
            session_id: self.id.clone(),
            state: if pending > 0 { "busy" } else { "idle" },
            execution_count: self.execution_count.load(Ordering::Acquire),
            pending,
            created_at: rfc3339(self.created_at),
            last_used_at: rfc3339(self.last_used.lock().0),
            pid,
            memory_pss_bytes: None,
            background_cpu_seconds: (self.background.lock().total * 1000.0).round() / 1000.0,
            cpu_seconds: cpu_seconds.map(|s| (s * 1000.0).round() / 1000.0),
            memory_peak_bytes,
            executions: self.executions.load(Ordering::Acquire),
            files_bytes,
            python: self.interpreter.info(),
            packages: self.layer.lock().pins.clone(),
        }
    }

    /// Keeps what the slot's worker used before it is let go, where no cgroup keeps
    /// counting it.
    fn retire_worker(&self, slot: &Slot) {
        if self.sandbox.cpu_seconds().is_some() && self.sandbox.memory_peak_bytes().is_some() {
            return;
        }
        let Some(worker) = slot.worker.as_ref() else {
            return;
        };
        let used = worker.usage();
        let mut retired = self.retired.lock();
        retired.cpu_seconds += used.cpu_seconds.unwrap_or(0.0);
        retired.memory_peak_bytes = retired
            .memory_peak_bytes
            .max(used.memory_peak_bytes.unwrap_or(0));
    }

    /// Samples the CPU time the session has used; what an interval without any execution
    /// added counts as background use. Returns the background use of the last minute, seconds.
    /// Reads a cgroup file or `/proc`: call it off the async threads.
    pub fn sample_background_cpu(&self) -> f64 {
        // Read before the time used, so that an execution starting meanwhile voids the interval.
        let activity = self.queue.activity();
        let idle = self.is_idle();
        let pid = self.worker_pid.load(Ordering::Acquire);
        let sample = match self.sandbox.cpu_seconds() {
            Some(used) => Some((0, used)),
            // Without a cgroup, the worker itself; a new worker starts a new count.
            None if pid != 0 => process::cpu_seconds(pid).map(|used| (pid, used)),
            None => None,
        }
        .map(|(source, used)| CpuSample {
            source,
            used,
            activity,
        });
        let now = Instant::now();
        let mut background = self.background.lock();
        if let (Some(last), Some(sample)) = (&background.last, &sample)
            && idle
            && last.source == sample.source
            && last.activity == sample.activity
            && sample.used > last.used
        {
            let added = sample.used - last.used;
            background.total += added;
            background.window.push_back((now, added));
        }
        background.last = sample;
        while background
            .window
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > BACKGROUND_WINDOW)
        {
            background.window.pop_front();
        }
        background.window.iter().map(|(_, added)| added).sum()
    }

    /// Resets the worker of a session whose code used `used` seconds of CPU in the last
    /// minute while idle, over `budget`: the worker and every process of the session are
    /// killed, a fresh worker is prepared, and the next reply says why. Returns false when an
    /// execution holds the worker (the next sweep looks again).
    pub fn reset_for_background_cpu(&self, used: f64, budget: f64) -> bool {
        let Ok(mut slot) = self.slot.try_lock() else {
            return false;
        };
        let why = format!(
            "the session's code used {used:.1} s of CPU time in the last minute while no cell \
             was running, over its budget of {budget} s (limits.background_cpu_seconds_per_minute); \
             its worker and everything it started were ended"
        );
        self.retire_worker(&slot);
        kill_worker(&mut slot, &why);
        // The worker's own group is gone with it; this ends what left the group too.
        self.sandbox.kill_all();
        {
            let mut background = self.background.lock();
            background.window.clear();
            background.last = None;
        }
        slot.reset_reason = Some(why);
        self.lose_worker(&mut slot, "over its background CPU budget");
        true
    }

    /// Runs one execution after those already queued. Its log lines carry the session's id
    /// and the execution's number in it (`execution`, its `execution_count`).
    #[tracing::instrument(
        name = "execution",
        skip_all,
        fields(session = %self.id, execution = tracing::field::Empty)
    )]
    pub async fn execute(
        &self,
        request: &ExecRequest,
        events: Option<&EventSender>,
    ) -> Result<Execution, Error> {
        let arrived = Instant::now();
        let limits = &self.workers.limits;
        let _ticket = self.enter_queue(limits.queue_depth)?;
        let mut slot = tokio::select! {
            slot = self.slot.lock() => slot,
            _ = self.closed.cancelled() => return Err(Error::SessionClosed),
        };
        if let Some(worker) = slot.worker.as_mut()
            && !worker.is_alive()
        {
            tracing::warn!(pid = worker.pid(), "session worker died while idle");
            metrics::worker_died(WorkerDeath::Idle);
            self.lose_worker(&mut slot, "it died while idle");
        }
        // An interrupt from here on is this cell's (the slot is ours): one that comes while
        // the cell waits for a worker ends it unstarted. Registered now, because
        // `notify_waiters` reaches only those already waiting.
        let interrupted = self.interrupt.notified();
        tokio::pin!(interrupted);
        interrupted.as_mut().enable();
        let mut stopped = false;
        if slot.worker.is_none() {
            stopped = tokio::select! {
                biased;
                _ = &mut interrupted => true,
                _ = self.take_replacement(&mut slot) => false,
            };
        }
        // A loss of the namespace not yet reported is reported by this reply.
        let reset_before = std::mem::take(&mut slot.unreported_reset);
        let reset_reason = slot.reset_reason.take();
        let count = self.execution_count.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::Span::current().record("execution", count);
        let timeout = request
            .timeout
            .unwrap_or(limits.default_timeout)
            .min(limits.max_timeout);
        let started = Instant::now();
        let started_at = SystemTime::now();
        let unstarted = |slot: &mut Slot, execution: Execution| {
            // Nothing of the cell ran: the reply is owed a loss it did not report.
            slot.unreported_reset = reset_before;
            slot.reset_reason = reset_reason.clone();
            self.record(&request.code, started_at, &execution);
            self.executions.fetch_add(1, Ordering::AcqRel);
            execution
        };
        if stopped {
            return Ok(unstarted(
                &mut slot,
                interrupted_unstarted(count, started.elapsed()),
            ));
        }
        // `%pip install` lines install before the rest of the cell runs, with the cell's
        // turn; their output opens the cell's stdout.
        let pip = match request.pip_magic {
            true => packages::pip_lines(&request.code),
            false => Ok(None),
        };
        let installed = match pip {
            Ok(None) => Ok(None),
            Ok(Some((wanted, rest))) => self
                .install_in_cell(&wanted, timeout)
                .await
                .map(|installed| Some((rest, pip_report(&installed)))),
            Err(refused) => Err(PackageError::Failed { message: refused }),
        };
        let (code, pip_output) = match installed {
            Ok(Some((rest, report))) => (Some(rest), Some(report)),
            Ok(None) => (None, None),
            Err(e) => {
                // Nothing of the cell ran: it is over, with the install's error.
                let execution = install_failed(&e, count, started.elapsed());
                return Ok(unstarted(&mut slot, execution));
            }
        };
        // Without a worker, the cold start's turn (after the install: a permit is for
        // starting interpreters, not for waiting on an index).
        let cold_start = match slot.worker {
            Some(_) => None,
            None => {
                let waited = tokio::select! {
                    biased;
                    _ = self.closed.cancelled() => return Err(Error::SessionClosed),
                    _ = &mut interrupted => None,
                    start = self.cold_start_or_replacement(&mut slot) => Some(start),
                };
                match waited {
                    Some(start) => start,
                    None => {
                        let execution = interrupted_unstarted(count, started.elapsed());
                        return Ok(unstarted(&mut slot, execution));
                    }
                }
            }
        };
        if let (Some(text), Some(events)) = (&pip_output, events) {
            let _ = events.send(crate::worker::Event::Stream {
                name: crate::protocol::StreamName::Stdout,
                text: text.clone(),
            });
        }
        let layer = self.layer.lock().dir.clone();
        let cell = Cell {
            code: code.as_deref().unwrap_or(&request.code),
            stdin: request.stdin.as_deref(),
            count,
            max_output_bytes: limits.max_output_bytes,
            timeout,
            interrupt_grace: limits.interrupt_grace,
            cpu_seconds: limits.cpu_seconds,
            filename: request.filename.as_deref(),
            data: request.data,
            max_table_rows: limits.max_table_rows,
            packages: layer.as_deref(),
        };
        let ran = {
            let run = async {
                match (slot.worker.as_mut(), cold_start) {
                    (Some(worker), _) => (
                        Mode::Warm,
                        worker.execute(&cell, events, &self.interrupt).await,
                    ),
                    (None, start) => (
                        Mode::Cold,
                        self.interpreter
                            .cold
                            .run(
                                // Always given with no worker; if not, waited for here.
                                match start {
                                    Some(start) => start,
                                    None => self.interpreter.cold.permit().await,
                                },
                                self.dir.path(),
                                &self.sandbox,
                                &cell,
                                events,
                                &self.interrupt,
                            )
                            .await,
                    ),
                }
            };
            tokio::select! {
                ran = run => Some(ran),
                _ = self.closed.cancelled() => None,
            }
        };
        let Some((mode, outcome)) = ran else {
            end_slot(&mut slot, "its session ended during an execution");
            return Err(Error::SessionClosed);
        };
        *self.last_used.lock() = (SystemTime::now(), Instant::now());
        let elapsed = started.elapsed();
        let mut lost = None;
        let mut execution = match outcome {
            Ok(CellOutcome { done, interrupted }) => {
                Execution::from_done(done, interrupted, count, elapsed)
            }
            // Not even a cold interpreter could start: nothing ran, and that is the service's
            // failure, not the code's.
            Err(e) if mode == Mode::Cold && e.is_start_failure() => {
                slot.unreported_reset = reset_before;
                slot.reset_reason = reset_reason;
                // Nor does it count: the next cell that runs takes this number (executions
                // are one at a time, the slot is held: no other took one since).
                self.execution_count.fetch_sub(1, Ordering::AcqRel);
                return Err(Error::WorkerUnavailable(e));
            }
            Err(e) => {
                // The worker is lost: drop (and so kill) it. The code is never run again
                // behind the caller's back; the reply says what happened.
                tracing::warn!("worker lost during execution: {e}");
                lost = WorkerDeath::of(&e);
                if mode == Mode::Warm {
                    self.lose_worker(&mut slot, &format!("lost during an execution: {e}"));
                }
                let (status, category, error) = lost_worker_error(&e, timeout);
                Execution::without_reply(status, category, error, count, elapsed)
            }
        };
        if let Some(text) = pip_output {
            execution.stdout.insert_str(0, &text);
        }
        let oom_killed = self.check_limits(&mut execution).await;
        if let Some(cause) = lost {
            metrics::worker_died(if oom_killed { WorkerDeath::Oom } else { cause });
        }
        if mode == Mode::Cold {
            metrics::cold_fallback();
        }
        metrics::execution_timed(started.duration_since(arrived), elapsed, arrived.elapsed());
        execution.mode = mode;
        execution.session_reset |= reset_before;
        if reset_before {
            execution.reset_reason = reset_reason;
        }
        // Whatever this reply says covers losses up to now; only a cold cell's definitions,
        // which did not persist, are news for the next reply.
        slot.unreported_reset = mode == Mode::Cold;
        self.record(&request.code, started_at, &execution);
        self.executions.fetch_add(1, Ordering::AcqRel);
        log_end(&execution);
        Ok(execution)
    }

    /// What the session's limits refused during the execution goes to the log, with the
    /// session id; a worker the OOM killer ended is said to have been, and files past the
    /// disk quota make the reply an error (the next executions still run, so that code can
    /// clean up; uploads are refused until the session is under its quota again). Where the
    /// quota is measured by a walk, the walk follows the reply (see [`QuotaWalks`]).
    /// Returns whether the worker the execution lost was ended by the OOM killer.
    async fn check_limits(&self, execution: &mut Execution) -> bool {
        let refused = self.sandbox.refusals();
        for refusal in &refused.described {
            tracing::warn!("limit reached: {refusal}");
        }
        metrics::limit_refused(Limit::Pids, refused.forks_refused);
        metrics::limit_refused(Limit::Memory, refused.oom_kills);
        let mut oom_killed = false;
        if refused.oom_kills > 0
            && let Some(error) = execution.error.as_mut()
            && error.ename == "WorkerDied"
        {
            oom_killed = true;
            error.ename = "MemoryError".into();
            error.evalue = format!(
                "the session's processes reached its memory limit ({} MiB) and the kernel killed the worker",
                self.sandbox.memory_mb()
            );
            execution.category = Some(Category::Memory);
        }
        match execution.error.as_ref().map(|e| e.ename.as_str()) {
            // An allocation RLIMIT_AS refused (the OOM killer's were counted above).
            Some("MemoryError") if !oom_killed => metrics::limit_refused(Limit::Memory, 1),
            Some("CPUTimeLimitExceeded") => metrics::limit_refused(Limit::Cpu, 1),
            _ => {}
        }
        if execution.truncated {
            metrics::limit_refused(Limit::OutputTruncated, 1);
        }
        let max = self.workers.limits.files.max_total_bytes;
        if self.dir.own_fs() {
            // The directory is a filesystem of the quota's size: the kernel refused the write
            // that would have passed it, and the cell saw ENOSPC. Say why; there is nothing
            // to measure, so executions pay nothing for the quota.
            if let Some(error) = execution.error.as_mut()
                && error.ename == "OSError"
                && error.evalue.starts_with("[Errno 28]")
            {
                tracing::warn!(max, "limit reached: disk quota");
                metrics::limit_refused(Limit::DiskQuota, 1);
                error.ename = "DiskQuotaExceeded".into();
                error.evalue = format!(
                    "the session's files reached its quota of {max} bytes, so a write failed (No space left on device); delete some to make room"
                );
                execution.category = Some(Category::DiskQuota);
            }
            return oom_killed;
        }
        // Elsewhere the quota is measured, after the fact, by a walk that does not delay
        // the reply; a session the last walk found over it is measured here and now.
        if !self.quota.over.load(Ordering::Acquire) {
            self.quota.start(self.files());
            return oom_killed;
        }
        match self.files().usage().await {
            Ok(used) if used > max => {
                tracing::warn!(used, max, "limit reached: disk quota");
                metrics::limit_refused(Limit::DiskQuota, 1);
                if execution.error.is_none() {
                    execution.status = Status::Error;
                    execution.category = Some(Category::DiskQuota);
                    execution.error = Some(ErrorInfo {
                        ename: "DiskQuotaExceeded".into(),
                        evalue: format!(
                            "the session's files take {used} bytes, over its quota of {max}; delete some to get under it"
                        ),
                        traceback: Vec::new(),
                    });
                }
            }
            Ok(_) => self.quota.over.store(false, Ordering::Release),
            Err(e) => tracing::warn!("cannot measure the session's files: {e}"),
        }
        oom_killed
    }

    fn record(&self, code: &str, started_at: SystemTime, execution: &Execution) {
        let max = self.workers.limits.history_max;
        if max == 0 {
            return;
        }
        let mut history = self.history.lock();
        if history.len() == max {
            history.pop_front();
        }
        history.push_back(HistoryEntry {
            code: code.to_owned(),
            started_at: rfc3339(started_at),
            execution: execution.clone(),
        });
    }

    /// The executions kept, oldest first.
    pub fn history(&self) -> Vec<HistoryEntry> {
        self.history.lock().iter().cloned().collect()
    }

    pub fn python_version(&self) -> Option<String> {
        self.python_version.lock().clone()
    }

    /// The session's interpreter: its executable and version (`3.11.7`), known from the
    /// start, before any worker ran. What runs for the session outside its workers (a package
    /// install) must run this one, and resolve against its base environment.
    pub fn python_executable(&self) -> (&std::path::Path, &str) {
        (&self.interpreter.executable, &self.interpreter.version)
    }

    /// The session's interpreter.
    pub fn interpreter(&self) -> &Arc<Interpreter> {
        &self.interpreter
    }

    /// The session's working directory, through the files API's checks.
    pub fn files(&self) -> SessionFiles {
        SessionFiles::new(
            self.dir.path(),
            self.workers.limits.files,
            self.sandbox.credentials(),
            self.dir.own_fs(),
            Arc::clone(&self.file_turns),
        )
    }

    /// A fresh namespace on a fresh worker, after the executions already queued; the id, the
    /// files and the history stay.
    pub async fn reset(&self) -> Result<(), Error> {
        let _ticket = self.enter_queue(self.workers.limits.queue_depth)?;
        let mut slot = tokio::select! {
            slot = self.slot.lock() => slot,
            _ = self.closed.cancelled() => return Err(Error::SessionClosed),
        };
        self.retire_worker(&slot);
        kill_worker(&mut slot, "its session was reset");
        self.worker_pid.store(0, Ordering::Release);
        self.take_replacement(&mut slot).await;
        // The caller asked for it: no reply needs to announce it.
        slot.unreported_reset = false;
        slot.reset_reason = None;
        Ok(())
    }

    /// Interrupts the running execution, if any (SIGINT; killed if it does not stop).
    /// Returns whether one was running.
    pub fn interrupt(&self) -> bool {
        let running = !self.is_idle();
        self.interrupt.notify_waiters();
        running
    }

    /// Ends the session, saying why: a running execution is abandoned (it kills the worker
    /// as it stops), an idle worker is killed here, and no replacement is prepared.
    pub fn end(&self, why: &str) {
        self.closed.cancel();
        if let Ok(mut slot) = self.slot.try_lock() {
            end_slot(&mut slot, &format!("its session {why}"));
        }
        self.worker_pid.store(0, Ordering::Release);
    }

    /// Kills the worker, saying why, and starts preparing another.
    fn lose_worker(&self, slot: &mut Slot, why: &str) {
        self.retire_worker(slot);
        kill_worker(slot, why);
        slot.unreported_reset = true;
        self.worker_pid.store(0, Ordering::Release);
        self.prepare_replacement(slot);
    }

    /// Starts getting a warm worker for this session in the background, unless already doing so.
    fn prepare_replacement(&self, slot: &mut Slot) {
        if slot.replacement.is_some() || self.closed.is_cancelled() {
            return;
        }
        let pool = Arc::clone(&self.pool);
        let dir = self.dir.path().to_owned();
        let sandbox = Arc::clone(&self.sandbox);
        slot.replacement = Some(AbortOnDropHandle::new(tokio::spawn(async move {
            let mut worker = pool.acquire().await?;
            worker.attach(&dir, &sandbox).await?;
            Ok(worker)
        })));
    }

    /// Installs the replacement worker if it is ready within the acquire timeout. Otherwise the
    /// slot stays empty (the caller runs cold) and the replacement keeps going, or, if it
    /// failed, a new one is started for next time.
    async fn take_replacement(&self, slot: &mut Slot) {
        self.prepare_replacement(slot);
        let Some(handle) = slot.replacement.as_mut() else {
            return;
        };
        let acquire_timeout = self.workers.limits.acquire_timeout;
        let finished = match tokio::time::timeout(acquire_timeout, handle).await {
            Err(_) => return,
            Ok(finished) => finished,
        };
        slot.replacement = None;
        self.install_replacement(slot, finished);
    }

    /// Past the acquire timeout: a cold start permit, or (None) the replacement worker
    /// installed, whichever comes first. Cold starts are bounded server-wide (see
    /// [`crate::cold`]); a replacement that fails leaves only the permit to wait for.
    async fn cold_start_or_replacement(&self, slot: &mut Slot) -> Option<ColdStart> {
        let cold = &self.interpreter.cold;
        let Some(handle) = slot.replacement.as_mut() else {
            return Some(cold.permit().await);
        };
        let finished = tokio::select! {
            // A worker that is ready is taken over a permit that is free: no start is paid for
            // in vain.
            biased;
            finished = handle => finished,
            start = cold.permit() => return Some(start),
        };
        slot.replacement = None;
        self.install_replacement(slot, finished);
        match slot.worker {
            Some(_) => None,
            None => Some(cold.permit().await),
        }
    }

    fn install_replacement(
        &self,
        slot: &mut Slot,
        finished: Result<Result<Worker, WorkerError>, tokio::task::JoinError>,
    ) {
        match finished {
            Ok(Ok(worker)) => {
                self.worker_pid.store(worker.pid(), Ordering::Release);
                *self.python_version.lock() = Some(worker.python_version().to_owned());
                slot.worker = Some(worker);
            }
            Ok(Err(e)) => tracing::warn!("no warm worker for the session: {e}"),
            Err(e) => tracing::warn!("worker preparation task failed: {e}"),
        }
    }

    fn enter_queue(&self, depth: usize) -> Result<QueueTicket<'_>, Error> {
        self.queue.enter(depth)
    }

    /// Installs `requirements` into the session's own layer, after the executions already
    /// queued (an install takes the session's turn as a cell does: no cell runs while its
    /// packages change, and two installs never overlap).
    pub async fn install_packages(&self, requirements: &[String]) -> Result<Installed, Error> {
        // Refused before the turn is waited for, and before any network.
        self.workers.packages.check(requirements)?;
        let _ticket = self.enter_queue(self.workers.limits.queue_depth)?;
        let _slot = tokio::select! {
            slot = self.slot.lock() => slot,
            _ = self.closed.cancelled() => return Err(Error::SessionClosed),
        };
        let installed = tokio::select! {
            installed = self.install_locked(requirements) => installed?,
            _ = self.closed.cancelled() => return Err(Error::SessionClosed),
        };
        *self.last_used.lock() = (SystemTime::now(), Instant::now());
        Ok(installed)
    }

    /// A cell's `%pip install`: within the cell's deadline (and `packages.timeout_ms`), and
    /// stopped by an interrupt as the cell would be.
    async fn install_in_cell(
        &self,
        wanted: &[String],
        timeout: Duration,
    ) -> Result<Installed, PackageError> {
        tokio::select! {
            installed = self.install_locked(wanted) => installed,
            _ = tokio::time::sleep(timeout) => Err(PackageError::Failed {
                message: format!(
                    "the cell reached its deadline ({} ms) while installing",
                    timeout.as_millis()
                ),
            }),
            _ = self.interrupt.notified() => Err(PackageError::Failed {
                message: "interrupted while installing".into(),
            }),
        }
    }

    /// The install itself; the caller holds the session's turn. The new layer is made beside
    /// the old one and only then becomes the session's: a failed install leaves the layer as
    /// it was.
    async fn install_locked(&self, texts: &[String]) -> Result<Installed, PackageError> {
        let started = Instant::now();
        let packages = &self.workers.packages;
        let wanted = packages.check(texts)?;
        if wanted.is_empty() {
            // Nothing asked: nothing to resolve, and the index is not asked either.
            return Ok(Installed {
                installed: Vec::new(),
                packages: self.layer.lock().pins.clone(),
                from_cache: true,
                duration_ms: 0,
                output: String::new(),
            });
        }
        let mut all = self.layer.lock().requirements.clone();
        // Asking again for a package replaces what was asked for it before.
        for requirement in wanted {
            all.retain(|earlier| earlier.name != requirement.name);
            all.push(requirement);
        }
        if all.len() > packages::MAX_REQUIREMENTS {
            return Err(PackageError::TooMany {
                max: packages::MAX_REQUIREMENTS,
            });
        }
        let files = self.files();
        // Layers an earlier install made but never handed over (its caller went away while
        // it copied) take the quota for nothing: they go first.
        let live = self.layer.lock().dir.clone();
        let live_name = live.as_deref().and_then(|d| d.rsplit('/').next());
        if let Err(e) = files
            .remove_entries(packages::LAYER_PARENT, LAYER_PREFIX, live_name)
            .await
        {
            tracing::warn!("cannot remove the session's abandoned package layers: {e}");
        }
        let used = files.usage().await.map_err(|e| {
            PackageError::Internal(format!("cannot measure the session's files: {e}"))
        })?;
        let free = files.max_total_bytes().saturating_sub(used);
        let staged = packages
            .installer
            .stage(self.python_executable().0, &all, free, &packages.policy)
            .await?;
        let dir = format!(
            "{}/{LAYER_PREFIX}{:016x}",
            packages::LAYER_PARENT,
            rand::random::<u64>()
        );
        // A caller that goes away stops the copy, which then removes what it made; the
        // staging directory stays until the copy is over.
        let stopped = StopOnDrop::default();
        let crate::packages::Staged {
            dir: staged_dir,
            pins,
            bytes,
            from_cache,
            output,
        } = staged;
        if let Err(e) = files
            .import_dir(staged_dir, &dir, bytes, Arc::clone(&stopped.0))
            .await
        {
            // Nothing half-installed stays: the copy removed its part, the old layer stands.
            return Err(match e {
                crate::files::FileError::QuotaExceeded { .. } => {
                    PackageError::OverQuota { bytes, free }
                }
                crate::files::FileError::Io(io) if !session_made(&io) => PackageError::Io {
                    context: "cannot copy the packages into the session".into(),
                    source: io,
                },
                // What the session's code did to its directory (`.replpool` made a link, a
                // file, closed to its user): the install fails, and says where.
                refused => PackageError::Failed {
                    message: format!(
                        "cannot put the packages into the session's `{}` directory: {refused}",
                        packages::LAYER_PARENT
                    ),
                },
            });
        }
        let (previous, before) = {
            let mut layer = self.layer.lock();
            layer.requirements = all;
            let before = std::mem::replace(&mut layer.pins, pins.clone());
            (layer.dir.replace(dir), before)
        };
        // The worker moves to the new layer at its next cell (the exec request names it);
        // none runs now, as this holds the session's turn.
        if let Some(previous) = previous
            && let Err(e) = files.delete(&previous).await
        {
            tracing::warn!("cannot remove the session's previous package layer: {e}");
        }
        let installed: Vec<String> = pins
            .iter()
            .filter(|pin| !before.contains(pin))
            .cloned()
            .collect();
        tracing::info!(
            session = %self.id,
            installed = ?installed,
            from_cache = from_cache,
            bytes = bytes,
            "packages installed"
        );
        Ok(Installed {
            installed,
            packages: pins,
            from_cache,
            duration_ms: started.elapsed().as_millis() as u64,
            output,
        })
    }
}

/// What each layer directory's name starts with, in [`packages::LAYER_PARENT`].
const LAYER_PREFIX: &str = "packages-";

/// Set when dropped: tells a blocking copy its caller went away.
#[derive(Default)]
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Whether a failed copy into the session's directory is what its own code made of it (a
/// link, a file or a FIFO where a directory goes, a directory closed to its user), not the
/// server's failure.
fn session_made(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    [
        Errno::EACCES,
        Errno::EPERM,
        Errno::ENOTDIR,
        Errno::ELOOP,
        Errno::EEXIST,
    ]
    .iter()
    .any(|errno| e.raw_os_error() == Some(*errno as i32))
}

/// What a `%pip install` line prints into its cell.
fn pip_report(installed: &Installed) -> String {
    let mut text = installed.output.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if installed.installed.is_empty() {
        text.push_str("Nothing new to install (the requirements are satisfied).\n");
    } else {
        text.push_str(&format!(
            "Installed into this session: {}\n",
            installed.installed.join(" ")
        ));
    }
    text
}

/// A cell whose `%pip install` failed: an error of category `install`, nothing of it run.
/// A cell interrupted while it waited for a worker (the acquire timeout, a cold start's
/// turn): nothing of it ran.
fn interrupted_unstarted(count: u64, elapsed: Duration) -> Execution {
    let mut execution = Execution::without_reply(
        Status::Error,
        Category::Interrupted,
        ErrorInfo {
            ename: "KeyboardInterrupt".into(),
            evalue: "interrupted before it started (it was waiting for a worker)".into(),
            traceback: Vec::new(),
        },
        count,
        elapsed,
    );
    execution.session_reset = false;
    execution
}

fn install_failed(e: &PackageError, count: u64, elapsed: Duration) -> Execution {
    let mut execution = Execution::without_reply(
        Status::Error,
        Category::Install,
        ErrorInfo {
            ename: "InstallError".into(),
            evalue: e.to_string(),
            traceback: Vec::new(),
        },
        count,
        elapsed,
    );
    execution.session_reset = false;
    execution
}

/// One line per execution: at `info` for one a limit or a failure ended (what an operator
/// counts), at `debug` for the rest.
fn log_end(execution: &Execution) {
    let ename = execution.error.as_ref().map(|e| e.ename.as_str());
    match execution.category {
        // The code's own mistakes (and a client's interrupt) are the client's business.
        Some(Category::Syntax | Category::Runtime | Category::Interrupted) | None => {
            tracing::debug!(
                status = ?execution.status,
                category = execution.category.map(Category::as_str),
                ename,
                mode = ?execution.mode,
                duration_ms = execution.duration_ms,
                cpu_ms = execution.cpu_ms,
                "execution done"
            )
        }
        Some(category) => tracing::info!(
            status = ?execution.status,
            %category,
            ename,
            mode = ?execution.mode,
            duration_ms = execution.duration_ms,
            cpu_ms = execution.cpu_ms,
            "execution ended by a limit or a failure"
        ),
    }
}

/// Kills the slot's worker, if it has one.
fn kill_worker(slot: &mut Slot, why: &str) {
    if let Some(worker) = slot.worker.take() {
        worker.kill(why);
    }
}

/// Empties the slot for good: kills its worker and abandons a replacement being prepared.
fn end_slot(slot: &mut Slot, why: &str) {
    kill_worker(slot, why);
    *slot = Slot::default();
}

fn lost_worker_error(e: &WorkerError, timeout: Duration) -> (Status, Category, ErrorInfo) {
    let error = |ename: &str, evalue: String| ErrorInfo {
        ename: ename.into(),
        evalue,
        traceback: Vec::new(),
    };
    match e {
        WorkerError::Unresponsive(Interrupt::Deadline, why) => (
            Status::Timeout,
            Category::Timeout,
            error(
                "TimeoutError",
                format!(
                    "execution exceeded {} ms and {}; the worker was killed",
                    timeout.as_millis(),
                    ignored(*why)
                ),
            ),
        ),
        WorkerError::Unresponsive(Interrupt::Requested, why) => (
            Status::Error,
            Category::Interrupted,
            error(
                "KeyboardInterrupt",
                format!("the code {}; the worker was killed", ignored(*why)),
            ),
        ),
        WorkerError::CpuCeiling { seconds } => (
            Status::Error,
            Category::CpuLimit,
            error(
                "CPUTimeLimitExceeded",
                format!(
                    "the code used more than {seconds} s of CPU time and went on past the limit; the worker was killed"
                ),
            ),
        ),
        WorkerError::Died { reason, .. } => (
            Status::Error,
            Category::WorkerDied,
            error(
                "WorkerDied",
                format!("the worker process died during the execution ({reason})"),
            ),
        ),
        other => (
            Status::Error,
            Category::WorkerDied,
            error(
                "WorkerDied",
                format!("the worker was lost during the execution: {other}"),
            ),
        ),
    }
}

/// What a worker that did not answer an interrupt did, with the cause where one was seen.
fn ignored(why: Option<&str>) -> String {
    match why {
        Some(why) => format!("did not stop after the interrupt: {why}"),
        None => "ignored the interrupt".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_holds_one_running_and_depth_waiting() {
        let queue = Queue::default();
        let running = queue.enter(2).expect("the running one");
        let first = queue.enter(2).expect("first waiting");
        let second = queue.enter(2).expect("second waiting");
        assert!(matches!(queue.enter(2), Err(Error::QueueFull { depth: 2 })));
        assert_eq!(queue.pending(), 3, "a refused entry leaves no trace");
        drop(running);
        let third = queue.enter(2).expect("room again");
        drop((first, second, third));
        assert_eq!(queue.pending(), 0);
    }

    #[test]
    fn every_entry_and_exit_is_activity() {
        let queue = Queue::default();
        let before = queue.activity();
        drop(queue.enter(0).expect("enter"));
        assert_ne!(queue.activity(), before);
        let after = queue.activity();
        assert_eq!(queue.activity(), after, "nothing happened since");
    }
}
