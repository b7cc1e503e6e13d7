//! The native API, versioned under `/v1`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ErrorCode;
use super::json::Json;
use super::openapi::{self, ErrorBody};
use super::{ApiError, AppState, stream};
use crate::execution::{ExecRequest, Execution};
use crate::files::{self, FileListing};
use crate::manager::{Health, Readiness, SessionManager};
use crate::session::{HistoryEntry, Installed, SessionInfo};

pub fn routes(max_file_bytes: usize, state: AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(super::metrics::scrape))
        .routes(routes!(create_session, list_sessions))
        .routes(routes!(execute_once))
        .merge(session_routes(max_file_bytes, state))
}

/// The routes of one session, `/v1/sessions/{id}/…`: an id of another node is answered 421
/// before any of them runs.
fn session_routes(max_file_bytes: usize, state: AppState) -> OpenApiRouter<AppState> {
    // One byte over the limit is enough to know the upload is too large.
    let files = openapi::routes_with_rest(
        OpenApiRouter::new(),
        routes!(put_file, get_file, delete_file),
    )
    .layer(DefaultBodyLimit::max(max_file_bytes.saturating_add(1)));
    OpenApiRouter::new()
        .routes(routes!(get_session, delete_session))
        .routes(routes!(execute))
        .routes(routes!(interrupt))
        .routes(routes!(reset))
        .routes(routes!(install_packages))
        .routes(routes!(history))
        .routes(routes!(notebook))
        .routes(routes!(list_files))
        .merge(files)
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::node::refuse_other_nodes,
        ))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExecuteQuery {
    /// Answer with Server-Sent Events: `stream` and `display` events as the code runs, then
    /// one `result` event (the reply) or one `error` event (an error reply's body).
    #[serde(default)]
    stream: bool,
}

/// What to run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"code": "import pandas as pd\npd.DataFrame({'a': [1, 2]})"}), json!({"code": "print(input())", "stdin": "hello\n", "timeout_ms": 5000}), json!({"code": "plt.plot([1, 2, 3])", "data": false})))]
struct ExecuteBody {
    /// Python source: one cell. The value of its last expression is the reply's `result`.
    code: String,
    /// What `input()` and `sys.stdin` read.
    #[serde(default)]
    stdin: Option<String>,
    /// The deadline, milliseconds (default `execution.default_timeout_ms`, at most
    /// `execution.max_timeout_ms`).
    #[serde(default)]
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
    /// Add data beside pictures (default true): a DataFrame's or Series' rows as
    /// `application/vnd.dataresource+json`, a matplotlib figure's chart as
    /// `application/vnd.replpool.chart+json`, in the same bundles. `false` leaves both out.
    #[serde(default)]
    data: Option<bool>,
}

impl TryFrom<ExecuteBody> for ExecRequest {
    type Error = ApiError;

    fn try_from(body: ExecuteBody) -> Result<Self, ApiError> {
        if body.timeout_ms == Some(0) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidRequest,
                "timeout_ms must be greater than 0",
            ));
        }
        Ok(ExecRequest {
            code: body.code,
            stdin: body.stdin,
            timeout: body.timeout_ms.map(Duration::from_millis),
            filename: None,
            data: body.data.unwrap_or(true),
            // The native API's code is a notebook's cell.
            pip_magic: true,
        })
    }
}

/// What to run once: an execution's body, and the interpreter to run it on. (Its own type,
/// not `ExecuteBody` flattened: serde's `flatten` would let unknown fields through.)
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"code": "print(1)"}), json!({"code": "import sys; print(sys.version)", "python": "3.12"})))]
struct ExecuteOnceBody {
    /// Python source: one cell. The value of its last expression is the reply's `result`.
    code: String,
    /// What `input()` and `sys.stdin` read.
    #[serde(default)]
    stdin: Option<String>,
    /// The deadline, milliseconds (default `execution.default_timeout_ms`, at most
    /// `execution.max_timeout_ms`).
    #[serde(default)]
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
    /// Add data beside pictures (default true); see the session's execute.
    #[serde(default)]
    data: Option<bool>,
    /// The interpreter, as at session creation (a name, or a version such as `3.11`).
    /// Default: the first interpreter.
    #[serde(default)]
    python: Option<String>,
}

