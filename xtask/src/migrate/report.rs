//! The migrate run's report: report.json (the whole [`MigrateReport`]) and report.md
//! (per variant a table of its steps, then the totals side by side), through the one
//! folder writer.

use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use zerodrop_ledger::migrate::Plan;
use zerodrop_ledger::{AmountColumn, Writes};
use zerodrop_report::folder::Folder;
use zerodrop_report::stats::{describe, wilson, Rate};

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub accepted: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub wrong: u64,
}

#[derive(Debug, Serialize)]
pub struct StepResult {
    pub name: String,
    /// After the step.
    pub schema_version: i64,
    pub migration: Option<String>,
    pub deploy: Option<Writes>,
    pub reads: AmountColumn,
    pub migrate_seconds: Option<f64>,
    pub rollout_seconds: Option<f64>,
    pub requests_sent: u64,
    pub requests_failed: Rate,
    /// The jobs accepted during this step.
    pub jobs: Counts,
    /// Every job accepted in the variant so far, read through this step's column.
    pub ledger_so_far: Counts,
    pub db_errors_old_pods: u64,
    pub db_errors_new_pods: u64,
    /// Jobs put in the dead-letter queue after their last attempt.
    pub parked: u64,
    pub settled: bool,
    pub lost_sample: Vec<String>,
    pub wrong_sample: Vec<(String, Option<i64>)>,
}

#[derive(Debug, Serialize)]
pub struct VariantResult {
    pub plan: Plan,
    pub schema: String,
    pub queue: String,
    pub steps: Vec<StepResult>,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    pub requests_sent: u64,
    pub requests_failed: Rate,
    pub jobs: Counts,
    /// Lost + duplicated + wrong, over accepted.
    pub jobs_broken: Rate,
    pub db_errors_old_pods: u64,
    pub db_errors_new_pods: u64,
    pub parked: u64,
}

impl VariantResult {
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            requests_sent: 0,
            requests_failed: wilson(0, 0),
            jobs: Counts::default(),
            jobs_broken: wilson(0, 0),
            db_errors_old_pods: 0,
            db_errors_new_pods: 0,
            parked: 0,
        };
        let mut failed = 0;
        for s in &self.steps {
            t.requests_sent += s.requests_sent;
            failed += s.requests_failed.k;
            t.jobs.accepted += s.jobs.accepted;
            t.jobs.lost += s.jobs.lost;
            t.jobs.duplicated += s.jobs.duplicated;
            t.jobs.wrong += s.jobs.wrong;
            t.db_errors_old_pods += s.db_errors_old_pods;
            t.db_errors_new_pods += s.db_errors_new_pods;
            t.parked += s.parked;
        }
        t.requests_failed = wilson(failed, t.requests_sent);
        t.jobs_broken = wilson(t.jobs.lost + t.jobs.duplicated + t.jobs.wrong, t.jobs.accepted);
        t
    }

    /// Any failure the report counts: a database error, a parked job, a lost,
    /// duplicated or wrong one (in the step or in the whole ledger after it).
    pub fn failures(&self) -> u64 {
        let t = self.totals();
        let whole = self.steps.last().map(|s| s.ledger_so_far).unwrap_or_default();
        t.jobs.lost
            + t.jobs.duplicated
            + t.jobs.wrong
            + t.db_errors_old_pods
            + t.db_errors_new_pods
            + t.parked
            + whole.lost
            + whole.duplicated
            + whole.wrong
    }
}

#[derive(Debug, Serialize)]
pub struct Setup {
    pub profile: &'static str,
    pub stage: String,
    pub api_replicas: u32,
    pub worker_replicas: u32,
    pub job_work_ms: u64,
    pub load_rate_per_sec: u32,
    pub load_seconds_per_step: u64,
    pub trigger_seconds: u64,
    pub job_share_percent: u32,
    pub feed_per_sec: u32,
}

#[derive(Debug, Serialize)]
pub struct MigrateReport {
    pub run_id: String,
    pub command: String,
    pub platform: String,
    pub machine: zerodrop_report::model::Machine,
    pub wall_time_s: f64,
    pub setup: Setup,
    pub variants: Vec<VariantResult>,
}

fn opt_s(x: Option<f64>) -> String {
    x.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "—".into())
}

