//! Request-level fault injection for the lab's chaos runs: added latency and error
//! answers on `/work` and `/jobs`, for a share of requests (per pod, by configuration)
//! or for one request (the `x-zd-fault` header).
//!
//! Off unless the pod was started with `ZD_FAULTS=on`, which only the lab's runner
//! sets. With it off the header is never even parsed: a client outside the lab cannot
//! switch a fault on, and a pod configured with a fault share but without the switch
//! refuses to start rather than silently ignore half its configuration.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

/// The request header that asks for a fault: `delay=300ms`, `error=503`, or both
/// separated by a comma.
pub const HEADER: &str = "x-zd-fault";
/// Set on every answer a fault produced, so a report can tell injected failures from
/// real ones.
pub const INJECTED: &str = "x-zd-fault-injected";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    #[error("{var} `{value}`: expected {expected}")]
    Shape { var: &'static str, value: String, expected: &'static str },
    #[error("{0} is set but ZD_FAULTS is not `on`: fault injection is off unless switched on for the lab")]
    NotSwitchedOn(&'static str),
}

/// What one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Injected {
    pub delay: Duration,
    pub error: Option<StatusCode>,
}

/// The pod's fault configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    pub enabled: bool,
    /// Added latency and the share of requests (0..=1) that get it.
    pub delay: Option<(Duration, f64)>,
    /// Error status and the share of requests that get it.
    pub error: Option<(StatusCode, f64)>,
}

impl Faults {
    pub fn from_env() -> Result<Faults, FaultError> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Faults::from_vars(get("ZD_FAULTS"), get("ZD_FAULT_DELAY"), get("ZD_FAULT_ERROR"))
    }

    /// `ZD_FAULTS` (`on`/`off`), `ZD_FAULT_DELAY` (`300ms@20%`), `ZD_FAULT_ERROR` (`503@5%`).
    pub fn from_vars(on: Option<String>, delay: Option<String>, error: Option<String>) -> Result<Faults, FaultError> {
        let enabled = match on.as_deref().map(str::trim) {
            None | Some("off") => false,
            Some("on") => true,
            Some(other) => {
                return Err(FaultError::Shape { var: "ZD_FAULTS", value: other.into(), expected: "`on` or `off`" })
            }
        };
        let delay =
            delay.map(|v| share("ZD_FAULT_DELAY", &v, parse_ms, "<ms>ms@<pct>% (e.g. 300ms@20%)")).transpose()?;
        let error =
            error.map(|v| share("ZD_FAULT_ERROR", &v, parse_status, "<status>@<pct>% (e.g. 503@5%)")).transpose()?;
        if !enabled {
            if delay.is_some() {
                return Err(FaultError::NotSwitchedOn("ZD_FAULT_DELAY"));
            }
            if error.is_some() {
                return Err(FaultError::NotSwitchedOn("ZD_FAULT_ERROR"));
            }
        }
        Ok(Faults { enabled, delay, error })
    }

    /// The fault for one request: the header's, else the configured shares drawn with
    /// `roll` (uniform in 0..1). Nothing at all unless enabled.
    pub fn decide(&self, header: Option<&HeaderValue>, mut roll: impl FnMut() -> f64) -> Result<Injected, String> {
        if !self.enabled {
            return Ok(Injected::default());
        }
        if let Some(h) = header {
            return parse_header(h.to_str().map_err(|_| "the x-zd-fault header is not ASCII".to_string())?);
        }
        let mut out = Injected::default();
        if let Some((d, p)) = self.delay {
            if roll() < p {
                out.delay = d;
            }
        }
        if let Some((s, p)) = self.error {
            if roll() < p {
                out.error = Some(s);
            }
        }
        Ok(out)
    }
}

fn share<T>(
    var: &'static str,
    v: &str,
    what: fn(&str) -> Option<T>,
    expected: &'static str,
) -> Result<(T, f64), FaultError> {
    let bad = || FaultError::Shape { var, value: v.to_string(), expected };
    let (x, pct) = v.trim().split_once('@').ok_or_else(bad)?;
    let pct: f64 = pct.trim().strip_suffix('%').ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
    if !(0.0..=100.0).contains(&pct) {
        return Err(bad());
    }
    Ok((what(x.trim()).ok_or_else(bad)?, pct / 100.0))
}

fn parse_ms(v: &str) -> Option<Duration> {
    let ms: u64 = v.strip_suffix("ms")?.parse().ok()?;
    (ms <= 60_000).then(|| Duration::from_millis(ms))
}

