//! The owner of all sessions: creates, finds, lists, evicts and deletes them, and runs one-shot
//! executions. Front ends hold no session state of their own; they call this.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::binding::{Places, SessionPlace};
use crate::cold::{ColdRunner, ColdStarts};
use crate::config::Config;
use crate::error::Error;
use crate::execution::{ExecRequest, Execution};
use crate::files::{FileLimits, FileListing};
use crate::interpreter::{self, Interpreter, InterpreterHealth};
use crate::metrics::{self, SessionEnd};
use crate::node;
use crate::notebook;
use crate::packages::{Installer, Packages, Policy};
use crate::pool::{OnDemandPool, PoolStatus, WarmPool};
use crate::preload_use::PreloadUse;
use crate::sandbox::{Levels, Sandbox, SandboxDirs, mounts};
use crate::session::{HistoryEntry, Limits, Session, SessionInfo, Workers};
use crate::state_dir::{self, StateDir};
use crate::template::Template;
use crate::worker::{EventSender, PrivateTmp, WorkerSpec};

/// The file the worker runs, compiled into the binary so the server cannot run against a
/// mismatched copy. It is written into the state directory at start.
pub const WORKER_SCRIPT: &str = include_str!("../../bootstrap/worker.py");

pub struct SessionManager {
    sessions: DashMap<String, Arc<Session>>,
    /// This node's name (`server.node`), the first part of every session id.
    node: String,
    /// Set when the server is going away (SIGTERM): no new sessions or one-shot executions,
    /// while existing sessions are still served.
    draining: AtomicBool,
    /// Once set, the node has been ready to take sessions (see [`SessionManager::readiness`]).
    started: AtomicBool,
    /// Work in progress outside any session's queue (one-shot executions, a compatibility
    /// surface's run between its cells): see [`SessionManager::work`].
    work: Arc<AtomicUsize>,
    /// Sessions alive or being created, in all and per owner: reserved before the (slow)
    /// worker start, so that concurrent creates cannot overshoot a limit.
    reserved: parking_lot::Mutex<Reserved>,
    max_sessions: usize,
    /// Sessions one owner (a token) may hold.
    max_per_owner: usize,
    idle_ttl: Option<Duration>,
    max_code_bytes: usize,
    max_frame_bytes: usize,
    workers: Arc<Workers>,
    scratch_dir: PathBuf,
    sandbox: Arc<Sandbox>,
    /// Makes sessions' places (directory, uid, cgroup) when no bound worker is ready.
    places: Arc<Places>,
    shutdown: CancellationToken,
    /// The sessions directory as a shared mount, when session directories get a tmpfs of
    /// their own sized to the quota; unmounted after the sessions went and before the state
    /// directory goes (fields drop in order).
    _shared_sessions: Option<SharedMount>,
    /// Keeps the state directory (worker script, session directories) until the manager goes.
    _state_dir: StateDir,
}

/// How long `/healthz` waits for a blocking thread before it says the server is stuck.
const BLOCKING_PROBE: Duration = Duration::from_secs(2);

/// What `/healthz` reports.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// This node's name (`server.node`).
    pub node: String,
    /// `ok`, or `degraded` while warm workers cannot be started (requests then run cold).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub sessions: usize,
    /// The default interpreter's pool (also in `interpreters`).
    pub pool: PoolStatus,
    /// The pool of workers without the preload, for one-shots (`python.lean_oneshots`);
    /// `null` when there is none (yet: it starts at the first one-shot that can use it).
    pub lean_pool: Option<PoolStatus>,
    /// What keeps sessions apart here (see `sandbox/isolation.rs`).
    pub isolation: Levels,
    /// Every interpreter sessions may choose, the default first, each with its pool.
    pub interpreters: Vec<InterpreterHealth>,
}

