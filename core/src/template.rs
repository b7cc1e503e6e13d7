//! The template ("zygote"): one Python process that has paid for the preload, and forks a new
//! worker on request in milliseconds, sharing its pages copy-on-write.
//!
//! The server creates each new worker's protocol pipes itself and passes their far ends to
//! the template as SCM_RIGHTS over a datagram socket pair (the template's fd 0). The template
//! forks twice over, so that the worker is re-parented to the server (a child subreaper): the
//! server signals, watches (pidfd) and reaps it like any child of its own, and the template
//! keeps nothing about it. The worker ties its life to the server's with `PR_SET_PDEATHSIG`
//! once re-parented.
//!
//! Where the server is not a subreaper (replpool.Pool, in a Python process whose own
//! `subprocess` children must keep their exit statuses), the template is one instead: workers
//! are re-parented to it and tie their lives to it, and it kills what their cells detach. The
//! server watches such a worker through its pidfd and kills its group as any other, then tells
//! the template to reap it ([`Process::kept_by_template`]); at the end it tells the template to
//! kill all it keeps and exit ([`Farewell`]).
//!
//! A supervisor task starts the template, notices its death (or that it stopped answering) and
//! restarts it with backoff. Forks wait while the template starts; while it is down they fail
//! at once and callers start workers directly.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::process::Process;
use crate::protocol::ErrorInfo;
use crate::worker::{Worker, WorkerError, WorkerSpec, drain_stderr, new_stderr_tail};

/// How long a fork request may take before the template is deemed stuck (and restarted).
const FORK_TIMEOUT: Duration = Duration::from_secs(10);
const RESTART_DELAY: Duration = Duration::from_millis(500);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

pub struct Template {
    spec: WorkerSpec,
    /// The running template; `None` while it starts or is down.
    current: Mutex<Option<Arc<Instance>>>,
    status: Mutex<TemplateStatus>,
    /// Tells waiting forks that the template became ready (or failed to).
    state: watch::Sender<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Running,
    Down,
}

/// One template process, as forks see it.
struct Instance {
    socket: UnixDatagram,
    /// One fork request at a time: answers carry no more than the request's id.
    turn: tokio::sync::Mutex<()>,
    /// Cancelled when this template exited or was found stuck: pending forks give up at once,
    /// and the supervisor restarts it.
    gone: CancellationToken,
    /// A blocking handle on the same socket, for the messages sent from `Drop`s (a worker's
    /// `reap`, the template's `exit`), which get no answer. `None` where workers are the
    /// server's (re-parented to it).
    keeper: Option<Arc<std::os::unix::net::UnixDatagram>>,
}

/// Ends a template that keeps its workers: asks it to kill them (and what their cells
/// detached) and exit, and gives it a moment to, before the template's own group is killed.
/// A `Drop`, because at shutdown the runtime drops the supervisor without polling it again.
struct Farewell {
    keeper: Option<Arc<std::os::unix::net::UnixDatagram>>,
    process: Process,
}

/// How long a template told to exit may take to end its children before it is killed.
const FAREWELL_GRACE: Duration = Duration::from_secs(2);

impl Drop for Farewell {
    fn drop(&mut self) {
        if let Some(keeper) = &self.keeper
            && keeper.send(br#"{"op":"exit"}"#).is_ok()
        {
            self.process.wait_exit_blocking(FAREWELL_GRACE);
        }
    }
}

/// What `/healthz` shows of the template.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateStatus {
    /// `starting`, `running` or `down`.
    pub state: &'static str,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub forks: u64,
    pub last_error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Reply {
    Ready { preload_ms: f64 },
    Fatal { error: ErrorInfo },
    Forked { id: u64, pid: u32 },
    Error { error: ErrorInfo },
}

impl Template {
    /// Starts the supervisor, which starts the template.
    pub fn start(spec: WorkerSpec, shutdown: CancellationToken) -> Arc<Template> {
        let template = Arc::new(Template {
            spec,
            current: Mutex::new(None),
            status: Mutex::new(TemplateStatus {
                state: "starting",
                pid: None,
                restarts: 0,
                forks: 0,
                last_error: None,
            }),
            state: watch::channel(State::Starting).0,
        });
        // With several interpreters (and the lean template) the logs must say whose failed.
        let span = tracing::info_span!(
            "template",
            python = %template.spec.python.display(),
            lean = template.spec.preload.is_empty()
        );
        tokio::spawn(tracing::Instrument::instrument(
            Arc::clone(&template).supervise(shutdown),
            span,
        ));
        template
    }

    pub fn status(&self) -> TemplateStatus {
        self.status.lock().clone()
    }

    /// Ends the running template; the supervisor starts a new one.
    pub fn restart(&self) {
        if let Some(instance) = self.current.lock().clone() {
            instance.gone.cancel();
        }
    }

