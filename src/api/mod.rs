//! The HTTP front end: the native API (`native`), the compatibility surfaces (`compat`), and
//! what they share (auth, errors, the JSON extractor, streaming). Handlers translate requests
//! onto the [`SessionManager`], which holds the sessions; the state a compatibility surface
//! keeps of its own (python-executor's executions, the script wrapper's aliases, the judge's
//! settings) is in a type that surface owns, held here in [`AppState`].

mod auth;
mod compat;
mod console;
mod error;
mod json;
mod mcp;
mod metrics;
mod native;
mod node;
mod openapi;
mod stream;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::{Extension, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use auth::Caller;
pub use compat::judge::JudgeSettings;
pub use error::{ApiError, ErrorCode};

use crate::{Config, SessionManager};

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub manager: Arc<SessionManager>,
    pub judge: Arc<JudgeSettings>,
    /// The python-executor surface's executions.
    pub executions: Arc<compat::python_executor::Executions>,
    /// The script wrapper's loaded scripts.
    pub scripts: Arc<compat::scripts::Scripts>,
    pub tokens: Arc<auth::Tokens>,
    /// Renders `/metrics` (see `crate::metrics`).
    pub prometheus: PrometheusHandle,
    /// `/metrics` is served without a token (`metrics.public`).
    pub metrics_public: bool,
    /// The Jupyter kernel API's specs and open channels.
    pub jupyter: Arc<compat::jupyter::Kernels>,
}

/// The whole API: the native one, the compatibility surfaces, MCP (`/mcp`), and its own
/// description (`/openapi.json`, `/docs`). Request bodies are bounded by `execution.max_frame_bytes`, file
/// uploads by `files.max_bytes` (413 above them).
pub fn router(manager: Arc<SessionManager>, config: &Config) -> Router {
    let jupyter = Arc::new(compat::jupyter::Kernels::new(config, &manager));
    let state = AppState {
        manager,
        judge: Arc::new(JudgeSettings::from_config(config)),
        executions: Arc::new(compat::python_executor::Executions::from_config(config)),
        scripts: Arc::new(compat::scripts::Scripts::from_config(config)),
        tokens: Arc::new(auth::Tokens::new(config.auth.tokens.clone())),
        prometheus: crate::metrics::install(),
        metrics_public: config.metrics.public,
        jupyter,
    };
    let max_file_bytes = usize::try_from(config.files.max_bytes).unwrap_or(usize::MAX);
    let (routes, document) = routes(max_file_bytes, state.clone());
    mcp::mount(routes, Arc::clone(&state.manager), config)
        .fallback(error::not_found)
        .layer(Extension(openapi::Document::new(&document)))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // Outside authentication, so that refusals are counted too.
        .layer(axum::middleware::from_fn(metrics::count_requests))
        .layer(DefaultBodyLimit::max(config.execution.max_frame_bytes))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    // The route template (`/v1/sessions/{id}/execute`): what logs group by,
                    // where the path holds ids. None for a path no route has.
                    let route = request
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map(axum::extract::MatchedPath::as_str);
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        route,
                    )
                })
                // A 5xx here is mostly a node saying what it is doing (503 draining on every
                // readiness probe while it drains, 503 at capacity), not a fault: a warning.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .with_state(state)
}

/// Every route, and the document describing them, from one list: each surface's
/// `OpenApiRouter`. The native API answers a method a route does not take with its own 405
/// (the compatibility surfaces keep axum's, as the services they stand in for had theirs).
fn routes(max_file_bytes: usize, state: AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (native, native_document) = native::routes(max_file_bytes, state.clone()).split_for_parts();
    let native = native.method_not_allowed_fallback(native::method_not_allowed);
    let (router, mut document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(OpenApiRouter::from(native))
        .merge(compat::routes(state))
        .merge(openapi::routes())
        .merge(console::routes())
        .split_for_parts();
    document.merge(native_document);
    openapi::add_common_responses(&mut document);
    (router, document)
}
