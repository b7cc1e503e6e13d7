//! The compatibility surfaces: other services' APIs, served by translating each request onto
//! the [`SessionManager`](crate::SessionManager), so that those services' clients work
//! unchanged. One module per surface; each owns the state it keeps beyond the manager's
//! sessions (the judge's settings, python-executor's executions, the script wrapper's
//! aliases), which [`AppState`](super::AppState) holds.
//!
//! With `auth.tokens` on, what a surface keeps belongs to the caller that made it, as the
//! native API's sessions do: another token's alias or execution answers as an unknown one.

pub mod judge;
pub mod jupyter;
pub mod python_executor;
mod python_literal;
pub mod scripts;

use utoipa_axum::router::OpenApiRouter;

use super::AppState;

/// Every compatibility surface's routes.
pub fn routes(state: AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(judge::routes())
        .merge(python_executor::routes(state))
        .merge(scripts::routes())
        .merge(jupyter::routes())
}
