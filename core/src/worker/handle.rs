//! The handle of one Python worker process, driven over its protocol pipes.
//!
//! The handle owns the process: it starts it (see [`super::spawn`]), waits for the ready
//! handshake, sends requests, reads replies, enforces deadlines (SIGINT first, then the caller
//! kills), notices death, and kills the whole process group when it is killed or dropped, so
//! nothing the worker started outlives it.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::cpu_watch::cpu_ceiling_reached;
use super::stderr_tail::{StderrTail, drain_stderr, new_stderr_tail};
use super::{WorkerError, WorkerSpec};
use crate::process::{self, Process};
use crate::protocol::{self, Done, Frame, MimeBundle, Request, StreamName};
use crate::sandbox::SessionSandbox;

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
    /// Tables and charts as data beside their pictures (`"data"` of the request).
    pub data: bool,
    pub max_table_rows: usize,
    /// The session's package layer, relative to its directory: first on `sys.path`.
    pub packages: Option<&'a str>,
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

pub struct Worker {
    process: Process,
    pid: u32,
    reader: FramedRead<Reader, LengthDelimitedCodec>,
    writer: FramedWrite<Writer, LengthDelimitedCodec>,
    stderr_tail: StderrTail,
    next_id: u64,
    python_version: String,
    /// [`Worker::kill`] ended it (and said why); otherwise `Drop` does.
    killed: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("pid", &self.pid).finish()
    }
}

impl Worker {
    /// Starts a worker process directly (`python worker.py`) and waits until its preload is
    /// done.
    pub async fn start(spec: &WorkerSpec) -> Result<Worker, WorkerError> {
        let mut child = spec.spawn(false, Stdio::piped(), Stdio::piped())?;
        let pid = child.id().unwrap_or_default();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(WorkerError::Protocol("worker pipes missing".into()));
        };
        let stderr_tail = new_stderr_tail();
        tokio::spawn(drain_stderr(pid, stderr, Arc::clone(&stderr_tail)));
        let process = Process::spawned(child)
            .map_err(WorkerError::io(format!("cannot watch worker {pid}")))?;
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
            killed: false,
        };
        let pid = worker.pid;
        let failed = match tokio::time::timeout(spec.start_timeout, worker.next_frame()).await {
            Err(_) => WorkerError::StartTimeout(spec.start_timeout),
            Ok(Err(e)) => e,
            Ok(Ok(Frame::Ready {
                python, preload_ms, ..
            })) => {
                tracing::debug!(pid, preload_ms, "worker ready");
                worker.python_version = python;
                return Ok(worker);
            }
            Ok(Ok(Frame::Fatal { error })) => WorkerError::Preload(error),
            Ok(Ok(other)) => {
                WorkerError::Protocol(format!("expected a ready frame, got {other:?}"))
            }
        };
        worker.kill(&format!("it did not start: {failed}"));
        Err(failed)
    }

    /// Ends the worker and everything in its process group, saying why in the log: the way a
    /// worker is meant to end. (One dropped without this is killed all the same.)
    pub fn kill(mut self, reason: &str) {
        tracing::info!(pid = self.pid, "worker killed: {reason}");
        self.process.kill_group();
        self.killed = true;
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn python_version(&self) -> &str {
        &self.python_version
    }

    /// The CPU time and peak memory the worker has used (what its zombie showed, once it
    /// died: a dead worker's peak memory is not known).
    pub fn usage(&self) -> process::Usage {
        self.process.usage()
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
            data: cell.data,
            max_table_rows: cell.max_table_rows,
            packages: cell.packages,
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
        let entry = sandbox.entry(self.pid);
        if !entry.is_empty() {
            let entered = tokio::task::spawn_blocking(move || entry.run())
                .await
                .map_err(|e| WorkerError::Protocol(format!("cgroup entry task failed: {e}")))?;
            entered.map_err(WorkerError::io(
                "cannot move the worker into the session's cgroup",
            ))?;
        }
        let user = sandbox.credentials().map(|c| protocol::AttachUser {
            uid: c.uid,
            gid: c.gid,
            nproc: sandbox.nproc(),
        });
        let shared = match sandbox.shared_dir() {
            Some(dir) => Some(dir.to_str().ok_or_else(|| {
                WorkerError::Protocol("the shared directory is not UTF-8".into())
            })?),
            None => None,
        };
        let id = self.next_request_id();
        self.control(&Request::Attach {
            id,
            cwd,
            user,
            shared,
        })
        .await
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
                .died_or(WorkerError::io("cannot send a request")(e))
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
            Some(Err(e)) => Err(WorkerError::io("cannot read a frame")(e)),
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

impl Drop for Worker {
    /// The safety net: a worker nobody killed is killed with its process (see
    /// [`Process`]'s `Drop`), so nothing outlives its handle.
    fn drop(&mut self) {
        if !self.killed {
            tracing::debug!(
                pid = self.pid,
                "worker dropped without being killed; killing it"
            );
        }
    }
}
