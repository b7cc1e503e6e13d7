//! The MCP server: replpool's sessions as Model Context Protocol tools, for assistants.
//!
//! One [`McpServer`] per MCP connection (rmcp makes one per `initialize`), over the same
//! [`SessionManager`] as the HTTP API: the sessions its tools create are ordinary sessions of
//! the caller (the bearer token's owner over HTTP, no owner over stdio), with the same limits
//! and eviction. Sessions are explicit handles in the tools' arguments, not tied to the MCP
//! connection, so they outlive it and are visible in `/v1/sessions`. `/mcp` mounts it
//! (`crate::api`), `replpool mcp` serves it on stdio or bridges stdio to a running server's
//! `/mcp` (the binary's `mcp_stdio`).

pub mod content;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ResourceContents,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::{Peer, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::task::AbortOnDropHandle;

use crate::api::{ApiError, Caller};
use crate::execution::{Category, ExecRequest, Execution};
use crate::worker::Event;
use crate::{Config, Error, SessionManager};

/// What every connection's server shares: the sessions and `[mcp]`.
#[derive(Clone)]
pub struct McpServer {
    manager: Arc<SessionManager>,
    settings: Arc<Settings>,
    tool_router: ToolRouter<McpServer>,
}

/// `[mcp]`, as the tools use it.
#[derive(Debug)]
struct Settings {
    max_inline_image_bytes: usize,
    progress_interval: Duration,
}

const INSTRUCTIONS: &str = "replpool runs Python in warm sessions with numpy, pandas and \
matplotlib already imported. create_session gives a session_id; run_python with it runs cells \
that share variables (run_python without a session_id runs once in a fresh interpreter). \
Plots come back as PNG images. Files live in the session's working directory (upload_file, \
read_file, list_files). A missing module: install_packages into the session. close_session when \
done.";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunPython {
    /// The session to run in (from create_session): variables, imports and files persist
    /// between its cells. Omit it to run once in a fresh interpreter that is thrown away.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Python source: one cell. The value of its last expression is returned as the result;
    /// matplotlib figures are returned as images.
    pub code: String,
    /// Deadline in seconds (default and maximum: the server's execution limits). The cell is
    /// interrupted when it passes.
    #[serde(default)]
    #[schemars(range(min = 0.001))]
    pub timeout_s: Option<f64>,
    /// Only without session_id: the Python to run the one-shot on, as create_session's
    /// python. A session keeps the interpreter it was created with.
    #[serde(default)]
    pub python: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// The Python to start: an interpreter's name, or a version (`3.12` is the first
    /// interpreter whose version is 3.12.x). Default: the server's first interpreter. An
    /// unknown one is refused with the list of those there are.
    #[serde(default)]
    pub python: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionArg {
    /// The session (from create_session).
    pub session_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallPackages {
    /// The session (from create_session).
    pub session_id: String,
    /// Requirements, one package each: `seaborn`, `seaborn==0.13.2`, `humanize>=4`.
    pub requirements: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadFile {
    /// The session (from create_session).
    pub session_id: String,
    /// Where to write, relative to the session's working directory (the code's cwd); may
    /// contain `/` (directories are made).
    pub path: String,
    /// The file's content: text as is, or base64 with encoding "base64".
    pub content: String,
    /// "text" (default: content is written as UTF-8) or "base64" (content is decoded first,
    /// for binary files).
    #[serde(default)]
    pub encoding: Encoding,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Text,
    Base64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFile {
    /// The session (from create_session).
    pub session_id: String,
    /// Relative to the session's working directory.
    pub path: String,
}

impl McpServer {
    pub fn new(manager: Arc<SessionManager>, config: &Config) -> McpServer {
        McpServer {
            manager,
            settings: Arc::new(Settings {
                max_inline_image_bytes: config.mcp.max_inline_image_bytes,
                progress_interval: Duration::from_millis(config.mcp.progress_interval_ms),
            }),
            tool_router: Self::tool_router(),
        }
    }

    /// The session, if it is the caller's: another owner's is as unknown as a made-up id.
    fn authorize(
        &self,
        id: &str,
        context: &RequestContext<RoleServer>,
    ) -> Result<(), CallToolResult> {
        self.manager
            .authorize(id, owner(context).as_deref())
            .map_err(refusal)
    }
}

/// The caller over HTTP: what the auth middleware put in the request that carried the call
/// (every POST to `/mcp` passes it). Over stdio there is no request, and no owner.
fn owner(context: &RequestContext<RoleServer>) -> Option<String> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .and_then(|caller| caller.owner().map(str::to_owned))
}

/// A refused call as a tool error the model can read: the code and category first, and the
/// service's error object (`{"error": {"code", "message", "category"}}`) as structured content
/// beside it.
fn refusal(error: impl Into<ApiError>) -> CallToolResult {
    let error: ApiError = error.into();
    let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
        "{} ({}): {}",
        error.code, error.category, error.message
    ))]);
    result.structured_content = Some(error.body());
    result
}

