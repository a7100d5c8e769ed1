//! Sticky sessions and what they do to the gates.
//!
//! The load names its client on every request (a few heavy clients, a long tail). With a
//! sticky split the router sends a client to one side by a hash of its name, so the
//! canary's traffic is a handful of clients rather than a sample of requests: one heavy
//! client on either side moves that side's error rate, and requests of one client are
//! not the independent trials the per-request z-test counts them as.
//!
//! The fix implemented here is weighting by client: each client's error rate counts
//! once on its side, and the two sides' mean client rates are compared with a Welch
//! z-test whose spread comes from the clients (the unit the split randomised). The
//! per-request test is always shown beside it; `--judge client` makes it decide.

use super::stats::{norm_cdf, ZTest};
use serde::Serialize;
use std::collections::BTreeMap;
use zerodrop_evidence::routing::ClientCount;
use zerodrop_load::Clients;
use zerodrop_platform::router::{MatchOn, StickyKey};

/// The header the load names its client by, which the api counts by and the sticky
/// split hashes.
pub const HEADER: &str = zerodrop_load::CLIENT_HEADER;

/// A client is in a side's mean only with this many requests there: a rate from one or
/// two requests is 0 or 1 and says more about chance than about the version.
pub const MIN_REQUESTS: u64 = 5;

/// What the error gate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Judge {
    /// Failures out of requests, every request one trial (the usual canary analysis).
    Request,
    /// Each client's error rate counts once (weighting by client).
    Client,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientSettings {
    pub count: u32,
    pub zipf_s: f64,
    /// The split hashes the client header instead of drawing per request.
    pub sticky: bool,
    /// A defect both versions carry (v1's regression, and v2's besides its own).
    pub known_bug: Option<String>,
    pub judge: Judge,
}

impl ClientSettings {
    pub fn load(&self) -> Clients {
        Clients { count: self.count, zipf_s: self.zipf_s, header: HEADER.into() }
    }

    /// v2's regression: the known bug (which v1 carries too) and the change under test.
    pub fn v2_regression(&self, regression: &str) -> String {
        match &self.known_bug {
            Some(k) if regression.trim() != "none" => format!("{k};{regression}"),
            Some(k) => k.clone(),
            None => regression.to_string(),
        }
    }

    pub fn sticky_key(&self) -> Option<StickyKey> {
        self.sticky.then(|| StickyKey { on: MatchOn::Header, name: HEADER.into() })
    }
}

/// One client on one side over a step.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ClientRow {
    pub client: u32,
    pub requests: u64,
    pub errors: u64,
}

/// One side of a step, by client.
#[derive(Debug, Clone, Serialize)]
pub struct ClientSide {
    /// Clients with at least [`MIN_REQUESTS`] requests (those in the mean).
    pub clients: u32,
    /// Clients with fewer, left out of the mean.
    pub thin: u32,
    /// The mean of the clients' error rates.
    pub mean_rate: f64,
    /// The heaviest clients of the side, by requests (at most three).
    pub heaviest: Vec<ClientRow>,
    /// The share of the side's requests that its heaviest client sent.
    pub top_share: f64,
}

/// A step judged by client: both sides and the Welch z-test of their mean rates.
#[derive(Debug, Clone, Serialize)]
pub struct ByClient {
    pub stable: ClientSide,
    pub canary: ClientSide,
    pub z: ZTest,
}

fn side(counts: &BTreeMap<u32, ClientCount>) -> (ClientSide, Vec<f64>) {
    let rates: Vec<f64> = counts
        .values()
        .filter(|c| c.requests >= MIN_REQUESTS)
        .map(|c| c.errors_5xx as f64 / c.requests as f64)
        .collect();
    let mut rows: Vec<ClientRow> =
        counts.iter().map(|(&client, c)| ClientRow { client, requests: c.requests, errors: c.errors_5xx }).collect();
    rows.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.client.cmp(&b.client)));
    let total: u64 = rows.iter().map(|r| r.requests).sum();
    let top_share = match (rows.first(), total) {
        (Some(r), t) if t > 0 => r.requests as f64 / t as f64,
        _ => 0.0,
    };
    rows.truncate(3);
    let s = ClientSide {
        clients: rates.len() as u32,
        thin: (counts.len() - rates.len()) as u32,
        mean_rate: mean(&rates),
        heaviest: rows,
        top_share,
    };
    (s, rates)
}

fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        0.0
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

/// Welch's z of `b`'s mean against `a`'s (positive when `b` is higher), two-sided p from
/// the normal. Fewer than two values on a side, or no spread on either: no evidence.
pub fn welch(a: &[f64], b: &[f64]) -> ZTest {
    if a.len() < 2 || b.len() < 2 {
        return ZTest { z: 0.0, p: 1.0 };
    }
    let var = |x: &[f64]| {
        let m = mean(x);
        x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64
    };
    let se = (var(a) / a.len() as f64 + var(b) / b.len() as f64).sqrt();
    if se == 0.0 {
        return ZTest { z: 0.0, p: 1.0 };
    }
    let z = (mean(b) - mean(a)) / se;
    ZTest { z, p: (2.0 * (1.0 - norm_cdf(z.abs()))).min(1.0) }
}

/// The step by client, from the apps' per-client counts of each side.
pub fn by_client(stable: &BTreeMap<u32, ClientCount>, canary: &BTreeMap<u32, ClientCount>) -> ByClient {
    let (s, a) = side(stable);
    let (c, b) = side(canary);
    ByClient { stable: s, canary: c, z: welch(&a, &b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(rows: &[(u32, u64, u64)]) -> BTreeMap<u32, ClientCount> {
        rows.iter().map(|&(c, requests, errors_5xx)| (c, ClientCount { requests, errors_5xx })).collect()
    }

    /// The bias in numbers: a heavy client whose requests fail on either version sits on
    /// the canary's side. By request the canary looks far worse; by client, one bad
    /// client among twenty on each side is no evidence against the version.
    #[test]
    fn a_heavy_client_with_a_known_bug_moves_the_request_test_and_not_the_client_test() {
        let mut canary = vec![(0, 2000, 100)];
        let mut stable = vec![(1, 2000, 0)];
        for c in 2..22 {
            canary.push((c * 2, 50, 0));
            stable.push((c * 2 + 1, 50, 0));
        }
        stable.push((99, 50, 2));
        let by_request = super::super::stats::z_test(2, 3050, 100, 3000);
        assert!(by_request.z > 9.0, "{by_request:?}");
        let b = by_client(&counts(&stable), &counts(&canary));
        assert!(b.z.p > 0.05, "{:?}", b.z);
        assert_eq!((b.canary.clients, b.stable.clients), (21, 22));
        assert_eq!(b.canary.heaviest[0].client, 0);
        assert!((b.canary.top_share - 2000.0 / 3000.0).abs() < 1e-9);
    }

    /// A defect that hits a third of the clients is found by client as well.
    #[test]
    fn a_defect_on_many_clients_is_found_by_client() {
        let stable: Vec<_> = (0..30).map(|c| (c, 100, u64::from(c % 10 == 0))).collect();
        let canary: Vec<_> = (30..60).map(|c| (c, 100, if c % 3 == 0 { 20 } else { 0 })).collect();
        let b = by_client(&counts(&stable), &counts(&canary));
        assert!(b.z.z > 3.0 && b.z.p < 0.01, "{:?}", b.z);
        assert!((b.canary.mean_rate - 0.2 / 3.0).abs() < 1e-9, "{}", b.canary.mean_rate);
    }

    #[test]
    fn thin_clients_are_left_out_and_too_few_clients_are_no_evidence() {
        let b = by_client(&counts(&[(0, 4, 4), (1, 100, 0), (2, 100, 0)]), &counts(&[(3, 100, 50)]));
        assert_eq!((b.stable.clients, b.stable.thin), (2, 1));
        assert_eq!(b.z, ZTest { z: 0.0, p: 1.0 }, "one canary client: no spread to judge by");
        assert_eq!(welch(&[0.0, 0.0], &[0.0, 0.0]), ZTest { z: 0.0, p: 1.0 });
    }
}
