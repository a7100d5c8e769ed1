//! The relay's control API, what the `zerodrop-fault-relay` binary serves beside the
//! relay (the kind platform reaches it through a port-forward):
//!
//! - `PUT /fault` with a [`NetFault`] as JSON, or `null` to clear: 200 and the fault
//!   now in force, echoed in the same JSON (the caller checks the echo); 400 for a body
//!   that is not JSON, 422 for JSON that is no fault, each with `{"error": reason}`.
//! - `GET /fault`: 200 and the fault in force.
//! - `GET /healthz`: 200 once the relay listens (the pod's readiness).
//!
//! The body is parsed here rather than by axum's `Json` extractor so that a request
//! without `Content-Type` is still read, and every refusal says why in the same shape.

use crate::{FaultRelay, NetFault};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use std::sync::Arc;

/// The routes above, over `relay`.
pub fn router(relay: Arc<FaultRelay>) -> Router {
    Router::new().route("/fault", get(current).put(set)).route("/healthz", get(|| async { "ok\n" })).with_state(relay)
}

async fn current(State(relay): State<Arc<FaultRelay>>) -> Json<Option<NetFault>> {
    Json(relay.get())
}

async fn set(State(relay): State<Arc<FaultRelay>>, body: Bytes) -> Response {
    let fault = match parse(&body) {
        Ok(f) => f,
        Err((status, reason)) => {
            tracing::warn!(step = "fault_refused", status = status.as_u16(), %reason, "fault request refused");
            return (status, Json(serde_json::json!({ "error": reason }))).into_response();
        }
    };
    let before = relay.get();
    relay.set(fault);
    let describe = |f: Option<NetFault>| f.map_or_else(|| "none".to_string(), |f| f.describe());
    tracing::info!(step = "fault", from = %describe(before), to = %describe(fault), "fault on the relayed path");
    (StatusCode::OK, Json(relay.get())).into_response()
}

/// A body as the control API reads it: a fault, `null`, or a refusal with its status.
pub fn parse(body: &[u8]) -> Result<Option<NetFault>, (StatusCode, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err((StatusCode::BAD_REQUEST, "empty body: send a fault as JSON, or null to clear it".into()));
    }
    serde_json::from_slice(body).map_err(|e| {
        let status = match e.classify() {
            serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, format!("not a fault ({e}); expected {{\"kind\":\"delay\",\"ms\":800}}, {{\"kind\":\"cut\"}} or null"))
    })
}
