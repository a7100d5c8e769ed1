//! The long-lived run's report: report.json (the whole [`LongReport`]) and report.md
//! (the set-up in words, then the counts), through the one folder writer.

use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use zerodrop_load::long_lived::{OpTally, StreamTally};
use zerodrop_report::folder::Folder;

#[derive(Debug, Serialize)]
pub struct Config {
    pub api_replicas: u32,
    pub drain_budget_s: u64,
    pub deregistration_wait_s: u64,
    pub pre_stop_s: u64,
    pub grace_s: u64,
    pub streams: u32,
    pub op_clients: u32,
    pub op_lengths_s: Vec<u64>,
    pub event_tick_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct LongReport {
    pub run_id: String,
    pub command: String,
    pub platform: String,
    pub wall_time_s: f64,
    pub config: Config,
    pub streams: StreamTally,
    pub ops: OpTally,
}

pub fn summary(r: &LongReport) -> String {
    let (s, o) = (&r.streams, &r.ops);
    let mut m = String::new();
    let _ = writeln!(m, "| streams | |\n|---|---|");
    let _ = writeln!(
        m,
        "| events delivered | {} |\n| gaps (lost events) | {} |\n| duplicates | {} |",
        s.events, s.gaps, s.duplicates
    );
    let _ = writeln!(m, "| streams told to reconnect | {} |\n| streams cut | {} |", s.told_to_reconnect, s.cut);
    let _ =
        writeln!(m, "| resumes with Last-Event-ID (on another pod) | {} ({}) |", s.resumes, s.resumed_on_another_pod);
    let _ = writeln!(m, "| failed opens, retried | {} |\n", s.open_failures);
    let _ = writeln!(m, "| long operations | |\n|---|---|");
    let _ = writeln!(m, "| completed | {} |\n| cut | {} |", o.completed, o.cut);
    let _ = writeln!(
        m,
        "| refused at admission, 503 + Retry-After | {} (Retry-After s: {:?}) |",
        o.refused_503, o.retry_after_s
    );
    let _ = writeln!(m, "| refused without Retry-After | {} |", o.refused_without_retry_after);
    let _ = writeln!(
        m,
        "| retries after Retry-After admitted and completed / refused again | {} / {} |",
        o.retry_admitted, o.retry_refused_again
    );
    let _ = writeln!(
        m,
        "| other errors | {} |\n| in flight when the run ended (not counted) | {} |",
        o.other_errors, o.abandoned_at_end
    );
    m
}

pub fn write(r: &LongReport, dir: &Path) -> anyhow::Result<()> {
    let folder = Folder::create(dir)?;
    folder.json(r)?;
    let c = &r.config;
    let mut md = format!(
        "# Long-lived connections: {}\n\nCommand: `{}` · wall time {:.0} s · platform {}\n\n",
        r.run_id, r.command, r.wall_time_s, r.platform
    );
    let _ = writeln!(
        md,
        "{} api pods (stage `surge-jitter`, maxSurge 1) rolled once. Each terminating pod: preStop {} s, deregistration wait {} s, drain budget {} s, grace {} s. {} SSE clients (`GET /stream`, one event per {} ms, resumed with `Last-Event-ID`) and {} clients running long operations back to back on keep-alive connections (`POST /long-op`, lengths {:?} s), all through the Service address. A draining pod tells each stream to reconnect at a random moment of the first half of its budget; it admits an operation only if it can finish in what is left of the budget, and refuses it otherwise with 503 + Retry-After. A retry goes out after Retry-After seconds; it is *correct* when that retry is admitted and completes.\n",
        c.api_replicas, c.pre_stop_s, c.deregistration_wait_s, c.drain_budget_s, c.grace_s, c.streams, c.event_tick_ms, c.op_clients, c.op_lengths_s
    );
    md.push_str(&summary(r));
    folder.markdown(md)
}
