//! Which version of the api this process is (`ZD_VERSION`, default `v1`) and the
//! regression a new version may carry on purpose (`ZD_REGRESSION`), so a canary or a
//! blue-green switch has something real to catch. Only `/work` and `/jobs` carry it.
//!
//! A regression is one defect or several joined by `;`, each optionally scoped to some
//! clients (named by the `x-zd-client` header, `c0`, `c1`, ...), because real defects
//! often hit some users only, and that is what makes a sticky canary's numbers lie:
//! - `errors=2%@clients=20%`: the clients whose id hashes into a fixed 20% of the id
//!   space (a hash of our own, independent of the router's, so the affected clients are
//!   not the ones a sticky split happens to send to one side);
//! - `errors=5%@top=1`: the heaviest client (`c0`; the load's ids are ranks by volume).
//!
//! A request without a client header is outside every scoped defect.

use crate::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use std::time::Duration;

/// The header the load names its client by (`zerodrop_load::Clients`).
pub const CLIENT_HEADER: &str = "x-zd-client";

/// Client ids above this are ignored (not counted, outside every scope): the per-client
/// metrics stay bounded whatever a client sends.
pub const MAX_CLIENT: u32 = 9_999;

/// The client a request names, when it names a valid one (`c<id>`, id ≤ [`MAX_CLIENT`]).
pub fn client_of(headers: &HeaderMap) -> Option<u32> {
    let v = headers.get(CLIENT_HEADER)?.to_str().ok()?;
    let id: u32 = v.strip_prefix('c')?.parse().ok()?;
    (id <= MAX_CLIENT).then_some(id)
}

/// What a defect does to a request it hits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// This fraction of requests (0..=1) answers 500.
    Errors(f64),
    /// Every request takes this much longer.
    Latency(Duration),
}

/// Which requests a defect hits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scope {
    All,
    /// Clients whose id hashes below this fraction (0..=1) of the id space.
    Share(f64),
    /// The `n` heaviest clients: ids below `n`.
    Top(u32),
}

impl Scope {
    pub fn covers(&self, client: Option<u32>) -> bool {
        match (self, client) {
            (Scope::All, _) => true,
            (_, None) => false,
            (Scope::Share(q), Some(c)) => (client_hash(c) % 10_000) < (q * 10_000.0).round() as u64,
            (Scope::Top(n), Some(c)) => c < *n,
        }
    }
}

/// SplitMix64's finaliser: a fixed, well-mixed hash of the id, so `Share` picks the
/// same clients in every process and on every run.
fn client_hash(c: u32) -> u64 {
    let mut z = u64::from(c).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defect {
    pub effect: Effect,
    pub scope: Scope,
}

/// A version's deliberate defects; none for a clean version.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Regression(pub Vec<Defect>);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error(
        "ZD_REGRESSION `{0}`: expected `none` or defects joined by `;`, each `errors=<pct>%` (e.g. errors=2%) \
         or `latency=+<ms>ms` (e.g. latency=+80ms), optionally scoped by `@clients=<pct>%` or `@top=<n>`"
    )]
    Shape(String),
    #[error("ZD_REGRESSION `{0}`: a share must be between 0% and 100%")]
    Range(String),
}

fn pct(v: &str, whole: &str) -> Result<f64, ParseError> {
    let p: f64 = v
        .strip_suffix('%')
        .ok_or_else(|| ParseError::Shape(whole.into()))?
        .trim()
        .parse()
        .map_err(|_| ParseError::Shape(whole.into()))?;
    if !(0.0..=100.0).contains(&p) {
        return Err(ParseError::Range(whole.into()));
    }
    Ok(p / 100.0)
}

fn defect(t: &str, whole: &str) -> Result<Defect, ParseError> {
    let shape = || ParseError::Shape(whole.to_string());
    let (effect, scope) = t.split_once('@').map_or((t, None), |(e, s)| (e, Some(s)));
    let effect = if let Some(v) = effect.trim().strip_prefix("errors=") {
        Effect::Errors(pct(v, whole)?)
    } else if let Some(v) = effect.trim().strip_prefix("latency=") {
        let ms: u64 = v.trim_start_matches('+').strip_suffix("ms").ok_or_else(shape)?.parse().map_err(|_| shape())?;
        Effect::Latency(Duration::from_millis(ms))
    } else {
        return Err(shape());
    };
    let scope = match scope.map(str::trim) {
        None => Scope::All,
        Some(s) => {
            if let Some(v) = s.strip_prefix("clients=") {
                Scope::Share(pct(v, whole)?)
            } else if let Some(v) = s.strip_prefix("top=") {
                Scope::Top(v.parse().map_err(|_| shape())?)
            } else {
                return Err(shape());
            }
        }
    };
    Ok(Defect { effect, scope })
}

impl std::str::FromStr for Regression {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() || t == "none" {
            return Ok(Regression::default());
        }
        t.split(';').map(|d| defect(d, s)).collect::<Result<Vec<_>, _>>().map(Regression)
    }
}

