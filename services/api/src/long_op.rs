//! `POST /long-op?ms=N`: an operation that runs for N ms (a long report, a large
//! upload). It is never cut: a pod that is shutting down admits it only if it can
//! finish inside what is left of the drain budget, and otherwise refuses it up front
//! with 503 and `Retry-After`: the seconds until this pod stops being routed, after
//! which a retry through the Service reaches a pod that can take it.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use zerodrop_lifecycle::Phase;

/// The longest operation accepted.
pub const MAX_LONG_OP_MS: u64 = 15 * 60 * 1000;

/// What the admission decided for an operation of `ms`, `since_sigterm_ms` into the
/// shutdown (None: not shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Refused; retry after this many seconds.
    Refuse {
        retry_after_s: u32,
    },
}

/// `deregistration_ms`: how long after SIGTERM the pod is still routed; `budget_ms`:
/// the drain budget that follows.
pub fn admit(ms: u64, since_sigterm_ms: Option<u64>, deregistration_ms: u64, budget_ms: u64) -> Admission {
    let Some(since) = since_sigterm_ms else { return Admission::Admit };
    if since.saturating_add(ms) <= deregistration_ms + budget_ms {
        return Admission::Admit;
    }
    // Until the Service stops sending new connections here, a retry could land on this
    // pod again; after that it reaches one that is not shutting down. Rounded up.
    let routed_for_ms = deregistration_ms.saturating_sub(since);
    let retry_after_s = routed_for_ms.div_ceil(1000).max(1);
    Admission::Refuse { retry_after_s: u32::try_from(retry_after_s).unwrap_or(u32::MAX) }
}

fn parse_ms(query: Option<&str>) -> Result<u64, ApiError> {
    let q = query.unwrap_or("");
    let v = q
        .split('&')
        .find_map(|p| p.strip_prefix("ms="))
        .ok_or_else(|| ApiError::bad_request("missing query parameter `ms` (how long the operation runs)"))?;
    let n: u64 =
        v.parse().map_err(|_| ApiError::bad_request(format!("`ms` must be a non-negative integer, got `{v}`")))?;
    if n > MAX_LONG_OP_MS {
        return Err(ApiError::bad_request(format!("`ms` must be at most {MAX_LONG_OP_MS}, got {n}")));
    }
    Ok(n)
}

pub async fn long_op(State(s): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let ms = parse_ms(query.as_deref())?;
    let b = s.lc.behaviour();
    let since = if b.drain && s.lc.phase() >= Phase::Deregistering { s.lc.since_sigterm_ms() } else { None };
    let budget = b.drain_budget.as_millis() as u64;
    if let Admission::Refuse { retry_after_s } = admit(ms, since, b.deregistration_wait.as_millis() as u64, budget) {
        tracing::info!(step = "long_op_refused", ms, retry_after_s, since_sigterm_ms = since, "long operation refused");
        let mut res = ApiError::unavailable(
            format!(
                "instance is shutting down and a {ms} ms operation would not finish; retry after {retry_after_s} s"
            ),
            retry_after_s,
        )
        .into_response();
        // The retry must go through the Service again, not back to this pod.
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(res);
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Json(json!({ "done_ms": ms })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_fits_the_remaining_budget_and_retry_after_ends_with_routing() {
        assert_eq!(admit(60_000, None, 5_000, 600_000), Admission::Admit);
        // 100 s into the shutdown, 500 s left: 400 s fits, 600 s does not.
        assert_eq!(admit(400_000, Some(100_000), 5_000, 600_000), Admission::Admit);
        assert_eq!(admit(600_000, Some(100_000), 5_000, 600_000), Admission::Refuse { retry_after_s: 1 });
        // Still routed for 3.2 s: come back in 4.
        assert_eq!(admit(700_000, Some(1_800), 5_000, 600_000), Admission::Refuse { retry_after_s: 4 });
    }

    #[test]
    fn bad_ms_is_a_400_with_a_reason() {
        assert_eq!(parse_ms(Some("ms=5")).unwrap(), 5);
        for q in [None, Some("ms=x"), Some("ms=99999999999")] {
            assert_eq!(parse_ms(q).unwrap_err().status.as_u16(), 400);
        }
    }
}
