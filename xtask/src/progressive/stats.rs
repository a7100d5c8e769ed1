//! How long a canary step must run before its error rate means anything: the
//! two-proportion sample size, the z-test that judges a step, and the low-traffic
//! guard that refuses a canary whose steps would take longer than a limit.

use serde::Serialize;

/// Φ⁻¹(p), the standard normal quantile (Acklam's rational approximation, relative
/// error below 1.2e-9: far finer than any request count needs).
pub fn norm_inv(p: f64) -> f64 {
    const A: [f64; 6] = [
        -39.696_830_286_653_76,
        220.946_098_424_520_5,
        -275.928_510_446_968_7,
        138.357_751_867_269,
        -30.664_798_066_147_16,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -54.476_098_798_224_06,
        161.585_836_858_040_9,
        -155.698_979_859_886_6,
        66.801_311_887_719_72,
        -13.280_681_552_885_72,
    ];
    const C: [f64; 6] = [
        -0.007_784_894_002_430_293,
        -0.322_396_458_041_136_5,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [0.007_784_695_709_041_462, 0.322_467_129_070_039_8, 2.445_134_137_142_996, 3.754_408_661_907_416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Φ(x), through erfc (Numerical Recipes' Chebyshev fit, error below 1.2e-7).
pub fn norm_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - erfc / 2.0
    } else {
        erfc / 2.0
    }
}

/// What the canary must be able to see: a baseline error rate and the canary rate it
/// must detect, at significance `alpha` (two-sided) with probability `power`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detect {
    pub baseline: f64,
    pub detectable: f64,
    pub alpha: f64,
    pub power: f64,
}

impl Detect {
    /// z_{1-α/2} + z_{power}, the constant the sample size grows with.
    pub fn z_sum(&self) -> f64 {
        norm_inv(1.0 - self.alpha / 2.0) + norm_inv(self.power)
    }

    /// Requests the canary needs per step.
    pub fn sample_size(&self) -> u64 {
        sample_size_with(self.z_sum(), self.baseline, self.detectable)
    }
}

/// n = (z_{α/2} + z_β)² · (p1(1−p1) + p2(1−p2)) / (p1 − p2)², rounded up.
pub fn sample_size_with(z_sum: f64, p1: f64, p2: f64) -> u64 {
    let d = p1 - p2;
    if d == 0.0 {
        return u64::MAX;
    }
    let var = p1 * (1.0 - p1) + p2 * (1.0 - p2);
    (z_sum * z_sum * var / (d * d)).ceil() as u64
}

/// Seconds a step holds for `n` canary requests when the service takes `qps` in all
/// and the canary gets `share` (0..=1) of it.
pub fn hold_seconds(n: u64, qps: f64, share: f64) -> f64 {
    n as f64 / (qps * share)
}

/// The two-proportion z-test of the canary against the baseline over one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ZTest {
    /// Positive when the canary fails more often.
    pub z: f64,
    /// Two-sided p-value.
    pub p: f64,
}

pub fn z_test(base_k: u64, base_n: u64, canary_k: u64, canary_n: u64) -> ZTest {
    if base_n == 0 || canary_n == 0 {
        return ZTest { z: 0.0, p: 1.0 };
    }
    let (p1, p2) = (base_k as f64 / base_n as f64, canary_k as f64 / canary_n as f64);
    let pooled = (base_k + canary_k) as f64 / (base_n + canary_n) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / base_n as f64 + 1.0 / canary_n as f64)).sqrt();
    if se == 0.0 {
        // Both sides without a single failure (or both all failures): no difference.
        return ZTest { z: 0.0, p: 1.0 };
    }
    let z = (p2 - p1) / se;
    ZTest { z, p: (2.0 * (1.0 - norm_cdf(z.abs()))).min(1.0) }
}

/// The low-traffic guard's finding: how long the steps below 100% would hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanDuration {
    pub per_step_s: Vec<(f64, f64)>,
    pub total_s: f64,
    /// Blue-green's bake at 100% of the traffic, for the same sample.
    pub blue_green_bake_s: f64,
}

