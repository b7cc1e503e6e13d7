//! `GET /openapi.json` and `/docs`: the document describes exactly the routes the server
//! serves (probed, not taken on trust), validates as OpenAPI 3.1, says truly which operations
//! need a token, and the page renders from the server's own files.

mod common;

use std::collections::BTreeSet;

use common::{Api, shared_with};
use reqwest::Method;
use serde_json::Value;

const TOKEN: &str = "token-openapi-0123456789abcdef";
// With a token configured, so that what the document says of security can be checked too.
const CONFIG: &str =
    "[pool]\nwarm_workers = 1\n\n[auth]\ntokens = [\"token-openapi-0123456789abcdef\"]\n";

fn base() -> &'static str {
    shared_with(CONFIG)
}

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

async fn document() -> Value {
    let response = reqwest::get(format!("{}/openapi.json", base()))
        .await
        .expect("request sent");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/json");
    let document: Value = response.json().await.expect("the document is JSON");
    assert_eq!(document["openapi"], "3.1.0", "{}", document["openapi"]);
    document
}

/// Every (path, method) the document lists.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    let paths = document["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((path.clone(), method.to_owned(), operation.clone()));
            }
        }
    }
    found
}

/// A concrete request path for a documented one: each parameter a value that reaches the
/// handler (an unknown session or execution, one of the page's real files).
fn concrete(path: &str) -> String {
    path.replace("{id}", "probe")
        .replace("{path}", "dir/probe.txt")
        .replace("{file}", "swagger-ui.css")
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.to_uppercase().as_bytes()).expect("a method")
}

/// The statuses an operation declares.
fn declared(operation: &Value) -> BTreeSet<String> {
    operation["responses"]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

/// Whether a reply is the router's fallback: no route for that path.
fn is_fallback(status: u16, body: &str) -> bool {
    status == 404 && body.contains("\"not_found\"") && body.contains("no route for")
}

#[tokio::test]
async fn every_operation_of_the_document_is_routed_and_answers_as_declared() {
    let document = document().await;
    let api = Api::with_token(base(), TOKEN);
    // Without redirects: `/docs` declares its 303.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                reqwest::header::HeaderValue::from_static("Bearer token-openapi-0123456789abcdef"),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .expect("client");
    let operations = operations(&document);
    assert!(operations.len() >= 30, "{} operations", operations.len());
    // The probe can tell: a path the server has no route for is the fallback's.
    let (status, body) = api.get("/v1/no-such-route").await;
    assert!(is_fallback(status, &body.to_string()), "{status} {body}");
    for (path, name, operation) in &operations {
        // No body: every operation that takes one refuses its absence (or, creating a
        // session, takes it), so nothing runs.
        let response = http
            .request(method(name), api.url(&concrete(path)))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert!(
            !is_fallback(status, &body) && status != 405,
            "{name} {path}: the document lists it, the router does not: {status} {body}"
        );
        assert!(
            declared(operation).contains(&status.to_string()),
            "{name} {path}: {status} is not among {:?}: {body}",
            declared(operation)
        );
    }
}

#[tokio::test]
async fn methods_the_document_does_not_list_are_refused() {
    let document = document().await;
    let api = Api::with_token(base(), TOKEN);
    let paths = document["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for name in METHODS.iter().filter(|m| item.get(**m).is_none()) {
            let response = api
                .http
                .request(method(name), api.url(&concrete(path)))
                .send()
                .await
                .expect("request sent");
            assert_eq!(
                response.status().as_u16(),
                405,
                "{name} {path}: the router takes a method the document does not list"
            );
        }
    }
}

#[tokio::test]
async fn exactly_the_operations_without_security_need_no_token() {
    let document = document().await;
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    assert!(document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
    let mut public = Vec::new();
    for (path, name, operation) in operations(&document) {
        let open = operation["security"] == serde_json::json!([{}]);
        let response = anonymous
            .request(method(&name), format!("{}{}", base(), concrete(&path)))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if open {
            public.push(format!("{name} {path}"));
            assert_ne!(status, 401, "{name} {path} declares no security");
        } else {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("unauthorized")),
                "{name} {path} declares the bearer scheme"
            );
        }
    }
    public.sort();
    assert_eq!(
        public,
        [
            "get /",
            "get /console",
            "get /console/console.css",
            "get /console/console.js",
            "get /docs",
            "get /docs/",
            "get /docs/{file}",
            "get /healthz",
            "get /openapi.json",
            "get /readyz",
        ]
    );
}

