//! One Python worker process, driven over its protocol pipes.
//!
//! The handle owns the process: it starts it (its own process group, tied to the server's
//! life with `PR_SET_PDEATHSIG`), waits for the ready handshake, sends requests, reads replies,
//! enforces deadlines (SIGINT first, then the caller kills), notices death, and kills the
//! whole process group when dropped, so nothing the worker started outlives it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::process::Command;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::process::{self, Process};
use crate::protocol::{self, Done, ErrorInfo, Frame, MimeBundle, Request, StreamName};
use crate::reaper;
use crate::sandbox::{Isolation, SessionSandbox, SyscallFilter};

/// CPU seconds past the cell's limit before the server ends a worker whose code lifted its
/// soft limit (or ignores CPUTimeLimitExceeded), and how often it looks.
const CPU_CEILING_GRACE: f64 = 2.0;
const CPU_CEILING_POLL: Duration = Duration::from_secs(1);

/// How many lines of a worker's own stderr are kept to explain its failure.
const STDERR_TAIL_LINES: usize = 30;

/// Everything needed to start a worker; shared by the pool and the cold runner.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub python: PathBuf,
    pub script: PathBuf,
    /// Working directory of a worker not yet attached to a session.
    pub cwd: PathBuf,
    pub preload: Vec<String>,
    pub blas_threads: u32,
    pub max_frame_bytes: usize,
    pub start_timeout: Duration,
    pub limits: ResourceLimits,
    /// A cold worker imports what it can of the preload instead of failing on a bad entry.
    pub cold: bool,
    /// The namespaces and filesystem view every process started for Python gets.
    pub isolation: Arc<Isolation>,
    /// A /tmp and /dev/shm of each worker's own (workers of different users must not share
    /// them); made by the worker itself, while it is still root and has one thread.
    pub private_tmp: Option<PrivateTmp>,
    /// The seccomp filter each worker installs on itself before it runs user code.
    pub syscall_filter: Option<Arc<SyscallFilter>>,
}

/// What a worker needs to make its own /tmp: the directories under /tmp it must still reach
/// (the server's state directory, a venv that lives there), and the size of the tmpfs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrivateTmp {
    pub keep: Vec<PathBuf>,
    pub size_bytes: u64,
}

/// Per-process limits, set between fork and exec so that user code inherits them and cannot
/// raise them past the hard limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResourceLimits {
    /// RLIMIT_AS: beyond it allocations fail (a MemoryError in Python).
    pub address_space_bytes: Option<u64>,
    /// RLIMIT_FSIZE: writing past it fails with EFBIG (Python ignores SIGXFSZ).
    pub file_size_bytes: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
}