/// Hold time of every step (weights in percent) for `n` requests at `qps`.
pub fn plan_duration(n: u64, qps: f64, steps_pct: &[f64]) -> PlanDuration {
    let per_step_s: Vec<(f64, f64)> =
        steps_pct.iter().filter(|w| **w < 100.0).map(|w| (*w, hold_seconds(n, qps, w / 100.0))).collect();
    let total_s = per_step_s.iter().map(|(_, s)| s).sum();
    PlanDuration { per_step_s, total_s, blue_green_bake_s: hold_seconds(n, qps, 1.0) }
}

/// `secs` as "39.1 s", "12.0 min" or "54.3 h".
pub fn human(secs: f64) -> String {
    // No steps below 100% sum to -0.0, which would print as such.
    let secs = secs.max(0.0);
    if secs < 120.0 {
        format!("{secs:.1} s")
    } else if secs < 7200.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The source document's worked case, with its rounded constants (1.96 + 0.84).
    #[test]
    fn the_documents_canary_needs_about_7820_requests() {
        let n = sample_size_with(1.96 + 0.84, 0.001, 0.003);
        assert_eq!(n, 7821, "7.84 · 0.00399 / 0.000004 = 7820.4, rounded up");
        // With exact quantiles the constant is 7.849 instead of 7.84.
        let exact = Detect { baseline: 0.001, detectable: 0.003, alpha: 0.05, power: 0.8 }.sample_size();
        assert!((7820..=7835).contains(&exact), "{exact}");
    }

    #[test]
    fn the_document_holds_39_1_s_at_200_qps_and_54_3_h_at_0_04_qps() {
        // 200 QPS reach the canary (2% of 10,000): 7,820 requests take 39.1 s.
        assert!((hold_seconds(7820, 200.0, 1.0) - 39.1).abs() < 1e-9);
        // 2 QPS in all, 2% to the canary: 0.04 QPS, 195,500 s.
        let s = hold_seconds(7820, 2.0, 0.02);
        assert!((s - 195_500.0).abs() < 1e-6, "{s}");
        assert_eq!(human(s), "54.3 h");
        assert_eq!(human(39.1), "39.1 s");
    }

    #[test]
    fn quantiles_and_cdf_match_the_tables() {
        assert!((norm_inv(0.975) - 1.959_964).abs() < 1e-6);
        assert!((norm_inv(0.8) - 0.841_621).abs() < 1e-6);
        assert!((norm_inv(0.01) + 2.326_348).abs() < 1e-6);
        assert!((norm_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((norm_cdf(-1.0) - 0.158_655).abs() < 1e-6);
    }

    #[test]
    fn the_z_test_flags_a_two_percent_canary_and_not_an_equal_one() {
        // 448 canary requests with 9 failures against 8,500 clean baseline requests.
        let t = z_test(0, 8500, 9, 448);
        assert!(t.z > 5.0 && t.p < 1e-6, "{t:?}");
        let same = z_test(10, 10_000, 1, 1000);
        assert!(same.z.abs() < 1e-9 && (same.p - 1.0).abs() < 1e-6, "{same:?}");
        assert_eq!(z_test(0, 1000, 0, 100), ZTest { z: 0.0, p: 1.0 });
        // A better canary gives a negative z.
        assert!(z_test(20, 1000, 0, 1000).z < 0.0);
    }

    #[test]
    fn the_low_traffic_plan_adds_up_the_steps_below_100() {
        let d = plan_duration(7820, 2.0, &[1.0, 5.0, 10.0, 25.0, 50.0, 100.0]);
        assert_eq!(d.per_step_s.len(), 5);
        assert!((d.per_step_s[0].1 - 391_000.0).abs() < 1e-6);
        assert!((d.blue_green_bake_s - 3910.0).abs() < 1e-6);
        assert!(d.total_s > 100.0 * 3600.0);
    }
}