#[tokio::test]
async fn every_error_code_and_shape_is_in_the_document() {
    let document = document().await;
    let schemas = &document["components"]["schemas"];
    let codes: BTreeSet<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for code in [
        "session_not_found",
        "not_found",
        "unauthorized",
        "wrong_node",
        "is_a_directory",
        "not_a_regular_file",
        "quota_exceeded",
        "unsupported_language",
        "install_disabled",
    ] {
        assert!(codes.contains(code), "{code} is not among {codes:?}");
    }
    let categories: Vec<&str> = schemas["ErrorCategory"]["enum"]
        .as_array()
        .expect("ErrorCategory is an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        categories,
        [
            "syntax",
            "runtime",
            "timeout",
            "interrupted",
            "memory",
            "cpu_limit",
            "output_limit",
            "disk_quota",
            "worker_died",
            "install",
            "unavailable",
            "request",
            "internal",
        ]
    );
    let required: Vec<&str> = schemas["ErrorDetail"]["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required, ["code", "message", "category"]);
    // Each surface's own shape, on its operations.
    let paths = &document["paths"];
    let reference = |path: &str, method: &str, status: &str| {
        paths[path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(
        reference("/v1/sessions/{id}", "get", "404").as_deref(),
        Some("#/components/schemas/ErrorBody")
    );
    assert_eq!(
        reference("/api/v1/executions/{id}", "get", "404").as_deref(),
        Some("#/components/schemas/ExecutorErrorBody")
    );
    // What the middleware answers, on every operation it guards.
    assert_eq!(
        reference("/v1/sessions/{id}/execute", "post", "421").as_deref(),
        Some("#/components/schemas/ErrorBody")
    );
    assert_eq!(
        reference("/python/list", "get", "401").as_deref(),
        Some("#/components/schemas/ErrorBody")
    );
}

#[tokio::test]
async fn session_creation_links_to_every_session_operation() {
    let document = document().await;
    let links = document["paths"]["/v1/sessions"]["post"]["responses"]["201"]["links"]
        .as_object()
        .expect("links from the 201");
    let linked: BTreeSet<&str> = links
        .values()
        .filter_map(|l| l["operationId"].as_str())
        .collect();
    let mut session_operations = BTreeSet::new();
    for (path, _, operation) in operations(&document) {
        if path.starts_with("/v1/sessions/{id}") {
            session_operations.insert(
                operation["operationId"]
                    .as_str()
                    .expect("an operationId")
                    .to_owned(),
            );
        }
    }
    let linked: BTreeSet<String> = linked.into_iter().map(str::to_owned).collect();
    assert_eq!(linked, session_operations);
    for link in links.values() {
        assert_eq!(link["parameters"]["id"], "$response.body#/session_id");
    }
}

#[tokio::test]
async fn the_document_validates_as_openapi_3_1() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/validate.py");
    let output = std::process::Command::new(common::python())
        .arg(script)
        .arg(format!("{}/openapi.json", base()))
        .output()
        .expect("run tests/openapi/validate.py");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `src` and `href` attributes of a page.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attribute) {
            rest = &rest[at + attribute.len()..];
            if let Some(end) = rest.find('"') {
                found.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    found
}

#[tokio::test]
async fn docs_renders_from_the_servers_own_files() {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let redirect = http
        .get(format!("{}/docs", base()))
        .send()
        .await
        .expect("request sent");
    assert_eq!(redirect.status().as_u16(), 303);
    assert_eq!(
        redirect
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok()),
        Some("/docs/")
    );
    let page = http
        .get(format!("{}/docs/", base()))
        .send()
        .await
        .expect("request sent");
    assert_eq!(page.status().as_u16(), 200);
    assert!(content_type(&page).starts_with("text/html"));
    let html = page.text().await.expect("the page");
    let references = references(&html);
    let scripts = references.iter().filter(|r| r.ends_with(".js")).count();
    let styles = references.iter().filter(|r| r.ends_with(".css")).count();
    assert!(scripts >= 2 && styles >= 1, "{references:?}");
    for reference in &references {
        assert!(
            !reference.contains("//"),
            "the page fetches {reference} from elsewhere"
        );
        let url = format!(
            "{}/docs/{}",
            base(),
            reference.trim_start_matches("./").trim_start_matches('/')
        );
        let response = http.get(&url).send().await.expect("request sent");
        assert_eq!(response.status().as_u16(), 200, "{url}");
        let kind = content_type(&response);
        let expected = match reference.rsplit('.').next() {
            Some("js") => "javascript",
            Some("css") => "text/css",
            Some("png") => "image/png",
            _ => "",
        };
        assert!(kind.contains(expected), "{url}: {kind}");
        assert!(
            !response.bytes().await.expect("the file").is_empty(),
            "{url}"
        );
    }
    // The page's settings: this server's document, and no validator badge from elsewhere.
    let initializer = http
        .get(format!("{}/docs/swagger-initializer.js", base()))
        .send()
        .await
        .expect("request sent")
        .text()
        .await
        .expect("the initializer");
    assert!(initializer.contains("\"/openapi.json\""), "{initializer}");
    assert!(
        initializer.contains("\"validatorUrl\": \"none\""),
        "{initializer}"
    );
    assert!(!initializer.contains("http"), "{initializer}");
    // A file the page does not have is an error in the API's shape.
    let (status, body) = Api::new(base()).get("/docs/no-such-file.js").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
