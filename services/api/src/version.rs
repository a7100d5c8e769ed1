//! Which version of the api this process is (`ZD_VERSION`, default `v1`) and the
//! regression a new version may carry on purpose (`ZD_REGRESSION`), so a canary or a
//! blue-green switch has something real to catch. Only `/work` and `/jobs` carry it.

use crate::error::ApiError;
use axum::http::StatusCode;
use std::time::Duration;

/// A deliberate defect of this version.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Regression {
    None,
    /// This fraction of requests (0..=1) answers 500.
    Errors(f64),
    /// Every request takes this much longer.
    Latency(Duration),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("ZD_REGRESSION `{0}`: expected `none`, `errors=<pct>%` (e.g. errors=2%) or `latency=+<ms>ms` (e.g. latency=+80ms)")]
    Shape(String),
    #[error("ZD_REGRESSION `{0}`: the error share must be between 0% and 100%")]
    Range(String),
}

impl std::str::FromStr for Regression {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let shape = || ParseError::Shape(s.to_string());
        if t.is_empty() || t == "none" {
            return Ok(Regression::None);
        }
        if let Some(v) = t.strip_prefix("errors=") {
            let pct: f64 = v.strip_suffix('%').ok_or_else(shape)?.trim().parse().map_err(|_| shape())?;
            if !(0.0..=100.0).contains(&pct) {
                return Err(ParseError::Range(s.to_string()));
            }
            return Ok(Regression::Errors(pct / 100.0));
        }
        if let Some(v) = t.strip_prefix("latency=") {
            let ms: u64 =
                v.trim_start_matches('+').strip_suffix("ms").ok_or_else(shape)?.parse().map_err(|_| shape())?;
            return Ok(Regression::Latency(Duration::from_millis(ms)));
        }
        Err(shape())
    }
}

impl std::fmt::Display for Regression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Regression::None => f.write_str("none"),
            Regression::Errors(p) => write!(f, "errors={}%", p * 100.0),
            Regression::Latency(d) => write!(f, "latency=+{}ms", d.as_millis()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Version {
    pub name: String,
    pub regression: Regression,
}

impl Version {
    pub fn from_env() -> anyhow::Result<Version> {
        let name = std::env::var("ZD_VERSION").unwrap_or_else(|_| "v1".into());
        let regression = std::env::var("ZD_REGRESSION").unwrap_or_default().parse()?;
        Ok(Version { name, regression })
    }

    /// Applies the regression to one request: an injected 500, or extra latency.
    pub async fn inject(&self) -> Result<(), ApiError> {
        match self.regression {
            Regression::None => Ok(()),
            Regression::Latency(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Regression::Errors(p) if rand::random::<f64>() < p => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("injected regression of version {} ({})", self.name, self.regression),
            )),
            Regression::Errors(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regressions_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!("none".parse::<Regression>().unwrap(), Regression::None);
        assert_eq!("".parse::<Regression>().unwrap(), Regression::None);
        assert_eq!("errors=2%".parse::<Regression>().unwrap(), Regression::Errors(0.02));
        assert_eq!("errors=0.5%".parse::<Regression>().unwrap(), Regression::Errors(0.005));
        assert_eq!("latency=+80ms".parse::<Regression>().unwrap(), Regression::Latency(Duration::from_millis(80)));
        assert_eq!("errors=2%".parse::<Regression>().unwrap().to_string(), "errors=2%");
        for bad in ["errors=2", "errors=x%", "latency=80", "slow", "latency=+-1ms"] {
            let e = bad.parse::<Regression>().unwrap_err().to_string();
            assert!(e.contains("expected `none`"), "{bad}: {e}");
        }
        assert!(matches!("errors=120%".parse::<Regression>(), Err(ParseError::Range(_))));
    }

    #[tokio::test]
    async fn a_full_error_regression_fails_every_request_and_none_never() {
        let bad = Version { name: "v2".into(), regression: Regression::Errors(1.0) };
        assert_eq!(bad.inject().await.unwrap_err().status, StatusCode::INTERNAL_SERVER_ERROR);
        let good = Version { name: "v1".into(), regression: Regression::None };
        assert!(good.inject().await.is_ok());
    }
}
