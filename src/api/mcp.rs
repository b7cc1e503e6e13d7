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
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::AppState;
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
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        settings,
    );
    #[allow(clippy::disallowed_methods)] // JSON-RPC, not OpenAPI operations: see above
    let router = router.route_service(PATH, service);
    router
}