fn step_table(v: &VariantResult) -> String {
    let mut m = String::from(
        "| step | schema after | migration (took) | deploy (rollout) | reads | requests sent | requests failed | jobs accepted | lost | duplicated | wrong amount | ledger so far: lost / dup / wrong | DB errors old pods / new pods | parked |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in &v.steps {
        let migration = s.migration.as_deref().map(|n| format!("`{n}` ({})", opt_s(s.migrate_seconds)));
        let deploy =
            s.deploy.map(|w| format!("workers `ZD_LEDGER_WRITES={}` ({})", w.as_str(), opt_s(s.rollout_seconds)));
        let w = &s.ledger_so_far;
        let _ = writeln!(
            m,
            "| {} | v{} | {} | {} | `{}` | {} | {} | {} | {} | {} | {} | {} / {} / {} of {} | {} / {} | {} |{}",
            s.name,
            s.schema_version,
            migration.unwrap_or_else(|| "—".into()),
            deploy.unwrap_or_else(|| "—".into()),
            s.reads.as_str(),
            s.requests_sent,
            describe(&s.requests_failed),
            s.jobs.accepted,
            s.jobs.lost,
            s.jobs.duplicated,
            s.jobs.wrong,
            w.lost,
            w.duplicated,
            w.wrong,
            w.accepted,
            s.db_errors_old_pods,
            s.db_errors_new_pods,
            s.parked,
            if s.settled { "" } else { " (queue never settled)" }
        );
    }
    m
}

pub fn summary(r: &MigrateReport) -> String {
    let mut m = String::from(
        "| variant | requests sent | requests failed | jobs accepted | lost | duplicated | wrong amount | jobs broken (lost + dup + wrong) | DB errors old pods / new pods | parked |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for v in &r.variants {
        let t = v.totals();
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
            v.plan.as_str(),
            t.requests_sent,
            describe(&t.requests_failed),
            t.jobs.accepted,
            t.jobs.lost,
            t.jobs.duplicated,
            t.jobs.wrong,
            describe(&t.jobs_broken),
            t.db_errors_old_pods,
            t.db_errors_new_pods,
            t.parked
        );
    }
    m
}

pub fn write(r: &MigrateReport, dir: &Path) -> anyhow::Result<()> {
    let folder = Folder::create(dir)?;
    folder.json(r)?;
    let s = &r.setup;
    let mut md = format!(
        "# Schema change during a rolling deploy: {}\n\nCommand: `{}` · wall time {:.0} s · platform {} · machine {} ({} CPUs)\n\n",
        r.run_id, r.command, r.wall_time_s, r.platform, r.machine.hostname, r.machine.cpus
    );
    let _ = writeln!(
        md,
        "`ledger.amount` is renamed to `amount_cents` while {} api and {} worker pods (stage `{}`: manual ack after commit, idempotent, bounded retries, maxSurge 1) serve an open-loop load of {} req/s ({}% jobs) for {} s per step, plus {} jobs/s the runner publishes itself with amounts it knows. At {} s into each step the schema step runs (sqlx's migrator, `crates/ledger/migrations/`), then the workers roll to their new `ZD_LEDGER_WRITES`. The api never touches the ledger: the old and new app versions are worker versions. After each step the queue is drained and every job accepted in it is reconciled through the column the step *reads*: exactly one row, and (for the runner's jobs) the amount it published; *ledger so far* repeats that for every job of the variant. Database errors are the workers' own log lines (a retry, an auto-ack loss or a parking), split into pods that existed before the step's deploy (old) and pods it created (new). Rates carry 95% Wilson intervals.\n",
        s.api_replicas, s.worker_replicas, s.stage, s.load_rate_per_sec, s.job_share_percent, s.load_seconds_per_step, s.feed_per_sec, s.trigger_seconds
    );
    md.push_str("## Totals\n\n");
    md.push_str(&summary(r));
    for v in &r.variants {
        let _ = writeln!(md, "\n## {} (schema `{}`)\n", v.plan.as_str(), v.schema);
        md.push_str(&step_table(v));
        for st in v.steps.iter().filter(|st| !st.lost_sample.is_empty() || !st.wrong_sample.is_empty()) {
            let _ = writeln!(md, "\n{}: lost e.g. {:?}; wrong e.g. {:?}", st.name, st.lost_sample, st.wrong_sample);
        }
    }
    folder.markdown(md)
}
