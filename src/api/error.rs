//! Every service error becomes `{"error": {"code", "message"}}` with its status, here and
//! nowhere else; every code a client can see is an [`ErrorCode`], written once.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Error;
use crate::files::FileError;

/// The codes of the API's errors: the strings clients see and may match on. (The serde names
/// are the OpenAPI schema's enum of codes; `as_str` is what replies carry, and a test in
/// `openapi.rs` keeps the two the same.)
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    CodeTooLarge,
    Draining,
    FileNotFound,
    FileTooLarge,
    FilesBusy,
    Internal,
    InvalidJson,
    InvalidPath,
    InvalidQuery,
    InvalidRequest,
    IsADirectory,
    MethodNotAllowed,
    NotARegularFile,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QueueFull,
    QuotaExceeded,
    RequestTimeout,
    SandboxUnavailable,
    SessionClosed,
    SessionNotFound,
    ShuttingDown,
    StdinTooLarge,
    TooManySessions,
    Unauthorized,
    UnsupportedMediaType,
    WorkerUnavailable,
    WrongNode,
    // The script wrapper's and the code judge's own.
    UnsupportedLanguage,
    InvalidScriptName,
    InvalidAlias,
    ScriptNotFound,
    AliasNotFound,
    FunctionNotFound,
    InstallDisabled,
    InvalidPackageName,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::CodeTooLarge => "code_too_large",
            ErrorCode::Draining => "draining",
            ErrorCode::FileNotFound => "file_not_found",
            ErrorCode::FileTooLarge => "file_too_large",
            ErrorCode::FilesBusy => "files_busy",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidPath => "invalid_path",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::IsADirectory => "is_a_directory",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NotARegularFile => "not_a_regular_file",
            ErrorCode::NotFound => "not_found",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::SandboxUnavailable => "sandbox_unavailable",
            ErrorCode::SessionClosed => "session_closed",
            ErrorCode::SessionNotFound => "session_not_found",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::StdinTooLarge => "stdin_too_large",
            ErrorCode::TooManySessions => "too_many_sessions",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::WorkerUnavailable => "worker_unavailable",
            ErrorCode::WrongNode => "wrong_node",
            ErrorCode::UnsupportedLanguage => "unsupported_language",
            ErrorCode::InvalidScriptName => "invalid_script_name",
            ErrorCode::InvalidAlias => "invalid_alias",
            ErrorCode::ScriptNotFound => "script_not_found",
            ErrorCode::AliasNotFound => "alias_not_found",
            ErrorCode::FunctionNotFound => "function_not_found",
            ErrorCode::InstallDisabled => "install_disabled",
            ErrorCode::InvalidPackageName => "invalid_package_name",
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.as_str(),
            message: message.into(),
        }
    }
}

impl ApiError {
    /// `{"error": {"code", "message", "category"}}`: the body of an error reply, or of an SSE
    /// `error` event.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message, "category": self.category()}})
    }

    /// The kind of failure, by status: a refused request is `request`, a fault `internal`, a
    /// full disk quota `disk_quota`, anything else the server could not do `unavailable`.
    /// (A stand-in until slice A's categories, which the lead merges in its place.)
    fn category(&self) -> &'static str {
        match self.status {
            StatusCode::INSUFFICIENT_STORAGE => "disk_quota",
            StatusCode::INTERNAL_SERVER_ERROR => "internal",
            status if status.is_server_error() => "unavailable",
            _ => "request",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        (self.status, Json(body)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use ErrorCode as C;
        let (status, code) = match &e {
            Error::SessionNotFound(_) => (StatusCode::NOT_FOUND, C::SessionNotFound),
            Error::TooManySessions { .. } => (StatusCode::SERVICE_UNAVAILABLE, C::TooManySessions),
            Error::TooManySessionsForOwner { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, C::TooManySessions)
            }
            Error::QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, C::QueueFull),
            Error::SessionClosed => (StatusCode::CONFLICT, C::SessionClosed),
            Error::CodeTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, C::CodeTooLarge),
            Error::StdinTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, C::StdinTooLarge),
            Error::WorkerUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, C::WorkerUnavailable),
            Error::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, C::ShuttingDown),
            Error::Draining => (StatusCode::SERVICE_UNAVAILABLE, C::Draining),
            Error::Internal(_) | Error::Io { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, C::Internal)
            }
            Error::Sandbox(sandbox) if sandbox.is_internal() => {
                (StatusCode::INTERNAL_SERVER_ERROR, C::Internal)
            }
            Error::Sandbox(_) => (StatusCode::SERVICE_UNAVAILABLE, C::SandboxUnavailable),
            Error::File(file) => match file {
                FileError::InvalidPath { .. } => (StatusCode::BAD_REQUEST, C::InvalidPath),
                FileError::IsADirectory(_) => (StatusCode::BAD_REQUEST, C::IsADirectory),
                FileError::NotARegularFile(_) => (StatusCode::BAD_REQUEST, C::NotARegularFile),
                FileError::Busy(_) => (StatusCode::TOO_MANY_REQUESTS, C::FilesBusy),
                FileError::NotPermitted { .. } => (StatusCode::FORBIDDEN, C::PermissionDenied),
                FileError::NotFound(_) => (StatusCode::NOT_FOUND, C::FileNotFound),
                FileError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, C::FileTooLarge),
                FileError::QuotaExceeded { .. } => {
                    (StatusCode::INSUFFICIENT_STORAGE, C::QuotaExceeded)
                }
                FileError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, C::Internal),
            },
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The answer to a request whose body did not arrive within `server.body_read_timeout_ms`
/// (the server's connection layer puts a deadline on every request body).
fn body_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::RequestTimeout,
        "the request body did not arrive in time (server.body_read_timeout_ms)",
    )
}

/// Whether reading a body failed because its deadline passed: the deadline's error sits
/// somewhere down the rejection's chain of sources.
fn body_timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        next = error.source();
    }
    false
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if body_timed_out(&rejection) {
            return body_timeout();
        }
        let (status, code) = match &rejection {
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidJson),
            JsonRejection::JsonDataError(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidRequest)
            }
            JsonRejection::MissingJsonContentType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
            ),
            JsonRejection::BytesRejection(BytesRejection::FailedToBufferBody(_))
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
            }
            _ => (rejection.status(), ErrorCode::BadRequest),
        };
        ApiError::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidQuery,
            rejection.body_text(),
        )
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if body_timed_out(&rejection) {
            return body_timeout();
        }
        let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::PayloadTooLarge
        } else {
            ErrorCode::BadRequest
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    }
}

/// A request for an id of another node: the proxy sent it to the wrong one (a node never
/// forwards).
pub fn wrong_node(id: &str, id_node: &str, this_node: &str) -> ApiError {
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        ErrorCode::WrongNode,
        format!("{id} belongs to node {id_node}; this is node {this_node}"),
    )
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no route for {}", uri.path()),
    )
}