fn invalid(message: &str) -> CallToolResult {
    refusal(ApiError::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        crate::api::ErrorCode::InvalidRequest,
        message,
    ))
}

fn done(text: String, structured: serde_json::Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

type ToolResult = Result<CallToolResult, ErrorData>;

#[tool_router]
impl McpServer {
    /// A new session.
    #[tool(
        description = "Start a Python session (a warm interpreter with numpy, pandas and matplotlib imported) and return its session_id and which Python it runs (python chooses one by name or version). Pass the session_id to run_python so that cells share variables, and to the file tools. Sessions idle for long are ended by the server; close_session ends one now."
    )]
    async fn create_session(
        &self,
        Parameters(args): Parameters<CreateSession>,
        context: RequestContext<RoleServer>,
    ) -> ToolResult {
        Ok(
            match self
                .manager
                .create_on(owner(&context).as_deref(), args.python.as_deref())
                .await
            {
                Ok(info) => done(
                    format!(
                        "session_id: {}\npython: {} ({})\nPass it to run_python, upload_file, read_file, list_files, install_packages, reset_session and close_session.",
                        info.session_id, info.python.name, info.python.version
                    ),
                    json!({"session_id": info.session_id, "python": info.python}),
                ),
                Err(e) => refusal(e),
            },
        )
    }

    #[tool(
        description = "Run Python code and return what it printed (stdout, stderr), the value of its last expression, any error (with its category: syntax, runtime, timeout, interrupted, memory, ...) and each matplotlib figure as a PNG image (a large one as a resource link). With session_id, variables persist between calls; without, the code runs once in a fresh interpreter (of the Python that python names, if given)."
    )]
    async fn run_python(
        &self,
        Parameters(args): Parameters<RunPython>,
        context: RequestContext<RoleServer>,
    ) -> ToolResult {
        let timeout = match args.timeout_s {
            None => None,
            Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t.min(1e9))),
            Some(_) => return Ok(invalid("timeout_s must be a positive number of seconds")),
        };
        if let (Some(id), Some(_)) = (&args.session_id, &args.python) {
            // A tool error, as rmcp makes of arguments that do not deserialize: the model
            // reads it and calls again.
            return Ok(invalid(&format!(
                "python chooses the interpreter of a one-shot; session {id} already has its interpreter (chosen by create_session): omit python, or session_id"
            )));
        }
        if let Some(id) = &args.session_id
            && let Err(refused) = self.authorize(id, &context)
        {
            return Ok(refused);
        }
        let request = ExecRequest {
            code: args.code,
            stdin: None,
            timeout,
            filename: None,
            // The tool's content is text and PNGs: tables and charts as JSON would cost the
            // worker their making and reach no one.
            data: false,
            // A model writes `%pip install` as it would in a notebook.
            pip_magic: true,
        };
        let execution = self
            .execute(
                args.session_id.as_deref(),
                args.python.as_deref(),
                &request,
                &context,
            )
            .await;
        let large = match &args.session_id {
            Some(session_id) => content::LargeFigures::Link { session_id },
            None => content::LargeFigures::Omit,
        };
        Ok(match execution {
            Ok(execution) => {
                content::execution_result(&execution, self.settings.max_inline_image_bytes, &large)
            }
            Err(e) => refusal(e),
        })
    }

    #[tool(
        description = "Write a file into a session's working directory (the code's cwd), making its directories: text, or binary as base64 with encoding \"base64\"."
    )]
    async fn upload_file(
        &self,
        Parameters(args): Parameters<UploadFile>,
        context: RequestContext<RoleServer>,
    ) -> ToolResult {
        if let Err(refused) = self.authorize(&args.session_id, &context) {
            return Ok(refused);
        }
        let data = match args.encoding {
            Encoding::Text => args.content.into_bytes(),
            Encoding::Base64 => match content::decode(&args.content) {
                Ok(data) => data,
                Err(e) => return Ok(invalid(&format!("content is not base64: {e}"))),
            },
        };
        let size = data.len();
        Ok(
            match self
                .manager
                .put_file(&args.session_id, &args.path, data.into())
                .await
            {
                Ok(()) => done(
                    format!("wrote {} ({size} bytes)", args.path),
                    json!({"path": args.path, "size": size}),
                ),
                Err(e) => refusal(e),
            },
        )
    }

    #[tool(
        description = "Read a file from a session's working directory: text as text, an image (PNG, JPEG, GIF, WebP) as an image, other binary files as base64."
    )]
    async fn read_file(
        &self,
        Parameters(args): Parameters<ReadFile>,
        context: RequestContext<RoleServer>,
    ) -> ToolResult {
        if let Err(refused) = self.authorize(&args.session_id, &context) {
            return Ok(refused);
        }
        let data = match self.manager.get_file(&args.session_id, &args.path).await {
            Ok(data) => data,
            Err(e) => return Ok(refusal(e)),
        };
        let mime = crate::files::content_type(&args.path);
        if matches!(
            mime,
            "image/png" | "image/jpeg" | "image/gif" | "image/webp"
        ) {
            return Ok(CallToolResult::success(vec![ContentBlock::image(
                content::encode(&data),
                mime,
            )]));
        }
        Ok(match String::from_utf8(data) {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(e) => {
                let data = e.into_bytes();
                CallToolResult::success(vec![
                    ContentBlock::text(format!(
                        "{} is binary ({mime}, {} bytes); its content, base64:",
                        args.path,
                        data.len()
                    )),
                    ContentBlock::text(content::encode(&data)),
                ])
            }
        })
    }

    #[tool(
        description = "List the files in a session's working directory (recursively): path and size in bytes of each."
    )]
    async fn list_files(
        &self,
        Parameters(args): Parameters<SessionArg>,
        context: RequestContext<RoleServer>,
    ) -> ToolResult {
        if let Err(refused) = self.authorize(&args.session_id, &context) {
            return Ok(refused);
        }
        Ok(match self.manager.list_files(&args.session_id).await {
            Ok(listing) => {
                let mut text: String = listing
                    .files
                    .iter()
                    .map(|f| format!("{}\t{} bytes\n", f.path, f.size))
                    .collect();
                if listing.files.is_empty() {
                    text.push_str("(no files)\n");
                }
                if listing.truncated {
                    text.push_str("(more files than listed)\n");
                }
                let structured = serde_json::to_value(&listing).unwrap_or_default();
                done(text, structured)
            }
            Err(e) => refusal(e),
        })
    }

    #[tool(
        description = "Give a session a fresh interpreter: its variables and imports are gone, its files stay."
    )]
    async fn reset_session(
        &self,
        Parameters(args): Parameters<SessionArg>,
        context: RequestContext<RoleServer>,
    ) -> ToolResult {
        if let Err(refused) = self.authorize(&args.session_id, &context) {
            return Ok(refused);
        }
        Ok(match self.manager.reset(&args.session_id).await {
            Ok(info) => done(
                format!("session {} reset: a fresh interpreter", info.session_id),
                json!({"session_id": info.session_id}),
            ),
            Err(e) => refusal(e),
        })
    }

    #[tool(
        description = "Install Python packages into a session (only that session sees them), e.g. after a ModuleNotFoundError. Its next cell can import them; its variables stay."
    )]
    async fn install_packages(
        &self,
        Parameters(args): Parameters<InstallPackages>,
        context: RequestContext<RoleServer>,
    ) -> ToolResult {
        if let Err(refused) = self.authorize(&args.session_id, &context) {
            return Ok(refused);
        }
        Ok(
            match self
                .manager
                .install_packages(&args.session_id, &args.requirements)
                .await
            {
                Ok(installed) => done(
                    if installed.installed.is_empty() {
                        "nothing new to install: the requirements are satisfied".to_owned()
                    } else {
                        format!("installed: {}", installed.installed.join(", "))
                    },
                    serde_json::to_value(&installed).unwrap_or_default(),
                ),
                Err(e) => refusal(e),
            },
        )
    }

    #[tool(description = "End a session: its interpreter and its files.")]
    async fn close_session(
        &self,
        Parameters(args): Parameters<SessionArg>,
        context: RequestContext<RoleServer>,
    ) -> ToolResult {
        if let Err(refused) = self.authorize(&args.session_id, &context) {
            return Ok(refused);
        }
        Ok(match self.manager.delete(&args.session_id) {
            Ok(()) => done(
                format!("session {} closed", args.session_id),
                json!({"session_id": args.session_id}),
            ),
            Err(e) => refusal(e),
        })
    }
}

