use crate::error::ApiError;
use crate::state::AppState;
use crate::timeout::bounded;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tower_http::trace::{DefaultMakeSpan, TraceLayer};
use tracing::Level;
use zerodrop_jobs::Job;
use zerodrop_lifecycle::exposition::Format;
use zerodrop_lifecycle::http::ConnRequest;
use zerodrop_lifecycle::Phase;

/// Bodies above this are refused with 413 before being read in full.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.request_timeout;
    // Inside the timeout, so an injected delay counts against it like real slowness.
    let faults = || axum::middleware::from_fn_with_state(state.faults.clone(), crate::fault::inject);
    Router::new()
        .route("/work", bounded(get(work).route_layer(faults()), limit, "GET /work"))
        .route("/jobs", bounded(post(submit_job).route_layer(faults()), limit, "POST /jobs"))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Not bounded: both outlive any request timeout on purpose (see timeout.rs).
        .route("/stream", get(crate::stream::stream))
        .route("/long-op", post(crate::long_op::long_op))
        .route_layer(axum::middleware::from_fn_with_state(state.metrics.clone(), crate::metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(crate::body_timeout::layer(state.body_read_timeout))
        // One span per request (at INFO, so the default filter exports it); a job's
        // publish span is its child, and the worker's spans continue the same trace.
        .layer(TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().level(Level::INFO)))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route; try GET /work?ms=N, POST /jobs, GET /stream, POST /long-op?ms=N, /healthz, /readyz, /metrics",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "alive" }))
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let phase = s.lc.phase().as_str();
    // An instance whose broker connection died cannot accept jobs: the publisher's
    // supervisor marks the dependency down until it has reconnected.
    if s.lc.is_ready() {
        Json(json!({ "ready": true, "phase": phase })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "phase": phase }))).into_response()
    }
}

/// OpenMetrics or the classic text, as the scraper's `Accept` prefers (exposition.rs).
async fn metrics(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()));
    let body = s.metrics.render(&s.lc, &s.capacity, &s.cache, format);
    ([(header::CONTENT_TYPE, format.content_type()), (header::VARY, "accept")], body).into_response()
}

/// Parses `ms=N` out of the query string with a reason for every way it can be wrong.
fn parse_ms(query: Option<&str>, max: u64) -> Result<u64, ApiError> {
    let q = query.unwrap_or("");
    let mut ms = None;
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "ms" => ms = Some(v),
            other => {
                return Err(ApiError::bad_request(format!("unknown query parameter `{other}`; only `ms` is accepted")))
            }
        }
    }
    let v =
        ms.ok_or_else(|| ApiError::bad_request("missing query parameter `ms` (milliseconds to hold the request)"))?;
    let n: u64 =
        v.parse().map_err(|_| ApiError::bad_request(format!("`ms` must be a non-negative integer, got `{v}`")))?;
    if n > max {
        return Err(ApiError::bad_request(format!("`ms` must be at most {max}, got {n}")));
    }
    Ok(n)
}

/// The slow endpoint: holds the request for `ms` milliseconds, like a report being
/// generated.
async fn work(
    State(s): State<Arc<AppState>>,
    conn: Option<Extension<ConnRequest>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let ms = parse_ms(query.as_deref(), s.max_work_ms)?;
    refuse_if_it_cannot_finish(&s, ms)?;
    s.version.inject(crate::version::client_of(&headers)).await?;
    let _slot = s.capacity.try_acquire().ok_or_else(|| {
        s.metrics.rejected();
        ApiError::unavailable("instance at capacity; retry shortly", 1)
    })?;
    crate::conn_cost::first_request(&s, conn.map(|Extension(c)| c)).await;
    s.cache.touch().await;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Json(json!({ "worked_ms": ms })).into_response())
}

/// While draining, work that would outlive the drain budget is refused up front with
/// a 503 the client can retry elsewhere, rather than cut off half-way.
fn refuse_if_it_cannot_finish(s: &AppState, ms: u64) -> Result<(), ApiError> {
    let b = s.lc.behaviour();
    if !b.drain || s.lc.phase() < Phase::Deregistering {
        return Ok(());
    }
    let Some(since) = s.lc.since_sigterm_ms() else { return Ok(()) };
    let deadline = (b.deregistration_wait + b.drain_budget).as_millis() as u64;
    if since.saturating_add(ms) > deadline {
        s.metrics.rejected();
        return Err(ApiError::unavailable("instance is shutting down and this request would not finish in time", 1));
    }
    Ok(())
}

async fn submit_job(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if crate::body_timeout::stalled(&e) {
            return crate::body_timeout::answer(s.body_read_timeout, "POST /jobs");
        }
        let status = e.status();
        let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("body larger than {MAX_BODY_BYTES} bytes")
        } else {
            format!("could not read the body: {e}")
        };
        ApiError::new(status, reason)
    })?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the job as `content-type: application/json`",
        ));
    }
    let job: Job = serde_json::from_slice(&body).map_err(|e| {
        let status = if e.is_data() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::BAD_REQUEST };
        ApiError::new(status, format!("invalid job: {e}; expected {{\"id\": string, \"amount\": integer}}"))
    })?;
    job.validate().map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    s.version.inject(crate::version::client_of(&headers)).await?;
    let to = crate::shadow::sink(&headers);
    if s.publisher.queue(to).is_none() {
        // A mirroring layer copies writes to a pod that cannot keep them apart.
        tracing::warn!(job = %job.id, "a shadow copy of a job, and no shadow sink: refused (421)");
        return Err(crate::shadow::no_sink());
    }
    let _slot = s.capacity.try_acquire().ok_or_else(|| {
        s.metrics.rejected();
        ApiError::unavailable("instance at capacity; retry shortly", 1)
    })?;
    s.cache.touch().await;
    let published = s.breaker.call(s.publisher.publish(&job, to)).await.map_err(|open| {
        ApiError::unavailable("the broker path is failing (publish breaker open); retry later", open.retry_after_s)
    })?;
    match published {
        Ok(()) => {
            s.metrics.published();
            Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": job.id }))).into_response())
        }
        Err(e) => {
            // The job was not accepted, and the client may retry it safely: the id
            // is its idempotency key.
            tracing::warn!(job = %job.id, error = %e, "publish failed");
            Err(ApiError::unavailable(format!("job not accepted: {e}"), 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ms;

    #[test]
    fn work_query_is_validated() {
        assert_eq!(parse_ms(Some("ms=5"), 100).unwrap(), 5);
        for bad in [None, Some(""), Some("ms="), Some("ms=-1"), Some("ms=abc"), Some("ms=101"), Some("ms=1&x=2")] {
            let e = parse_ms(bad, 100).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{bad:?}");
        }
    }
}
