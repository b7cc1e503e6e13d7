//! The HTTP front end. One file per surface; handlers are thin translations onto the
//! [`SessionManager`], which holds all the state.

mod error;
mod native;
mod stream;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::SessionManager;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub manager: Arc<SessionManager>,
}

/// The whole API. `max_body_bytes` bounds request bodies (413 above it), and
/// `max_file_bytes` file uploads.
pub fn router(
    manager: Arc<SessionManager>,
    max_body_bytes: usize,
    max_file_bytes: usize,
) -> Router {
    let state = AppState { manager };
    native::routes(max_file_bytes)
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
            }),
        )
        .with_state(state)
}
