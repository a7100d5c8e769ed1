//! What `blue-green` measured, and its report.md. The switch and the rollback are one
//! runtime-API command each at HAProxy (weight 0 ↔ 1000 permille).

use super::model::{Agreement, LoadSummary, Step, Tick};
use super::report::timeline_svg;
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;
use zerodrop_report::folder::Folder;
use zerodrop_report::stats::{describe, wilson};

/// Failed requests (client side) in a window around a routing change.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub at_s: f64,
    /// The runtime API's answer time (the change is atomic once it answered).
    pub latency_ms: f64,
    /// From the change until the side switched away from stopped serving.
    pub old_side_quiet_ms: f64,
    pub requests: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlueGreenReport {
    pub run_id: String,
    pub command: String,
    pub started_at: String,
    pub machine: zerodrop_report::model::Machine,
    pub regression: String,
    pub replicas: u32,
    pub qps: u32,
    pub smoke_requests: u32,
    pub smoke_failed: u32,
    pub outcome: String,
    pub forced_rollback: bool,
    pub switch: Option<Window>,
    pub bake: Option<Step>,
    pub rollback: Option<Window>,
    pub blue_retired_s: Option<f64>,
    pub agreement: Option<Agreement>,
    pub load: Option<LoadSummary>,
    pub timeline: Vec<Tick>,
    pub pod_seconds: f64,
    /// Seconds blue and green both ran (twice the fleet).
    pub overlap_s: f64,
    pub wall_s: f64,
}

pub fn write(r: &BlueGreenReport, dir: &Path) -> Result<()> {
    let folder = Folder::create(dir)?;
    folder.json(r)?;
    let mut marks = Vec::new();
    if let Some(s) = &r.switch {
        marks.push((s.at_s, "switch".to_string()));
    }
    if let Some(s) = &r.rollback {
        marks.push((s.at_s, "rollback".to_string()));
    }
    folder.chart("timeline", timeline_svg(&r.timeline, &marks))?;
    folder.markdown(markdown(r))
}

fn window(o: &mut String, name: &str, w: &Window) {
    let _ = writeln!(
        o,
        "| {name} | {:.1} s | {:.1} ms | {:.0} ms | {} | **{}** ({}) |",
        w.at_s,
        w.latency_ms,
        w.old_side_quiet_ms,
        w.requests,
        w.failed,
        describe(&wilson(w.failed, w.requests))
    );
}

pub fn markdown(r: &BlueGreenReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Blue-green {}: {}\n", r.run_id, r.outcome);
    let _ =
        writeln!(o, "`{}` · started {} · {} · {} CPUs\n", r.command, r.started_at, r.machine.hostname, r.machine.cpus);
    let _ = writeln!(
        o,
        "Blue (v1) and a full green fleet (v2, regression `{}`), {} real api processes each, behind HAProxy in the lab's \
         network namespace, under {} req/s of open-loop load. {} smoke requests pinned to green with `X-Canary: always` \
         before any user traffic: **{} failed**.\n",
        r.regression, r.replicas, r.qps, r.smoke_requests, r.smoke_failed
    );
    let _ = writeln!(o, "## Switch and rollback\n");
    let _ = writeln!(
        o,
        "Failed requests are the load generator's, in the window from 1 s before to 5 s after the change. \
         Latency is the runtime API's answer; \"old side quiet\" is until the side switched away from answered its last request.\n"
    );
    let _ = writeln!(o, "| change | at | latency | old side quiet | requests in window | failed |");
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    if let Some(w) = &r.switch {
        window(&mut o, "switch blue → green", w);
    }
    if let Some(w) = &r.rollback {
        window(&mut o, if r.forced_rollback { "forced rollback green → blue" } else { "rollback green → blue" }, w);
    }
    if let Some(b) = &r.bake {
        let gates: Vec<String> = b
            .gates
            .iter()
            .map(|g| format!("{} {} ({})", g.name, if g.pass { "pass" } else { "FAIL" }, g.detail))
            .collect();
        let _ = writeln!(
            o,
            "\n## Bake\n\nGreen served {} requests in {:.1} s ({} failed, {}; p95 {}), against blue's {} before the switch \
             ({}; p95 {}). Decision: **{}**. Gates: {}.\n",
            b.canary.requests,
            b.held_s,
            b.canary.errors,
            describe(&b.canary.error_rate),
            b.canary.p95_ms.map(|v| format!("{v:.1} ms")).unwrap_or_else(|| "–".into()),
            b.stable.requests,
            describe(&b.stable.error_rate),
            b.stable.p95_ms.map(|v| format!("{v:.1} ms")).unwrap_or_else(|| "–".into()),
            b.decision.as_str(),
            gates.join("; ")
        );
    }
    if let Some(t) = r.blue_retired_s {
        let _ = writeln!(o, "Blue drained and exited through its own lifecycle (HAProxy drain, preStop, SIGTERM) {t:.1} s after the switch.\n");
    }
    let _ = writeln!(o, "![timeline](charts/timeline.svg)\n");
    super::report::load_and_sources(&mut o, r.load.as_ref(), r.agreement.as_ref(), ("blue", "green"));
    let _ = writeln!(
        o,
        "## Cost\n\n{:.0} pod-seconds; blue and green ran side by side for {:.0} s, twice the fleet. Wall time {:.0} s.",
        r.pod_seconds, r.overlap_s, r.wall_s
    );
    o
}
