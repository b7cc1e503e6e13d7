//! `/mcp`: the MCP server ([`crate::mcp`]) over streamable HTTP, as rmcp serves it.
//!
//! Mounted as a service rather than through `routes!`: MCP is JSON-RPC over one path (POST
//! messages, GET a stream, DELETE the MCP session), not operations an OpenAPI document can
//! describe, so `/openapi.json` does not list it (docs/architecture.md, "MCP"). It sits
//! behind the same layers as every route: the bearer token (the caller's owner reaches the
//! tools through the request's extensions, which rmcp hands each call), the request count by
//! route, the trace span. Each MCP session is kept to the caller whose `initialize` opened
//! it ([`keep_to_owner`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tower::Layer;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorCode};
use crate::mcp::McpServer;
use crate::{Config, SessionManager};

pub const PATH: &str = "/mcp";

/// The header that names an MCP session (rmcp's `Mcp-Session-Id`).
const SESSION_HEADER: &str = "mcp-session-id";

/// Adds `/mcp` to `router`.
pub fn mount(
    router: Router<AppState>,
    manager: Arc<SessionManager>,
    config: &Config,
) -> Router<AppState> {
    let server = McpServer::new(manager, config);
    let mut settings =
        StreamableHttpServerConfig::default()
            // An upload is base64 in the body: a third larger than the file.
            .with_max_request_body_bytes(config.execution.max_frame_bytes.max(
                usize::try_from(config.files.max_bytes / 3 * 4 + 65_536).unwrap_or(usize::MAX),
            ));
    settings = if config.mcp.allowed_hosts.is_empty() {
        // The default (loopback names only) guards an unauthenticated server on a
        // developer's machine; replpool is reached by other names behind a proxy, and
        // guarded by its tokens.
        settings.disable_allowed_hosts()
    } else {
        settings.with_allowed_hosts(config.mcp.allowed_hosts.clone())
    };
    let sessions = Arc::new(LocalSessionManager::default());
    let service =
        StreamableHttpService::new(move || Ok(server.clone()), Arc::clone(&sessions), settings);
    let owners = SessionOwners {
        sessions: Arc::clone(&sessions),
        owners: Arc::default(),
    };
    let service = axum::middleware::from_fn_with_state(owners, keep_to_owner).layer(service);
    let cap = SessionCap {
        sessions,
        max: config.mcp.max_sessions,
    };
    let service = axum::middleware::from_fn_with_state(cap, refuse_over_cap).layer(service);
    #[allow(clippy::disallowed_methods)] // JSON-RPC, not OpenAPI operations: see above
    let router = router.route_service(PATH, service);
    router
}

/// The MCP sessions open on this node and how many may be. rmcp's session manager keeps each
/// in its map until it is closed (DELETE, or its task ending after the idle keep-alive), so
/// the map's size is the count.
#[derive(Clone)]
struct SessionCap {
    sessions: Arc<LocalSessionManager>,
    max: usize,
}

/// Refuses a new MCP session (a POST without `Mcp-Session-Id`: an `initialize`) when `max`
/// are open, in our error shape, before rmcp makes one (rmcp would answer its own failure as a
/// bare 500). Counting and creating are not one step: concurrent `initialize`s may pass the
/// cap by a few, which is fine for a bound on memory.
async fn refuse_over_cap(State(cap): State<SessionCap>, request: Request, next: Next) -> Response {
    let opens_a_session = request.method() == Method::POST && named_session(&request).is_none();
    if opens_a_session && cap.sessions.sessions.read().await.len() >= cap.max {
        tracing::warn!(
            max = cap.max,
            "MCP session limit reached: initialize refused"
        );
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManySessions,
            format!(
                "the MCP session limit ({}, mcp.max_sessions) is reached: close one (DELETE /mcp) or wait for an idle one to expire",
                cap.max
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// The MCP session a request names: its `Mcp-Session-Id`, read as rmcp reads it (a value
/// that is not text names none, and rmcp opens a new session for such an `initialize`).
fn named_session(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|id| id.to_str().ok())
}

/// Which caller's `initialize` opened each MCP session, by its id: rmcp knows a session by its
/// id alone, and a caller with another token who learned one could otherwise post into it,
/// read its stream or close it.
#[derive(Clone)]
struct SessionOwners {
    sessions: Arc<LocalSessionManager>,
    owners: Arc<Mutex<HashMap<String, Option<String>>>>,
}

/// What rmcp is shown instead of another owner's session id: not a UUID, so never the id of
/// one of its sessions.
const NO_SESSION: HeaderValue = HeaderValue::from_static("not-a-session-of-this-caller");

/// Keeps each MCP session to its owner. A request naming another owner's session reaches rmcp
/// with an id no session has, so rmcp answers it as it answers a made-up id, whatever it checks
/// first (its `Accept`, its body, its protocol version): 404 `Not Found: Session not found` to
/// a POST or a GET, and 202 to a DELETE, which then closes nothing. Nothing in the reply tells
/// another owner's session from none. Without tokens every caller is the same owner.
async fn keep_to_owner(
    State(owners): State<SessionOwners>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = request
        .extensions()
        .get::<Caller>()
        .and_then(|caller| caller.owner().map(str::to_owned));
    let method = request.method().clone();
    let named = named_session(&request).map(str::to_owned);
    match &named {
        Some(id) => {
            // An id with no owner recorded is no one's to use either: every session rmcp
            // opened had its owner written before its id left in the reply.
            let theirs = !matches!(owners.owners.lock().get(id), Some(owner) if *owner == caller);
            if theirs {
                tracing::warn!(
                    caller = caller.as_deref().unwrap_or("-"),
                    "an MCP request named another owner's MCP session: answered as an unknown one"
                );
                request.headers_mut().insert(SESSION_HEADER, NO_SESSION);
                return next.run(request).await;
            }
        }
        None if method == Method::POST => {
            // An `initialize`: the owners of sessions rmcp has closed (DELETEd, or idle past
            // its keep-alive) are forgotten, so the map is never larger than rmcp's by more
            // than the sessions opened since.
            let open = owners.sessions.sessions.read().await;
            owners
                .owners
                .lock()
                .retain(|id, _| open.contains_key(id.as_str()));
        }
        None => {}
    }
    let response = next.run(request).await;
    match named {
        None if method == Method::POST => {
            if let Some(opened) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|id| id.to_str().ok())
            {
                owners.owners.lock().insert(opened.to_owned(), caller);
            }
        }
        Some(id) if method == Method::DELETE && response.status().is_success() => {
            owners.owners.lock().remove(&id);
        }
        _ => {}
    }
    response
}