impl SessionManager {
    /// Sets up the state directory, starts the warm pool and the idle-session sweep. Must be
    /// called inside a tokio runtime.
    pub fn start(config: &Config) -> Result<Arc<SessionManager>, Error> {
        state_dir::remove_abandoned();
        let state_dir =
            StateDir::create().map_err(Error::io("cannot create the state directory"))?;
        let script = state_dir.path().join("worker.py");
        std::fs::write(&script, WORKER_SCRIPT)
            .map_err(Error::io(format!("cannot write {}", script.display())))?;
        // Canonical, so that the files API can compare resolved paths against it.
        let sessions_dir = std::fs::canonicalize(state_dir.path())
            .map_err(Error::io("cannot resolve the state directory"))?
            .join("sessions");
        // One-shot executions of one request share a directory here (see `scratch_dir`).
        let scratch_dir = sessions_dir.with_file_name("scratch");
        for dir in [&sessions_dir, &scratch_dir] {
            std::fs::create_dir(dir)
                .map_err(Error::io(format!("cannot create {}", dir.display())))?;
        }
        // Workers of other users pass through to their own session directories (mode 0700
        // each), but cannot list who else is there.
        for dir in [state_dir.path(), &sessions_dir, &scratch_dir] {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))
                .map_err(Error::io(format!("cannot open {}", dir.display())))?;
        }
        // Installs are staged here, the server's own (mode 0700): no session reaches it.
        let staging = state_dir.path().join("packages");
        std::fs::create_dir(&staging)
            .and_then(|()| {
                std::fs::set_permissions(
                    &staging,
                    std::os::unix::fs::PermissionsExt::from_mode(0o700),
                )
            })
            .map_err(Error::io(format!("cannot create {}", staging.display())))?;
        let packages = Arc::new(Packages {
            enabled: config.packages.enabled,
            policy: Policy::new(&config.packages.allow, &config.packages.deny),
            installer: Installer::new(&config.packages, staging),
        });
        let template = config.pool.template;
        // First: an interpreter that cannot run is named by its entry before the sandbox
        // probes its paths.
        let interpreters = config.interpreters();
        let mut versions = Vec::with_capacity(interpreters.len());
        for (i, entry) in interpreters.iter().enumerate() {
            let version = interpreter::read_version(&entry.executable).map_err(|why| {
                Error::InterpreterUnusable {
                    field: if config.python.interpreters.is_empty() {
                        "python.executable".to_owned()
                    } else {
                        format!("python.interpreters[{i}] ({})", entry.name)
                    },
                    executable: entry.executable.display().to_string(),
                    why,
                }
            })?;
            versions.push(version);
        }
        let sandbox = Sandbox::setup(
            config,
            &SandboxDirs {
                state: state_dir.path(),
                script: &script,
                sessions: &sessions_dir,
                scratch: &scratch_dir,
            },
        )?;
        // Before any worker starts: their mount namespaces are copies of ours, and must
        // follow the sessions directory for the tmpfs mounted there later.
        let shared_sessions = (mounts::in_private_namespace() && sandbox.changes_user())
            .then(|| match mounts::share(&sessions_dir) {
                Ok(()) => Some(SharedMount(sessions_dir.clone())),
                Err(e) => {
                    tracing::warn!("session directories cannot get a filesystem of their own ({e}): the disk quota is measured after each execution, not enforced");
                    None
                }
            })
            .flatten();
        if shared_sessions.is_none() {
            tracing::info!(
                "session directories share the state directory's filesystem: the disk quota is measured after each execution, not enforced"
            );
        }
        let ex = &config.execution;
        let Some(first) = interpreters.first() else {
            return Err(Error::Internal("no interpreter configured".into()));
        };
        let spec = WorkerSpec {
            python: first.executable.clone(),
            script,
            cwd: state_dir.path().to_owned(),
            preload: first.preload.clone().unwrap_or_default(),
            blas_threads: config.python.blas_threads,
            max_frame_bytes: ex.max_frame_bytes,
            start_timeout: Duration::from_millis(config.pool.start_timeout_ms),
            limits: config.limits.per_process(),
            cold: false,
            isolation: sandbox.isolation(),
            private_tmp: sandbox.private_tmp().then(|| PrivateTmp {
                keep: sandbox.tmp_keeps(),
                size_bytes: config.files.max_total_bytes,
            }),
            syscall_filter: sandbox.syscall_filter(),
        };
        let shutdown = CancellationToken::new();
        // Forked workers become the server's children by re-parenting where the server is a
        // child subreaper; elsewhere (replpool.Pool) they stay the template's.
        // The lean pool's workers are the same worker.py in the same sandbox: only the
        // preload differs. Without a preload every worker is lean already.
        let sandbox = Arc::new(sandbox);
        let places = Arc::new(Places::new(
            sessions_dir,
            Arc::clone(&sandbox),
            shared_sessions
                .is_some()
                .then_some(config.files.max_total_bytes),
        ));
        let lean = (config.python.lean_oneshots && !spec.preload.is_empty()).then(|| {
            let spec = WorkerSpec {
                preload: Vec::new(),
                ..spec.clone()
            };
            OnDemandPool::new(
                spec,
                template,
                Arc::clone(&places),
                config.pool.lean_workers,
                shutdown.clone(),
            )
        });
        let preload_use = PreloadUse::new(&spec.preload);
        let cold_starts = ColdStarts::new(config.pool.cold_starts);
        // One template and pool per interpreter: a worker forks only from its own Python.
        let interpreters: Vec<Arc<Interpreter>> = interpreters
            .into_iter()
            .zip(versions)
            .enumerate()
            .map(|(i, (entry, version))| {
                let spec = WorkerSpec {
                    python: entry.executable.clone(),
                    preload: entry.preload.unwrap_or_default(),
                    ..spec.clone()
                };
                tracing::info!(
                    name = %entry.name,
                    python = %entry.executable.display(),
                    %version,
                    default = i == 0,
                    "interpreter"
                );
                let cold = ColdRunner::new(&spec, cold_starts.clone());
                let template = template.then(|| Template::start(spec.clone(), shutdown.clone()));
                let pool = WarmPool::start(
                    metrics::sessions_pool(&entry.name, i == 0),
                    spec,
                    template,
                    Arc::clone(&places),
                    entry.warm_workers.unwrap_or(config.pool.warm_workers),
                    1,
                    shutdown.clone(),
                );
                Arc::new(Interpreter {
                    name: entry.name,
                    executable: entry.executable,
                    version,
                    pool,
                    cold,
                })
            })
            .collect();
        let pool = Arc::clone(&interpreters[0].pool);
        let workers = Arc::new(Workers {
            pool,
            interpreters,
            lean,
            preload_use,
            packages,
            limits: Limits {
                default_timeout: Duration::from_millis(ex.default_timeout_ms),
                max_timeout: Duration::from_millis(ex.max_timeout_ms),
                interrupt_grace: Duration::from_millis(ex.interrupt_grace_ms),
                max_output_bytes: ex.max_output_bytes,
                max_table_rows: ex.max_table_rows,
                cpu_seconds: config.limits.per_cell_cpu_seconds(),
                queue_depth: config.sessions.queue_depth,
                acquire_timeout: Duration::from_millis(config.pool.acquire_timeout_ms),
                history_max: config.sessions.history_max,
                files: FileLimits {
                    max_bytes: config.files.max_bytes,
                    max_total_bytes: config.files.max_total_bytes,
                    max_list_entries: config.files.max_list_entries,
                },
            },
        });
        let manager = Arc::new(SessionManager {
            sessions: DashMap::new(),
            node: config.server.node.clone(),
            draining: AtomicBool::new(false),
            started: AtomicBool::new(false),
            work: Arc::new(AtomicUsize::new(0)),
            reserved: parking_lot::Mutex::new(Reserved::default()),
            max_sessions: config.sessions.max,
            max_per_owner: config.auth.sessions_per_token(config.sessions.max),
            idle_ttl: (config.sessions.idle_ttl_secs > 0)
                .then(|| Duration::from_secs(config.sessions.idle_ttl_secs)),
            max_code_bytes: ex.max_code_bytes,
            max_frame_bytes: ex.max_frame_bytes,
            workers,
            scratch_dir,
            sandbox,
            places,
            shutdown,
            _shared_sessions: shared_sessions,
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

    /// Creates a session that only `owner` may see and use: on a worker the pool bound ahead
    /// of need when one is ready (nothing else to do), else in a place made now.
    pub async fn create_for(&self, owner: Option<&str>) -> Result<SessionInfo, Error> {
        self.create_on(owner, None).await
    }

    /// [`SessionManager::create_for`], on the interpreter `python` names (see
    /// [`interpreter::choose`]; `None`: the default one).
    pub async fn create_on(
        &self,
        owner: Option<&str>,
        python: Option<&str>,
    ) -> Result<SessionInfo, Error> {
        let interpreter = Arc::clone(self.interpreter(python)?);
        self.check_taking_work()?;
        let reservation = self.reserve(owner)?;
        let id = node::new_id(&self.node);
        let owner_name = owner.map(str::to_owned);
        let session = match interpreter.pool.take_bound() {
            Some(bound) => {
                let pool = Arc::clone(&interpreter.pool);
                Session::bound(
                    id.clone(),
                    owner_name,
                    bound,
                    Arc::clone(&self.workers),
                    interpreter,
                    pool,
                )
            }
            None => {
                let place = self.place(&id).await?;
                let session = Session::new(
                    id.clone(),
                    owner_name,
                    place.dir,
                    place.sandbox,
                    Arc::clone(&self.workers),
                    interpreter,
                );
                session.wait_ready().await;
                session
            }
        };
        let session = Arc::new(session);
        let info = session.info();
        self.sessions.insert(id.clone(), session);
        reservation.keep();
        metrics::session_created();
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

    /// A session's info without its worker's memory: cheap enough for every message of a
    /// protocol that reads it (a Jupyter kernel's model, its next execution count).
    pub fn info(&self, id: &str) -> Result<SessionInfo, Error> {
        Ok(self.session(id)?.info())
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
        self.end(id, SessionEnd::Deleted)
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
        let interpreter = session.interpreter();
        let default = self
            .interpreters()
            .first()
            .is_some_and(|first| Arc::ptr_eq(first, interpreter));
        Ok(notebook::to_notebook(
            &session.history(),
            session.python_version().as_deref(),
            &interpreter::kernel_spec_name(&interpreter.name, default),
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

    pub async fn list_files(&self, id: &str) -> Result<FileListing, Error> {
        Ok(self.session(id)?.files().list().await?)
    }

    /// Installs packages into the session's own layer (see [`Session::install_packages`]).
    pub async fn install_packages(
        &self,
        id: &str,
        requirements: &[String],
    ) -> Result<crate::session::Installed, Error> {
        self.session(id)?.install_packages(requirements).await
    }

    /// Checks requirement strings (syntax, allow and deny lists) without installing: a
    /// create that asks for packages is refused before a session is made.
    pub fn check_requirements(&self, requirements: &[String]) -> Result<(), Error> {
        self.workers.packages.check(requirements)?;
        Ok(())
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
        let execution = session.execute(request, events).await?;
        metrics::execution_finished(&execution, false);
        Ok(execution)
    }

    /// Runs code in a fresh worker that is thrown away afterwards: no state is kept.
    /// `shared`: a directory from [`SessionManager::scratch_dir`] the execution may use
    /// (with the other one-shots of its request).
    pub async fn execute_once(
        &self,
        request: &ExecRequest,
        events: Option<&EventSender>,
        shared: Option<&Path>,
    ) -> Result<Execution, Error> {
        self.execute_once_on(request, events, shared, None).await
    }

    /// [`SessionManager::execute_once`], on the interpreter `python` names (`None`: the
    /// default one). Only the default interpreter has a lean pool.
    pub async fn execute_once_on(
        &self,
        request: &ExecRequest,
        events: Option<&EventSender>,
        shared: Option<&Path>,
        python: Option<&str>,
    ) -> Result<Execution, Error> {
        let interpreter = Arc::clone(self.interpreter(python)?);
        self.check_taking_work()?;
        self.check_request(request)?;
        let _work = self.work();
        let pool = if Arc::ptr_eq(&interpreter, &self.workers.interpreters[0]) {
            Arc::clone(self.workers.pool_for(&request.code))
        } else {
            Arc::clone(&interpreter.pool)
        };
        let session = self.one_shot_session(interpreter, pool, shared).await?;
        let execution = session.execute(request, events).await;
        session.end("was a one-shot execution, now over");
        if let Ok(execution) = &execution {
            metrics::execution_finished(execution, true);
        }
        execution
    }

    /// A throw-away session for one execution, on a worker of `pool`.
    async fn one_shot_session(
        &self,
        interpreter: Arc<Interpreter>,
        pool: Arc<WarmPool>,
        shared: Option<&Path>,
    ) -> Result<Session, Error> {
        // Never seen by clients, so it needs no node.
        let id = format!("once-{:016x}", rand::random::<u64>());
        // A bound worker is attached to its own directory, not to a shared one.
        let bound = shared.is_none().then(|| pool.take_bound()).flatten();
        let session = match bound {
            Some(bound) => Session::bound(
                id,
                None,
                bound,
                Arc::clone(&self.workers),
                interpreter,
                pool,
            ),
            None => {
                let mut place = self.place(&id).await?;
                if let Some(shared) = shared {
                    place.sandbox.share(shared);
                }
                Session::with_pool(
                    id,
                    None,
                    place.dir,
                    place.sandbox,
                    Arc::clone(&self.workers),
                    interpreter,
                    pool,
                )
            }
        };
        Ok(session)
    }

    /// A session's place made now, off the async threads (when no bound worker is ready).
    async fn place(&self, id: &str) -> Result<SessionPlace, Error> {
        self.places
            .make_off_thread()
            .await
            .inspect_err(|e| tracing::warn!(session = %id, "refused: {e}"))
    }

    /// Makes the template start over (after a package install): new workers import afresh.
    /// Idle pooled workers are dropped too.
    pub fn restart_template(&self) {
        // installPackage changes the default interpreter's environment only: the others'
        // templates have nothing new to import.
        let default = &self.workers.interpreters[0].pool;
        for pool in std::iter::once(default).chain(self.workers.lean_started()) {
            pool.drain("idle before the template restarted (a package was installed)");
            pool.restart_template();
        }
    }

    /// Every interpreter's pool, and the lean one if there is one.
    fn pools(&self) -> impl Iterator<Item = &Arc<WarmPool>> {
        self.workers
            .interpreters
            .iter()
            .map(|i| &i.pool)
            .chain(self.workers.lean_started())
    }

    /// The default interpreter's Python version (`3.11.7`).
    pub fn python_version(&self) -> Option<String> {
        Some(self.workers.interpreters[0].version.clone())
    }

    /// Every interpreter sessions may choose, the default first.
    pub fn interpreters(&self) -> &[Arc<Interpreter>] {
        &self.workers.interpreters
    }

    /// The interpreter `python` names (by name, else by version: [`interpreter::choose`]);
    /// `None`: the default one.
    pub fn interpreter(&self, python: Option<&str>) -> Result<&Arc<Interpreter>, Error> {
        let all = &self.workers.interpreters;
        match python {
            None => all
                .first()
                .ok_or_else(|| Error::Internal("no interpreter".into())),
            Some(requested) => {
                interpreter::choose(all, requested).ok_or_else(|| Error::UnknownPython {
                    requested: requested.to_owned(),
                    available: interpreter::describe(all),
                })
            }
        }
    }

    /// What `/healthz` says. Besides the pool, it checks that a blocking thread can be had:
    /// executions end with work on those threads, so when none frees up in time nothing can
    /// make progress, whatever the pool says.
    pub async fn health(&self) -> Health {
        let pool = self.workers.pool.status();
        let lean_pool = self.workers.lean_started().map(|lean| lean.status());
        let blocked = tokio::time::timeout(BLOCKING_PROBE, tokio::task::spawn_blocking(|| ()))
            .await
            .is_err();
        let reason = if blocked {
            Some(format!(
                "no blocking thread became free within {BLOCKING_PROBE:?}: executions and file operations cannot make progress"
            ))
        } else {
            pool.last_error
                .as_ref()
                .map(|e| format!("warm workers cannot be started, executions run cold: {e}"))
                .or_else(|| {
                    let (name, e) = self.workers.interpreters[1..].iter().find_map(|i| {
                        Some((&i.name, i.pool.status().last_error?))
                    })?;
                    Some(format!(
                        "warm workers of interpreter {name} cannot be started, its executions run cold: {e}"
                    ))
                })
                .or_else(|| {
                    let lean = lean_pool.as_ref()?.last_error.as_ref()?;
                    Some(format!(
                        "lean workers cannot be started, one-shots that need no preload run cold: {lean}"
                    ))
                })
        };
        Health {
            node: self.node.clone(),
            status: if reason.is_some() { "degraded" } else { "ok" },
            reason,
            sessions: self.sessions.len(),
            pool,
            lean_pool,
            isolation: self.sandbox.levels().clone(),
            interpreters: self
                .workers
                .interpreters
                .iter()
                .enumerate()
                .map(|(i, interpreter)| interpreter.health(i == 0))
                .collect(),
        }
    }

    /// Sets the metrics that are read rather than counted: the sessions alive, the pools'
    /// levels and their templates' state (at each scrape of `/metrics`).
    pub fn record_gauges(&self) {
        metrics::sessions_live(self.sessions.len());
        for interpreter in &self.workers.interpreters {
            metrics::pool_state(interpreter.pool.name(), &interpreter.pool.status());
        }
        if let Some(lean) = self.workers.lean_started() {
            metrics::pool_state(metrics::LEAN_POOL, &lean.status());
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Refuses new sessions and one-shot executions from now on (SIGTERM): the node is going
    /// away, and what it has is served until then.
    pub fn drain(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            tracing::info!(node = %self.node, "draining: no new sessions");
        }
    }

    /// Whether the node takes new sessions: `Ready`; `Draining` once [`SessionManager::drain`]
    /// was called; `Starting` until it could first serve one warm (a ready worker in the pool,
    /// or the template running), or always ready when no warm worker is wanted.
    pub fn readiness(&self) -> Readiness {
        if self.draining.load(Ordering::Acquire) || self.shutdown.is_cancelled() {
            return Readiness::Draining;
        }
        if !self.started.load(Ordering::Acquire) {
            let pool = self.workers.pool.status();
            let template_running = pool.template.as_ref().is_some_and(|t| t.state == "running");
            if pool.target > 0 && pool.ready == 0 && !template_running {
                return Readiness::Starting;
            }
            // For good: a pool emptied by a burst later is load, not a start.
            self.started.store(true, Ordering::Release);
        }
        Readiness::Ready
    }

    /// Whether any execution is running or waiting, in a session or one-shot: a draining
    /// node ends once none is.
    pub fn busy(&self) -> bool {
        self.work.load(Ordering::Acquire) > 0 || self.sessions.iter().any(|s| !s.is_idle())
    }

    /// Counts work that is in no session's queue as in progress until the returned guard
    /// drops: a python-executor run between its cells, say, so that a draining node does not
    /// end under it.
    pub fn work(&self) -> Work {
        self.work.fetch_add(1, Ordering::AcqRel);
        Work(Arc::clone(&self.work))
    }

    fn check_taking_work(&self) -> Result<(), Error> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        if self.draining.load(Ordering::Acquire) {
            return Err(Error::Draining);
        }
        Ok(())
    }

    /// Stops the pool and ends every session and worker.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
        for pool in self.pools() {
            pool.drain("the server is shutting down");
        }
        let ids: Vec<String> = self.sessions.iter().map(|s| s.key().clone()).collect();
        for id in ids {
            let _ = self.end(&id, SessionEnd::Shutdown);
        }
    }

    /// The server's cgroup directories: see [`Sandbox::cgroup_dirs`].
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.sandbox.cgroup_dirs()
    }

    /// A fresh directory under the server's state directory, removed when dropped, for what
    /// one-shot executions of one request share (a judge's compiled program: made by one
    /// session's user, run by others). Like `/tmp`: anyone may add files, only their owner
    /// may replace or remove them, and nobody may list it.
    pub fn scratch_dir(&self) -> Result<tempfile::TempDir, Error> {
        let dir = tempfile::Builder::new()
            .prefix("scratch-")
            .tempdir_in(&self.scratch_dir)
            .map_err(Error::io("cannot create a directory"))?;
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o1733),
        )
        .map_err(Error::io("cannot open a directory"))?;
        Ok(dir)
    }

    fn end(&self, id: &str, reason: SessionEnd) -> Result<(), Error> {
        let (_, session) = self
            .sessions
            .remove(id)
            .ok_or_else(|| Error::SessionNotFound(id.to_owned()))?;
        self.reserved.lock().release(session.owner());
        metrics::session_ended(reason);
        let why = reason.why();
        session.end(why);
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

    /// A place under the session limit and under the owner's, made if need be by ending the
    /// owner's own least recently used idle session: one tenant never ends another's.
    fn reserve(&self, owner: Option<&str>) -> Result<Reservation<'_>, Error> {
        loop {
            let refused = {
                let mut reserved = self.reserved.lock();
                let mine = reserved.of(owner);
                let owner_full = owner.is_some() && mine >= self.max_per_owner;
                if reserved.total < self.max_sessions && !owner_full {
                    reserved.take(owner);
                    return Ok(Reservation {
                        reserved: &self.reserved,
                        owner: owner.map(str::to_owned),
                        kept: false,
                    });
                }
                if owner_full {
                    Error::TooManySessionsForOwner {
                        max: self.max_per_owner,
                    }
                } else {
                    Error::TooManySessions {
                        max: self.max_sessions,
                    }
                }
            };
            let lru = self
                .sessions
                .iter()
                .filter(|s| s.owner() == owner && s.is_idle())
                .min_by_key(|s| s.last_used())
                .map(|s| s.key().clone());
            match lru {
                Some(id) => {
                    // Another create may have ended it first; then look again.
                    let _ = self.end(&id, SessionEnd::Evicted);
                }
                None => return Err(refused),
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
            let _ = manager.end(&id, SessionEnd::Idle);
        }
    }
}

/// Sessions alive or being made, in all and per owner.
#[derive(Default)]
struct Reserved {
    total: usize,
    by_owner: std::collections::HashMap<String, usize>,
}

impl Reserved {
    fn of(&self, owner: Option<&str>) -> usize {
        owner.map_or(0, |o| self.by_owner.get(o).copied().unwrap_or(0))
    }

    fn take(&mut self, owner: Option<&str>) {
        self.total += 1;
        if let Some(owner) = owner {
            *self.by_owner.entry(owner.to_owned()).or_default() += 1;
        }
    }

    fn release(&mut self, owner: Option<&str>) {
        self.total = self.total.saturating_sub(1);
        if let Some(owner) = owner
            && let Some(count) = self.by_owner.get_mut(owner)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.by_owner.remove(owner);
            }
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

/// A place under the session limits, given back unless the session was made.
struct Reservation<'a> {
    reserved: &'a parking_lot::Mutex<Reserved>,
    owner: Option<String>,
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
            self.reserved.lock().release(self.owner.as_deref());
        }
    }
}

