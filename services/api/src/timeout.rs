//! A ceiling on how long `GET /work` and `POST /jobs` may hold a request
//! (`ZD_REQUEST_TIMEOUT_MS`, by default the longest `/work` allowed plus headroom). The
//! long-lived routes (`/stream`, `/long-op`) are left out on purpose: they budget their
//! own time against the drain, and cutting them here would undo that.
//!
//! The answer is 503 + `Retry-After`, not 408: 408 says the *client* was too slow to
//! send its request, which is the header-read timeout's case. Here the server ran out
//! of time, and the load generator files 503 with the other retryable server refusals
//! (capacity, shutting down) instead of with 4xx, which it reads as a client bug.

use crate::error::ApiError;
use axum::body::HttpBody;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;

/// Wraps one route's handlers with the bound; `what` names the request in the reason.
pub fn bounded<S>(route: MethodRouter<S>, limit: Duration, what: &'static str) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    route
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, limit))
        .layer(axum::middleware::map_response(move |res: Response| std::future::ready(explain(res, limit, what))))
}

/// tower-http answers a timeout with an empty body. Every 503 of the handlers carries a
/// JSON reason, so an empty one can only be the timeout's: give it a reason too.
fn explain(res: Response, limit: Duration, what: &str) -> Response {
    if res.status() != StatusCode::SERVICE_UNAVAILABLE || res.body().size_hint().exact() != Some(0) {
        return res;
    }
    let ms = limit.as_millis();
    tracing::warn!(limit_ms = ms as u64, request = what, "request timed out");
    ApiError::unavailable(format!("{what} did not finish within the {ms} ms request timeout; retry"), 1).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn only_the_empty_503_of_the_timeout_gets_a_reason() {
        let limit = Duration::from_millis(250);
        let empty = Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body(Body::empty()).unwrap();
        let res = explain(empty, limit, "GET /work");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()["retry-after"], "1");
        assert!(res.body().size_hint().exact().unwrap_or(0) > 0);

        let capacity = ApiError::unavailable("instance at capacity; retry shortly", 1).into_response();
        let before = capacity.body().size_hint().exact();
        assert_eq!(explain(capacity, limit, "GET /work").body().size_hint().exact(), before);

        let ok = Response::builder().status(StatusCode::OK).body(Body::empty()).unwrap();
        assert_eq!(explain(ok, limit, "GET /work").status(), StatusCode::OK);
    }
}
