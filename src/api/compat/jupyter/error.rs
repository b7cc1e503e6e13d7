//! The Jupyter surface's error replies: jupyter_server's `{"message", "reason"}` (what its
//! clients, `GatewayClient` among them, read and show), with replpool's own `error` object
//! beside it. The status and code come from the one mapping (`api/error.rs`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::Error;
use crate::api::ApiError;
use crate::api::error::ErrorCode;
use crate::api::openapi::ErrorDetail;

#[derive(Debug)]
pub struct JupyterError(pub ApiError);

impl JupyterError {
    pub fn kernel_not_found(kernel_id: &str) -> JupyterError {
        JupyterError(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::KernelNotFound,
            format!("Kernel does not exist: {kernel_id}"),
        ))
    }

    /// `available`: the spec names, comma-separated.
    pub fn spec_not_found(name: &str, available: &str) -> JupyterError {
        // The name is the caller's, of any length: a body that repeats it is kept short.
        const SHOWN: usize = 100;
        let shown: String = name.chars().take(SHOWN).collect();
        let cut = if shown.len() < name.len() { "…" } else { "" };
        JupyterError(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::KernelSpecNotFound,
            format!("Kernel spec {shown}{cut} not found (this server's specs: {available})"),
        ))
    }
}

impl From<ApiError> for JupyterError {
    fn from(e: ApiError) -> Self {
        JupyterError(e)
    }
}

impl From<Error> for JupyterError {
    fn from(e: Error) -> Self {
        JupyterError(ApiError::from(e))
    }
}

impl IntoResponse for JupyterError {
    fn into_response(self) -> Response {
        let mut body = self.0.body();
        if let Some(object) = body.as_object_mut() {
            object.insert("message".into(), self.0.message.clone().into());
            let reason = self.0.status.canonical_reason().unwrap_or("Error");
            object.insert("reason".into(), reason.into());
        }
        (self.0.status, axum::Json(body)).into_response()
    }
}

/// The error reply of the Jupyter routes (for the document).
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({
    "message": "Kernel does not exist: 6c6f63616c_3f2a…",
    "reason": "Not Found",
    "error": {"code": "kernel_not_found", "message": "Kernel does not exist: 6c6f63616c_3f2a…", "category": "request"}
})))]
pub struct JupyterErrorBody {
    /// For a person (jupyter_server's field).
    pub message: String,
    /// The status's reason phrase (jupyter_server's field).
    pub reason: String,
    /// replpool's error, as every surface has it.
    pub error: ErrorDetail,
}
