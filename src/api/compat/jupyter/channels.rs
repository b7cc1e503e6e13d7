//! `/api/kernels/{id}/channels`: a kernel's shell, control and iopub channels over one
//! websocket, in the default JSON framing, translated onto the session.
//!
//! Shell requests are handled one at a time, in order, by a task of the connection's (as a
//! kernel's shell is); control requests (interrupt, shutdown, restart) by another, beside
//! them. An execution streams its output (`SessionManager::execute` with an event channel),
//! so iopub messages go out as the code makes them. What a request causes on iopub goes to
//! the connection that sent it.
//!
//! Every queue is bounded, so a client cannot grow the server's memory: a full shell or
//! control queue stops the reading of the socket (backpressure), a full reply queue makes its
//! producers wait, and a writer that cannot hand the client a message for `WRITE_STALL` (a
//! client that does not read) ends the connection. When the connection ends, the client is
//! gone: queued requests are dropped and the running cell is interrupted.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::message::{self, Request};
use super::{Kernels, spec};
use crate::api::{ApiError, AppState};
use crate::execution::{ExecRequest, Execution};
use crate::protocol::{MimeBundle, StreamName};
use crate::{Error, SessionManager, worker};

/// One websocket's end of a kernel.
struct Kernel {
    manager: Arc<SessionManager>,
    kernels: Arc<Kernels>,
    session: String,
    /// The session's interpreter's spec: what `kernel_info` says.
    spec: spec::Spec,
    /// The `session` of the kernel's message headers (one per connection).
    header_session: String,
    out: mpsc::Sender<String>,
    /// Cancelled when the connection is to close: the kernel was shut down or is gone.
    closing: CancellationToken,
    /// Cancelled when the connection is over (the client left, or stopped reading): nothing
    /// more is sent, queued requests are dropped and the running cell is interrupted.
    gone: CancellationToken,
}

/// Shell requests queued behind the running one before the socket is no longer read.
const SHELL_QUEUE: usize = 64;
/// Control requests queued before the socket is no longer read.
const CONTROL_QUEUE: usize = 16;
/// Messages queued for the writer before their producers wait.
const OUT_QUEUE: usize = 256;
/// How long a message may wait for the client to take it before the connection is ended as
/// not reading.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// How often an idle connection looks whether its session still exists.
const SESSION_CHECK: Duration = Duration::from_secs(5);

pub async fn serve(socket: WebSocket, state: AppState, session: String, spec: spec::Spec) {
    let _connection = state.jupyter.connect(&session);
    let (sink, mut incoming) = socket.split();
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let closing = CancellationToken::new();
    let gone = CancellationToken::new();
    let writer = tokio::spawn(write(sink, out_rx, closing.clone(), gone.clone()));
    let kernel = Arc::new(Kernel {
        manager: state.manager,
        kernels: state.jupyter,
        session,
        spec,
        header_session: message::new_id(),
        out,
        closing: closing.clone(),
        gone: gone.clone(),
    });
    tracing::debug!(session = %kernel.session, "jupyter channels opened");
    let (shell, shell_rx) = mpsc::channel(SHELL_QUEUE);
    let shell_task = tokio::spawn(Arc::clone(&kernel).run_shell(shell_rx));
    let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let control_task = tokio::spawn(Arc::clone(&kernel).run_control(control_rx));
    let mut check = tokio::time::interval(SESSION_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            frame = incoming.next() => frame,
            () = closing.cancelled() => break,
            () = gone.cancelled() => break,
            _ = check.tick() => {
                // A kernel shut down elsewhere (REST, /v1, eviction) ends its connections as
                // a dead kernel's would, without waiting for the next execution to find out.
                if matches!(kernel.manager.info(&kernel.session), Err(Error::SessionNotFound(_) | Error::SessionClosed)) {
                    tracing::debug!(session = %kernel.session, "session gone: channels closing");
                    kernel.closing.cancel();
                }
                continue;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                // Binary frames carry buffers (comms' data): nothing here uses them.
                tracing::debug!(session = %kernel.session, "binary message dropped");
                continue;
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            Some(Ok(_)) => continue, // pings are answered by the websocket layer
        };
        let Some(request) = Request::parse(&text) else {
            tracing::warn!(session = %kernel.session, "not a Jupyter message: dropped");
            continue;
        };
        // A full queue stops the reading here until there is room (or the connection ends).
        let queued = match request.channel.as_str() {
            "control" => Some(control.send(request)),
            "shell" => {
                // A kernel's shutdown and interrupt requests are control messages, but older
                // clients send them on shell: they must not wait behind a running cell.
                if matches!(
                    request.msg_type.as_str(),
                    "shutdown_request" | "interrupt_request"
                ) {
                    Some(control.send(request))
                } else {
                    Some(shell.send(request))
                }
            }
            // stdin: `input_reply`s to requests this kernel never makes.
            other => {
                tracing::debug!(session = %kernel.session, channel = other, msg_type = %request.msg_type, "dropped");
                None
            }
        };
        if let Some(queued) = queued {
            tokio::select! {
                _ = queued => {}
                () = closing.cancelled() => break,
                () = gone.cancelled() => break,
            }
        }
    }
    tracing::debug!(session = %kernel.session, "jupyter channels closed");
    let mut writer = Some(writer);
    if closing.is_cancelled()
        && let Some(writer) = writer.take()
    {
        // The kernel ended: the writer sends what is queued (the shutdown reply, `dead`) and
        // the close frame, each bounded by `WRITE_STALL`.
        let _ = writer.await;
    }
    // The client is gone: what it queued is not run, its running cell is interrupted.
    gone.cancel();
    drop(shell);
    drop(control);
    drop(kernel);
    let _ = shell_task.await;
    let _ = control_task.await;
    if let Some(writer) = writer {
        let _ = writer.await;
    }
}