impl ExecuteOnceBody {
    /// The execution, and the interpreter asked for.
    fn split(self) -> (ExecuteBody, Option<String>) {
        let body = ExecuteBody {
            code: self.code,
            stdin: self.stdin,
            timeout_ms: self.timeout_ms,
            data: self.data,
        };
        (body, self.python)
    }
}

/// Session options. A body that is there must be a JSON object we understand.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"python": "3.11"}), json!({"requirements": ["tabulate==0.9.0"]})))]
struct CreateSessionBody {
    /// The interpreter: a `[[python.interpreters]]` name, or a version (`3.11` matches the
    /// first interpreter whose version is 3.11.x). Default: the first interpreter.
    #[serde(default)]
    #[schema(examples("3.11"))]
    python: Option<String>,
    /// Packages to install into the session's own layer before it is handed out (as
    /// `POST /v1/sessions/{id}/packages` would).
    #[serde(default)]
    requirements: Option<Vec<String>>,
}

/// What to install into a session.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"requirements": ["tabulate==0.9.0"]})))]
struct InstallBody {
    /// Requirements, one package each: a name (PEP 503) with optional extras and version
    /// specifiers (`seaborn==0.13.2`, `humanize>=4`); no options, URLs, paths or markers.
    requirements: Vec<String>,
}

/// `GET /readyz`'s reply.
#[derive(Serialize, ToSchema)]
struct ReadyReply {
    /// `ready`, `starting` or `draining`.
    #[schema(value_type = String, examples("ready"))]
    status: &'static str,
    node: String,
}

#[derive(Serialize, ToSchema)]
struct SessionList {
    sessions: Vec<SessionInfo>,
}

#[derive(Serialize, ToSchema)]
struct History {
    history: Vec<HistoryEntry>,
}

#[derive(Serialize, ToSchema)]
struct Interrupted {
    /// Whether a cell was running (and was interrupted).
    interrupted: bool,
}

/// Whether the server is up, and what it has: sessions, pools, isolation.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "probes",
    security(()),
    responses((status = 200, description = "Up (`status`: `ok`, or `degraded` while warm workers cannot be started)", body = Health)),
)]
async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(state.manager.health().await)
}

