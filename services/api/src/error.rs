use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Every non-2xx answer of the api: a status and a reason, rendered as JSON.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub reason: String,
    pub retry_after_s: Option<u32>,
    /// Answer with `Connection: close`: what is left of the request on the wire
    /// cannot be skipped, so the connection cannot serve another one.
    pub close: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError { status, reason: reason.into(), retry_after_s: None, close: false }
    }
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }
    pub fn unavailable(reason: impl Into<String>, retry_after_s: u32) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: reason.into(),
            retry_after_s: Some(retry_after_s),
            close: false,
        }
    }
    pub fn closing(self) -> Self {
        ApiError { close: true, ..self }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res =
            (self.status, Json(json!({ "error": self.reason, "status": self.status.as_u16() }))).into_response();
        if let Some(s) = self.retry_after_s {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.close {
            // hyper reads this header: it sends the answer, then closes.
            res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}