    /// A new worker, forked from the template and ready for requests. While the template is
    /// starting this waits for it; while it is down this fails at once with
    /// [`WorkerError::TemplateDown`].
    pub async fn fork(&self) -> Result<Worker, WorkerError> {
        let instance = self.running_instance().await?;
        let asked = std::time::Instant::now();
        // The request runs in a task of its own, which its caller cannot cancel halfway: a
        // caller that gives up (a session deleted while its lost worker's replacement is
        // forked aborts that task) would leave the template's answer on the socket, for the
        // next request to take as its own, and the template restarted as stuck. The worker of
        // an answer nobody claims is killed when the task's result is dropped.
        let (pid, process, ours) = tokio::spawn(request_worker(instance))
            .await
            .map_err(|e| WorkerError::Protocol(format!("fork request failed: {e}")))??;
        self.status.lock().forks += 1;
        let forked_after = asked.elapsed();
        let stderr_tail = new_stderr_tail();
        let log = tokio::net::unix::pipe::Receiver::from_owned_fd(ours.log)
            .map_err(WorkerError::io("log pipe"))?;
        tokio::spawn(drain_stderr(pid, log, Arc::clone(&stderr_tail)));
        let writer = tokio::net::unix::pipe::Sender::from_owned_fd(ours.requests)
            .map_err(WorkerError::io("request pipe"))?;
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(ours.replies)
            .map_err(WorkerError::io("reply pipe"))?;
        let worker = Worker::handshake(
            process,
            Box::new(reader),
            Box::new(writer),
            stderr_tail,
            &self.spec,
        )
        .await?;
        tracing::debug!(
            pid,
            forked_ms = forked_after.as_secs_f64() * 1e3,
            ready_ms = asked.elapsed().as_secs_f64() * 1e3,
            "worker forked"
        );
        Ok(worker)
    }

    async fn running_instance(&self) -> Result<Arc<Instance>, WorkerError> {
        let mut state = self.state.subscribe();
        let waited = tokio::time::timeout(
            self.spec.start_timeout,
            state.wait_for(|s| *s != State::Starting),
        )
        .await;
        if !matches!(waited, Ok(Ok(s)) if *s == State::Running) {
            return Err(WorkerError::TemplateDown);
        }
        self.current.lock().clone().ok_or(WorkerError::TemplateDown)
    }

    fn set_state(&self, state: State, pid: Option<u32>, error: Option<String>) {
        {
            let mut status = self.status.lock();
            status.state = match state {
                State::Starting => "starting",
                State::Running => "running",
                State::Down => "down",
            };
            status.pid = pid;
            if error.is_some() || state == State::Running {
                status.last_error = error;
            }
        }
        self.state.send_replace(state);
    }

