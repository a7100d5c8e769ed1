//! Two versions of the api behind a routing tier, as both sides counted them: the
//! routing tier's per-backend counters and the apps' own `/metrics`, summed per
//! version. App counts are of the routes the load uses (`/work`, `/jobs`); probes and
//! scrapes are left out, as the routing tier never sees them either.

use std::collections::BTreeMap;

/// A backend's counters as the routing tier reports them (HAProxy's `show stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackendStat {
    pub requests: u64,
    pub http_5xx: u64,
    pub http_4xx: u64,
}

impl BackendStat {
    /// What happened between `then` and `self` (a counter reset reads as zero).
    pub fn since(self, then: BackendStat) -> BackendStat {
        BackendStat {
            requests: self.requests.saturating_sub(then.requests),
            http_5xx: self.http_5xx.saturating_sub(then.http_5xx),
            http_4xx: self.http_4xx.saturating_sub(then.http_4xx),
        }
    }
}

/// Both sides' counters at one instant: the routing tier's (stable, canary) and the
/// apps' per version.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub router: (BackendStat, BackendStat),
    pub app_stable: Counts,
    pub app_canary: Counts,
}

const USER_ROUTES: [&str; 2] = ["/work", "/jobs"];

/// Cumulative counts of one pod, or several summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub errors_5xx: u64,
    /// Cumulative histogram of `/work`: upper bound (s) → count.
    pub buckets: BTreeMap<u64, u64>,
    /// Per client (the id of `c<id>`), when the load names its clients.
    pub clients: BTreeMap<u32, ClientCount>,
}

/// One client's requests and failures, as the apps counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCount {
    pub requests: u64,
    pub errors_5xx: u64,
}

/// `le` in nanoseconds, so buckets can key a map; +Inf is u64::MAX.
fn le_key(le: &str) -> Option<u64> {
    if le == "+Inf" {
        return Some(u64::MAX);
    }
    le.parse::<f64>().ok().map(|s| (s * 1e9).round() as u64)
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let len = labels[start..].find('"')?;
    Some(&labels[start..start + len])
}

/// Reads the counters the analysis needs out of the exposition text.
pub fn parse_metrics(text: &str) -> Counts {
    let mut c = Counts::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        let Some((name, labels)) = series.split_once('{') else { continue };
        let route = label(labels, "route").unwrap_or("");
        if name == "zerodrop_http_requests_total" && USER_ROUTES.contains(&route) {
            c.requests += v as u64;
            if label(labels, "status").is_some_and(|s| s.starts_with('5')) {
                c.errors_5xx += v as u64;
            }
        } else if name == "zerodrop_client_requests_total" {
            let Some(id) = label(labels, "client").and_then(|c| c.strip_prefix('c')?.parse::<u32>().ok()) else {
                continue;
            };
            let e = c.clients.entry(id).or_default();
            e.requests += v as u64;
            if label(labels, "outcome") == Some("5xx") {
                e.errors_5xx += v as u64;
            }
        } else if name == "zerodrop_http_request_duration_seconds_bucket" && route == "/work" {
            if let Some(le) = label(labels, "le").and_then(le_key) {
                *c.buckets.entry(le).or_default() += v as u64;
            }
        }
    }
    c
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.errors_5xx += o.errors_5xx;
        for (k, v) in &o.buckets {
            *self.buckets.entry(*k).or_default() += v;
        }
        for (k, v) in &o.clients {
            let e = self.clients.entry(*k).or_default();
            e.requests += v.requests;
            e.errors_5xx += v.errors_5xx;
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let buckets = self
            .buckets
            .iter()
            .map(|(k, v)| (*k, v.saturating_sub(earlier.buckets.get(k).copied().unwrap_or(0))))
            .collect();
        let clients = self
            .clients
            .iter()
            .map(|(k, v)| {
                let e = earlier.clients.get(k).copied().unwrap_or_default();
                let d = ClientCount {
                    requests: v.requests.saturating_sub(e.requests),
                    errors_5xx: v.errors_5xx.saturating_sub(e.errors_5xx),
                };
                (*k, d)
            })
            .filter(|(_, d)| d.requests > 0)
            .collect();
        Counts {
            requests: self.requests.saturating_sub(earlier.requests),
            errors_5xx: self.errors_5xx.saturating_sub(earlier.errors_5xx),
            buckets,
            clients,
        }
    }

    /// The p95 of `/work` in ms, interpolated linearly inside its bucket (the usual
    /// `histogram_quantile`); None without observations.
    pub fn p95_ms(&self) -> Option<f64> {
        let total = *self.buckets.get(&u64::MAX)?;
        if total == 0 {
            return None;
        }
        let rank = 0.95 * total as f64;
        let (mut lo_le, mut lo_count) = (0u64, 0u64);
        for (&le, &count) in &self.buckets {
            if count as f64 >= rank {
                if le == u64::MAX {
                    return Some(lo_le as f64 / 1e6);
                }
                let frac = if count > lo_count { (rank - lo_count as f64) / (count - lo_count) as f64 } else { 1.0 };
                return Some((lo_le as f64 + frac * (le - lo_le) as f64) / 1e6);
            }
            (lo_le, lo_count) = (le, count);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE zerodrop_http_requests counter\n\
        zerodrop_http_requests_total{route=\"/work\",status=\"200\"} 95\n\
        zerodrop_http_requests_total{route=\"/work\",status=\"500\"} 5\n\
        zerodrop_http_requests_total{route=\"/readyz\",status=\"200\"} 40\n\
        zerodrop_http_request_duration_seconds_bucket{le=\"0.005\",route=\"/work\"} 0\n\
        zerodrop_http_request_duration_seconds_bucket{le=\"0.01\",route=\"/work\"} 90\n\
        zerodrop_http_request_duration_seconds_bucket{le=\"0.1\",route=\"/work\"} 100\n\
        zerodrop_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/work\"} 100\n\
        zerodrop_client_requests_total{client=\"c0\",outcome=\"other\"} 60\n\
        zerodrop_client_requests_total{client=\"c0\",outcome=\"5xx\"} 4\n\
        zerodrop_client_requests_total{client=\"c7\",outcome=\"other\"} 35\n\
        zerodrop_client_requests_total{client=\"c7\",outcome=\"5xx\"} 1\n\
        zerodrop_client_requests_total{client=\"bogus\",outcome=\"5xx\"} 9\n\
        # EOF\n";

    #[test]
    fn user_routes_are_counted_and_probes_left_out() {
        let c = parse_metrics(TEXT);
        assert_eq!((c.requests, c.errors_5xx), (100, 5));
        // Rank 95 lies 5/10 of the way through the (10 ms, 100 ms] bucket.
        let p95 = c.p95_ms().unwrap();
        assert!((p95 - 55.0).abs() < 1e-9, "{p95}");
        let d = c.since(&Counts::default());
        assert_eq!(d, c);
        assert_eq!(c.clients.len(), 2, "{:?}", c.clients);
        assert_eq!(c.clients[&0], ClientCount { requests: 64, errors_5xx: 4 });
        assert_eq!(c.clients[&7], ClientCount { requests: 36, errors_5xx: 1 });
        let mut twice = c.clone();
        twice.add(&c);
        let back = twice.since(&c);
        assert_eq!(back.clients, c.clients);
        // A client with nothing new drops out of a difference.
        assert!(c.since(&c).clients.is_empty());
        assert_eq!(Counts::default().p95_ms(), None);
    }
}
