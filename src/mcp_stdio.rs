//! `replpool mcp`: MCP on stdin/stdout, for assistants that start their tools as
//! subprocesses. stdout is the protocol's alone: logs go to stderr.
//!
//! Without `--url`, the core runs in this process (like the Python `Pool`): the sessions are
//! this process's, and end with it. With `--url`, each message is carried to a running
//! server's `/mcp` and back (rmcp's streamable HTTP client on one side, its stdio transport
//! on the other), so the sessions are the server's, owned by the token's owner.

use std::sync::Arc;

use anyhow::Context;
use replpool::mcp::McpServer;
use replpool::{Config, SessionManager};
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport, Transport};

/// Serves until the client closes stdin.
pub async fn serve_in_process(manager: Arc<SessionManager>, config: &Config) -> anyhow::Result<()> {
    let server = McpServer::new(manager, config);
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP client did not initialize")?;
    let reason = running.waiting().await?;
    tracing::info!(?reason, "MCP client gone");
    Ok(())
}

/// Carries messages between stdin/stdout and `url` (the server's `/mcp`) until either side
/// closes. Messages are passed on as they are, in both directions: progress, cancellation
/// and errors included.
pub async fn bridge(url: &str, token: Option<String>) -> anyhow::Result<()> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    config.auth_header = token;
    let mut remote = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let mut local =
        IntoTransport::<rmcp::RoleServer, _, _>::into_transport(rmcp::transport::stdio());
    loop {
        tokio::select! {
            from_client = local.receive() => match from_client {
                Some(message) => remote
                    .send(message)
                    .await
                    .with_context(|| format!("cannot reach {url}"))?,
                None => break,
            },
            from_server = remote.receive() => match from_server {
                Some(message) => local.send(message).await.context("cannot write to stdout")?,
                None => anyhow::bail!("{url} closed the MCP session"),
            },
        }
    }
    let _ = remote.close().await;
    Ok(())
}
