//! Shadow traffic before the canary: for a phase at weight 0, a share of the requests
//! is copied to v2 ([`zerodrop_load::Mirror`], pinned by the router's `x-canary:
//! always`); users are answered by v1 alone, and v2's answers are compared with v1's
//! request by request. A v2 that fails more often, or is slower, in the pairs is
//! caught before any user reaches it, and the canary never starts.
//!
//! The comparison is paired, so it asks only what differs between the two answers to
//! the same request: errors by McNemar's test (only the pairs where exactly one side
//! failed carry information), latency by the median of the per-pair differences with
//! its sign-test interval, and the same p95 rule as a canary step.

use super::gates::{self, fmt_p, Gate, GateConfig};
use super::routing::version_of;
use super::shadow_writes::WritesReport;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;
use zerodrop_load::{Class, Mirror, RunResult};
use zerodrop_report::stats::{quantile, Quantile};

/// The share of jobs in the shadow phase's load: enough copied jobs to prove where
/// their writes land, few enough that the pairs stay mostly the canary's own route.
pub const JOB_SHARE_PCT: u32 = 20;

/// The shadow phase's mix: `GET /work` and [`JOB_SHARE_PCT`]% jobs.
pub fn mix() -> zerodrop_load::Mix {
    zerodrop_load::Mix { fast: 100 - JOB_SHARE_PCT, slow: 0, job: JOB_SHARE_PCT }
}

/// The router's own pin to the canary backend, honoured on both platforms.
const PIN: (&str, &str) = ("x-canary", "always");

#[derive(Debug, Clone, Serialize)]
pub struct ShadowSettings {
    /// Share of the requests copied to v2, in percent.
    pub copy_pct: f64,
    /// How long the shadow phase's load runs.
    pub phase_s: f64,
}

impl ShadowSettings {
    pub fn mirror(&self) -> Mirror {
        Mirror {
            permille: (self.copy_pct * 10.0).round() as u32,
            header: PIN.0.into(),
            value: PIN.1.into(),
            until: Duration::from_secs_f64(self.phase_s),
        }
    }
}

/// Where the two halves of the pairs were answered. At weight 0 every original must
/// land on v1 and every copy on v2; anything else means the comparison is not one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Placement {
    pub originals_on_v1: u64,
    pub originals_on_v2: u64,
    pub copies_on_v2: u64,
    pub copies_on_v1: u64,
    /// No answer named a pod (refused, reset, timeout): not placed either way.
    pub unanswered: u64,
}

/// The paired outcomes: `v1` is the original's answer, `v2` the copy's.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pairs {
    pub total: u64,
    pub both_ok: u64,
    pub only_v2_failed: u64,
    pub only_v1_failed: u64,
    pub both_failed: u64,
    /// One-sided exact McNemar: the chance of at least `only_v2_failed` of the
    /// discordant pairs going v2's way if neither version failed more often.
    pub p_v2_worse: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairedLatency {
    /// Pairs where both answers were OK.
    pub pairs: u64,
    pub v1_p50_ms: Quantile,
    pub v1_p95_ms: Quantile,
    pub v2_p50_ms: Quantile,
    pub v2_p95_ms: Quantile,
    /// Median of v2 − v1 over the pairs, with its 95% (sign-test) interval.
    pub median_diff_ms: Quantile,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    pub settings: ShadowSettings,
    /// Requests the users sent during the phase (the originals), and how many failed.
    pub requests: u64,
    pub failed: u64,
    pub placement: Placement,
    pub pairs: Pairs,
    pub latency: PairedLatency,
    pub gates: Vec<Gate>,
    /// A gate failed: v2 does worse than v1 on the same requests.
    pub caught: bool,
    /// The ledgers after the phase: copied jobs in the shadow's, none in the users'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes: Option<WritesReport>,
    /// Why the ledgers could not be read, if they could not: the run still reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes_unread: Option<String>,
}

