//! Bearer tokens: who is calling, and whether they may.
//!
//! With `auth.tokens` set, every route but `/healthz`, `/readyz` and the API's description
//! (`/openapi.json`, `/docs`: see `openapi.rs`) needs `Authorization: Bearer <token>` (401
//! otherwise; `Authorization: token <token>`, Jupyter clients' form, is taken too); `/metrics`
//! does too, unless `metrics.public`. The caller is then known by the token's name
//! (`token-<index>`, never the token itself), and sessions belong to the caller that created
//! them. Tokens are compared in constant time.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ErrorCode;
use super::{ApiError, AppState};

/// The configured tokens.
pub struct Tokens(Vec<String>);

impl Tokens {
    pub fn new(tokens: Vec<String>) -> Tokens {
        Tokens(tokens)
    }

    /// The name of the token `presented` is, if it is one.
    fn identify(&self, presented: &str) -> Option<String> {
        let mut found = None;
        // Every token is compared, so the time taken does not say which one nearly matched.
        for (i, token) in self.0.iter().enumerate() {
            if constant_time_eq(token.as_bytes(), presented.as_bytes()) {
                found = Some(i);
            }
        }
        found.map(|i| format!("token-{i}"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is calling: the token's name, or `None` when auth is off.
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<String>);

impl Caller {
    pub fn owner(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The middleware: checks the bearer token and records the caller.
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let tokens: &Arc<Tokens> = &state.tokens;
    let path = request.uri().path();
    let open = super::openapi::is_public(path) || (state.metrics_public && path == "/metrics");
    if tokens.0.is_empty() || open {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // `token <t>`: what Jupyter clients send (jupyter_server's `GatewayClient.auth_token`).
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .map(str::trim)
        .map(str::to_owned)
        .or_else(|| channels_query_token(&request));
    match presented.and_then(|p| tokens.identify(&p)) {
        Some(name) => {
            request.extensions_mut().insert(Caller(Some(name)));
            next.run(request).await
        }
        None => {
            tracing::warn!(path = %request.uri().path(), "refused: missing or unknown token");
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "this server needs `Authorization: Bearer <token>`",
            )
            .into_response()
        }
    }
}

/// A Jupyter kernel's websocket may carry its token as `?token=`, as jupyter_server takes it:
/// a browser cannot set headers on a websocket, and websocket kernel clients send it so.
/// Only there: elsewhere a token belongs in a header, not in URLs that logs keep.
fn channels_query_token(request: &Request) -> Option<String> {
    let path = request.uri().path();
    if !(path.starts_with("/api/kernels/") && path.ends_with("/channels")) {
        return None;
    }
    let Query(mut query) =
        Query::<std::collections::HashMap<String, String>>::try_from_uri(request.uri()).ok()?;
    query.remove("token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_named_not_echoed() {
        let tokens = Tokens::new(vec!["a".repeat(16), "b".repeat(16)]);
        assert_eq!(tokens.identify(&"b".repeat(16)), Some("token-1".into()));
        assert_eq!(tokens.identify(&"b".repeat(15)), None);
        assert_eq!(tokens.identify(""), None);
    }
}