impl ResourceLimits {
    fn apply(&self) -> std::io::Result<()> {
        use nix::sys::resource::{Resource, setrlimit};
        let limits = [
            (Resource::RLIMIT_AS, self.address_space_bytes),
            (Resource::RLIMIT_FSIZE, self.file_size_bytes),
            (Resource::RLIMIT_NOFILE, self.open_files),
        ];
        for (resource, limit) in limits {
            if let Some(limit) = limit {
                setrlimit(resource, limit, limit)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start the Python worker `{python}`: {source}")]
    Spawn {
        python: String,
        source: std::io::Error,
    },
    #[error("the worker did not become ready within {0:?}")]
    StartTimeout(Duration),
    #[error("the worker's preload failed: {}: {}", .0.ename, .0.evalue)]
    Preload(ErrorInfo),
    #[error("the worker died ({reason}){}", stderr_suffix(.stderr))]
    Died { reason: String, stderr: String },
    #[error("the worker did not stop after an interrupt{}", .1.map(|why| format!(" ({why})")).unwrap_or_default())]
    Unresponsive(Interrupt, Option<&'static str>),
    #[error("worker protocol error: {0}")]
    Protocol(String),
    #[error("the template is not running")]
    TemplateDown,
    #[error("the code used more than {seconds} s of CPU time and ignored the limit")]
    CpuCeiling { seconds: u64 },
}

impl WorkerError {
    /// The worker never got to run anything.
    pub fn is_start_failure(&self) -> bool {
        matches!(
            self,
            WorkerError::Spawn { .. }
                | WorkerError::StartTimeout(_)
                | WorkerError::Preload(_)
                | WorkerError::TemplateDown
        )
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with: {stderr}")
    }
}

/// Output that arrives while a cell runs, for callers that stream it.
#[derive(Debug, Clone)]
pub enum Event {
    Stream { name: StreamName, text: String },
    Display(MimeBundle),
}

/// The channel for [`Event`]s. Unbounded on purpose: the worker caps a cell's output, so the
/// queue is bounded by that cap, and a slow client must never stall the reading of the pipe.
pub type EventSender = tokio::sync::mpsc::UnboundedSender<Event>;

/// One cell to run.
#[derive(Debug, Clone)]
pub struct Cell<'a> {
    pub code: &'a str,
    pub stdin: Option<&'a str>,
    pub count: u64,
    pub max_output_bytes: usize,
    /// Wall-clock limit, counted from when the request is sent to the worker.
    pub timeout: Duration,
    pub interrupt_grace: Duration,
    /// CPU-time limit of the cell, enforced by the worker.
    pub cpu_seconds: Option<u64>,
    pub filename: Option<&'a str>,
}

/// Why a running cell was sent SIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    Deadline,
    Requested,
}

/// How a cell ended, when the worker answered.
#[derive(Debug)]
pub struct CellOutcome {
    pub done: Done,
    /// The worker was interrupted while the cell ran (the cell may still have finished).
    pub interrupted: Option<Interrupt>,
}

/// Either end of a worker's protocol: a child's stdio pipe or a pipe made for a forked worker.
type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The last lines of a worker's own stderr, to explain its failure.
pub type StderrTail = Arc<Mutex<VecDeque<String>>>;

pub fn new_stderr_tail() -> StderrTail {
    Arc::new(Mutex::new(VecDeque::new()))
}

pub struct Worker {
    process: Process,
    pid: u32,
    reader: FramedRead<Reader, LengthDelimitedCodec>,
    writer: FramedWrite<Writer, LengthDelimitedCodec>,
    stderr_tail: StderrTail,
    next_id: u64,
    python_version: String,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("pid", &self.pid).finish()
    }
}

impl WorkerSpec {
    /// The settings `worker.py` takes as its argument, for a worker or (`template`) the
    /// template.
    pub fn settings(&self, template: bool) -> serde_json::Value {
        serde_json::json!({
            "template": template,
            "preload": self.preload,
            "max_frame_bytes": self.max_frame_bytes,
            "cold": self.cold,
            "server_pid": std::process::id(),
            "private_tmp": self.private_tmp,
            "seccomp": self.syscall_filter.as_deref(),
        })
    }

    /// What every process the server starts for Python gets: the environment, its own process
    /// group, the death signal tied to the server, and the resource limits.
    ///
    /// The command must be spawned on a runtime worker thread, never in `spawn_blocking`: the
    /// death signal is tied to the thread that forks, and blocking-pool threads exit when idle.
    pub fn prepare(&self, command: &mut Command) {
        let threads = self.blas_threads.to_string();
        command
            .current_dir(&self.cwd)
            .env("MPLBACKEND", "Agg")
            .env("OPENBLAS_NUM_THREADS", &threads)
            .env("OMP_NUM_THREADS", &threads)
            .env("MKL_NUM_THREADS", &threads)
            .env("PYTHONUNBUFFERED", "1")
            // Marks the worker and everything it starts as this server's (for tests and ops).
            .env("REPLPOOL_SERVER_PID", std::process::id().to_string())
            .process_group(0)
            .kill_on_drop(true);
        let server_pid = std::process::id();
        let limits = self.limits;
        let isolation = Arc::clone(&self.isolation);
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (prctl, getppid, setrlimit, unshare, mount, ioctl); it does not
        // allocate.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The server may have died before prctl took effect; then nobody would kill us.
                if nix::unistd::getppid().as_raw() as u32 != server_pid {
                    return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
                }
                // No setuid program can give user code back what it is about to lose.
                nix::sys::prctl::set_no_new_privs()?;
                limits.apply()?;
                isolation.apply()
            });
        }
    }
}

impl Worker {
    /// Starts a worker process directly (`python worker.py`) and waits until its preload is
    /// done.
    pub async fn start(spec: &WorkerSpec) -> Result<Worker, WorkerError> {
        let mut command = Command::new(&spec.python);
        command
            .arg(&spec.script)
            .arg(spec.settings(false).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        spec.prepare(&mut command);
        let mut child =
            reaper::children()
                .spawn(&mut command)
                .map_err(|source| WorkerError::Spawn {
                    python: spec.python.display().to_string(),
                    source,
                })?;
        let pid = child.id().unwrap_or_default();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(WorkerError::Protocol("worker pipes missing".into()));
        };
        let stderr_tail = new_stderr_tail();
        tokio::spawn(drain_stderr(pid, stderr, Arc::clone(&stderr_tail)));
        let process = Process::spawned(child)
            .map_err(|e| WorkerError::Protocol(format!("cannot watch worker {pid}: {e}")))?;
        Worker::handshake(
            process,
            Box::new(stdout),
            Box::new(stdin),
            stderr_tail,
            spec,
        )
        .await
    }

