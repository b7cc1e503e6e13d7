//! The web console (issue 23): a notebook-like page, its script and its style sheet, compiled
//! into the binary. The page holds no data, so it needs no token (a browser opening it cannot
//! send one); every API call the page makes carries the token the user typed.
//!
//! Every reply carries a strict Content-Security-Policy: session output is code anyone wrote,
//! and the token lives in this origin's sessionStorage, so the page runs only its own script
//! and connects only to this server.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");

/// What the page may load and do. Plots are `data:` images; `text/html` output goes into a
/// sandboxed `srcdoc` iframe (no scripts, an opaque origin), which `frame-src 'self'` covers.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; connect-src 'self'; frame-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The paths served here: public (see `openapi::is_public`).
pub fn is_console(path: &str) -> bool {
    matches!(
        path,
        "/" | "/console" | "/console/console.js" | "/console/console.css"
    )
}

pub fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(root))
        .routes(routes!(page))
        .routes(routes!(script))
        .routes(routes!(style))
}

/// The web console's page.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "console_root",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "The web console", content_type = "text/html", body = String),
        (status = 304, description = "Unchanged (`If-None-Match` named its ETag)"),
    ),
)]
async fn root(headers: HeaderMap) -> Response {
    asset(&headers, "text/html; charset=utf-8", INDEX)
}

/// The web console's page (the same as `/`).
#[utoipa::path(
    get,
    path = "/console",
    operation_id = "console_page",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "The web console", content_type = "text/html", body = String),
        (status = 304, description = "Unchanged (`If-None-Match` named its ETag)"),
    ),
)]
async fn page(headers: HeaderMap) -> Response {
    asset(&headers, "text/html; charset=utf-8", INDEX)
}

/// The web console's script.
#[utoipa::path(
    get,
    path = "/console/console.js",
    operation_id = "console_script",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "The console's script", content_type = "text/javascript", body = String),
        (status = 304, description = "Unchanged (`If-None-Match` named its ETag)"),
    ),
)]
async fn script(headers: HeaderMap) -> Response {
    asset(&headers, "text/javascript; charset=utf-8", SCRIPT)
}

/// The web console's style sheet.
#[utoipa::path(
    get,
    path = "/console/console.css",
    operation_id = "console_style",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "The console's style sheet", content_type = "text/css", body = String),
        (status = 304, description = "Unchanged (`If-None-Match` named its ETag)"),
    ),
)]
async fn style(headers: HeaderMap) -> Response {
    asset(&headers, "text/css; charset=utf-8", STYLE)
}

/// One tag for the three files: they change together, with the binary.
static ETAG: LazyLock<String> = LazyLock::new(|| {
    let mut hasher = DefaultHasher::new();
    (INDEX, SCRIPT, STYLE).hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
});

fn asset(request: &HeaderMap, content_type: &'static str, body: &'static str) -> Response {
    let etag = ETAG.as_str();
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let headers = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"0\"")),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (
        headers,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}
