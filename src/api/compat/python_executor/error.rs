//! python-executor's error shape, `{"error": "message"}`, with the status it answers, and
//! replpool's `category` beside it (a field more, which that shape has room for).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Error;
use crate::api::ApiError;
use crate::api::json::Rejected;
use crate::execution::Category;

#[derive(Debug)]
pub struct ExecutorError {
    pub status: StatusCode,
    pub message: String,
    pub category: Category,
}

impl ExecutorError {
    /// An error of this surface's own: `request` for a 4xx, else `internal` (it makes no
    /// other status itself; the core's errors keep their category, below).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ExecutorError {
            status,
            message: message.into(),
            category: if status.is_client_error() {
                Category::Request
            } else {
                Category::Internal
            },
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ExecutorError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(id: &str) -> Self {
        ExecutorError::new(StatusCode::NOT_FOUND, format!("execution {id} not found"))
    }
}

impl IntoResponse for ExecutorError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "category": self.category });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Every body that is not the JSON a route takes is a 400, as python-executor answers.
impl From<Rejected> for ExecutorError {
    fn from(rejected: Rejected) -> Self {
        ExecutorError::bad_request(rejected.0.body_text())
    }
}

/// The core's errors keep the native API's status and message.
impl From<Error> for ExecutorError {
    fn from(e: Error) -> Self {
        let api = ApiError::from(e);
        ExecutorError {
            status: api.status,
            message: api.message,
            category: api.category,
        }
    }
}