    /// Waits for a started worker's `ready` frame.
    pub async fn handshake(
        process: Process,
        reader: Reader,
        writer: Writer,
        stderr_tail: StderrTail,
        spec: &WorkerSpec,
    ) -> Result<Worker, WorkerError> {
        let mut worker = Worker {
            pid: process.pid(),
            process,
            reader: FramedRead::new(reader, protocol::codec(spec.max_frame_bytes)),
            writer: FramedWrite::new(writer, protocol::codec(spec.max_frame_bytes)),
            stderr_tail,
            next_id: 1,
            python_version: String::new(),
        };
        let pid = worker.pid;
        match tokio::time::timeout(spec.start_timeout, worker.next_frame()).await {
            Err(_) => Err(WorkerError::StartTimeout(spec.start_timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Frame::Ready {
                python, preload_ms, ..
            })) => {
                tracing::debug!(pid, preload_ms, "worker ready");
                worker.python_version = python;
                Ok(worker)
            }
            Ok(Ok(Frame::Fatal { error })) => Err(WorkerError::Preload(error)),
            Ok(Ok(other)) => Err(WorkerError::Protocol(format!(
                "expected a ready frame, got {other:?}"
            ))),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn python_version(&self) -> &str {
        &self.python_version
    }

    /// False once the process has exited (it may have been killed while idle).
    pub fn is_alive(&mut self) -> bool {
        self.process.is_alive()
    }

    /// Sends SIGINT to the worker (not its group: child processes of the cell are the cell's
    /// business, and the worker turns the signal into a KeyboardInterrupt in user code only).
    pub fn interrupt(&self) {
        process::interrupt(self.pid);
    }

    /// Runs a cell, forwarding streamed output to `events`.
    ///
    /// At the deadline, or when `interrupt` is notified, the worker gets SIGINT; if it has not
    /// answered `interrupt_grace` later, this returns [`WorkerError::Unresponsive`] and the
    /// caller should drop (and so kill) the worker.
    pub async fn execute(
        &mut self,
        cell: &Cell<'_>,
        events: Option<&EventSender>,
        interrupt: &Notify,
    ) -> Result<CellOutcome, WorkerError> {
        let id = self.next_request_id();
        self.send(&Request::Exec {
            id,
            code: cell.code,
            stdin: cell.stdin,
            count: cell.count,
            stream: events.is_some(),
            max_output_bytes: cell.max_output_bytes,
            cpu_seconds: cell.cpu_seconds,
            filename: cell.filename,
        })
        .await?;
        let deadline = Instant::now() + cell.timeout;
        let pid = self.pid;
        let reply = self.read_reply(id, events);
        tokio::pin!(reply);
        let cause = tokio::select! {
            done = &mut reply => return done.map(|done| CellOutcome { done, interrupted: None }),
            limit = cpu_ceiling_reached(pid, cell.cpu_seconds) => {
                return Err(WorkerError::CpuCeiling { seconds: limit });
            }
            _ = tokio::time::sleep_until(deadline) => Interrupt::Deadline,
            _ = interrupt.notified() => Interrupt::Requested,
        };
        tracing::debug!(pid, ?cause, "interrupting the worker");
        process::interrupt(pid);
        tokio::select! {
            done = &mut reply => done.map(|done| CellOutcome { done, interrupted: Some(cause) }),
            _ = tokio::time::sleep(cell.interrupt_grace) => {
                Err(WorkerError::Unresponsive(cause, process::why_unresponsive(pid)))
            }
        }
    }

    /// Binds the worker to a session, for good: into the session's cgroup, then (in the
    /// worker) into its directory and, where the server is root, its user.
    pub async fn attach(
        &mut self,
        dir: &Path,
        sandbox: &SessionSandbox,
    ) -> Result<(), WorkerError> {
        let cwd = dir
            .to_str()
            .ok_or_else(|| WorkerError::Protocol("session directory is not UTF-8".into()))?;
        sandbox.enter(self.pid).map_err(|e| {
            WorkerError::Protocol(format!(
                "cannot move the worker into the session's cgroup: {e}"
            ))
        })?;
        let user = sandbox.credentials().map(|c| protocol::AttachUser {
            uid: c.uid,
            gid: c.gid,
            nproc: sandbox.nproc(),
        });
        let id = self.next_request_id();
        self.control(&Request::Attach { id, cwd, user }).await
    }

    /// Gives the worker a fresh copy of its base namespace.
    pub async fn reset(&mut self) -> Result<(), WorkerError> {
        let id = self.next_request_id();
        self.control(&Request::Reset { id }).await
    }

    /// A request that is not a cell: one `done` frame, no output.
    async fn control(&mut self, request: &Request<'_>) -> Result<(), WorkerError> {
        self.send(request).await?;
        let done = self.read_reply(request.id(), None).await?;
        match done.error {
            None => Ok(()),
            Some(e) => Err(WorkerError::Protocol(format!(
                "{request:?} failed: {}: {}",
                e.ename, e.evalue
            ))),
        }
    }

    fn next_request_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn send(&mut self, request: &Request<'_>) -> Result<(), WorkerError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| WorkerError::Protocol(format!("cannot encode request: {e}")))?;
        if let Err(e) = self.writer.send(Bytes::from(body)).await {
            // A broken pipe means the worker is gone; say how it went.
            return Err(self
                .died_or(WorkerError::Protocol(format!("cannot send request: {e}")))
                .await);
        }
        Ok(())
    }

    async fn read_reply(
        &mut self,
        id: u64,
        events: Option<&EventSender>,
    ) -> Result<Done, WorkerError> {
        let mut stdout = String::new();
        let mut stderr = String::new();
        let mut display = Vec::new();
        loop {
            match self.next_frame().await? {
                Frame::Stream {
                    id: fid,
                    name,
                    text,
                } if fid == id => {
                    if let Some(events) = events {
                        let _ = events.send(Event::Stream {
                            name,
                            text: text.clone(),
                        });
                    }
                    match name {
                        StreamName::Stdout => stdout.push_str(&text),
                        StreamName::Stderr => stderr.push_str(&text),
                    }
                }
                Frame::Display { id: fid, data } if fid == id => {
                    if let Some(events) = events {
                        let _ = events.send(Event::Display(data.clone()));
                    }
                    display.push(data);
                }
                Frame::Done(mut done) if done.id == id => {
                    stdout.push_str(&done.stdout);
                    stderr.push_str(&done.stderr);
                    display.append(&mut done.display);
                    done.stdout = stdout;
                    done.stderr = stderr;
                    done.display = display;
                    return Ok(done);
                }
                other => {
                    return Err(WorkerError::Protocol(format!(
                        "unexpected frame for request {id}: {other:?}"
                    )));
                }
            }
        }
    }

    async fn next_frame(&mut self) -> Result<Frame, WorkerError> {
        match self.reader.next().await {
            Some(Ok(bytes)) => serde_json::from_slice(&bytes)
                .map_err(|e| WorkerError::Protocol(format!("malformed frame: {e}"))),
            Some(Err(e)) => Err(WorkerError::Protocol(format!("cannot read frame: {e}"))),
            None => Err(self
                .died_or(WorkerError::Protocol("pipe closed".into()))
                .await),
        }
    }

    /// After the pipe broke: the worker's death and its cause, or `otherwise` if it lives.
    async fn died_or(&mut self, otherwise: WorkerError) -> WorkerError {
        match tokio::time::timeout(Duration::from_secs(2), self.process.wait()).await {
            Ok(reason) => WorkerError::Died {
                reason,
                stderr: self.stderr_tail(),
            },
            Err(_) => otherwise,
        }
    }

    fn stderr_tail(&self) -> String {
        let tail = self.stderr_tail.lock();
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// Resolves (with the limit) once a cell has used clearly more CPU time than its limit;
/// never without one.
///
/// The worker's own soft RLIMIT_CPU gives the clean CPUTimeLimitExceeded, but code may lift a
/// soft limit (and only a server with CAP_SYS_RESOURCE could lower the hard one and raise it
/// again after the cell), so the server watches the worker's CPU time as well. It first looks
/// after a second, and counts from there: a short cell costs nothing, and the ceiling ends up
/// between the limit plus the grace and that plus the first second's CPU time.
async fn cpu_ceiling_reached(pid: u32, limit: Option<u64>) -> u64 {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval_at(Instant::now() + CPU_CEILING_POLL, CPU_CEILING_POLL);
    tick.tick().await;
    let ceiling = process::cpu_seconds(pid).unwrap_or(0.0) + limit as f64 + CPU_CEILING_GRACE;
    loop {
        tick.tick().await;
        if process::cpu_seconds(pid).is_some_and(|used| used >= ceiling) {
            return limit;
        }
    }
}

/// Logs a worker's own stderr line by line, keeping the last lines in `tail`.
pub async fn drain_stderr(pid: u32, stderr: impl AsyncRead + Unpin, tail: StderrTail) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(pid, "worker stderr: {line}");
        let mut tail = tail.lock();
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
