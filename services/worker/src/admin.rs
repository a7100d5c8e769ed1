//! The admin HTTP surface: liveness, readiness and Prometheus metrics.

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use zerodrop_lifecycle::exposition::Format;
use zerodrop_lifecycle::Lifecycle;

#[derive(Clone)]
struct Admin {
    lc: Lifecycle,
    metrics: Arc<Metrics>,
}

pub fn router(lc: Lifecycle, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .with_state(Admin { lc, metrics })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(a): State<Admin>) -> Response {
    let ready = a.lc.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready, "phase": a.lc.phase().as_str() }))).into_response()
}

/// OpenMetrics or the classic text, as the scraper's `Accept` prefers (exposition.rs).
async fn metrics_text(State(a): State<Admin>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()));
    let body = a.metrics.render(&a.lc, format);
    ([(header::CONTENT_TYPE, format.content_type()), (header::VARY, "accept")], body).into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "not found" }))).into_response()
}