fn parse_status(v: &str) -> Option<StatusCode> {
    StatusCode::from_bytes(v.as_bytes()).ok().filter(|s| s.is_client_error() || s.is_server_error())
}

fn parse_header(v: &str) -> Result<Injected, String> {
    let mut out = Injected::default();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("delay", ms)) => out.delay = parse_ms(ms.trim()).ok_or_else(|| header_error(part))?,
            Some(("error", s)) => out.error = Some(parse_status(s.trim()).ok_or_else(|| header_error(part))?),
            _ => return Err(header_error(part)),
        }
    }
    Ok(out)
}

fn header_error(part: &str) -> String {
    format!("bad x-zd-fault part `{part}`: expected delay=<ms>ms (at most 60000) and/or error=<4xx or 5xx status>")
}

/// The middleware on `/work` and `/jobs`: waits, then answers the injected error or
/// passes the request on.
pub async fn inject(State(faults): State<Arc<Faults>>, req: Request, next: Next) -> Response {
    if !faults.enabled {
        return next.run(req).await;
    }
    let decided = faults.decide(req.headers().get(HEADER), rand::random::<f64>);
    let fault = match decided {
        Ok(f) => f,
        Err(reason) => return ApiError::bad_request(reason).into_response(),
    };
    if !fault.delay.is_zero() {
        tokio::time::sleep(fault.delay).await;
    }
    let mut res = match fault.error {
        Some(status) => ApiError::new(status, "injected fault (x-zd-fault or ZD_FAULT_ERROR)").into_response(),
        None => next.run(req).await,
    };
    if fault != Injected::default() {
        res.headers_mut().insert(INJECTED, HeaderValue::from_static("1"));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(on: &str, delay: &str, error: &str) -> Result<Faults, FaultError> {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Faults::from_vars(some(on), some(delay), some(error))
    }

    #[test]
    fn configuration_parses_and_says_what_it_expects() {
        let f = vars("on", "300ms@20%", "503@5%").unwrap();
        assert_eq!(f.delay, Some((Duration::from_millis(300), 0.2)));
        assert_eq!(f.error, Some((StatusCode::SERVICE_UNAVAILABLE, 0.05)));
        assert_eq!(vars("", "", "").unwrap(), Faults::default());
        for (d, e) in [("300@20%", ""), ("300ms", ""), ("300ms@120%", ""), ("", "200@5%"), ("", "abc@1%")] {
            let err = vars("on", d, e).unwrap_err().to_string();
            assert!(err.contains("expected"), "{d} {e}: {err}");
        }
        assert!(vars("yes", "", "").unwrap_err().to_string().contains("`on` or `off`"));
    }

    #[test]
    fn a_fault_share_without_the_switch_refuses_to_start() {
        assert_eq!(vars("off", "300ms@20%", ""), Err(FaultError::NotSwitchedOn("ZD_FAULT_DELAY")));
        assert_eq!(vars("", "", "503@5%"), Err(FaultError::NotSwitchedOn("ZD_FAULT_ERROR")));
    }

    #[test]
    fn the_header_does_nothing_while_faults_are_off() {
        let off = Faults::default();
        let h = HeaderValue::from_static("delay=500ms,error=500");
        assert_eq!(off.decide(Some(&h), || 0.0), Ok(Injected::default()));
        // Even a malformed header is not looked at.
        assert_eq!(off.decide(Some(&HeaderValue::from_static("garbage")), || 0.0), Ok(Injected::default()));
    }

    #[test]
    fn with_faults_on_the_header_wins_over_the_shares() {
        let on = vars("on", "300ms@100%", "").unwrap();
        let h = HeaderValue::from_static("error=500");
        assert_eq!(
            on.decide(Some(&h), || 0.0),
            Ok(Injected { delay: Duration::ZERO, error: Some(StatusCode::INTERNAL_SERVER_ERROR) })
        );
        assert_eq!(on.decide(None, || 0.0).unwrap().delay, Duration::from_millis(300));
        assert_eq!(on.decide(None, || 0.99).unwrap().delay, Duration::from_millis(300));
        let half = vars("on", "", "503@50%").unwrap();
        assert_eq!(half.decide(None, || 0.6), Ok(Injected::default()));
        assert!(on.decide(Some(&HeaderValue::from_static("delay=1h")), || 0.0).unwrap_err().contains("delay=<ms>ms"));
    }
}