/// Sends what the kernel says, in order; after `closing`, what is already queued, then the
/// close frame. Ends the connection (`gone`) when the client takes nothing for `WRITE_STALL`.
async fn write(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut out: mpsc::Receiver<String>,
    closing: CancellationToken,
    gone: CancellationToken,
) {
    loop {
        let text = tokio::select! {
            biased;
            () = gone.cancelled() => return,
            text = out.recv() => text,
            () = closing.cancelled() => None,
        };
        let Some(text) = text else { break };
        if !deliver(&mut sink, text, &gone).await {
            return;
        }
    }
    while let Ok(text) = out.try_recv() {
        if !deliver(&mut sink, text, &gone).await {
            return;
        }
    }
    let _ = tokio::time::timeout(WRITE_STALL, sink.close()).await;
}

/// One message to the client; false (and the connection over) when it cannot be sent.
async fn deliver(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    text: String,
    gone: &CancellationToken,
) -> bool {
    let sent = tokio::select! {
        sent = tokio::time::timeout(WRITE_STALL, sink.send(Message::Text(text.into()))) => sent,
        () = gone.cancelled() => return false,
    };
    match sent {
        Ok(Ok(())) => true,
        Ok(Err(_)) => {
            gone.cancel();
            false
        }
        Err(_) => {
            tracing::warn!("jupyter channels: the client takes no messages: connection ended");
            gone.cancel();
            false
        }
    }
}

impl Kernel {
    /// Queues a message for the client, waiting while the queue is full; dropped once the
    /// client is gone (nobody is left to tell).
    async fn send(&self, text: String) {
        tokio::select! {
            biased;
            () = self.gone.cancelled() => {}
            _ = self.out.send(text) => {}
        }
    }

    async fn reply(&self, request: &Request, content: Value) {
        self.send(request.reply(&self.header_session, content))
            .await;
    }

    async fn iopub(&self, request: &Request, msg_type: &str, content: Value) {
        self.send(request.iopub(&self.header_session, msg_type, content))
            .await;
    }

    async fn status(&self, request: &Request, state: &str) {
        self.iopub(request, "status", json!({"execution_state": state}))
            .await;
    }

    /// The next queued request; None once the client is gone (what is queued is dropped) or
    /// the queue closed.
    async fn next_request(&self, requests: &mut mpsc::Receiver<Request>) -> Option<Request> {
        tokio::select! {
            biased;
            () = self.gone.cancelled() => None,
            request = requests.recv() => request,
        }
    }

    async fn run_control(self: Arc<Self>, mut requests: mpsc::Receiver<Request>) {
        while let Some(request) = self.next_request(&mut requests).await {
            Arc::clone(&self).control(request).await;
        }
    }

    async fn run_shell(self: Arc<Self>, mut requests: mpsc::Receiver<Request>) {
        while let Some(request) = self.next_request(&mut requests).await {
            if self.closing.is_cancelled() {
                return;
            }
            let failed = self.shell(&request).await;
            // `stop_on_error`: what was sent before the failure was known is aborted, as a
            // kernel aborts its queue.
            if failed {
                while let Ok(queued) = requests.try_recv() {
                    if self.gone.is_cancelled() {
                        return;
                    }
                    if queued.msg_type == "execute_request" {
                        self.status(&queued, "busy").await;
                        self.reply(
                            &queued,
                            json!({"status": "aborted", "execution_count": Value::Null}),
                        )
                        .await;
                        self.status(&queued, "idle").await;
                    } else {
                        self.shell(&queued).await;
                    }
                }
            }
        }
    }

