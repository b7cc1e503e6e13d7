//! Serving the API over HTTP/1.1: the accept loop with its cap on connections, and the read
//! deadlines that keep a slow or silent client from holding a connection (a slowloris).
//!
//! hyper's own header timer runs from the moment it waits for a request head, so it cannot tell
//! a slow head from a connection idle between requests. Each connection therefore has a
//! watchdog of its own that knows which of the two it is — bytes received with no request in
//! progress, or nothing received — and closes it at the matching deadline
//! (`server.header_read_timeout_ms`, `server.keep_alive_timeout_ms`). hyper's timer stays on as
//! a backstop, set past both. A request body has a deadline of its own
//! (`server.body_read_timeout_ms`), which a handler reading it turns into 408 (`api/error.rs`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::timeout::DeadlineBody;

/// How long a client may take, and how many may be served at once.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read: Duration,
    pub body_read: Duration,
    pub keep_alive: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `draining` is cancelled; then stops accepting, lets every
/// connection finish the request it is on (idle ones close at once) and returns when all have
/// closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    draining: CancellationToken,
) {
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        // A slot before the accept: at the cap, clients wait in the kernel's listen backlog
        // rather than being accepted and refused.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = draining.cancelled() => break,
        };
        let Ok(slot) = slot else { break }; // the semaphore is never closed
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = draining.cancelled() => break,
        };
        connections.spawn(serve_connection(
            stream,
            app.clone(),
            limits.clone(),
            draining.clone(),
            slot,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// An accept that failed. A connection reset before it was accepted is that client's problem;
/// anything else (out of descriptors or memory) gets a pause, so the loop does not spin while
/// it lasts.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    ) {
        tracing::debug!("accept: {e}");
        return;
    }
    tracing::warn!("accept failed: {e}; pausing 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: Arc<Limits>,
    draining: CancellationToken,
    slot: OwnedSemaphorePermit,
) {
    // Without Nagle: a websocket (or an SSE stream) writes many small frames as the code makes
    // them, and each would wait for the ACK of the one before (a client delays its ACK up to
    // 40 ms). A plain reply is one write either way. A refusal only costs that latency.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY refused: {e}");
    }
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
        _slot: slot,
    });
    let service = {
        let activity = activity.clone();
        let body_read = limits.body_read;
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_progress = activity.request_started();
            let app = app.clone();
            async move {
                let request = request.map(|body| DeadlineBody::new(body_read, body));
                let response = app.oneshot(request).await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| Tracked {
                    body,
                    _in_progress: in_progress,
                }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read + limits.keep_alive);
    // With upgrades: a Jupyter kernel's websocket (`101 Switching Protocols`) goes on past this
    // function, on the same socket, without the deadlines below (an idle websocket is a
    // notebook left open); its connection slot goes with the socket.
    let mut connection = std::pin::pin!(builder.serve_connection(io, service).with_upgrades());
    let mut drained = std::pin::pin!(draining.cancelled());
    let mut watchdog = std::pin::pin!(tokio::time::sleep(limits.keep_alive));
    let mut armed: Option<Instant> = None;
    let mut shutting_down = false;
    std::future::poll_fn(|cx| {
        if !shutting_down && drained.as_mut().poll(cx).is_ready() {
            shutting_down = true;
            connection.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(served) = connection.as_mut().poll(cx) {
            if let Err(e) = served {
                tracing::debug!("connection ended: {e}");
            }
            return Poll::Ready(());
        }
        // Whatever hyper just did (bytes in, a request begun or answered) is in `activity`
        // now, so the deadline is looked at after every poll of the connection: no wake-up
        // of the task is needed to move it.
        let deadline = activity.deadline(&limits);
        if deadline != armed {
            armed = deadline;
            if let Some(at) = deadline {
                watchdog.as_mut().reset(at);
            }
        }
        if armed.is_some() && watchdog.as_mut().poll(cx).is_ready() {
            // Dropping the connection closes it; no request is in progress, so no answer is
            // lost.
            tracing::debug!("closing a connection that sent no complete request in time");
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await
}

/// What a connection is doing, as far as its deadlines care: requests in progress (from the
/// end of the head to the end of the response), since when it has been idle, and since when
/// a request head has been arriving.
///
/// All of it changes while hyper polls the connection, inside the same task as the watchdog,
/// which therefore looks at it after every poll of the connection (no notification, so no
/// wake-up of the task for each request).
struct Activity {
    born: Instant,
    requests: AtomicUsize,
    /// Milliseconds since `born`.
    idle_since: AtomicU64,
    /// Milliseconds since `born`, or [`Activity::NONE`].
    head_since: AtomicU64,
}

impl Activity {
    const NONE: u64 = u64::MAX;

    fn new() -> Activity {
        Activity {
            born: Instant::now(),
            requests: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(Self::NONE),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(Self::NONE - 1)
    }

    /// Bytes came in. With no request in progress, they are the start of a request head.
    fn received(&self) {
        if self.requests.load(Ordering::Acquire) == 0 {
            // Only the first bytes of a head start its clock.
            let _ = self.head_since.compare_exchange(
                Self::NONE,
                self.now(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// A request head was read; the request is in progress until the guard drops (its
    /// response sent, or abandoned).
    fn request_started(self: &Arc<Self>) -> InProgress {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(Self::NONE, Ordering::Release);
        InProgress(self.clone())
    }

    /// When the connection is to be closed if nothing changes; none while a request is in
    /// progress (its body has a deadline of its own, and the handler may take its time).
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.requests.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, after: Duration| self.born + Duration::from_millis(ms) + after;
        match self.head_since.load(Ordering::Acquire) {
            Self::NONE => Some(at(
                self.idle_since.load(Ordering::Acquire),
                limits.keep_alive,
            )),
            since => Some(at(since, limits.header_read)),
        }
    }
}

struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.idle_since.store(activity.now(), Ordering::Release);
            activity.head_since.store(Activity::NONE, Ordering::Release);
        }
    }
}

/// The connection's socket, telling its [`Activity`] when bytes arrive.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// The connection's place under `server.max_connections`, held as long as the socket.
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in progress until it is sent (or dropped): a long
/// stream of events is a request in progress, not an idle connection.
struct Tracked {
    body: axum::body::Body,
    _in_progress: InProgress,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
