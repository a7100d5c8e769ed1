//! From measured distributions to preStop, drain budget and grace period.

use serde::Serialize;

/// p50 / p99 / max of a sample, by nearest rank (with fewer than 100 samples the p99
/// is the largest or second-largest value: said as such in the report).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Dist {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentile of an ascending slice; `q` in (0, 1].
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

pub fn dist(values: &[f64]) -> Option<Dist> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Dist { n: v.len(), p50: percentile(&v, 0.50), p99: percentile(&v, 0.99), max: v[v.len() - 1] })
}

/// Time the app needs after draining: reverse-order teardown (each close bounded at
/// 2 s, see `AppBehaviour::teardown_margin`) plus one second of slack.
pub const MARGIN_MS: u64 = 3000;
/// The folklore preStop (learnk8s' 15 s).
pub const FOLKLORE_PRE_STOP_MS: u64 = 15_000;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Recommendation {
    /// ≈ 3× the deregistration p99.
    pub pre_stop_ms: u64,
    /// 2× the longer of the latency p99 and the longest allowed request.
    pub drain_budget_ms: u64,
    /// preStop + the longer of the api's and the worker's drain budget + margin.
    pub grace_ms: u64,
    /// The comparison's "too short" preStop: ≈ 0.5× the deregistration p99.
    pub too_short_pre_stop_ms: u64,
}

fn round_up(ms: f64, step: u64) -> u64 {
    (ms.max(0.0).ceil() as u64).div_ceil(step) * step
}

/// `worker_budget_ms`: the worker's own drain budget, which the same grace period
/// must also cover (the preStop applies to the whole pod template).
pub fn recommend(dereg: &Dist, latency_ms: &Dist, longest_request_ms: u64, worker_budget_ms: u64) -> Recommendation {
    let pre_stop_ms = round_up(3.0 * dereg.p99, 100).max(100);
    // A jittered keep-alive close picks its instant in the first half of the budget;
    // the request answered then must still fit in the second half.
    let longest = latency_ms.p99.max(longest_request_ms as f64);
    let drain_budget_ms = round_up(2.0 * longest, 500).max(1000);
    grace_for(pre_stop_ms, drain_budget_ms, worker_budget_ms, round_up(0.5 * dereg.p99, 100).max(100))
}

/// The grace period that fits `pre_stop_ms` and both drain budgets.
pub fn grace_for(pre_stop_ms: u64, drain_budget_ms: u64, worker_budget_ms: u64, too_short: u64) -> Recommendation {
    let grace_ms = round_up((pre_stop_ms + drain_budget_ms.max(worker_budget_ms) + MARGIN_MS) as f64, 1000);
    Recommendation { pre_stop_ms, drain_budget_ms, grace_ms, too_short_pre_stop_ms: too_short }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=30).map(f64::from).collect();
        let d = dist(&v).unwrap();
        assert_eq!((d.n, d.p50, d.p99, d.max), (30, 15.0, 30.0, 30.0), "with 30 samples the p99 is the max");
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(dist(&v).unwrap().p99, 198.0);
        assert_eq!(percentile(&[7.0], 0.5), 7.0);
        assert!(dist(&[]).is_none());
        assert_eq!(dist(&[3.0, f64::NAN, 1.0, 2.0]).unwrap().p50, 2.0, "NaN is dropped, input need not be sorted");
    }

    #[test]
    fn recommendation_follows_the_rules() {
        let dereg = Dist { n: 30, p50: 1400.0, p99: 1960.0, max: 1960.0 };
        let lat = Dist { n: 1000, p50: 6.0, p99: 430.0, max: 900.0 };
        let r = recommend(&dereg, &lat, 400, 5000);
        assert_eq!(r.pre_stop_ms, 5900, "3 × 1960 = 5880, rounded up to 100 ms");
        assert_eq!(r.drain_budget_ms, 1000, "2 × 430 = 860, at least 1 s");
        assert_eq!(r.too_short_pre_stop_ms, 1000, "0.5 × 1960 = 980 → 1000");
        assert_eq!(r.grace_ms, 14_000, "5900 + max(1000, worker 5000) + 3000 = 13900 → 14 s");
        let r = recommend(&dereg, &lat, 2000, 0);
        assert_eq!(r.drain_budget_ms, 4000, "the longest allowed request dominates");
        assert_eq!(r.grace_ms, 13_000);
    }

    #[test]
    fn the_recommendation_fits_the_stage_it_overrides() {
        let dereg = Dist { n: 30, p50: 900.0, p99: 2400.0, max: 2400.0 };
        let lat = Dist { n: 10, p50: 5.0, p99: 420.0, max: 500.0 };
        let mut s = zerodrop_stages::Stage::get(zerodrop_stages::StageName::SurgeJitter);
        let r = recommend(&dereg, &lat, 400, s.worker.drain_budget.as_millis() as u64);
        let o = crate::tune::overrides::StageOverride {
            pre_stop_ms: Some(r.pre_stop_ms),
            deregistration_wait_ms: Some(0),
            api_drain_budget_ms: Some(r.drain_budget_ms),
            grace_ms: Some(r.grace_ms),
            note: String::new(),
        };
        assert_eq!(o.apply(&mut s), Ok(true), "the grace period covers api and worker");
    }
}
