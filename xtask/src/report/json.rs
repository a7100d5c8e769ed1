//! report.json: the machine-readable report. Per-request records are left out; the
//! per-second timeline is included so the charts can be redrawn.

use super::model::{Report, StageRun, SCHEMA_VERSION};
use super::summary::StageSummary;
use serde_json::{json, Value};

pub fn render(report: &Report, summaries: &[StageSummary]) -> anyhow::Result<Value> {
    let stages =
        report.stages.iter().zip(summaries).map(|(run, s)| stage(run, s)).collect::<anyhow::Result<Vec<_>>>()?;
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
        "run_id": report.run_id,
        "started_at": report.started_at,
        "platform": report.platform,
        "command": report.command,
        "machine": report.machine,
        "profile": report.profile,
        "stages": stages,
        "guardian": guardian,
    }))
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
        "checks": s.checks,
        "check_notes": s.check_notes,
        "pod_logs_dir": run.pod_logs_dir,
        "chart": format!("charts/{}.svg", s.name),
        "stage": serde_json::to_value(&run.stage)?,
    }))
}
