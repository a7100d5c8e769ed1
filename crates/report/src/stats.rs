//! Honest comparisons: a rate always carries its 95% Wilson interval, repeats are
//! summarised as min/median/max, and a lever's verdict is decided from pooled
//! intervals and every repeat, never from one count.

use serde::Serialize;

/// Two-sided 95% normal quantile.
const Z95: f64 = 1.959_963_984_540_054;

/// `k` events out of `n` trials, with its 95% Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    pub k: u64,
    pub n: u64,
    pub value: f64,
    pub ci95: [f64; 2],
}

/// The Wilson score interval: unlike the normal approximation it stays inside [0, 1]
/// and gives zero events a real upper bound (about 3.84 / n).
pub fn wilson(k: u64, n: u64) -> Rate {
    if n == 0 {
        return Rate { k, n, value: 0.0, ci95: [0.0, 1.0] };
    }
    let (kf, nf, z2) = (k.min(n) as f64, n as f64, Z95 * Z95);
    let p = kf / nf;
    let centre = (p + z2 / (2.0 * nf)) / (1.0 + z2 / nf);
    let half = Z95 / (1.0 + z2 / nf) * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    let lo = if k == 0 { 0.0 } else { (centre - half).max(0.0) };
    let hi = if k >= n { 1.0 } else { (centre + half).min(1.0) };
    Rate { k, n, value: p, ci95: [lo, hi] }
}

/// Several rates pooled into one (the repeats of one stage).
pub fn pooled(samples: &[(u64, u64)]) -> Rate {
    let (k, n) = samples.iter().fold((0, 0), |(k, n), (a, b)| (k + a, n + b));
    wilson(k, n)
}

/// Min, median and max of one metric over the repeats of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

pub fn spread(values: &[f64]) -> Spread {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Spread { min: 0.0, median: 0.0, max: 0.0 };
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 };
    Spread { min: v[0], median, max: v[v.len() - 1] }
}

/// What a lever did to its target, compared with the stage before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Present before (intervals apart), zero after in every repeat.
    Removed,
    /// Lower after, intervals apart, but not zero.
    Reduced,
    /// Both present and the intervals overlap: the difference is within noise.
    Unchanged,
    /// Higher after, intervals apart.
    Worse,
    /// Too few events on either side for the intervals to tell anything apart.
    NotDetectable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Removed => "removed",
            Verdict::Reduced => "reduced",
            Verdict::Unchanged => "unchanged",
            Verdict::Worse => "worse",
            Verdict::NotDetectable => "not detectable",
        }
    }
}

/// `before` and `after` hold one `(events, trials)` per repeat. The pooled Wilson
/// intervals must not overlap for any verdict but `unchanged` / `not detectable`;
/// `removed` also needs zero events in every repeat after.
pub fn verdict(before: &[(u64, u64)], after: &[(u64, u64)]) -> Verdict {
    let (b, a) = (pooled(before), pooled(after));
    if b.ci95[0] > a.ci95[1] {
        if after.iter().all(|(k, _)| *k == 0) {
            Verdict::Removed
        } else {
            Verdict::Reduced
        }
    } else if a.ci95[0] > b.ci95[1] {
        Verdict::Worse
    } else if b.k > 0 && a.k > 0 {
        Verdict::Unchanged
    } else {
        Verdict::NotDetectable
    }
}

/// `12 / 4400 = 0.27% [0.16%, 0.48%]`, or `0 / 4400 (≤ 0.09%)`.
pub fn describe(r: &Rate) -> String {
    if r.k == 0 {
        format!("0 / {} (≤ {})", r.n, pct(r.ci95[1]))
    } else {
        format!("{} / {} = {} [{}, {}]", r.k, r.n, pct(r.value), pct(r.ci95[0]), pct(r.ci95[1]))
    }
}

pub fn pct(x: f64) -> String {
    let p = x * 100.0;
    if p != 0.0 && p < 0.01 {
        format!("{p:.3}%")
    } else {
        format!("{p:.2}%")
    }
}

/// A quantile of a sample with its distribution-free 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantile {
    pub q: f64,
    pub n: u64,
    pub value: f64,
    pub ci95: [f64; 2],
}

