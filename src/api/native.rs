//! The native API, versioned under `/v1`.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::ErrorCode;
use super::json::Json;
use super::{ApiError, AppState, stream};
use crate::execution::{ExecRequest, Execution};
use crate::files;
use crate::manager::Readiness;
use crate::session::SessionInfo;

pub fn routes(max_file_bytes: usize, state: AppState) -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(super::metrics::scrape))
        .route("/v1/sessions", post(create_session).get(list_sessions))
        .route("/v1/execute", post(execute_once))
        .merge(session_routes(max_file_bytes, state))
        .method_not_allowed_fallback(method_not_allowed)
}

/// The routes of one session, `/v1/sessions/{id}/…`: an id of another node is answered 421
/// before any of them runs.
fn session_routes(max_file_bytes: usize, state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{id}", get(get_session).delete(delete_session))
        .route("/v1/sessions/{id}/execute", post(execute))
        .route("/v1/sessions/{id}/interrupt", post(interrupt))
        .route("/v1/sessions/{id}/reset", post(reset))
        .route("/v1/sessions/{id}/history", get(history))
        .route("/v1/sessions/{id}/notebook", get(notebook))
        .route("/v1/sessions/{id}/files", get(list_files))
        .route(
            "/v1/sessions/{id}/files/{*path}",
            put(put_file)
                .get(get_file)
                .delete(delete_file)
                // One byte over the limit is enough to know the upload is too large.
                .layer(DefaultBodyLimit::max(max_file_bytes.saturating_add(1))),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::node::refuse_other_nodes,
        ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteQuery {
    #[serde(default)]
    stream: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    code: String,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
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
        })
    }
}

/// Session options; none yet, but a body that is there must be a JSON object we understand.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSessionBody {}

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.manager.health().await)
}

/// Whether this node takes new sessions: what a proxy or Kubernetes sends new work by.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let readiness = state.manager.readiness();
    let status = match readiness {
        Readiness::Ready => StatusCode::OK,
        Readiness::Starting | Readiness::Draining => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = json!({"status": readiness.as_str(), "node": state.manager.node()});
    (status, Json(body))
}

async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SessionInfo>), ApiError> {
    let body = body?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_slice::<CreateSessionBody>(&body).map_err(|e| {
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
    let info = state.manager.create_for(caller.owner()).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn list_sessions(State(state): State<AppState>, caller: Caller) -> impl IntoResponse {
    Json(json!({"sessions": state.manager.list_for(caller.owner()).await}))
}

async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    Ok(Json(state.manager.get(&id).await?))
}

async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    state.manager.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

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

async fn reset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    Ok(Json(state.manager.reset(&id).await?))
}

async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    Ok(Json(json!({ "history": state.manager.history(&id)? })))
}

async fn notebook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    Ok(Json(state.manager.notebook(&id)?))
}

async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    Ok(Json(state.manager.list_files(&id).await?))
}

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

async fn get_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    let data = state.manager.get_file(&id, &path).await?;
    Ok(([(header::CONTENT_TYPE, files::content_type(&path))], data).into_response())
}

async fn delete_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, path)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    state.manager.delete_file(&id, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn interrupt(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    state.manager.authorize(&id, caller.owner())?;
    let interrupted = state.manager.interrupt(&id)?;
    Ok(Json(json!({ "interrupted": interrupted })))
}

async fn execute_once(
    State(state): State<AppState>,
    Json(body): Json<ExecuteBody>,
) -> Result<Json<Execution>, ApiError> {
    let request = ExecRequest::try_from(body)?;
    Ok(Json(
        state.manager.execute_once(&request, None, None).await?,
    ))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this route does not take that method",
    )
}