impl std::fmt::Display for Regression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            match d.effect {
                Effect::Errors(p) => write!(f, "errors={}%", p * 100.0)?,
                Effect::Latency(l) => write!(f, "latency=+{}ms", l.as_millis())?,
            }
            match d.scope {
                Scope::All => {}
                Scope::Share(q) => write!(f, "@clients={}%", q * 100.0)?,
                Scope::Top(n) => write!(f, "@top={n}")?,
            }
        }
        Ok(())
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

    /// Applies the defects that cover `client` to one request: their extra latency,
    /// then each one's chance of an injected 500.
    pub async fn inject(&self, client: Option<u32>) -> Result<(), ApiError> {
        let hits = || self.regression.0.iter().filter(|d| d.scope.covers(client));
        let delay: Duration =
            hits().filter_map(|d| if let Effect::Latency(l) = d.effect { Some(l) } else { None }).sum();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        for d in hits() {
            if let Effect::Errors(p) = d.effect {
                if rand::random::<f64>() < p {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("injected regression of version {} ({})", self.name, self.regression),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(effect: Effect, scope: Scope) -> Regression {
        Regression(vec![Defect { effect, scope }])
    }

    #[test]
    fn regressions_parse_and_bad_ones_say_what_is_expected() {
        let p = |s: &str| s.parse::<Regression>().unwrap();
        assert_eq!(p("none"), Regression::default());
        assert_eq!(p(""), Regression::default());
        assert_eq!(p("errors=2%"), one(Effect::Errors(0.02), Scope::All));
        assert_eq!(p("errors=0.5%"), one(Effect::Errors(0.005), Scope::All));
        assert_eq!(p("latency=+80ms"), one(Effect::Latency(Duration::from_millis(80)), Scope::All));
        assert_eq!(p("errors=30%@clients=20%"), one(Effect::Errors(0.3), Scope::Share(0.2)));
        assert_eq!(
            p("errors=5%@top=1; errors=10%@clients=20%").0,
            vec![
                Defect { effect: Effect::Errors(0.05), scope: Scope::Top(1) },
                Defect { effect: Effect::Errors(0.1), scope: Scope::Share(0.2) }
            ]
        );
        for s in ["errors=2%", "none", "errors=5%@top=1;errors=10%@clients=20%", "latency=+80ms@top=3"] {
            assert_eq!(p(s).to_string(), s);
        }
        for bad in ["errors=2", "errors=x%", "latency=80", "slow", "latency=+-1ms", "errors=2%@", "errors=2%@top=x"] {
            let e = bad.parse::<Regression>().unwrap_err().to_string();
            assert!(e.contains("expected `none`"), "{bad}: {e}");
        }
        assert!(matches!("errors=120%".parse::<Regression>(), Err(ParseError::Range(_))));
        assert!(matches!("errors=1%@clients=101%".parse::<Regression>(), Err(ParseError::Range(_))));
    }

    #[tokio::test]
    async fn a_full_error_regression_fails_every_request_and_none_never() {
        let bad = Version { name: "v2".into(), regression: one(Effect::Errors(1.0), Scope::All) };
        assert_eq!(bad.inject(None).await.unwrap_err().status, StatusCode::INTERNAL_SERVER_ERROR);
        let good = Version { name: "v1".into(), regression: Regression::default() };
        assert!(good.inject(Some(0)).await.is_ok());
    }

    /// A scoped defect fails exactly the clients in its scope, and no request without a
    /// client; the hashed share is about the share asked for, and not the lowest ids.
    #[tokio::test]
    async fn a_scoped_defect_fails_only_its_clients() {
        let share = Version { name: "v2".into(), regression: one(Effect::Errors(1.0), Scope::Share(0.2)) };
        let mut hit = Vec::new();
        for c in 0..1000 {
            if share.inject(Some(c)).await.is_err() {
                hit.push(c);
            }
        }
        assert!((150..250).contains(&hit.len()), "{}", hit.len());
        assert!(hit.iter().all(|&c| Scope::Share(0.2).covers(Some(c))));
        assert!(hit.iter().take(20).any(|&c| c >= 20), "hashed, not the first ids: {hit:?}");
        assert!(share.inject(None).await.is_ok());
        let top = Version { name: "v2".into(), regression: one(Effect::Errors(1.0), Scope::Top(2)) };
        for c in 0..10 {
            assert_eq!(top.inject(Some(c)).await.is_err(), c < 2, "client {c}");
        }
    }

    #[test]
    fn only_well_formed_bounded_client_ids_are_read() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(CLIENT_HEADER, v.parse().unwrap());
            client_of(&m)
        };
        assert_eq!(h("c0"), Some(0));
        assert_eq!(h("c9999"), Some(9999));
        for bad in ["c10000", "7", "c-1", "cx", "c", "c 1"] {
            assert_eq!(h(bad), None, "{bad}");
        }
        assert_eq!(client_of(&HeaderMap::new()), None);
    }
}
