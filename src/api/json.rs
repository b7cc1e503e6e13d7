//! The one JSON body extractor of every route.
//!
//! It is `axum::Json` whose rejection each surface answers in its own error shape: the native
//! API, the judge and the script wrapper through [`ApiError`] (the rejection's own status,
//! `invalid_json`, `invalid_request`, …), python-executor through its `{"error": "message"}`
//! (its handlers take `Result<Json<T>, Rejected>` and convert).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};

use super::ApiError;

pub struct Json<T>(pub T);

/// Why a body was not the JSON a route takes.
#[derive(Debug)]
pub struct Rejected(pub JsonRejection);

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        ApiError::from(self.0).into_response()
    }
}

impl<T, S> FromRequest<S> for Json<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Rejected;

    async fn from_request(request: Request, state: &S) -> Result<Self, Rejected> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(value)| Json(value))
            .map_err(Rejected)
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
