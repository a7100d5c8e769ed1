//! The staircase: each lever names the failure it must remove, as countable events
//! over trials, and its effect is judged against the stage run before it, over every
//! repeat, from Wilson intervals (see `stats`).

use super::causes::Cause;
use super::model::{PodEventKind, StageRun};
use super::stats::{self, Rate, Spread, Verdict};
use super::summary::StageSummary;
use serde::Serialize;
use zerodrop_load::Class;
use zerodrop_stages::StageName;

/// One countable failure: `count` gives (events, trials) for one stage run.
#[derive(Clone, Copy)]
pub struct Target {
    pub metric: &'static str,
    pub label: &'static str,
    pub count: fn(&StageRun, &StageSummary) -> (u64, u64),
    /// The causes (`causes.rs`) it counts; empty for a target that counts pods.
    pub causes: &'static [Cause],
}

fn sigkilled_pods(r: &StageRun, _: &StageSummary) -> (u64, u64) {
    let count = |k: PodEventKind| r.events.iter().filter(|e| e.kind == k).count() as u64;
    (count(PodEventKind::Sigkill), count(PodEventKind::Terminating))
}

/// Deploy-window requests whose cause is one of `causes`, over every request of
/// the window.
fn requests_by_cause(s: &StageSummary, causes: &[Cause]) -> (u64, u64) {
    (causes.iter().map(|&c| s.causes.deploy_count(c)).sum(), s.roll.total)
}

const CUT_BY_SIGKILL: &[Cause] = &[Cause::CutBySigkill];
const REFUSED: &[Cause] = &[Cause::RefusedStoppedListener];
const CUT_BY_SHUTDOWN: &[Cause] = &[Cause::CutByShutdown];
const JOBS: &[Cause] = &[Cause::JobLost, Cause::JobAppliedTwice];
/// The surge lever's mechanism: capacity missing (fewer ready endpoints than desired)
/// or not yet usable (a cold pod, which is where a synchronised reconnect lands).
/// A 503 on a full, warm fleet is not its target: that is steady overload.
const CAPACITY_DIP: &[Cause] = &[Cause::ShedFleetShort, Cause::ShedColdPod, Cause::SlowColdPod];

/// The failure each stage's lever targets, by cause; the baseline has none.
pub fn targets(stage: StageName) -> Vec<Target> {
    match stage {
        StageName::Naive => vec![],
        StageName::Pid1 => vec![
            Target {
                metric: "cut_by_sigkill",
                label: "requests cut by a SIGKILL",
                count: |_, s| requests_by_cause(s, CUT_BY_SIGKILL),
                causes: CUT_BY_SIGKILL,
            },
            Target {
                metric: "sigkilled_pods",
                label: "pods SIGKILLed at the end of the grace period",
                count: sigkilled_pods,
                causes: &[],
            },
        ],
        StageName::ReadinessPrestop => vec![Target {
            metric: "refused_stopped_listener",
            label: "connections refused by an endpoint that stopped listening while still routed",
            count: |_, s| requests_by_cause(s, REFUSED),
            causes: REFUSED,
        }],
        StageName::ReverseDrain => vec![Target {
            metric: "cut_by_shutdown",
            label: "requests and job submissions cut mid-flight by a pod's shutdown",
            count: |_, s| requests_by_cause(s, CUT_BY_SHUTDOWN),
            causes: CUT_BY_SHUTDOWN,
        }],
        StageName::RequeueIdempotency => vec![Target {
            metric: "job_lost_or_applied_twice",
            label: "jobs accepted and never applied, or applied twice",
            count: |r, s| (JOBS.iter().map(|&c| s.causes.deploy_count(c)).sum(), r.jobs.accepted),
            causes: JOBS,
        }],
        StageName::SurgeJitter => vec![Target {
            metric: "capacity_dip",
            label: "requests shed (503) with the fleet short or by a cold pod, or served slowly by a cold pod",
            count: |_, s| requests_by_cause(s, CAPACITY_DIP),
            causes: CAPACITY_DIP,
        }],
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
    /// Each target's metric name.
    pub targets: Vec<&'static str>,
    /// The causes each target counts (`causes` keys), in the order of `targets`.
    pub target_causes: Vec<Vec<&'static str>>,
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
        target_causes: targets.iter().map(|t| t.causes.iter().map(|c| c.key()).collect()).collect(),
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
