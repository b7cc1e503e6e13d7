//! The API's description of itself: `GET /openapi.json` (OpenAPI 3.1) and a rendered page of it
//! at `/docs` (Swagger UI, from files compiled into the binary: the page fetches nothing from
//! anywhere else).
//!
//! The document is not written by hand. Every route is registered with `utoipa_axum`'s
//! `routes!`, which adds the handler to the router and its `#[utoipa::path]` to the document
//! from one list, so that a route cannot be served without being described (clippy's
//! `disallowed_methods`, in `clippy.toml`, refuses a plain `Router::route`); request and reply
//! bodies are the handlers' own types, deriving `ToSchema`. What every operation of a kind can
//! answer (401 without a token, 421 for another node's id, a body that is too large or too
//! slow, 500) is added here, once, by [`add_common_responses`].
//!
//! `/openapi.json` and `/docs` need no token: the schema is no secret, and a browser opening
//! the page cannot send one.

use std::sync::{Arc, LazyLock};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};
use utoipa::{Modify, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use super::error::ErrorCode;

/// The routes that need no token, whatever `auth.tokens` says: probes, the API's own
/// description, and the web console's files (which hold no data).
pub fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/openapi.json" | "/docs")
        || path.starts_with("/docs/")
        || super::console::is_console(path)
}

/// The tag of python-executor's operations, whose errors are its own shape.
pub const PYTHON_EXECUTOR: &str = "python-executor";

/// The native error reply: `{"error": {"code", "message", "category"}}`.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({"error": {
    "code": "session_not_found",
    "message": "session local.3f2a… not found",
    "category": "request"
}})))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, as a stable string a client may match on.
    pub code: ErrorCode,
    /// For a person: what went wrong and, where there is one, the setting behind it.
    pub message: String,
    /// The kind of failure: `request` for every 4xx, `internal` for a 500, the rest for what
    /// the server could not do.
    pub category: crate::execution::Category,
}

/// python-executor's error reply, `{"error": "message"}` as that server answers, with
/// replpool's `category` beside it.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({"error": "execution exe_local.1b2c… not found", "category": "request"})))]
pub struct ExecutorErrorBody {
    pub error: String,
    pub category: crate::execution::Category,
}

/// The document's frame: what it is, and the bearer scheme every operation but the public
/// ones declares.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "replpool",
        description = "Warm, preloaded Python sessions over HTTP: the native API (`/v1`), the \
            probes, and the compatibility surfaces (python-executor, the code judge, the script \
            wrapper, the Jupyter kernel API). With `auth.tokens` set, every operation that \
            declares the `bearer` scheme needs `Authorization: Bearer <token>` (or Jupyter's \
            `Authorization: token <token>`); without it, none does. Error replies carry \
            `{\"error\": {\"code\", \"message\", \"category\"}}` (python-executor's: \
            `{\"error\": \"message\"}`; the Jupyter API's add `message` and `reason`).",
        license(name = "MIT"),
    ),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ExecutorErrorBody)),
    modifiers(&BearerScheme),
    tags(
        (name = "sessions", description = "Sessions: a warm Python process each, with its files"),
        (name = "execution", description = "Running code, in a session or once"),
        (name = "probes", description = "Health and readiness, for a proxy or Kubernetes"),
        (name = "meta", description = "This document and its page"),
        (name = "python-executor", description = "python-executor's API, for its clients"),
        (name = "judge", description = "The code judge's API, for its clients"),
        (name = "scripts", description = "The script wrapper's API, for its clients"),
        (name = "jupyter", description = "The Jupyter kernel API (REST and the channels' websocket), for Jupyter front ends and gateway clients"),
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "One of `auth.tokens`; needed only when the server has tokens configured",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds the replies every operation of a kind can get, whatever its handler does: from the
/// auth middleware, the node check, the body limits and deadlines, and a fault. Run on the
/// assembled document (the `modifiers` of [`ApiDoc`] run before any route is in it).
pub fn add_common_responses(openapi: &mut OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
        ];
        for operation in operations.into_iter().flatten() {
            add_common_responses_to(operation);
        }
    }
}

fn add_common_responses_to(operation: &mut Operation) {
    let public = operation
        .security
        .as_ref()
        .is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
    let executor = operation
        .tags
        .as_ref()
        .is_some_and(|t| t.iter().any(|t| t == PYTHON_EXECUTOR));
    let has_id = operation.parameters.as_ref().is_some_and(|ps| {
        ps.iter().any(
            |p| matches!(p, RefOr::T(p) if p.name == "id" && p.parameter_in == ParameterIn::Path),
        )
    });
    let has_body = operation.request_body.is_some();
    // Answered before the handler, by the middleware and layers: always the native shape.
    let mut common: Vec<(&str, &str, &str)> = Vec::new();
    if !public {
        common.push((
            "401",
            "ErrorBody",
            "`unauthorized`: the server has `auth.tokens` and the request carries none of them",
        ));
    }
    if has_id {
        common.push((
            "421",
            "ErrorBody",
            "`wrong_node`: the id names another node (behind a proxy, the request was misrouted)",
        ));
    }
    // Answered by the handler's own error type.
    let own = if executor {
        "ExecutorErrorBody"
    } else {
        "ErrorBody"
    };
    if has_body {
        common.push((
            "408",
            own,
            "`request_timeout`: the body did not arrive within `server.body_read_timeout_ms`",
        ));
        common.push((
            "413",
            own,
            "`payload_too_large` (or the route's own limit): the body is over `execution.max_frame_bytes`",
        ));
    }
    if !public {
        common.push((
            "500",
            own,
            "`internal`: a fault of the server's; the log says more",
        ));
    }
    for (status, schema, description) in common {
        if operation.responses.responses.contains_key(status) {
            continue;
        }
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build(),
            )
            .build();
        operation
            .responses
            .responses
            .insert(status.to_owned(), RefOr::T(response));
    }
}

