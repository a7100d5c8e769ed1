//! The staircase: each lever names the failure it must remove, as countable events
//! over trials, and its effect is judged against the stage run before it, over every
//! repeat, from Wilson intervals (see `stats`).

use super::model::{PodEventKind, StageRun};
use super::stats::{self, Rate, Spread, Verdict};
use super::summary::StageSummary;
use serde::Serialize;
use zerodrop_load::{Class, Kind};
use zerodrop_stages::StageName;

/// One countable failure: `count` gives (events, trials) for one stage run.
#[derive(Clone, Copy)]
pub struct Target {
    pub metric: &'static str,
    pub label: &'static str,
    pub count: fn(&StageRun, &StageSummary) -> (u64, u64),
}

/// A SIGKILL cuts what is in flight; a failure that ends this soon after one is its.
const KILL_REACH_US: u64 = 300_000;

fn sigkilled_pods(r: &StageRun, _: &StageSummary) -> (u64, u64) {
    let count = |k: PodEventKind| r.events.iter().filter(|e| e.kind == k).count() as u64;
    (count(PodEventKind::Sigkill), count(PodEventKind::Terminating))
}

fn cut_by_sigkill(r: &StageRun, s: &StageSummary) -> (u64, u64) {
    let kills: Vec<u64> = r
        .events
        .iter()
        .filter(|e| e.kind == PodEventKind::Sigkill && e.t_ms >= 0)
        .map(|e| e.t_ms as u64 * 1000)
        .collect();
    let cut = in_window(r)
        .filter(|rec| matches!(rec.class, Class::Reset | Class::Other))
        .filter(|rec| {
            let end = rec.at_us + rec.latency_us;
            kills.iter().any(|&k| end >= k && end <= k + KILL_REACH_US)
        })
        .count() as u64;
    (cut, s.roll.total)
}

fn refused(_: &StageRun, s: &StageSummary) -> (u64, u64) {
    (s.count(Class::Refused), s.roll.total)
}

/// Requests the server cut (reset or closed early), and job submissions that failed
/// in the server (500, 502, timeout, other). Refused connections are the readiness
/// lever's, and 503s (an instance at capacity) the surge lever's.
fn cut_mid_flight(r: &StageRun, s: &StageSummary) -> (u64, u64) {
    let cut = in_window(r)
        .filter(|rec| {
            rec.class == Class::Reset
                || (rec.kind == Kind::Job
                    && matches!(rec.class, Class::Http500 | Class::Http502 | Class::Timeout | Class::Other))
        })
        .count() as u64;
    (cut, s.roll.total)
}

fn lost_or_duplicated_jobs(r: &StageRun, _: &StageSummary) -> (u64, u64) {
    (r.jobs.lost + r.jobs.duplicated, r.jobs.accepted)
}

/// A request slower than this many times the stage's own steady p99 was held up by
/// the deploy, not by the tail the service always has.
pub const SLOW_FACTOR: f64 = 2.0;

/// Requests turned away (503: an instance at capacity) or held up well beyond the
/// steady tail while the fleet was short of warm capacity.
fn capacity_dip(r: &StageRun, s: &StageSummary) -> (u64, u64) {
    (dip_hits(r, s).len() as u64, s.roll.total)
}

/// The requests [`capacity_dip`] counts.
pub fn dip_hits<'a>(r: &'a StageRun, s: &StageSummary) -> Vec<&'a zerodrop_load::Record> {
    let slow_us = (s.steady.latency_ms.p99 * SLOW_FACTOR * 1000.0) as u64;
    in_window(r)
        .filter(|rec| rec.class == Class::Http503 || (rec.class == Class::Ok && rec.latency_us > slow_us))
        .collect()
}

fn in_window(r: &StageRun) -> impl Iterator<Item = &zerodrop_load::Record> {
    let w = r.roll;
    r.load.records.iter().filter(move |rec| rec.at_us >= w.from_us && rec.at_us < w.to_us)
}

