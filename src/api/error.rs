//! Every service error becomes `{"error": {"code", "message", "category"}}` with its status,
//! here and nowhere else; every code a client can see is an [`ErrorCode`], written once, with
//! the [`Category`] it belongs to beside it.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Error;
use crate::execution::Category;
use crate::files::FileError;
use crate::packages::PackageError;

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
    /// The server's `sessions.max` (503).
    TooManySessions,
    /// The caller's own `auth.max_sessions_per_token` (429): the same code, but the caller's
    /// limit, not the server's capacity. (Not in the schema's enum of codes, where the string
    /// is `TooManySessions`'.)
    #[serde(skip)]
    TooManySessionsForOwner,
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
    // Per-session package installs.
    /// A requirement that is not a package name with a version specifier (400).
    InvalidRequirement,
    /// `packages.allow`/`packages.deny` keep the package out (403).
    PackageNotAllowed,
    /// The installer refused or failed: unknown package or version, no wheel, a conflict (422).
    InstallFailed,
    /// The install took longer than `packages.timeout_ms` (422).
    InstallTimeout,
    /// The installer cannot be run here (`packages.uv` missing): the server's setup (503).
    InstallerUnavailable,
    // The Jupyter kernel API's own.
    KernelNotFound,
    KernelSpecNotFound,
    /// A session or one-shot asked for a Python no `[[python.interpreters]]` entry is.
    UnknownPython,
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
            ErrorCode::TooManySessions | ErrorCode::TooManySessionsForOwner => "too_many_sessions",
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
            ErrorCode::InvalidRequirement => "invalid_requirement",
            ErrorCode::PackageNotAllowed => "package_not_allowed",
            ErrorCode::InstallFailed => "install_failed",
            ErrorCode::InstallTimeout => "install_timeout",
            ErrorCode::InstallerUnavailable => "installer_unavailable",
            ErrorCode::KernelNotFound => "kernel_not_found",
            ErrorCode::KernelSpecNotFound => "kernel_spec_not_found",
            ErrorCode::UnknownPython => "unknown_python",
        }
    }

    /// What kind of failure the code is: `request` for every refusal of the caller's request
    /// (4xx), `unavailable` when the server cannot serve it now (503), `disk_quota` for the
    /// session's quota (507), `internal` for the server's own failure (500).
    pub fn category(self) -> Category {
        use ErrorCode as C;
        match self {
            C::BadRequest
            | C::CodeTooLarge
            | C::FileNotFound
            | C::FileTooLarge
            | C::FilesBusy
            | C::InvalidJson
            | C::InvalidPath
            | C::InvalidQuery
            | C::InvalidRequest
            | C::IsADirectory
            | C::MethodNotAllowed
            | C::NotARegularFile
            | C::NotFound
            | C::PayloadTooLarge
            | C::PermissionDenied
            | C::QueueFull
            | C::RequestTimeout
            | C::SessionClosed
            | C::SessionNotFound
            | C::StdinTooLarge
            | C::TooManySessionsForOwner
            | C::Unauthorized
            | C::UnsupportedMediaType
            | C::WrongNode
            | C::UnsupportedLanguage
            | C::InvalidScriptName
            | C::InvalidAlias
            | C::ScriptNotFound
            | C::AliasNotFound
            | C::FunctionNotFound
            | C::InstallDisabled
            | C::InvalidPackageName
            | C::InvalidRequirement
            | C::PackageNotAllowed
            | C::KernelNotFound
            | C::KernelSpecNotFound
            | C::UnknownPython => Category::Request,
            C::Draining
            | C::SandboxUnavailable
            | C::ShuttingDown
            | C::TooManySessions
            | C::WorkerUnavailable => Category::Unavailable,
            C::QuotaExceeded => Category::DiskQuota,
            C::InstallFailed | C::InstallTimeout => Category::Install,
            C::InstallerUnavailable => Category::Unavailable,
            C::Internal => Category::Internal,
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub category: Category,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.as_str(),
            category: code.category(),
            message: message.into(),
        }
    }
}

impl ApiError {
    /// `{"error": {"code", "message", "category"}}`: the body of an error reply, or of an SSE
    /// `error` event.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message, "category": self.category}})
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
                (StatusCode::TOO_MANY_REQUESTS, C::TooManySessionsForOwner)
            }
            Error::QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, C::QueueFull),
            Error::SessionClosed => (StatusCode::CONFLICT, C::SessionClosed),
            Error::CodeTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, C::CodeTooLarge),
            Error::StdinTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, C::StdinTooLarge),
            Error::WorkerUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, C::WorkerUnavailable),
            Error::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, C::ShuttingDown),
            Error::Draining => (StatusCode::SERVICE_UNAVAILABLE, C::Draining),
            Error::UnknownPython { .. } => (StatusCode::BAD_REQUEST, C::UnknownPython),
            Error::Internal(_) | Error::Io { .. } | Error::InterpreterUnusable { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, C::Internal)
            }
            Error::Sandbox(sandbox) if sandbox.is_internal() => {
                (StatusCode::INTERNAL_SERVER_ERROR, C::Internal)
            }
            Error::Sandbox(_) => (StatusCode::SERVICE_UNAVAILABLE, C::SandboxUnavailable),
            Error::Package(package) => match package {
                PackageError::InvalidRequirement { .. } | PackageError::TooMany { .. } => {
                    (StatusCode::BAD_REQUEST, C::InvalidRequirement)
                }
                PackageError::NotAllowed { .. } | PackageError::DependencyNotAllowed { .. } => {
                    (StatusCode::FORBIDDEN, C::PackageNotAllowed)
                }
                PackageError::Disabled => (StatusCode::FORBIDDEN, C::InstallDisabled),
                PackageError::Failed { .. } => (StatusCode::UNPROCESSABLE_ENTITY, C::InstallFailed),
                PackageError::Timeout { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, C::InstallTimeout)
                }
                PackageError::OverQuota { .. } => {
                    (StatusCode::INSUFFICIENT_STORAGE, C::QuotaExceeded)
                }
                PackageError::Installer(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, C::InstallerUnavailable)
                }
                PackageError::Io { .. } | PackageError::Internal(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, C::Internal)
                }
            },
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
