//! The gates a canary step (or a blue-green bake) must pass: the canary's error rate
//! against the baseline (two-proportion z-test), its p95 against the baseline's, and
//! a minimum number of requests.

use super::stats::{z_test, ZTest};
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct GateConfig {
    /// Significance of the z-test (two-sided).
    pub alpha: f64,
    /// The canary's p95 may exceed the baseline's by this many percent ...
    pub p95_tolerance_pct: f64,
    /// ... or by this many milliseconds, whichever is larger: at a 7.5 ms p95 read from
    /// histogram buckets, 50% is under 4 ms, within the scheduling noise of a shared
    /// 2-core machine (a clean v2 measured 10.6 ms against 7.4 ms once).
    pub p95_floor_ms: f64,
    pub min_requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    pub name: &'static str,
    pub pass: bool,
    pub detail: String,
}

/// One side's numbers over a step: failures out of requests, and its p95.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    pub errors: u64,
    pub requests: u64,
    pub p95_ms: Option<f64>,
}

pub fn evaluate(cfg: &GateConfig, base: Observed, canary: Observed) -> (ZTest, Vec<Gate>) {
    let z = z_test(base.errors, base.requests, canary.errors, canary.requests);
    let worse = z.z > 0.0 && z.p < cfg.alpha;
    let errors = Gate {
        name: "error rate",
        pass: !worse,
        detail: format!("z = {:.2}, p = {} (breach when the canary is worse with p < {})", z.z, fmt_p(z.p), cfg.alpha),
    };
    let latency = p95(cfg, base.p95_ms, canary.p95_ms, ("baseline", "canary"));
    let volume = volume(cfg, canary.requests, "canary requests");
    (z, vec![errors, latency, volume])
}

/// The p95 rule: the new side's p95 may exceed the old side's by the tolerance or the
/// floor, whichever is larger. `names` are (old, new) as the detail calls them.
pub fn p95(cfg: &GateConfig, old: Option<f64>, new: Option<f64>, names: (&str, &str)) -> Gate {
    match (old, new) {
        (Some(b), Some(c)) => {
            let limit = (b * (1.0 + cfg.p95_tolerance_pct / 100.0)).max(b + cfg.p95_floor_ms);
            Gate {
                name: "p95",
                pass: c <= limit,
                detail: format!("{} {c:.1} ms vs {} {b:.1} ms (limit {limit:.1} ms)", names.1, names.0),
            }
        }
        _ => Gate { name: "p95", pass: true, detail: "no latency observations on one side".into() },
    }
}

/// Enough observations to judge: `n` of `what` against the minimum.
pub fn volume(cfg: &GateConfig, n: u64, what: &str) -> Gate {
    Gate {
        name: "minimum requests",
        pass: n >= cfg.min_requests,
        detail: format!("{n} {what} (minimum {})", cfg.min_requests),
    }
}

/// The error gate judged by client ([`super::clients`]): the canary's mean client error
/// rate against the baseline's, in place of the per-request test.
pub fn by_client(cfg: &GateConfig, b: &super::clients::ByClient) -> Gate {
    let worse = b.z.z > 0.0 && b.z.p < cfg.alpha;
    Gate {
        name: "error rate by client",
        pass: !worse,
        detail: format!(
            "{} canary clients at {:.2}% mean vs {} baseline clients at {:.2}%: z = {:.2}, p = {}",
            b.canary.clients,
            b.canary.mean_rate * 100.0,
            b.stable.clients,
            b.stable.mean_rate * 100.0,
            b.z.z,
            fmt_p(b.z.p)
        ),
    }
}

pub fn fmt_p(p: f64) -> String {
    if p < 1e-15 {
        "< 1e-15".into()
    } else if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: GateConfig = GateConfig { alpha: 0.05, p95_tolerance_pct: 50.0, p95_floor_ms: 5.0, min_requests: 200 };

    fn obs(errors: u64, requests: u64, p95: f64) -> Observed {
        Observed { errors, requests, p95_ms: Some(p95) }
    }

    #[test]
    fn a_clean_canary_passes_every_gate() {
        let (_, g) = evaluate(&CFG, obs(0, 9000, 6.0), obs(0, 450, 6.2));
        assert!(g.iter().all(|g| g.pass), "{g:?}");
    }

    #[test]
    fn each_gate_can_fail_on_its_own() {
        let (z, g) = evaluate(&CFG, obs(0, 9000, 6.0), obs(9, 450, 6.0));
        assert!(!g[0].pass && g[1].pass && g[2].pass && z.p < 1e-6, "{g:?}");
        let (_, g) = evaluate(&CFG, obs(0, 9000, 6.0), obs(0, 450, 86.0));
        assert!(g[0].pass && !g[1].pass && g[2].pass, "{g:?}");
        let (_, g) = evaluate(&CFG, obs(0, 9000, 6.0), obs(0, 150, 6.0));
        assert!(g[0].pass && g[1].pass && !g[2].pass, "{g:?}");
    }

    #[test]
    fn a_canary_better_than_its_baseline_is_no_breach() {
        let (z, g) = evaluate(&CFG, obs(30, 1000, 6.0), obs(0, 1000, 6.0));
        assert!(z.z < 0.0 && z.p < 0.05 && g[0].pass, "{z:?}");
    }
}