    /// One shell request, between `busy` and `idle`; true when it was an execution that
    /// failed and asked to stop the queue on an error.
    async fn shell(&self, request: &Request) -> bool {
        self.status(request, "busy").await;
        let mut failed = false;
        match request.msg_type.as_str() {
            "execute_request" => failed = self.execute(request).await,
            "kernel_info_request" => self.reply(request, self.kernel_info()).await,
            // What replpool has no machinery for is answered empty, so that front ends that
            // ask do not wait for ever.
            "complete_request" => {
                let cursor = request
                    .content
                    .get("cursor_pos")
                    .cloned()
                    .unwrap_or(json!(0));
                self.reply(
                    request,
                    json!({"status": "ok", "matches": [], "cursor_start": cursor,
                           "cursor_end": cursor, "metadata": {}}),
                )
                .await;
            }
            "inspect_request" => {
                self.reply(
                    request,
                    json!({"status": "ok", "found": false, "data": {}, "metadata": {}}),
                )
                .await
            }
            "is_complete_request" => self.reply(request, json!({"status": "unknown"})).await,
            "comm_info_request" => {
                self.reply(request, json!({"status": "ok", "comms": {}}))
                    .await
            }
            "history_request" => self.reply(request, self.history(request)).await,
            "comm_open" => {
                // No comm targets: the front end is told the comm is closed, as ipykernel
                // does for a target it does not know.
                let comm_id = request
                    .content
                    .get("comm_id")
                    .cloned()
                    .unwrap_or(Value::Null);
                self.iopub(
                    request,
                    "comm_close",
                    json!({"comm_id": comm_id, "data": {}}),
                )
                .await;
            }
            other => {
                tracing::debug!(session = %self.session, msg_type = other, "unhandled shell message")
            }
        }
        self.status(request, "idle").await;
        failed
    }

    fn kernel_info(&self) -> Value {
        spec::kernel_info(&self.spec)
    }