/// Whether this node takes new sessions: what a proxy or Kubernetes sends new work by.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "probes",
    security(()),
    responses(
        (status = 200, description = "Ready", body = ReadyReply, example = json!({"status": "ready", "node": "local"})),
        (status = 503, description = "Starting or draining", body = ReadyReply, example = json!({"status": "draining", "node": "local"})),
    ),
)]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<ReadyReply>) {
    let readiness = state.manager.readiness();
    let status = match readiness {
        Readiness::Ready => StatusCode::OK,
        Readiness::Starting | Readiness::Draining => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = ReadyReply {
        status: readiness.as_str(),
        node: state.manager.node().to_owned(),
    };
    (status, Json(body))
}

/// A new session: a warm worker of its own, with the preload imported.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    operation_id = "create_session",
    tag = "sessions",
    request_body(content = Option<CreateSessionBody>, description = "Empty, `{}`, or `{\"python\": \"3.11\"}`", content_type = "application/json"),
    responses(
        (status = 201, description = "The session", body = SessionInfo,
            links(
                ("get_session" = (operation_id = "get_session", parameters(("id" = "$response.body#/session_id")), description = "The session's info")),
                ("delete_session" = (operation_id = "delete_session", parameters(("id" = "$response.body#/session_id")), description = "End the session")),
                ("execute" = (operation_id = "execute", parameters(("id" = "$response.body#/session_id")), description = "Run code in the session")),
                ("interrupt" = (operation_id = "interrupt", parameters(("id" = "$response.body#/session_id")), description = "Interrupt its running cell")),
                ("reset" = (operation_id = "reset", parameters(("id" = "$response.body#/session_id")), description = "A fresh namespace")),
                ("install_packages" = (operation_id = "install_packages", parameters(("id" = "$response.body#/session_id")), description = "Install packages into it")),
                ("history" = (operation_id = "history", parameters(("id" = "$response.body#/session_id")), description = "What ran")),
                ("notebook" = (operation_id = "notebook", parameters(("id" = "$response.body#/session_id")), description = "What ran, as a notebook")),
                ("list_files" = (operation_id = "list_files", parameters(("id" = "$response.body#/session_id")), description = "Its files")),
                ("put_file" = (operation_id = "put_file", parameters(("id" = "$response.body#/session_id")), description = "Write a file")),
                ("get_file" = (operation_id = "get_file", parameters(("id" = "$response.body#/session_id")), description = "Read a file")),
                ("delete_file" = (operation_id = "delete_file", parameters(("id" = "$response.body#/session_id")), description = "Delete a file")),
            ),
        ),
        (status = 400, description = "`invalid_json`; `unknown_python`: no interpreter of that name or version (the message lists them); `invalid_requirement` in `requirements`", body = ErrorBody),
        (status = 403, description = "`package_not_allowed`, `install_disabled`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: not an object of the fields above; `install_failed`, `install_timeout` (category `install`): `requirements` could not be installed, and no session was made", body = ErrorBody),
        (status = 507, description = "`quota_exceeded`: `requirements` do not fit the disk quota", body = ErrorBody),
        (status = 429, description = "`too_many_sessions`: the token's own limit, every one of its sessions busy", body = ErrorBody),
        (status = 503, description = "`too_many_sessions` (at `sessions.max`), `worker_unavailable`, `sandbox_unavailable`, `shutting_down`, `draining`", body = ErrorBody),
    ),
)]
async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SessionInfo>), ApiError> {
    let body = body?;
    let mut options = CreateSessionBody::default();
    if !body.iter().all(u8::is_ascii_whitespace) {
        options = serde_json::from_slice::<CreateSessionBody>(&body).map_err(|e| {
            let code = if e.is_data() {
                ErrorCode::InvalidRequest
            } else {
                ErrorCode::InvalidJson
            };
            let status = if e.is_data() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, code, e.to_string())
        })?;
    }
    let requirements = options.requirements.unwrap_or_default();
    if requirements.is_empty() {
        let info = state
            .manager
            .create_on(caller.owner(), options.python.as_deref())
            .await?;
        return Ok((StatusCode::CREATED, Json(info)));
    }
    // Refused before a session is made, and before any network.
    state.manager.check_requirements(&requirements)?;
    let info = state
        .manager
        .create_on(caller.owner(), options.python.as_deref())
        .await?;
    // A session whose packages could not be installed is not handed out half made; nor is
    // one whose caller went away meanwhile (this future dropped): no one has its id.
    let unfinished = DeleteOnDrop {
        manager: &state.manager,
        id: Some(info.session_id),
    };
    let id = unfinished.id.as_deref().unwrap_or_default();
    state.manager.install_packages(id, &requirements).await?;
    let info = state.manager.info(id)?;
    unfinished.keep();
    Ok((StatusCode::CREATED, Json(info)))
}

/// Deletes a session being made unless it is kept.
struct DeleteOnDrop<'a> {
    manager: &'a SessionManager,
    id: Option<String>,
}

impl DeleteOnDrop<'_> {
    fn keep(mut self) {
        self.id = None;
    }
}

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let _ = self.manager.delete(&id);
        }
    }
}

/// Installs packages into the session's own layer (never the shared base environment):
/// resolved against the base's installed versions, so what the base has is not installed
/// again; from the shared cache when it has them. The session's next cell imports them, its
/// variables kept. Waits for the cells queued before it; cells queued after wait for it.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/packages",
    operation_id = "install_packages",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    request_body = InstallBody,
    responses(
        (status = 200, description = "Installed", body = Installed),
        (status = 400, description = "`invalid_json`, `invalid_requirement`", body = ErrorBody),
        (status = 403, description = "`package_not_allowed` (naming the package), `install_disabled`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`session_closed`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`install_failed` (the installer's message), `install_timeout`, `invalid_request`; category `install` for the first two", body = ErrorBody),
        (status = 429, description = "`queue_full`", body = ErrorBody),
        (status = 503, description = "`installer_unavailable`", body = ErrorBody),
        (status = 507, description = "`quota_exceeded`: the packages do not fit the session's disk quota", body = ErrorBody),
    ),
)]
async fn install_packages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<InstallBody>,
) -> Result<Json<Installed>, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    Ok(Json(
        state
            .manager
            .install_packages(&id, &body.requirements)
            .await?,
    ))
}