/// The sessions directory made a shared mount (see [`mounts::share`]), unmounted when the
/// manager goes so that the state directory can be removed.
struct SharedMount(PathBuf);

impl Drop for SharedMount {
    fn drop(&mut self) {
        if let Err(e) = mounts::unmount(&self.0) {
            tracing::warn!("cannot unmount {}: {e}", self.0.display());
        }
    }
}

/// Whether a node takes new sessions (`GET /readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// No worker could be served warm yet.
    Starting,
    /// Going away (SIGTERM): existing sessions are served, no new ones taken.
    Draining,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::Starting => "starting",
            Readiness::Draining => "draining",
        }
    }
}

/// Work in progress for as long as it lives: a draining node waits for it (see
/// [`SessionManager::busy`]).
pub struct Work(Arc<AtomicUsize>);

impl Drop for Work {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Network;

    #[test]
    fn reserved_counts_in_all_and_per_owner() {
        let mut reserved = Reserved::default();
        reserved.take(Some("a"));
        reserved.take(Some("a"));
        reserved.take(Some("b"));
        reserved.take(None);
        assert_eq!(
            (
                reserved.total,
                reserved.of(Some("a")),
                reserved.of(Some("b")),
                reserved.of(None)
            ),
            (4, 2, 1, 0)
        );
        reserved.release(Some("a"));
        reserved.release(Some("b"));
        reserved.release(None);
        assert_eq!((reserved.total, reserved.of(Some("a"))), (1, 1));
        // An owner down to nothing leaves no entry behind (tokens come and go).
        assert!(!reserved.by_owner.contains_key("b"));
        reserved.release(Some("a"));
        // A release too many is not an underflow.
        reserved.release(Some("a"));
        reserved.release(Some("nobody"));
        assert_eq!(reserved.total, 0);
        assert!(reserved.by_owner.is_empty());
    }

