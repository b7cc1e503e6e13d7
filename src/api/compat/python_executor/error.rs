//! python-executor's error shape, `{"error": "message"}`, with the status it answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Error;
use crate::api::ApiError;
use crate::api::json::Rejected;

#[derive(Debug)]
pub struct ExecutorError {
    pub status: StatusCode,
    pub message: String,
}

impl ExecutorError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ExecutorError {
            status,
            message: message.into(),
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
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
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
        ExecutorError::new(api.status, api.message)
    }
}