/// The caller's sessions.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "list_sessions",
    tag = "sessions",
    responses((status = 200, description = "The caller's sessions", body = SessionList)),
)]
async fn list_sessions(State(state): State<AppState>, caller: Caller) -> Json<SessionList> {
    Json(SessionList {
        sessions: state.manager.list_for(caller.owner()).await,
    })
}

/// A session's info, with its worker's memory.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    operation_id = "get_session",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The session", body = SessionInfo),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ),
)]
async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    Ok(Json(state.manager.get(&id).await?))
}

/// Ends a session: its worker, its files.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    operation_id = "delete_session",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 204, description = "Ended"),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ),
)]
async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    state.manager.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a cell in the session, after those before it (one at a time, in order).
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/execute",
    operation_id = "execute",
    tag = "execution",
    params(("id" = String, Path, description = "The session's id"), ExecuteQuery),
    request_body = ExecuteBody,
    responses(
        (status = 200, description = "The reply (with `stream=true`: Server-Sent Events, `stream`/`display` events then one `result` or `error`)",
            content(
                (Execution = "application/json", example = json!({
                    "status": "ok", "execution_count": 1, "stdout": "hello\n", "stderr": "",
                    "result": {"text/plain": "2"}, "display": [], "error": null,
                    "duration_ms": 1.4, "mode": "warm", "truncated": false, "session_reset": false
                })),
                // Events, not one value: no schema (each event's `data` is described above).
                ("text/event-stream"),
            ),
        ),
        (status = 400, description = "`invalid_json`, `invalid_query`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`session_closed`: the session ended while the cell waited", body = ErrorBody),
        (status = 413, description = "`code_too_large`, `stdin_too_large`, `payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 429, description = "`queue_full`: `sessions.max_queue` cells wait already", body = ErrorBody),
        (status = 503, description = "`worker_unavailable`, `sandbox_unavailable`, `shutting_down`", body = ErrorBody),
    ),
)]
async fn execute(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<ExecuteQuery>,
    Json(body): Json<ExecuteBody>,
) -> Result<Response, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    let request = ExecRequest::try_from(body)?;
    if query.stream {
        // Unknown sessions (checked above) and bad requests are answered as errors before
        // the stream starts.
        return Ok(stream::execute(state.manager, id, request).into_response());
    }
    Ok(Json(state.manager.execute(&id, &request, None).await?).into_response())
}

/// A fresh namespace: the session's worker replaced by a new warm one (its files stay).
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/reset",
    operation_id = "reset",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The session", body = SessionInfo),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`session_closed`", body = ErrorBody),
        (status = 429, description = "`queue_full`", body = ErrorBody),
        (status = 503, description = "`worker_unavailable`, `sandbox_unavailable`, `shutting_down`", body = ErrorBody),
    ),
)]
async fn reset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    Ok(Json(state.manager.reset(&id).await?))
}

/// What ran in the session: each cell's code and reply, oldest first.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/history",
    operation_id = "history",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The history", body = History),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ),
)]
async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<History>, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    Ok(Json(History {
        history: state.manager.history(&id)?,
    }))
}

/// The history as a Jupyter notebook (nbformat 4.5).
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/notebook",
    operation_id = "notebook",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "An nbformat 4.5 notebook", body = Object),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ),
)]
async fn notebook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    Ok(Json(state.manager.notebook(&id)?))
}

/// The session's files (regular files, at most `files.max_list_entries`).
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/files",
    operation_id = "list_files",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The listing", body = FileListing),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 429, description = "`files_busy`", body = ErrorBody),
    ),
)]
async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<FileListing>, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    Ok(Json(state.manager.list_files(&id).await?))
}