    #[test]
    fn a_reservation_is_given_back_unless_kept() {
        let reserved = parking_lot::Mutex::new(Reserved::default());
        let take = |owner: &str| {
            reserved.lock().take(Some(owner));
            Reservation {
                reserved: &reserved,
                owner: Some(owner.to_owned()),
                kept: false,
            }
        };
        drop(take("a"));
        assert_eq!(
            reserved.lock().total,
            0,
            "a failed create gives its place back"
        );
        take("a").keep();
        let kept = reserved.lock();
        assert_eq!((kept.total, kept.of(Some("a"))), (1, 1));
    }

    /// A manager of real workers, as the caller's user on the host network: what a
    /// session's place under the limits means needs real sessions, and no root.
    fn manager(max: usize, per_token: usize) -> Arc<SessionManager> {
        let mut config = Config::default();
        config.python.executable = std::env::var_os("REPLPOOL_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
            });
        config.python.preload = Vec::new();
        config.pool.warm_workers = 1;
        config.pool.template = false;
        config.sessions.max = max;
        config.auth.max_sessions_per_token = per_token;
        config.sandbox.user = String::new();
        config.sandbox.session_uids = String::new();
        config.sandbox.network = Network::Host;
        config.sandbox.cgroups = false;
        // The tests hold cells on sockets in their own temp directories.
        config.sandbox.filesystem = crate::config::FilesystemMode::Host;
        SessionManager::start(&config).expect("manager")
    }

    fn alive(manager: &SessionManager, id: &str) -> bool {
        manager.sessions.contains_key(id)
    }

    async fn run(manager: &SessionManager, id: &str, code: &str) {
        let request = ExecRequest {
            code: code.to_owned(),
            stdin: None,
            timeout: None,
            filename: None,
            data: true,
            pip_magic: false,
        };
        let execution = manager.execute(id, &request, None).await.expect("runs");
        assert_eq!(execution.status, crate::execution::Status::Ok);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_owner_at_its_limit_ends_its_own_least_recently_used_idle_session() {
        let manager = manager(4, 2);
        let a1 = manager.create_for(Some("a")).await.expect("a1").session_id;
        let a2 = manager.create_for(Some("a")).await.expect("a2").session_id;
        let b1 = manager.create_for(Some("b")).await.expect("b1").session_id;
        // a1 used after a2 was made: a2 is a's least recently used.
        run(&manager, &a1, "1").await;
        let a3 = manager.create_for(Some("a")).await.expect("a3").session_id;
        assert!(
            !alive(&manager, &a2),
            "a's least recently used session ends"
        );
        for id in [&a1, &a3, &b1] {
            assert!(alive(&manager, id), "{id} stays");
        }
        let reserved = manager.reserved.lock();
        assert_eq!((reserved.of(Some("a")), reserved.total), (2, 3));
        drop(reserved);
        manager.shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_session_limit_one_owner_never_ends_another_owners_session() {
        let manager = manager(2, 2);
        let a1 = manager.create_for(Some("a")).await.expect("a1").session_id;
        let a2 = manager.create_for(Some("a")).await.expect("a2").session_id;
        let refused = manager.create_for(Some("b")).await;
        assert!(
            matches!(refused, Err(Error::TooManySessions { max: 2 })),
            "{refused:?}"
        );
        assert!(alive(&manager, &a1) && alive(&manager, &a2));
        // The refused create took no place: a's own create at the limit evicts a's LRU.
        assert_eq!(manager.reserved.lock().total, 2);
        let a3 = manager.create_for(Some("a")).await.expect("a3").session_id;
        assert!(!alive(&manager, &a1) && alive(&manager, &a2) && alive(&manager, &a3));
        assert_eq!(manager.reserved.lock().total, 2);
        manager.shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_session_is_never_evicted() {
        let manager = manager(4, 1);
        let a1 = manager.create_for(Some("a")).await.expect("a1").session_id;
        // A cell that runs until the test writes a byte to it.
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("hold.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let code = format!(
            "import socket\nwith socket.socket(socket.AF_UNIX) as c:\n    c.connect({:?})\n    c.recv(1)",
            socket.display().to_string()
        );
        let busy = {
            let manager = Arc::clone(&manager);
            let a1 = a1.clone();
            tokio::spawn(async move { run(&manager, &a1, &code).await })
        };
        let (mut held, _) = listener.accept().await.expect("the cell connects");
        let refused = manager.create_for(Some("a")).await;
        assert!(
            matches!(refused, Err(Error::TooManySessionsForOwner { max: 1 })),
            "{refused:?}"
        );
        assert!(alive(&manager, &a1));
        assert_eq!(manager.reserved.lock().total, 1);
        tokio::io::AsyncWriteExt::write_all(&mut held, b"x")
            .await
            .expect("release the cell");
        busy.await.expect("the cell finished");
        let a2 = manager.create_for(Some("a")).await.expect("a2").session_id;
        assert!(!alive(&manager, &a1) && alive(&manager, &a2));
        manager.shutdown();
    }
}
