//! The web console (issue 23): its page and files are served from the binary, public, with a
//! strict Content-Security-Policy, and name nothing outside this server. The page is no way
//! around auth: it loads without a token, the API it calls does not answer without one. (The
//! page itself is driven in a real browser by tests/e2e/console.py, `make test-e2e`.)

mod common;

use common::{Api, shared_with};

const TOKEN: &str = "console-token-0123456789abcdef";
const CONFIG: &str =
    "[pool]\nwarm_workers = 1\n\n[auth]\ntokens = [\"console-token-0123456789abcdef\"]\n";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; connect-src 'self'; frame-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

fn base() -> &'static str {
    shared_with(CONFIG)
}

async fn fetch(path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", base()))
        .send()
        .await
        .expect("request sent")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn the_page_and_its_files_are_served_without_a_token_with_their_headers() {
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/console", "text/html; charset=utf-8"),
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let response = fetch(path).await;
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert_eq!(header(&response, "content-type"), content_type, "{path}");
        assert_eq!(header(&response, "content-security-policy"), CSP, "{path}");
        assert_eq!(
            header(&response, "x-content-type-options"),
            "nosniff",
            "{path}"
        );
        assert_eq!(
            header(&response, "referrer-policy"),
            "no-referrer",
            "{path}"
        );
        assert_eq!(header(&response, "cache-control"), "no-cache", "{path}");
        assert!(header(&response, "etag").starts_with('"'), "{path}");
    }
    let page = fetch("/").await.text().await.expect("page body");
    assert!(page.contains("/console/console.js"), "{page}");
    assert!(page.contains("/console/console.css"), "{page}");
}

#[tokio::test]
async fn an_unchanged_file_answers_304_to_its_etag() {
    let first = fetch("/console/console.js").await;
    let etag = header(&first, "etag").to_owned();
    let again = reqwest::Client::new()
        .get(format!("{}/console/console.js", base()))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("request sent");
    assert_eq!(again.status().as_u16(), 304);
    assert_eq!(header(&again, "content-security-policy"), CSP);
}

#[tokio::test]
async fn no_file_names_anything_outside_this_server() {
    for path in ["/", "/console/console.js", "/console/console.css"] {
        let body = fetch(path).await.text().await.expect("body").to_lowercase();
        for outside in [
            "http://",
            "https://",
            "//cdn",
            "src=\"//",
            "href=\"//",
            "url(//",
        ] {
            assert!(!body.contains(outside), "{path} names {outside}");
        }
    }
}

#[tokio::test]
async fn the_page_is_no_way_around_auth() {
    assert_eq!(fetch("/").await.status().as_u16(), 200);
    let anonymous = Api::new(base());
    let (status, body) = anonymous.get("/v1/sessions").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = Api::with_token(base(), TOKEN).get("/v1/sessions").await;
    assert_eq!(status, 200);
}

/// A file a session's code wrote is never a page of this origin (the console's, whose tab
/// holds the token): served with a sandboxing policy and no sniffing.
#[tokio::test]
async fn a_session_file_is_never_a_page_of_this_origin() {
    let api = Api::with_token(base(), TOKEN);
    let session = api.session().await;
    api.run(
        &session,
        "open('evil.html', 'w').write('<script>parent.stolen = sessionStorage</script>')",
    )
    .await;
    let response = reqwest::Client::new()
        .get(format!("{}/v1/sessions/{session}/files/evil.html", base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "text/html; charset=utf-8"
    );
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&response, "content-security-policy"),
        "sandbox; default-src 'none'"
    );
}
