//! report.json: the machine-readable report. Per-request records are left out; the
//! per-second timeline is included so the charts can be redrawn.

use super::causes::{Cause, Causes};
use super::levers;
use super::model::{Report, StageRun, SCHEMA_VERSION};
use super::stats;
use super::summary::StageSummary;
use super::StageGroup;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One entry per stage. Its raw fields (timeline, events, evidence, checks) are the
/// first repeat's; `repeats`, `stats`, `runs`, `causes` (summed over repeats; each
/// run's own are in `runs`) and `lever_effect` cover every repeat.
pub fn render(report: &Report, groups: &[StageGroup]) -> anyhow::Result<Value> {
    let stages = groups
        .iter()
        .map(|g| {
            let (run, s) = g.first();
            let mut v = stage(run, s)?;
            v["repeats"] = json!(g.runs.len());
            v["window_seconds"] = json!(run.roll.to_us.saturating_sub(run.roll.from_us) as f64 / 1e6);
            let pooled = stats::pooled(&g.runs.iter().map(|(_, s)| (s.roll.failed, s.roll.total)).collect::<Vec<_>>());
            v["requests"]["failed_rate"] =
                json!({ "value": pooled.value, "ci95": pooled.ci95, "failed": pooled.k, "total": pooled.n });
            v["causes"] = json!(pooled_causes(g, |s| &s.causes.deploy));
            v["steady_causes"] = json!(pooled_causes(g, |s| &s.causes.steady));
            v["stats"] = levers::spreads(&g.runs).into_iter().map(|(k, sp)| (k.to_string(), json!(sp))).collect();
            v["runs"] = g
                .runs
                .iter()
                .map(|(r, s)| {
                    json!({
                        "repeat": r.repeat,
                        "requests": { "total": s.roll.total, "failed": s.roll.failed, "by_class": s.roll.by_class },
                        "steady_requests": { "total": s.steady.total, "failed": s.steady.failed },
                        "jobs": { "accepted": r.jobs.accepted, "lost": r.jobs.lost, "duplicated": r.jobs.duplicated },
                        "rollout_seconds": r.rollout_seconds,
                        "causes": Causes::keyed(&s.causes.deploy),
                        "steady_causes": Causes::keyed(&s.causes.steady),
                        "pod_logs_dir": r.pod_logs_dir,
                    })
                })
                .collect();
            v["lever_effect"] = serde_json::to_value(&g.effect)?;
            Ok(v)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let guardian = match &report.guardian {
        Some(g) => {
            let mut v = serde_json::to_value(g)?;
            v["fired"] = json!(g.exit_code == Some(g.expected_exit_code));
            v
        }
        None => Value::Null,
    };
    Ok(json!({
        "schema_version": SCHEMA_VERSION,
        "repeats": report.repeats,
        "run_id": report.run_id,
        "started_at": report.started_at,
        "platform": report.platform,
        "command": report.command,
        "machine": report.machine,
        "profile": report.profile,
        "stages": stages,
        "guardian": guardian,
        "incomplete": report.incomplete,
    }))
}

/// `{cause: count}` summed over every repeat of one stage.
fn pooled_causes(g: &StageGroup, pick: fn(&StageSummary) -> &BTreeMap<Cause, u64>) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for (_, s) in &g.runs {
        for (c, n) in pick(s) {
            *out.entry(c.key()).or_default() += n;
        }
    }
    out
}

fn stage(run: &StageRun, s: &StageSummary) -> anyhow::Result<Value> {
    let evidence: Vec<Value> = run
        .logs
        .iter()
        .map(|l| {
            json!({
                "timestamp": l.timestamp,
                "t_ms": l.t_ms,
                "pod": l.pod,
                "app": l.app,
                "step": l.step,
                "fields": l.fields,
            })
        })
        .collect();
    Ok(json!({
        "name": s.name,
        "lever": run.stage.lever,
        "targets": run.stage.targets,
        "requests": s.requests(),
        "error_rate": s.error_rate,
        "latency_ms": s.latency(),
        "ok_per_sec": { "roll": s.roll.ok_per_sec, "steady": s.steady.ok_per_sec },
        "steady_requests": { "total": s.steady.total, "failed": s.steady.failed },
        "jobs": run.jobs,
        "rollout_seconds": run.rollout_seconds,
        "capacity": s.capacity,
        "windows": { "steady": run.steady, "roll": run.roll },
        "load": {
            "started_unix_ms": run.load.started_unix_ms,
            "records": run.load.records.len(),
            "accepted_jobs": run.load.accepted_jobs.len(),
            "late_sends": run.load.late_sends,
            "connections_opened": run.load.connections_opened,
        },
        "timeline": s.timeline,
        "endpoints": run.endpoints,
        "events": run.events,
        "evidence": evidence,
        "slow_threshold_us": s.causes.slow_us,
        "checks": s.checks,
        "check_notes": s.check_notes,
        "pod_logs_dir": run.pod_logs_dir,
        "third_party": run.third_party,
        "chart": format!("charts/{}.svg", s.name),
        "stage": serde_json::to_value(&run.stage)?,
    }))
}
