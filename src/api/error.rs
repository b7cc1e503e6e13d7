//! Every service error becomes `{"error": {"code", "message"}}` with its status, here and
//! nowhere else.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Error;
use crate::files::FileError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::SessionNotFound(_) => (StatusCode::NOT_FOUND, "session_not_found"),
            Error::TooManySessions { .. } => (StatusCode::SERVICE_UNAVAILABLE, "too_many_sessions"),
            Error::TooManySessionsForOwner { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions")
            }
            Error::QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
            Error::SessionClosed => (StatusCode::CONFLICT, "session_closed"),
            Error::CodeTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "code_too_large"),
            Error::StdinTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "stdin_too_large"),
            Error::WorkerUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "worker_unavailable"),
            Error::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Error::Sandbox(_) => (StatusCode::SERVICE_UNAVAILABLE, "sandbox_unavailable"),
            Error::File(file) => match file {
                FileError::InvalidPath { .. } => (StatusCode::BAD_REQUEST, "invalid_path"),
                FileError::IsADirectory(_) => (StatusCode::BAD_REQUEST, "is_a_directory"),
                FileError::NotARegularFile(_) => (StatusCode::BAD_REQUEST, "not_a_regular_file"),
                FileError::Busy(_) => (StatusCode::TOO_MANY_REQUESTS, "files_busy"),
                FileError::NotFound(_) => (StatusCode::NOT_FOUND, "file_not_found"),
                FileError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "file_too_large"),
                FileError::QuotaExceeded { .. } => {
                    (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded")
                }
                FileError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
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
        "request_timeout",
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
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            JsonRejection::JsonDataError(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
            }
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            JsonRejection::BytesRejection(BytesRejection::FailedToBufferBody(_))
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            _ => (rejection.status(), "bad_request"),
        };
        ApiError::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
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
            "payload_too_large"
        } else {
            "bad_request"
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
}