impl McpServer {
    /// Runs the cell (a one-shot on the interpreter `python` names), telling a client that
    /// asked for progress (a `progressToken`) that it is still running: every
    /// `mcp.progress_interval_ms` and on each output chunk. A cancelled call interrupts a
    /// session's cell (the reply still comes, as `interrupted`), and ends a one-shot's
    /// interpreter (dropping its execution kills the worker).
    async fn execute(
        &self,
        session_id: Option<&str>,
        python: Option<&str>,
        request: &ExecRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<Execution, Error> {
        let progress_token = context.meta.get_progress_token();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        // Output is streamed only when someone listens for it.
        let events_tx = progress_token.as_ref().map(|_| events_tx);
        let run = async {
            match session_id {
                Some(id) => self.manager.execute(id, request, events_tx.as_ref()).await,
                None => {
                    self.manager
                        .execute_once_on(request, events_tx.as_ref(), None, python)
                        .await
                }
            }
        };
        tokio::pin!(run);
        let started = Instant::now();
        // Notifications go out from their own task, fed the latest message only: sending one
        // waits for room in the client's response stream (rmcp's per-request channel holds
        // 16), and a client that does not read must not stall the loop below, which drives
        // the cell (its output, its deadline) and watches for cancellation. Nothing queues:
        // while a notification waits, newer messages replace each other.
        let (progress, _progress_task) = match &progress_token {
            Some(token) => {
                let (latest, receiver) = watch::channel(String::new());
                let task = tokio::spawn(send_progress(
                    context.peer.clone(),
                    token.clone(),
                    started,
                    receiver,
                ));
                (Some(latest), Some(AbortOnDropHandle::new(task)))
            }
            None => (None, None),
        };
        let interval = self.settings.progress_interval;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut interrupted = false;
        loop {
            tokio::select! {
                result = &mut run => return result,
                () = context.ct.cancelled(), if !interrupted => {
                    interrupted = true;
                    match session_id {
                        Some(id) => {
                            tracing::info!(session = %id, "MCP call cancelled: interrupting the cell");
                            // The session may have ended meanwhile: then so has the cell.
                            let _ = self.manager.interrupt(id);
                        }
                        None => {
                            tracing::info!("MCP call cancelled: ending the one-shot");
                            return Ok(cancelled_one_shot(started.elapsed()));
                        }
                    }
                }
                Some(event) = events.recv(), if progress.is_some() => {
                    if let Some(latest) = &progress {
                        latest.send_replace(match event {
                            Event::Stream { text, .. } => last_line(&text),
                            Event::Display(_) => "displayed an output".to_owned(),
                        });
                    }
                }
                _ = ticks.tick(), if progress.is_some() => {
                    if let Some(latest) = &progress {
                        let secs = started.elapsed().as_secs();
                        latest.send_replace(format!("running for {secs} s"));
                    }
                }
            }
        }
    }
}

/// Sends each message `latest` is given, one at a time; ends when the call does (its sender
/// is dropped, or the task aborted while a notification waits).
async fn send_progress(
    peer: Peer<RoleServer>,
    token: rmcp::model::ProgressToken,
    started: Instant,
    mut latest: watch::Receiver<String>,
) {
    while latest.changed().await.is_ok() {
        let message = latest.borrow_and_update().clone();
        notify(&peer, &token, started, message).await;
    }
}

/// The reply nobody will read (the client cancelled), for the log's and the metrics' sake.
fn cancelled_one_shot(elapsed: Duration) -> Execution {
    Execution::without_reply(
        crate::execution::Status::Error,
        Category::Interrupted,
        crate::protocol::ErrorInfo {
            ename: "KeyboardInterrupt".into(),
            evalue: "the client cancelled the call".into(),
            traceback: Vec::new(),
        },
        0,
        elapsed,
    )
}

/// Progress is the seconds elapsed: it only grows, as the protocol wants, and there is no
/// total to give.
async fn notify(
    peer: &Peer<RoleServer>,
    token: &rmcp::model::ProgressToken,
    started: Instant,
    message: String,
) {
    let param = ProgressNotificationParam::new(token.clone(), started.elapsed().as_secs_f64())
        .with_message(message);
    if let Err(e) = peer.notify_progress(param).await {
        tracing::debug!("cannot send a progress notification: {e}");
    }
}

/// The last non-empty line of an output chunk, shortened: a progress message, not the output.
fn last_line(text: &str) -> String {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let mut end = line.len().min(200);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("replpool", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    /// A figure a `run_python` answered with a link: found again in the session's history
    /// (as long as the history keeps its cell: `limits.history_max`).
    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let not_found = |message: String, error: Option<ApiError>| {
            ErrorData::resource_not_found(message, error.map(|e| e.body()))
        };
        let Some((id, count, index)) = content::parse_output_uri(&request.uri) else {
            return Err(not_found(
                format!(
                    "{} is not a replpool://sessions/{{id}}/outputs/{{n}}/{{k}} URI",
                    request.uri
                ),
                None,
            ));
        };
        let history = self
            .manager
            .authorize(id, owner(&context).as_deref())
            .and_then(|()| self.manager.history(id))
            .map_err(|e| {
                let error = ApiError::from(e);
                not_found(error.message.clone(), Some(error))
            })?;
        let png = history
            .iter()
            .find(|entry| entry.execution.execution_count == count)
            .and_then(|entry| content::outputs(&entry.execution).nth(index))
            .and_then(content::png)
            .ok_or_else(|| {
                not_found(
                    format!("{}: no such figure in the session's history", request.uri),
                    None,
                )
            })?;
        Ok(
            ReadResourceResult::new(vec![ResourceContents::BlobResourceContents {
                uri: request.uri.clone(),
                mime_type: Some("image/png".into()),
                blob: png.to_owned(),
                meta: None,
            }])
            .into(),
        )
    }
}