/// Writes a file (the body, as is), making its directories.
#[utoipa::path(
    put,
    path = "/v1/sessions/{id}/files/{path}",
    operation_id = "put_file",
    tag = "sessions",
    params(
        ("id" = String, Path, description = "The session's id"),
        ("path" = String, Path, description = "Relative to the session's directory; may contain `/`"),
    ),
    request_body(content = [u8], content_type = "application/octet-stream", description = "The file's bytes, at most `files.max_bytes`"),
    responses(
        (status = 204, description = "Written"),
        (status = 400, description = "`invalid_path`, `is_a_directory`, `not_a_regular_file`", body = ErrorBody),
        (status = 403, description = "`permission_denied`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 413, description = "`file_too_large`, `payload_too_large`", body = ErrorBody),
        (status = 429, description = "`files_busy`", body = ErrorBody),
        (status = 507, description = "`quota_exceeded`: the session's `files.quota_bytes` is full", body = ErrorBody),
    ),
)]
async fn put_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, path)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    let body = body?;
    state.manager.put_file(&id, &path, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads a file.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/files/{path}",
    operation_id = "get_file",
    tag = "sessions",
    params(
        ("id" = String, Path, description = "The session's id"),
        ("path" = String, Path, description = "Relative to the session's directory; may contain `/`"),
    ),
    responses(
        (status = 200, description = "The file's bytes, with a type guessed from its name", content(("application/octet-stream"), ("*/*"))),
        (status = 400, description = "`invalid_path`, `is_a_directory`, `not_a_regular_file`", body = ErrorBody),
        (status = 403, description = "`permission_denied`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `file_not_found`", body = ErrorBody),
        (status = 413, description = "`file_too_large`", body = ErrorBody),
        (status = 429, description = "`files_busy`", body = ErrorBody),
    ),
)]
async fn get_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    let data = state.manager.get_file(&id, &path).await?;
    // A session's code wrote it: an `.html` or `.svg` opened from this origin (the console's,
    // whose tab holds the token) must not run as a page of it.
    Ok((
        [
            (header::CONTENT_TYPE, files::content_type(&path)),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'",
            ),
        ],
        data,
    )
        .into_response())
}

/// Deletes a file.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}/files/{path}",
    operation_id = "delete_file",
    tag = "sessions",
    params(
        ("id" = String, Path, description = "The session's id"),
        ("path" = String, Path, description = "Relative to the session's directory; may contain `/`"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_path`, `is_a_directory`, `not_a_regular_file`", body = ErrorBody),
        (status = 403, description = "`permission_denied`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `file_not_found`", body = ErrorBody),
        (status = 429, description = "`files_busy`", body = ErrorBody),
    ),
)]
async fn delete_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, path)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    state.manager.delete_file(&id, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Interrupts the session's running cell (a KeyboardInterrupt in it).
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/interrupt",
    operation_id = "interrupt",
    tag = "execution",
    params(("id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "Whether a cell was running", body = Interrupted),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ),
)]
async fn interrupt(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Interrupted>, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    let interrupted = state.manager.interrupt(&id)?;
    Ok(Json(Interrupted { interrupted }))
}

/// Runs code once, in a fresh worker that is discarded after: no session, no state.
#[utoipa::path(
    post,
    path = "/v1/execute",
    operation_id = "execute_once",
    tag = "execution",
    request_body = ExecuteOnceBody,
    responses(
        (status = 200, description = "The reply", body = Execution),
        (status = 400, description = "`invalid_json`; `unknown_python`: no interpreter of that name or version", body = ErrorBody),
        (status = 413, description = "`code_too_large`, `stdin_too_large`, `payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 503, description = "`worker_unavailable`, `sandbox_unavailable`, `shutting_down`, `draining`", body = ErrorBody),
    ),
)]
async fn execute_once(
    State(state): State<AppState>,
    Json(body): Json<ExecuteOnceBody>,
) -> Result<Json<Execution>, ApiError> {
    let (body, python) = body.split();
    let request = ExecRequest::try_from(body)?;
    Ok(Json(
        state
            .manager
            .execute_once_on(&request, None, None, python.as_deref())
            .await?,
    ))
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this route does not take that method",
    )
}
