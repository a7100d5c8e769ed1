//! `report.json` and `report.md` of a chaos run: the verdict table first, then each
//! variant's phases, breaker transitions and timeline.

use super::analysis::{Bucket, KindStats, PhaseStats, Timing, Transition};
use super::profile::ChaosProfile;
use anyhow::{Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use zerodrop_report::model::Machine;
use zerodrop_report::stats::{describe, verdict, Quantile};

#[derive(Debug, Clone, Serialize)]
pub struct Jobs {
    /// Answered 202.
    pub accepted: u64,
    /// Accepted, with no ledger row.
    pub lost: u64,
    /// Accepted, with more than one ledger row.
    pub applied_twice: u64,
    /// The queue drained before the reconciliation.
    pub settled: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub name: String,
    pub breaker: bool,
    pub phases: Vec<PhaseStats>,
    pub timing: Timing,
    pub transitions: Vec<Transition>,
    pub timeline: Vec<Bucket>,
    pub jobs: Jobs,
}

impl Variant {
    pub fn phase(&self, name: &str) -> Option<&PhaseStats> {
        self.phases.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub run_id: String,
    pub command: String,
    pub platform: String,
    pub machine: Machine,
    pub wall_time_s: f64,
    pub profile: ChaosProfile,
    pub variants: Vec<Variant>,
}

pub fn write(r: &ChaosReport, dir: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(r).context("serialising the chaos report")?;
    std::fs::write(dir.join("report.json"), json).context("writing report.json")?;
    std::fs::write(dir.join("report.md"), markdown(r)).context("writing report.md")?;
    Ok(())
}

fn q(x: &Quantile) -> String {
    format!("{:.0} ms [{:.0}, {:.0}]", x.value, x.ci95[0], x.ci95[1])
}

/// Lower, higher, or within noise: the two 95% intervals must be apart to say either.
fn compare_latency(before: &Quantile, after: &Quantile) -> &'static str {
    if before.n == 0 || after.n == 0 {
        "no requests"
    } else if before.ci95[0] > after.ci95[1] {
        "lower"
    } else if after.ci95[0] > before.ci95[1] {
        "higher"
    } else {
        "within noise"
    }
}

fn ms(v: Option<u64>, none: &str) -> String {
    v.map(|v| format!("{v} ms")).unwrap_or_else(|| none.to_string())
}

pub fn markdown(r: &ChaosReport) -> String {
    let p = &r.profile;
    let mut md = String::new();
    let _ = writeln!(md, "# Chaos: a slow broker path, without and with the publish breaker\n");
    let _ = writeln!(
        md,
        "Run `{}` on {} ({} CPUs, {}), {:.0} s wall time. Command: `{}`\n",
        r.run_id, r.platform, r.machine.cpus, r.machine.hostname, r.wall_time_s, r.command
    );
    let _ = writeln!(
        md,
        "Load: {} requests/s open-loop (seed {}), {} fast / {} slow `GET /work` and {} `POST /jobs` in 100, on {} api \
         pods of {} request slots each (shared by `/work` and `/jobs`). Fault: {} on the api pods' broker path (a relay \
         the runner controls), for the middle of three equal {} s phases. The breaker (variant `breaker` only) opens \
         after {} consecutive failed or slower-than-{} ms publishes, stays open {} ms, then lets one probe through.\n",
        p.load.rate_per_sec,
        p.load.seed,
        p.load.mix.fast,
        p.load.mix.slow,
        p.load.mix.job,
        p.api_replicas,
        p.api_capacity,
        p.fault.describe(),
        p.phase_ms / 1000,
        p.breaker_failures,
        p.breaker_slow_ms,
        p.breaker_open_ms
    );
    if let [a, b] = r.variants.as_slice() {
        verdict_table(&mut md, a, b);
    }
    for v in &r.variants {
        variant_section(&mut md, v);
    }
    let _ = writeln!(
        md,
        "## How to read this\n\nRates carry 95% Wilson intervals; p50/p99 carry distribution-free 95% intervals (order \
         statistics). A difference is called lower or higher only when the two intervals are apart. Latencies are of \
         every answer, failures included: a 503 refused at once counts as about 0 ms, so a p50 of 0 ms means more \
         than half the requests were refused, not that they got faster. `/work` never touches the broker: its failures during the fault are the pile-up of slow publishes taking the slots it needs. \
         Jobs are reconciled against the ledger after the queue drained: lost = answered 202 and never applied."
    );
    md
}

fn verdict_table(md: &mut String, a: &Variant, b: &Variant) {
    let (Some(fa), Some(fb)) = (a.phase("fault"), b.phase("fault")) else { return };
    let _ = writeln!(md, "## Verdict (fault phase, `{}` against `{}`)\n", b.name, a.name);
    let _ = writeln!(md, "| | {} | {} | verdict |\n|---|---|---|---|", a.name, b.name);
    let rate = |x: &KindStats| (x.failed.k, x.failed.n);
    let _ = writeln!(
        md,
        "| `/work` failed | {} | {} | {} |",
        describe(&fa.work.failed),
        describe(&fb.work.failed),
        verdict(&[rate(&fa.work)], &[rate(&fb.work)]).as_str()
    );
    for (what, x, y) in
        [("`/work` p99", &fa.work.p99_ms, &fb.work.p99_ms), ("`/jobs` p99", &fa.jobs.p99_ms, &fb.jobs.p99_ms)]
    {
        let _ = writeln!(md, "| {what} | {} | {} | {} |", q(x), q(y), compare_latency(x, y));
    }
    let _ = writeln!(
        md,
        "| `/jobs` failed | {} | {} | (fast 503s are the breaker's answer) |",
        describe(&fa.jobs.failed),
        describe(&fb.jobs.failed)
    );
    let t = |v: &Variant| {
        (
            ms(v.timing.to_open_ms, "never opened"),
            ms(v.timing.to_close_ms, if v.timing.pods_opened == 0 { "—" } else { "not closed" }),
            ms(v.timing.last_failure_after_heal_ms, "none"),
        )
    };
    let (ta, tb) = (t(a), t(b));
    let _ = writeln!(md, "| time to open (fault → first breaker open) | {} | {} | |", ta.0, tb.0);
    let _ = writeln!(md, "| time to recover (heal → last breaker closed) | {} | {} | |", ta.1, tb.1);
    let _ = writeln!(md, "| last failed request after the heal | {} | {} | |", ta.2, tb.2);
    let jobs = |v: &Variant| {
        format!("{} accepted, {} lost, {} applied twice", v.jobs.accepted, v.jobs.lost, v.jobs.applied_twice)
    };
    let _ = writeln!(md, "| jobs | {} | {} | |\n", jobs(a), jobs(b));
}

fn variant_section(md: &mut String, v: &Variant) {
    let _ = writeln!(md, "## Variant `{}` (breaker {})\n", v.name, if v.breaker { "on" } else { "off" });
    let _ = writeln!(
        md,
        "| phase | `/work` failed | `/work` p50 | `/work` p99 | `/jobs` failed | `/jobs` 503 | `/jobs` p50 | `/jobs` p99 |\n|---|---|---|---|---|---|---|---|"
    );
    for ph in &v.phases {
        let _ = writeln!(
            md,
            "| {} ({:.1}–{:.1} s) | {} | {} | {} | {} | {} | {} | {} |",
            ph.name,
            ph.from_s,
            ph.to_s,
            describe(&ph.work.failed),
            q(&ph.work.p50_ms),
            q(&ph.work.p99_ms),
            describe(&ph.jobs.failed),
            ph.jobs.http_503,
            q(&ph.jobs.p50_ms),
            q(&ph.jobs.p99_ms)
        );
    }
    let j = &v.jobs;
    let _ = writeln!(
        md,
        "\nJobs: {} accepted, {} lost, {} applied twice{}.\n",
        j.accepted,
        j.lost,
        j.applied_twice,
        if j.settled { "" } else { " (the queue had not drained within 45 s: the counts may be early)" }
    );
    if !v.transitions.is_empty() {
        let _ = writeln!(md, "Breaker transitions (s since the load started):\n\n| t | pod | to |\n|---|---|---|");
        for t in &v.transitions {
            let _ = writeln!(md, "| {:.2} | {} | {} |", t.t_s, t.pod, t.to);
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "Timeline (s from the start of the first phase):\n\n| t | sent | `/work` failed | `/jobs` failed | `/work` p99 ms | `/jobs` p99 ms | marks |\n|---|---|---|---|---|---|---|"
    );
    for b in &v.timeline {
        let _ = writeln!(
            md,
            "| {:.0} | {} | {} | {} | {:.0} | {:.0} | {} |",
            b.t_s, b.sent, b.work_failed, b.jobs_failed, b.work_p99_ms, b.jobs_p99_ms, b.marks
        );
    }
    md.push('\n');
}
