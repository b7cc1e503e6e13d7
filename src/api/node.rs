//! Ids of other nodes. Behind a proxy, every id a client keeps names its node (see
//! `replpool_core::node`); a request that reaches another node was misrouted, and is answered
//! 421 `wrong_node` rather than forwarded: routing is the proxy's job.

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::compat::python_executor::EXECUTION_ID_PREFIX;
use super::error;
use crate::node;

/// A route layer for every route with an `{id}`: a session's, or a python-executor
/// execution's. An id of another node is refused; an id of no node (garbage) goes on to the
/// handler, which answers it as an unknown id.
pub async fn refuse_other_nodes(
    State(state): State<AppState>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    if let Ok(params) = params
        && let Some((_, id)) = params.iter().find(|(name, _)| *name == "id")
    {
        let this = state.manager.node();
        if let Some(owner) = node_of(id)
            && owner != this
        {
            return error::wrong_node(id, owner, this).into_response();
        }
    }
    next.run(request).await
}

/// The node an id names: session ids are `<node>.<random>`, execution ids the same after
/// python-executor's `exe_` (no node name has a `_`, so no session id starts so).
fn node_of(id: &str) -> Option<&str> {
    node::of(id.strip_prefix(EXECUTION_ID_PREFIX).unwrap_or(id))
}