/// The upper tail of Binomial(n, 1/2) from `k`: summed in log space, as `n` runs to
/// thousands where 2^-n underflows.
pub fn binomial_half_tail(k: u64, n: u64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    let mut log_pmf = -(n as f64) * std::f64::consts::LN_2;
    let mut tail = 0.0;
    for i in 0..=n {
        if i >= k {
            tail += log_pmf.exp();
        }
        log_pmf += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    tail.min(1.0)
}

pub fn analyse(load: &RunResult, settings: &ShadowSettings, cfg: &GateConfig) -> ShadowReport {
    let mut placement = Placement::default();
    let mut place = |pod: Option<&str>, original: bool| match (version_of(pod.unwrap_or_default()), original) {
        (Some("v1"), true) => placement.originals_on_v1 += 1,
        (Some("v2"), true) => placement.originals_on_v2 += 1,
        (Some("v2"), false) => placement.copies_on_v2 += 1,
        (Some(_), false) => placement.copies_on_v1 += 1,
        _ => placement.unanswered += 1,
    };
    for r in &load.records {
        place(load.pod_of(r), true);
    }
    let mut pairs = Pairs::default();
    let (mut v1_ms, mut v2_ms, mut diff_ms) = (Vec::new(), Vec::new(), Vec::new());
    for m in &load.mirrored {
        place(load.pod_of(&m.record), false);
        let Some(original) = load.records.get(m.seq as usize) else { continue };
        pairs.total += 1;
        match (original.class == Class::Ok, m.record.class == Class::Ok) {
            (true, true) => {
                pairs.both_ok += 1;
                let (a, b) = (original.latency_us as f64 / 1000.0, m.record.latency_us as f64 / 1000.0);
                v1_ms.push(a);
                v2_ms.push(b);
                diff_ms.push(b - a);
            }
            (true, false) => pairs.only_v2_failed += 1,
            (false, true) => pairs.only_v1_failed += 1,
            (false, false) => pairs.both_failed += 1,
        }
    }
    pairs.p_v2_worse = binomial_half_tail(pairs.only_v2_failed, pairs.only_v2_failed + pairs.only_v1_failed);
    for v in [&mut v1_ms, &mut v2_ms, &mut diff_ms] {
        v.sort_by(f64::total_cmp);
    }
    let latency = PairedLatency {
        pairs: diff_ms.len() as u64,
        v1_p50_ms: quantile(&v1_ms, 0.5),
        v1_p95_ms: quantile(&v1_ms, 0.95),
        v2_p50_ms: quantile(&v2_ms, 0.5),
        v2_p95_ms: quantile(&v2_ms, 0.95),
        median_diff_ms: quantile(&diff_ms, 0.5),
    };
    let worse = pairs.only_v2_failed > pairs.only_v1_failed && pairs.p_v2_worse < cfg.alpha;
    let errors = Gate {
        name: "paired errors",
        pass: !worse,
        detail: format!(
            "v2 alone failed {} pairs, v1 alone {}: McNemar p = {} (breach when v2 is worse with p < {})",
            pairs.only_v2_failed,
            pairs.only_v1_failed,
            fmt_p(pairs.p_v2_worse),
            cfg.alpha
        ),
    };
    // The step gates' p95 rule and minimum, on the pairs' two sides.
    let p95 = |ms: &[f64], q: &Quantile| (!ms.is_empty()).then_some(q.value);
    let all = vec![
        errors,
        gates::p95(cfg, p95(&v1_ms, &latency.v1_p95_ms), p95(&v2_ms, &latency.v2_p95_ms), ("v1", "v2")),
        gates::volume(cfg, pairs.total, "pairs"),
    ];
    let caught = all.iter().any(|g| !g.pass);
    ShadowReport {
        settings: settings.clone(),
        requests: load.records.len() as u64,
        failed: load.records.iter().filter(|r| r.class != Class::Ok).count() as u64,
        placement,
        pairs,
        latency,
        gates: all,
        caught,
        writes: None,
        writes_unread: None,
    }
}

impl ShadowReport {
    /// The comparison is one only if the copies reached v2 and the users did not.
    pub fn check(&self) -> Result<(), String> {
        let p = &self.placement;
        if p.originals_on_v2 > 0 || p.copies_on_v1 > 0 {
            return Err(format!(
                "shadow: {} user requests reached v2 and {} copies reached v1 at weight 0; the pairs compare nothing",
                p.originals_on_v2, p.copies_on_v1
            ));
        }
        if p.copies_on_v2 == 0 {
            return Err("shadow: no copy was answered by v2".into());
        }
        if let Some(e) = &self.writes_unread {
            return Err(format!("shadow writes: the ledgers could not be reconciled: {e}"));
        }
        self.writes.as_ref().map_or(Ok(()), WritesReport::check)
    }

    pub fn sentence(&self) -> String {
        let failed: Vec<&str> = self.gates.iter().filter(|g| !g.pass).map(|g| g.name).collect();
        if failed == ["minimum requests"] {
            return format!(
                "too few pairs to judge ({} pairs): the canary did not start; copy a larger share or shadow longer",
                self.pairs.total
            );
        }
        if self.caught {
            format!("caught in shadow ({}), before any user reached v2: the canary did not start", failed.join(", "))
        } else {
            "no difference the shadow can see: on to the canary".into()
        }
    }

    pub fn markdown(&self, o: &mut String) {
        let s = &self.settings;
        let p = &self.pairs;
        let l = &self.latency;
        let ms = |q: &Quantile| format!("{:.2} [{:.2}, {:.2}]", q.value, q.ci95[0], q.ci95[1]);
        let _ = writeln!(
            o,
            "## Shadow\n\nFor {:.0} s at weight 0, {}% of the requests were also sent, at the same moment, as a copy \
             pinned to v2 (`{}: {}`); the users' answers came from v1 alone and v2's were compared with them, request \
             by request. The copies are made by the load generator: open-source HAProxy mirrors only through an \
             external SPOE agent. {}% of the requests were jobs.\n",
            s.phase_s, s.copy_pct, PIN.0, PIN.1, JOB_SHARE_PCT
        );
        let pl = &self.placement;
        let _ = writeln!(
            o,
            "Users: {} requests, {} failed; answered by v1 {}, by v2 {}. Copies: answered by v2 {}, by v1 {}; \
             {} requests or copies got no answer naming a pod.\n",
            self.requests,
            self.failed,
            pl.originals_on_v1,
            pl.originals_on_v2,
            pl.copies_on_v2,
            pl.copies_on_v1,
            pl.unanswered
        );
        let _ = writeln!(
            o,
            "| {} pairs | v2 OK | v2 failed |\n|---|---|---|\n| **v1 OK** | {} | {} |\n| **v1 failed** | {} | {} |\n",
            p.total, p.both_ok, p.only_v2_failed, p.only_v1_failed, p.both_failed
        );
        let _ = writeln!(
            o,
            "Latency over the {} pairs both answered OK, ms (95% interval): v1 p50 {}, p95 {}; v2 p50 {}, p95 {}; \
             median of v2 − v1 per pair **{}**.\n",
            l.pairs,
            ms(&l.v1_p50_ms),
            ms(&l.v1_p95_ms),
            ms(&l.v2_p50_ms),
            ms(&l.v2_p95_ms),
            ms(&l.median_diff_ms)
        );
        let _ = writeln!(o, "| gate | pass | detail |\n|---|---|---|");
        for g in &self.gates {
            let _ = writeln!(o, "| {} | {} | {} |", g.name, if g.pass { "yes" } else { "**no**" }, g.detail);
        }
        let _ = writeln!(o, "\n**Verdict:** {}.\n", self.sentence());
        if let Some(w) = &self.writes {
            w.markdown(o);
        }
        if let Some(e) = &self.writes_unread {
            let _ = writeln!(o, "### Writes\n\n**The ledgers could not be reconciled:** {e}\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerodrop_load::{Kind, Mirrored, Profile, Record};

    const CFG: GateConfig = GateConfig { alpha: 0.05, p95_tolerance_pct: 50.0, p95_floor_ms: 10.0, min_requests: 50 };

    fn settings() -> ShadowSettings {
        ShadowSettings { copy_pct: 20.0, phase_s: 15.0 }
    }

    /// `n` requests answered OK by v1 in 5 ms; `copies` of them (seq, class, ms)
    /// answered by v2.
    fn run(n: u64, copies: &[(u64, Class, u64)]) -> RunResult {
        let ok = |at: u64, ms: u64, pod: u16| Record::new(at, ms * 1000, Class::Ok, Kind::Fast).with_pod(Some(pod));
        RunResult {
            started_unix_ms: 0,
            profile: Profile::default(),
            records: (0..n).map(|i| ok(i * 4000, 5, 0)).collect(),
            accepted_jobs: vec![],
            late_sends: 0,
            connections_opened: 4,
            pods: vec!["api-v1-1".into(), "api-v2-5d8f7c9b6-x2x7k".into()],
            mirrored: copies
                .iter()
                .map(|&(seq, class, ms)| Mirrored {
                    seq,
                    record: Record::new(seq * 4000, ms * 1000, class, Kind::Fast)
                        .with_pod((class != Class::Refused).then_some(1)),
                })
                .collect(),
            mirrored_accepted_jobs: vec![],
        }
    }

    #[test]
    fn the_binomial_tail_matches_reference_values() {
        // R: binom.test(5, 5, alternative = "greater")$p.value = 1/32.
        assert!((binomial_half_tail(5, 5) - 1.0 / 32.0).abs() < 1e-12);
        // R: pbinom(6, 10, 0.5, lower.tail = FALSE) = 0.171875, the tail from 7.
        assert!((binomial_half_tail(7, 10) - 0.171_875).abs() < 1e-12);
        assert_eq!(binomial_half_tail(0, 0), 1.0);
        assert!(binomial_half_tail(1500, 2000) < 1e-15, "no underflow into NaN");
        assert!((binomial_half_tail(1000, 2000) - 0.5).abs() < 0.01);
    }

    #[test]
    fn a_clean_shadow_passes_and_places_every_answer() {
        let copies: Vec<_> = (0..200).map(|i| (i * 5, Class::Ok, 5 + i % 2)).collect();
        let r = analyse(&run(1000, &copies), &settings(), &CFG);
        assert!(!r.caught, "{:?}", r.gates);
        assert_eq!((r.pairs.total, r.pairs.both_ok), (200, 200));
        assert_eq!((r.placement.originals_on_v1, r.placement.copies_on_v2), (1000, 200));
        assert!(r.check().is_ok());
        assert_eq!(r.latency.median_diff_ms.value, 0.0);
    }

    #[test]
    fn a_v2_that_fails_where_v1_did_not_is_caught() {
        let copies: Vec<_> = (0..400).map(|i| (i, if i % 40 == 0 { Class::Http500 } else { Class::Ok }, 5)).collect();
        let r = analyse(&run(1000, &copies), &settings(), &CFG);
        assert_eq!((r.pairs.only_v2_failed, r.pairs.only_v1_failed), (10, 0));
        assert!(r.caught && !r.gates[0].pass, "{:?}", r.gates);
        assert!(r.sentence().starts_with("caught in shadow (paired errors)"), "{}", r.sentence());
    }

    #[test]
    fn a_slower_v2_fails_the_p95_gate_on_the_pairs() {
        let copies: Vec<_> = (0..200).map(|i| (i, Class::Ok, 85)).collect();
        let r = analyse(&run(1000, &copies), &settings(), &CFG);
        assert!(r.caught && r.gates[0].pass, "{:?}", r.gates);
        assert!(r.gates.iter().any(|g| g.name == "p95" && !g.pass && g.detail.contains("v2 85.0 ms vs v1 5.0 ms")));
        assert_eq!(r.latency.median_diff_ms.value, 80.0);
    }

    #[test]
    fn copies_that_miss_v2_make_the_comparison_void() {
        let mut load = run(100, &[(1, Class::Ok, 5)]);
        load.mirrored[0].record.pod = Some(0);
        assert!(analyse(&load, &settings(), &CFG).check().unwrap_err().contains("1 copies reached v1"));
        let none = analyse(&run(100, &[(1, Class::Refused, 5)]), &settings(), &CFG);
        assert_eq!(none.check().unwrap_err(), "shadow: no copy was answered by v2");
    }

    #[test]
    fn too_few_pairs_stop_the_canary_without_calling_v2_worse() {
        let copies: Vec<_> = (0..20).map(|i| (i, Class::Ok, 5)).collect();
        let r = analyse(&run(100, &copies), &settings(), &CFG);
        assert!(r.caught, "{:?}", r.gates);
        assert!(r.sentence().starts_with("too few pairs to judge (20 pairs)"), "{}", r.sentence());
    }

    #[test]
    fn the_mirror_pins_copies_to_the_canary() {
        let m = settings().mirror();
        assert_eq!(
            (m.permille, m.header.as_str(), m.value.as_str(), m.until),
            (200, "x-canary", "always", Duration::from_secs(15))
        );
    }
}
