//! The HTTP front end. One file per surface; handlers are thin translations onto the
//! [`SessionManager`], which holds all the state.

mod auth;
mod error;
mod executor;
mod judge;
mod native;
mod scripts;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use judge::JudgeSettings;

use crate::{Config, SessionManager};

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub manager: Arc<SessionManager>,
    pub judge: Arc<JudgeSettings>,
    /// The python-executor surface's executions.
    pub executions: Arc<executor::Executions>,
    /// The script wrapper's loaded scripts.
    pub scripts: Arc<scripts::Scripts>,
    pub tokens: Arc<auth::Tokens>,
}

/// The whole API: the native one and the compatibility surfaces. Request bodies are bounded by
/// `execution.max_frame_bytes`, file uploads by `files.max_bytes` (413 above them).
pub fn router(manager: Arc<SessionManager>, config: &Config) -> Router {
    let judge = JudgeSettings {
        run_timeout: Duration::from_millis(config.judge.run_timeout_ms),
        compile_timeout: Duration::from_millis(config.judge.compile_timeout_ms),
        parallel: if config.judge.parallel == 0 {
            config.pool.warm_workers.max(1)
        } else {
            config.judge.parallel
        },
        gxx: find_on_path("g++"),
    };
    let state = AppState {
        manager,
        judge: Arc::new(judge),
        executions: Arc::new(executor::Executions::new(Duration::from_secs(
            config.executor.keep_secs,
        ))),
        scripts: Arc::new(scripts::Scripts::new(
            config.scripts.dir.clone(),
            config.packages.allow_install,
        )),
        tokens: Arc::new(auth::Tokens::new(config.auth.tokens.clone())),
    };
    let max_file_bytes = usize::try_from(config.files.max_bytes).unwrap_or(usize::MAX);
    native::routes(max_file_bytes)
        .merge(judge::routes())
        .merge(executor::routes())
        .merge(scripts::routes())
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(config.execution.max_frame_bytes))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
            }),
        )
        .with_state(state)
}

/// The first `name` on `PATH` that is an executable file, as a shell would find it.
fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