/// The whole document, serialized once: what `GET /openapi.json` answers.
#[derive(Clone)]
pub struct Document(Bytes);

impl Document {
    pub fn new(openapi: &OpenApi) -> Document {
        // Serializing a document of plain maps and strings cannot fail; if it ever did, the
        // route would answer an empty object rather than the server not starting.
        Document(Bytes::from(
            serde_json::to_vec(openapi).unwrap_or_else(|_| b"{}".to_vec()),
        ))
    }
}

/// The operations of this module: the document and its page.
pub fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_root))
        .routes(routes!(docs_index))
        .routes(routes!(docs_file))
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object),
    ),
)]
async fn openapi_json(Extension(document): Extension<Document>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.clone(),
    )
        .into_response()
}

/// The page: a redirect to `/docs/`, where its relative links to its files resolve.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "meta",
    security(()),
    responses(
        (status = 303, description = "To `/docs/`", headers(("location" = String, description = "`/docs/`"))),
    ),
)]
async fn docs_root() -> Redirect {
    Redirect::to("/docs/")
}

/// The page: Swagger UI, rendering `/openapi.json`.
#[utoipa::path(
    get,
    path = "/docs/",
    operation_id = "docs_page",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "Swagger UI's page", content_type = "text/html", body = String),
    ),
)]
async fn docs_index() -> Response {
    docs_asset("")
}

/// One of the page's files (its scripts, style sheets, icons), as compiled into the server.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    operation_id = "docs_file",
    tag = "meta",
    security(()),
    params(("file" = String, Path, description = "A file of Swagger UI's, e.g. `swagger-ui.css`")),
    responses(
        (status = 200, description = "The file", content(
            ("text/css"), ("text/javascript"), ("application/javascript"), ("image/png"),
            ("text/html"), ("application/json"), ("application/octet-stream"),
        )),
        (status = 404, description = "`not_found`: no such file", body = ErrorBody),
    ),
)]
async fn docs_file(Path(file): Path<String>) -> Response {
    docs_asset(&file)
}

/// Swagger UI's settings: this server's document, and no validator badge (which the page
/// would fetch from swagger.io).
static SWAGGER: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        utoipa_swagger_ui::Config::new(["/openapi.json"])
            .validator_url("none")
            .try_it_out_enabled(true)
            .persist_authorization(false),
    )
});

fn docs_asset(file: &str) -> Response {
    match utoipa_swagger_ui::serve(file, SWAGGER.clone()) {
        Ok(Some(asset)) => (
            [(header::CONTENT_TYPE, asset.content_type)],
            asset.bytes.into_owned(),
        )
            .into_response(),
        Ok(None) => super::ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("/docs has no file {file:?}"),
        )
        .into_response(),
        Err(e) => super::ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("cannot serve /docs/{file}: {e}"),
        )
        .into_response(),
    }
}

/// `routes` for a route whose last parameter takes the rest of the path, `/`s and all
/// (`{*path}` to axum): OpenAPI has no such parameter, so the document names it `{path}`
/// while the router matches the wildcard. The document's path is the one `#[utoipa::path]`
/// gives; the router's is derived from it here, so the two cannot drift apart.
pub fn routes_with_rest<S>(
    router: OpenApiRouter<S>,
    (schemas, paths, method_router): UtoipaMethodRouter<S>,
) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut router = router;
    for (path, item) in paths.paths {
        let rest = match path.rfind('{') {
            Some(at) => format!("{}{{*{}", &path[..at], &path[at + 1..]),
            None => path.clone(),
        };
        #[allow(clippy::disallowed_methods)] // the document gets the path just below
        let routed = router.route(&rest, method_router.clone());
        router = routed;
        let openapi = router.get_openapi_mut();
        match openapi.paths.paths.get_mut(&path) {
            Some(existing) => existing.merge_operations(item),
            None => {
                openapi.paths.paths.insert(path, item);
            }
        }
        openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(schemas.clone());
    }
    router
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    #[test]
    fn the_schema_names_every_code_as_replies_do() {
        let schema = serde_json::to_value(ErrorCode::schema()).expect("a schema");
        let names = schema["enum"].as_array().expect("an enum of codes");
        assert!(names.len() >= 38, "{names:?}");
        for name in names {
            let code: ErrorCode = serde_json::from_value(name.clone()).expect("a code");
            assert_eq!(Some(code.as_str()), name.as_str());
        }
    }

    #[test]
    fn public_routes_are_the_probes_the_description_and_the_console() {
        for path in [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/docs",
            "/docs/",
            "/docs/index.css",
            "/",
            "/console",
            "/console/console.js",
            "/console/console.css",
        ] {
            assert!(is_public(path), "{path}");
        }
        for path in [
            "/v1/sessions",
            "/docsx",
            "/openapi.jsonx",
            "/health",
            "/consolex",
            "/console/",
            "/console/other.js",
            "//",
        ] {
            assert!(!is_public(path), "{path}");
        }
    }
}