/// The failure each stage's lever targets; the baseline has none.
pub fn targets(stage: StageName) -> Vec<Target> {
    let t = |metric, label, count| Target { metric, label, count };
    match stage {
        StageName::Naive => vec![],
        StageName::Pid1 => vec![
            t("requests_cut_by_sigkill", "requests cut by a SIGKILL", cut_by_sigkill as fn(&_, &_) -> _),
            t("sigkilled_pods", "pods SIGKILLed at the end of the grace period", sigkilled_pods),
        ],
        StageName::ReadinessPrestop => {
            vec![t("refused", "connections refused while the endpoint was still routed", refused)]
        }
        StageName::ReverseDrain => {
            vec![t("cut_mid_flight", "requests and job submissions cut mid-flight", cut_mid_flight)]
        }
        StageName::RequeueIdempotency => {
            vec![t("lost_or_duplicated_jobs", "jobs lost or applied twice", lost_or_duplicated_jobs)]
        }
        StageName::SurgeJitter => vec![t(
            "capacity_dip",
            "requests refused with 503 or slower than 2× the steady p99 while the fleet was short or cold",
            capacity_dip,
        )],
    }
}

/// One target, before (the stage before) and after (this stage), over all repeats.
#[derive(Debug, Clone, Serialize)]
pub struct TargetEffect {
    pub metric: &'static str,
    pub label: &'static str,
    /// Pooled over repeats, with the 95% Wilson interval.
    pub before: Rate,
    pub after: Rate,
    /// Event counts per repeat.
    pub before_counts: Vec<u64>,
    pub after_counts: Vec<u64>,
    pub verdict: Verdict,
}

/// `report.json`'s `lever_effect`.
#[derive(Debug, Clone, Serialize)]
pub struct LeverEffect {
    pub targets: Vec<&'static str>,
    /// Events of the first (primary) target, median over repeats.
    pub before: f64,
    pub after: f64,
    /// The primary target's verdict.
    pub verdict: Verdict,
    pub compared_with: String,
    pub per_target: Vec<TargetEffect>,
}

/// The lever of `cur`'s stage judged against `prev`: both slices hold one run per
/// repeat, with their summaries.
pub fn effect(prev: &[(&StageRun, &StageSummary)], cur: &[(&StageRun, &StageSummary)]) -> Option<LeverEffect> {
    let stage = cur.first()?.0.stage.name;
    let targets = targets(stage);
    let compared_with = prev.first()?.0.stage.name.as_str().to_string();
    let per_target: Vec<TargetEffect> = targets
        .iter()
        .map(|t| {
            let b: Vec<(u64, u64)> = prev.iter().map(|(r, s)| (t.count)(r, s)).collect();
            let a: Vec<(u64, u64)> = cur.iter().map(|(r, s)| (t.count)(r, s)).collect();
            TargetEffect {
                metric: t.metric,
                label: t.label,
                before: stats::pooled(&b),
                after: stats::pooled(&a),
                before_counts: b.iter().map(|x| x.0).collect(),
                after_counts: a.iter().map(|x| x.0).collect(),
                verdict: stats::verdict(&b, &a),
            }
        })
        .collect();
    let primary = per_target.first()?;
    let median = |v: &[u64]| stats::spread(&v.iter().map(|&x| x as f64).collect::<Vec<_>>()).median;
    Some(LeverEffect {
        targets: targets.iter().map(|t| t.metric).collect(),
        before: median(&primary.before_counts),
        after: median(&primary.after_counts),
        verdict: primary.verdict,
        compared_with,
        per_target,
    })
}

/// Min/median/max of the headline numbers of one stage over its repeats.
pub fn spreads(runs: &[(&StageRun, &StageSummary)]) -> Vec<(&'static str, Spread)> {
    type Get = fn(&StageRun, &StageSummary) -> f64;
    let metrics: [(&'static str, Get); 10] = [
        ("failed_requests", |_, s| s.roll.failed as f64),
        ("failed_rate_pct", |_, s| s.error_rate_pct()),
        ("refused", |_, s| s.count(Class::Refused) as f64),
        ("reset", |_, s| s.count(Class::Reset) as f64),
        ("http_503", |_, s| s.count(Class::Http503) as f64),
        ("steady_failed", |_, s| s.steady.failed as f64),
        ("p99_ms", |_, s| s.roll.latency_ms.p99),
        ("lost_jobs", |r, _| r.jobs.lost as f64),
        ("duplicated_jobs", |r, _| r.jobs.duplicated as f64),
        ("rollout_seconds", |r, _| r.rollout_seconds),
    ];
    metrics
        .iter()
        .map(|(name, get)| (*name, stats::spread(&runs.iter().map(|(r, s)| get(r, s)).collect::<Vec<_>>())))
        .collect()
}