/// The `q`-quantile of `sorted` (ascending), and the order statistics whose ranks are
/// n·q ± 1.96·√(n·q·(1−q)) as its 95% interval: no assumption about the latency
/// distribution, which is anything but normal while a dependency is slow. With few
/// samples the interval reaches the smallest or largest value, as it should.
pub fn quantile(sorted: &[f64], q: f64) -> Quantile {
    let n = sorted.len();
    if n == 0 {
        return Quantile { q, n: 0, value: 0.0, ci95: [0.0, 0.0] };
    }
    let at = |rank: f64| sorted[(rank.ceil().max(1.0) as usize).min(n) - 1];
    let nf = n as f64;
    let half = Z95 * (nf * q * (1.0 - q)).sqrt();
    Quantile { q, n: n as u64, value: at(nf * q), ci95: [at(nf * q - half), at(nf * q + half + 1.0)] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_carry_an_order_statistic_interval() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        let p50 = quantile(&v, 0.5);
        assert_eq!(p50.value, 500.0);
        // ±1.96·√250 ≈ ±31 ranks.
        assert_eq!(p50.ci95, [470.0, 532.0]);
        let p99 = quantile(&v, 0.99);
        assert_eq!(p99.value, 990.0);
        assert!(p99.ci95[0] < 990.0 && p99.ci95[1] > 990.0 && p99.ci95[1] <= 1000.0, "{p99:?}");
        assert_eq!(quantile(&[7.0], 0.99).ci95, [7.0, 7.0]);
        assert_eq!(quantile(&[], 0.5).n, 0);
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 5e-5
    }

    /// Reference values from the closed form (e.g. R's `prop.test(correct = FALSE)`).
    #[test]
    fn wilson_matches_reference_values() {
        let r = wilson(10, 100);
        assert!(close(r.ci95[0], 0.05522) && close(r.ci95[1], 0.17437), "{r:?}");
        let r = wilson(0, 1000);
        assert_eq!(r.ci95[0], 0.0);
        assert!(close(r.ci95[1], 0.003827), "zero of n keeps an upper bound: {r:?}");
        let r = wilson(5, 5);
        assert_eq!(r.ci95[1], 1.0);
        assert!(close(r.ci95[0], 0.56551), "{r:?}");
        assert_eq!(wilson(0, 0).ci95, [0.0, 1.0], "no trials: no knowledge");
    }

    #[test]
    fn spread_is_min_median_max() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Spread { min: 1.0, median: 2.0, max: 3.0 });
        assert_eq!(spread(&[4.0, 1.0]).median, 2.5);
        assert_eq!(spread(&[]), Spread { min: 0.0, median: 0.0, max: 0.0 });
    }

    #[test]
    fn verdicts_need_separated_intervals() {
        let n = 4400;
        assert_eq!(verdict(&[(40, n)], &[(0, n)]), Verdict::Removed);
        assert_eq!(verdict(&[(40, n), (35, n), (52, n)], &[(0, n), (0, n), (0, n)]), Verdict::Removed);
        // A single stray event after: lower, but not gone.
        assert_eq!(verdict(&[(40, n), (35, n), (52, n)], &[(0, n), (1, n), (0, n)]), Verdict::Reduced);
        // 13 -> 11 is noise, not "better".
        assert_eq!(verdict(&[(13, n)], &[(11, n)]), Verdict::Unchanged);
        assert_eq!(verdict(&[(2, n)], &[(60, n)]), Verdict::Worse);
        // Three events against none: the intervals overlap, nothing can be claimed.
        assert_eq!(verdict(&[(3, n)], &[(0, n)]), Verdict::NotDetectable);
        assert_eq!(verdict(&[(0, n)], &[(0, n)]), Verdict::NotDetectable);
    }

    #[test]
    fn rates_are_described_with_their_interval() {
        assert_eq!(describe(&wilson(0, 4400)), "0 / 4400 (≤ 0.09%)");
        assert!(describe(&wilson(12, 4400)).starts_with("12 / 4400 = 0.27% ["), "{}", describe(&wilson(12, 4400)));
    }
}