    async fn supervise(self: Arc<Self>, shutdown: CancellationToken) {
        let mut delay = RESTART_DELAY;
        loop {
            self.set_state(State::Starting, None, None);
            let launched = tokio::select! {
                launched = self.launch() => launched,
                _ = shutdown.cancelled() => return,
            };
            match launched {
                Ok((process, socket, keeper)) => {
                    delay = RESTART_DELAY;
                    let pid = process.pid();
                    let mut template = Farewell {
                        keeper: keeper.clone(),
                        process,
                    };
                    let instance = Arc::new(Instance {
                        socket,
                        turn: tokio::sync::Mutex::new(()),
                        gone: CancellationToken::new(),
                        keeper,
                    });
                    *self.current.lock() = Some(Arc::clone(&instance));
                    self.set_state(State::Running, Some(pid), None);
                    tracing::info!(pid, "template ready");
                    let why = tokio::select! {
                        how = template.process.wait() => format!("the template exited ({how})"),
                        _ = instance.gone.cancelled() => "the template stopped answering".to_owned(),
                        _ = shutdown.cancelled() => {
                            instance.gone.cancel();
                            self.current.lock().take();
                            return; // dropping `template` ends it, and what it keeps
                        }
                    };
                    instance.gone.cancel();
                    self.current.lock().take();
                    drop(template); // kills a stuck template with its group
                    tracing::warn!(pid, "{why}; restarting it");
                    self.status.lock().restarts += 1;
                    self.set_state(State::Down, None, Some(why));
                }
                Err(e) => {
                    tracing::error!("cannot start the template (next try in {delay:?}): {e}");
                    self.set_state(State::Down, None, Some(e.to_string()));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(MAX_RESTART_DELAY);
        }
    }

    /// Starts a template process and waits until its preload is done.
    #[allow(clippy::type_complexity)]
    async fn launch(
        &self,
    ) -> Result<
        (
            Process,
            UnixDatagram,
            Option<Arc<std::os::unix::net::UnixDatagram>>,
        ),
        WorkerError,
    > {
        let (ours, theirs) =
            std::os::unix::net::UnixDatagram::pair().map_err(WorkerError::io("socket pair"))?;
        let keeper = if crate::reaper::children().is_subreaper() {
            None
        } else {
            Some(Arc::new(
                ours.try_clone().map_err(WorkerError::io("socket pair"))?,
            ))
        };
        ours.set_nonblocking(true)
            .map_err(WorkerError::io("socket pair"))?;
        let socket = UnixDatagram::from_std(ours).map_err(WorkerError::io("socket pair"))?;
        let spec = &self.spec;
        let mut child = spec.spawn(true, Stdio::from(OwnedFd::from(theirs)), Stdio::null())?;
        let pid = child.id().unwrap_or_default();
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(drain_stderr(pid, stderr, new_stderr_tail()));
        }
        let process =
            Process::spawned(child).map_err(WorkerError::io("cannot watch the template"))?;
        let mut buf = vec![0u8; 64 * 1024];
        let received = tokio::time::timeout(spec.start_timeout, socket.recv(&mut buf)).await;
        let n = match received {
            Err(_) => return Err(WorkerError::StartTimeout(spec.start_timeout)),
            Ok(Err(e)) => return Err(WorkerError::io("template socket")(e)),
            Ok(Ok(n)) => n,
        };
        match serde_json::from_slice::<Reply>(&buf[..n]) {
            Ok(Reply::Ready { preload_ms, .. }) => {
                tracing::debug!(pid, preload_ms, "template preloaded");
                Ok((process, socket, keeper))
            }
            Ok(Reply::Fatal { error }) => Err(WorkerError::Preload(error)),
            Ok(_) => Err(WorkerError::Protocol("unexpected template message".into())),
            Err(e) => Err(WorkerError::Protocol(format!(
                "malformed template message: {e}"
            ))),
        }
    }
}

/// One fork request to `instance`, in turn with the others, and the new worker's process
/// watched; a template that cannot fork is restarted.
async fn request_worker(instance: Arc<Instance>) -> Result<(u32, Process, OurEnds), WorkerError> {
    let forked = {
        let _turn = instance.turn.lock().await;
        tokio::select! {
            forked = tokio::time::timeout(FORK_TIMEOUT, request_fork(&instance.socket)) => forked,
            _ = instance.gone.cancelled() => return Err(WorkerError::TemplateDown),
        }
    };
    let (pid, ours) = match forked {
        Ok(Ok(forked)) => forked,
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {FORK_TIMEOUT:?}"),
            };
            instance.gone.cancel();
            return Err(WorkerError::Protocol(format!("fork failed: {why}")));
        }
    };
    let process = match &instance.keeper {
        Some(keeper) => Process::kept_by_template(pid, Arc::clone(keeper)),
        None => Process::forked(pid),
    }
    .map_err(WorkerError::io(format!("cannot watch forked worker {pid}")))?;
    Ok((pid, process, ours))
}

/// The server's ends of a new worker's pipes.
struct OurEnds {
    requests: OwnedFd,
    replies: OwnedFd,
    log: OwnedFd,
}

/// Sends one fork request with the worker's pipe ends attached; returns the worker's pid.
async fn request_fork(socket: &UnixDatagram) -> std::io::Result<(u32, OurEnds)> {
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (req_r, req_w) = nix::unistd::pipe2(cloexec)?;
    let (rep_r, rep_w) = nix::unistd::pipe2(cloexec)?;
    let (log_r, log_w) = nix::unistd::pipe2(cloexec)?;
    let id = rand::random::<u64>();
    let message = serde_json::json!({"op": "fork", "id": id}).to_string();
    let fds = [req_r.as_raw_fd(), rep_w.as_raw_fd(), log_w.as_raw_fd()];
    loop {
        socket.writable().await?;
        let sent = socket.try_io(Interest::WRITABLE, || {
            sendmsg::<()>(
                socket.as_raw_fd(),
                &[IoSlice::new(message.as_bytes())],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    // The template has its own copies now.
    drop((req_r, rep_w, log_w));
    let mut buf = vec![0u8; 64 * 1024];
    let n = socket.recv(&mut buf).await?;
    match serde_json::from_slice::<Reply>(&buf[..n]) {
        Ok(Reply::Forked { id: got, pid }) if got == id => Ok((
            pid,
            OurEnds {
                requests: req_w,
                replies: rep_r,
                log: log_r,
            },
        )),
        Ok(Reply::Error { error, .. }) => Err(std::io::Error::other(format!(
            "{}: {}",
            error.ename, error.evalue
        ))),
        _ => Err(std::io::Error::other("unexpected answer to a fork request")),
    }
}