    /// The session's history as `history_reply` tuples: `(session, line, input)`, or
    /// `(session, line, (input, output))` when output is asked for (the result's text).
    fn history(&self, request: &Request) -> Value {
        let entries = self.manager.history(&self.session).unwrap_or_default();
        let output = request.content_bool("output").unwrap_or(false);
        let tail = match request.content_str("hist_access_type") {
            Some("tail") => request.content.get("n").and_then(Value::as_u64),
            _ => None,
        };
        let skip = tail.map_or(0, |n| {
            entries
                .len()
                .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX))
        });
        let history: Vec<Value> = entries
            .iter()
            .skip(skip)
            .map(|entry| {
                let count = entry.execution.execution_count;
                if output {
                    let text = entry
                        .execution
                        .result
                        .as_ref()
                        .and_then(|r| r.get("text/plain").cloned())
                        .unwrap_or(Value::Null);
                    json!([0, count, [entry.code, text]])
                } else {
                    json!([0, count, entry.code])
                }
            })
            .collect();
        json!({"status": "ok", "history": history})
    }

    /// Runs an `execute_request`: `execute_input`, the output as it comes (`stream`,
    /// `display_data`), then `execute_result` or `error`, and the `execute_reply`. Returns
    /// whether it failed with `stop_on_error` (the default).
    async fn execute(&self, request: &Request) -> bool {
        let code = request.content_str("code").unwrap_or_default().to_owned();
        // `silent`: no `execute_input` and no `execute_result`, as a kernel does; replpool
        // counts every execution all the same (so does `store_history: false`).
        let silent = request.content_bool("silent").unwrap_or(false);
        let stop_on_error = request.content_bool("stop_on_error").unwrap_or(true);
        if !silent {
            let next = self
                .manager
                .info(&self.session)
                .map_or(0, |info| info.execution_count + 1);
            self.iopub(
                request,
                "execute_input",
                json!({"code": code, "execution_count": next}),
            )
            .await;
        }
        let exec = ExecRequest {
            code,
            stdin: None,
            timeout: Some(self.kernels.cell_timeout),
            filename: None,
            // A front end shows the richest type it renders: the table and chart JSON are for
            // those that render them (nteract's data explorer), the rest fall back to HTML/PNG.
            data: true,
            // `%pip install` in a notebook's cell installs, as in a Jupyter kernel.
            pip_magic: true,
        };
        let (events, mut events_rx) = mpsc::unbounded_channel();
        let manager = Arc::clone(&self.manager);
        let session = self.session.clone();
        let run =
            tokio::spawn(async move { manager.execute(&session, &exec, Some(&events)).await });
        let mut interrupted = false;
        loop {
            let event = tokio::select! {
                event = events_rx.recv() => event,
                () = self.gone.cancelled(), if !interrupted => {
                    // Nobody is left to see the cell: it stops, as the REST interrupt stops it.
                    interrupted = true;
                    let _ = self.manager.interrupt(&self.session);
                    continue;
                }
            };
            let Some(event) = event else { break };
            match event {
                worker::Event::Stream { name, text } => self.stream(request, name, text).await,
                worker::Event::Display(bundle) => self.display(request, bundle).await,
            }
        }
        let result = run
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("the execution task failed: {e}"))));
        match result {
            Ok(execution) => self.finish(request, execution, silent).await && stop_on_error,
            Err(e) => {
                let gone = matches!(e, Error::SessionNotFound(_) | Error::SessionClosed);
                let error = ApiError::from(e);
                let content = json!({
                    "ename": "ReplpoolError",
                    "evalue": format!("{} ({}): {}", error.code, error.category, error.message),
                    "traceback": [format!("ReplpoolError: {}", error.message)],
                });
                self.iopub(request, "error", content.clone()).await;
                let mut reply = content;
                reply["status"] = json!("error");
                reply["execution_count"] = Value::Null;
                self.reply(request, reply).await;
                if gone {
                    // The kernel was shut down elsewhere (REST, /v1, eviction): as a dead
                    // kernel's would, the connection ends.
                    self.status(request, "dead").await;
                    self.closing.cancel();
                }
                stop_on_error
            }
        }
    }

    async fn stream(&self, request: &Request, name: StreamName, text: String) {
        let name = match name {
            StreamName::Stdout => "stdout",
            StreamName::Stderr => "stderr",
        };
        self.iopub(request, "stream", json!({"name": name, "text": text}))
            .await;
    }

    async fn display(&self, request: &Request, bundle: MimeBundle) {
        self.iopub(
            request,
            "display_data",
            json!({"data": bundle, "metadata": {}, "transient": {}}),
        )
        .await;
    }

    /// The end of a cell: its value and its error (its output and displays went out as they
    /// came; the reply repeats them for the history); true when it failed.
    async fn finish(&self, request: &Request, execution: Execution, silent: bool) -> bool {
        let count = execution.execution_count;
        if let Some(result) = execution.result
            && !silent
        {
            self.iopub(
                request,
                "execute_result",
                json!({"execution_count": count, "data": result, "metadata": {}}),
            )
            .await;
        }
        match execution.error {
            Some(error) => {
                let content = json!({
                    "ename": error.ename,
                    "evalue": error.evalue,
                    "traceback": error.traceback,
                });
                self.iopub(request, "error", content.clone()).await;
                let mut reply = content;
                reply["status"] = json!("error");
                reply["execution_count"] = json!(count);
                if let Some(category) = execution.category {
                    // replpool's word for the failure, where a reply has room for it.
                    reply["category"] = json!(category);
                }
                self.reply(request, reply).await;
                true
            }
            None => {
                self.reply(
                    request,
                    json!({"status": "ok", "execution_count": count,
                           "user_expressions": {}, "payload": []}),
                )
                .await;
                false
            }
        }
    }

    /// A control request, handled at once (beside a running cell).
    async fn control(self: Arc<Self>, request: Request) {
        self.status(&request, "busy").await;
        match request.msg_type.as_str() {
            "kernel_info_request" => self.reply(&request, self.kernel_info()).await,
            "interrupt_request" => {
                let _ = self.manager.interrupt(&self.session);
                self.reply(&request, json!({"status": "ok"})).await;
            }
            "shutdown_request" => {
                let restart = request.content_bool("restart").unwrap_or(false);
                if restart {
                    let status = match super::restart(&self.manager, &self.session).await {
                        Ok(_) => "ok",
                        Err(e) => {
                            tracing::warn!(session = %self.session, "restart refused: {e}");
                            "error"
                        }
                    };
                    self.reply(&request, json!({"status": status, "restart": true}))
                        .await;
                } else {
                    let _ = self.manager.delete(&self.session);
                    self.reply(&request, json!({"status": "ok", "restart": false}))
                        .await;
                    self.status(&request, "dead").await;
                    self.closing.cancel();
                    return;
                }
            }
            other => {
                tracing::debug!(session = %self.session, msg_type = other, "unhandled control message")
            }
        }
        self.status(&request, "idle").await;
    }
}
