//! `GET /metrics` (Prometheus' text format), and the layer that counts every request by its
//! route template.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics;

/// Prometheus' text exposition format, version 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What is read rather than counted is read now; then everything is rendered. The reads are
/// of `/proc/self` and of in-memory counts: nothing here waits on a disk or another process.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "probes",
    responses((
        status = 200,
        description = "Prometheus' text format (0.0.4): every family is listed in docs/architecture.md, \"Metrics\"",
        content_type = "text/plain; version=0.0.4; charset=utf-8",
        body = String
    ))
)]
pub async fn scrape(State(state): State<AppState>) -> Response {
    state.manager.record_gauges();
    metrics::record_process();
    (
        [(header::CONTENT_TYPE, TEXT_FORMAT)],
        state.prometheus.render(),
    )
        .into_response()
}

/// Counts the request once answered, by the route that matched (`/v1/sessions/{id}`): the
/// path itself would make a series of every id. Requests no route matched are `unmatched`.
pub async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    metrics::http_request(&route, &method, response.status());
    response
}
