//! `/mcp`: the MCP server ([`crate::mcp`]) over streamable HTTP, as rmcp serves it.
//!
//! Mounted as a service rather than through `routes!`: MCP is JSON-RPC over one path (POST
//! messages, GET a stream, DELETE the MCP session), not operations an OpenAPI document can
//! describe, so `/openapi.json` does not list it (docs/architecture.md, "MCP"). It sits
//! behind the same layers as every route: the bearer token (the caller's owner reaches the
//! tools through the request's extensions, which rmcp hands each call), the request count by
//! route, the trace span.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tower::Layer;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::mcp::McpServer;
use crate::{Config, SessionManager};

pub const PATH: &str = "/mcp";

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
    let opens_a_session =
        request.method() == Method::POST && !request.headers().contains_key("mcp-session-id");
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
