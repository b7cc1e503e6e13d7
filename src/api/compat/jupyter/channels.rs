//! `/api/kernels/{id}/channels`: a kernel's shell, control and iopub channels over one
//! websocket, in the default JSON framing, translated onto the session.
//!
//! Shell requests are handled one at a time, in order, by a task of the connection's (as a
//! kernel's shell is); control requests (interrupt, shutdown, restart) are handled at once,
//! beside them. An execution runs in a task of its own and streams its output
//! (`SessionManager::execute` with an event channel), so iopub messages go out as the code
//! makes them, and a client that goes away does not stop a cell half-way. What a request
//! causes on iopub goes to the connection that sent it.

use std::sync::Arc;

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
    /// The `session` of the kernel's message headers (one per connection).
    header_session: String,
    out: mpsc::UnboundedSender<String>,
    /// Cancelled when the connection is to close: the kernel was shut down or is gone.
    closing: CancellationToken,
}

pub async fn serve(socket: WebSocket, state: AppState, session: String) {
    let _connection = state.jupyter.connect(&session);
    let (sink, mut incoming) = socket.split();
    let (out, out_rx) = mpsc::unbounded_channel();
    let closing = CancellationToken::new();
    let writer = tokio::spawn(write(sink, out_rx, closing.clone()));
    let kernel = Arc::new(Kernel {
        manager: state.manager,
        kernels: state.jupyter,
        session,
        header_session: message::new_id(),
        out,
        closing: closing.clone(),
    });
    tracing::debug!(session = %kernel.session, "jupyter channels opened");
    let (shell, shell_rx) = mpsc::unbounded_channel();
    tokio::spawn(Arc::clone(&kernel).run_shell(shell_rx));
    loop {
        let frame = tokio::select! {
            frame = incoming.next() => frame,
            () = closing.cancelled() => break,
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
        match request.channel.as_str() {
            "control" => {
                tokio::spawn(Arc::clone(&kernel).control(request));
            }
            "shell" => {
                // A kernel's shutdown and interrupt requests are control messages, but older
                // clients send them on shell: they must not wait behind a running cell.
                if matches!(
                    request.msg_type.as_str(),
                    "shutdown_request" | "interrupt_request"
                ) {
                    tokio::spawn(Arc::clone(&kernel).control(request));
                } else {
                    let _ = shell.send(request);
                }
            }
            // stdin: `input_reply`s to requests this kernel never makes.
            other => {
                tracing::debug!(session = %kernel.session, channel = other, msg_type = %request.msg_type, "dropped");
            }
        }
    }
    tracing::debug!(session = %kernel.session, "jupyter channels closed");
    // The shell task ends after what was queued (as a kernel would run it); the writer once
    // every sender is gone, or at once when the kernel is closing.
    drop(shell);
    drop(kernel);
    let _ = writer.await;
}

/// Sends what the kernel says, in order; after `closing`, what is already queued, then the
/// close frame.
async fn write(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut out: mpsc::UnboundedReceiver<String>,
    closing: CancellationToken,
) {
    loop {
        let text = tokio::select! {
            biased;
            text = out.recv() => text,
            () = closing.cancelled() => None,
        };
        let Some(text) = text else { break };
        if sink.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
    while let Ok(text) = out.try_recv() {
        if sink.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

impl Kernel {
    fn send(&self, text: String) {
        // The writer is gone only with the connection: nobody is left to tell.
        let _ = self.out.send(text);
    }

    fn reply(&self, request: &Request, content: Value) {
        self.send(request.reply(&self.header_session, content));
    }

    fn iopub(&self, request: &Request, msg_type: &str, content: Value) {
        self.send(request.iopub(&self.header_session, msg_type, content));
    }

    fn status(&self, request: &Request, state: &str) {
        self.iopub(request, "status", json!({"execution_state": state}));
    }

    async fn run_shell(self: Arc<Self>, mut requests: mpsc::UnboundedReceiver<Request>) {
        while let Some(request) = requests.recv().await {
            if self.closing.is_cancelled() {
                return;
            }
            let failed = self.shell(&request).await;
            // `stop_on_error`: what was sent before the failure was known is aborted, as a
            // kernel aborts its queue.
            if failed {
                while let Ok(queued) = requests.try_recv() {
                    if queued.msg_type == "execute_request" {
                        self.status(&queued, "busy");
                        self.reply(
                            &queued,
                            json!({"status": "aborted", "execution_count": Value::Null}),
                        );
                        self.status(&queued, "idle");
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
        self.status(request, "busy");
        let mut failed = false;
        match request.msg_type.as_str() {
            "execute_request" => failed = self.execute(request).await,
            "kernel_info_request" => self.reply(request, self.kernel_info()),
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
                );
            }
            "inspect_request" => self.reply(
                request,
                json!({"status": "ok", "found": false, "data": {}, "metadata": {}}),
            ),
            "is_complete_request" => self.reply(request, json!({"status": "unknown"})),
            "comm_info_request" => self.reply(request, json!({"status": "ok", "comms": {}})),
            "history_request" => self.reply(request, self.history(request)),
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
                );
            }
            other => {
                tracing::debug!(session = %self.session, msg_type = other, "unhandled shell message")
            }
        }
        self.status(request, "idle");
        failed
    }

    fn kernel_info(&self) -> Value {
        spec::kernel_info(
            self.manager.python_version().as_deref(),
            &self.kernels.preload,
        )
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
            );
        }
        let exec = ExecRequest {
            code,
            stdin: None,
            timeout: Some(self.kernels.cell_timeout),
            filename: None,
            // A front end shows the richest type it renders: the table and chart JSON are for
            // those that render them (nteract's data explorer), the rest fall back to HTML/PNG.
            data: true,
        };
        let (events, mut events_rx) = mpsc::unbounded_channel();
        let manager = Arc::clone(&self.manager);
        let session = self.session.clone();
        let run =
            tokio::spawn(async move { manager.execute(&session, &exec, Some(&events)).await });
        while let Some(event) = events_rx.recv().await {
            match event {
                worker::Event::Stream { name, text } => self.stream(request, name, text),
                worker::Event::Display(bundle) => self.display(request, bundle),
            }
        }
        let result = run
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("the execution task failed: {e}"))));
        match result {
            Ok(execution) => self.finish(request, execution, silent) && stop_on_error,
            Err(e) => {
                let gone = matches!(e, Error::SessionNotFound(_) | Error::SessionClosed);
                let error = ApiError::from(e);
                let content = json!({
                    "ename": "ReplpoolError",
                    "evalue": format!("{} ({}): {}", error.code, error.category, error.message),
                    "traceback": [format!("ReplpoolError: {}", error.message)],
                });
                self.iopub(request, "error", content.clone());
                let mut reply = content;
                reply["status"] = json!("error");
                reply["execution_count"] = Value::Null;
                self.reply(request, reply);
                if gone {
                    // The kernel was shut down elsewhere (REST, /v1, eviction): as a dead
                    // kernel's would, the connection ends.
                    self.status(request, "dead");
                    self.closing.cancel();
                }
                stop_on_error
            }
        }
    }

    fn stream(&self, request: &Request, name: StreamName, text: String) {
        let name = match name {
            StreamName::Stdout => "stdout",
            StreamName::Stderr => "stderr",
        };
        self.iopub(request, "stream", json!({"name": name, "text": text}));
    }

    fn display(&self, request: &Request, bundle: MimeBundle) {
        self.iopub(
            request,
            "display_data",
            json!({"data": bundle, "metadata": {}, "transient": {}}),
        );
    }

    /// The end of a cell: its value and its error (its output and displays went out as they
    /// came; the reply repeats them for the history); true when it failed.
    fn finish(&self, request: &Request, execution: Execution, silent: bool) -> bool {
        let count = execution.execution_count;
        if let Some(result) = execution.result
            && !silent
        {
            self.iopub(
                request,
                "execute_result",
                json!({"execution_count": count, "data": result, "metadata": {}}),
            );
        }
        match execution.error {
            Some(error) => {
                let content = json!({
                    "ename": error.ename,
                    "evalue": error.evalue,
                    "traceback": error.traceback,
                });
                self.iopub(request, "error", content.clone());
                let mut reply = content;
                reply["status"] = json!("error");
                reply["execution_count"] = json!(count);
                if let Some(category) = execution.category {
                    // replpool's word for the failure, where a reply has room for it.
                    reply["category"] = json!(category);
                }
                self.reply(request, reply);
                true
            }
            None => {
                self.reply(
                    request,
                    json!({"status": "ok", "execution_count": count,
                           "user_expressions": {}, "payload": []}),
                );
                false
            }
        }
    }

    /// A control request, handled at once (beside a running cell).
    async fn control(self: Arc<Self>, request: Request) {
        self.status(&request, "busy");
        match request.msg_type.as_str() {
            "kernel_info_request" => self.reply(&request, self.kernel_info()),
            "interrupt_request" => {
                let _ = self.manager.interrupt(&self.session);
                self.reply(&request, json!({"status": "ok"}));
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
                    self.reply(&request, json!({"status": status, "restart": true}));
                } else {
                    let _ = self.manager.delete(&self.session);
                    self.reply(&request, json!({"status": "ok", "restart": false}));
                    self.status(&request, "dead");
                    self.closing.cancel();
                    return;
                }
            }
            other => {
                tracing::debug!(session = %self.session, msg_type = other, "unhandled control message")
            }
        }
        self.status(&request, "idle");
    }
}
