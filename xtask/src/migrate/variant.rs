//! One variant on any platform with [`RolloutWithEnv`]: a fleet at schema version 1
//! with old workers, then each step under the same load: at the trigger the schema
//! step (sqlx's migrator, through the runner's own connection), then the workers'
//! rolling deploy with their new `ZD_LEDGER_WRITES`; after it, the queue drained and
//! every accepted job reconciled through the column the step trusts.

use super::db_errors;
use super::feed::{self, Feed};
use super::plan::{self, Step};
use super::report::{Counts, StepResult, VariantResult};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use zerodrop_jobs::Topology;
use zerodrop_ledger::migrate::{self, Plan};
use zerodrop_ledger::writes::{self, AmountCheck};
use zerodrop_load::{Live, Profile};
use zerodrop_platform::local::pod::App;
use zerodrop_platform::reconfigure::RolloutWithEnv;
use zerodrop_platform::{Platform, StageEnv};
use zerodrop_stages::Stage;

/// What both variants share.
pub struct Settings {
    pub stage: Stage,
    pub load: Profile,
    pub trigger: std::time::Duration,
    pub feed_per_sec: u32,
    pub api_replicas: u32,
    pub worker_replicas: u32,
    pub job_work: std::time::Duration,
    pub keep_data: bool,
}

pub async fn run<P: Platform + RolloutWithEnv>(
    platform: &mut P,
    feed: &Feed,
    s: &Settings,
    run_id: &str,
    out_dir: &Path,
    index: usize,
    plan: Plan,
) -> Result<VariantResult> {
    let name = plan.as_str();
    let env = stage_env(s, run_id, index, plan);
    let (topology, schema) = (Topology::new(env.queue.clone()), env.schema.clone());
    topology.declare(feed.channel()).await.context("declaring the variant's queues")?;
    let mut conn = migrate::connect(platform.database_url(), &schema).await.context("connecting for migrations")?;
    migrate::migrate_to(&mut conn, plan, 1).await.context("the baseline schema")?;
    let log_dir = out_dir.join("logs").join(name);
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    eprintln!("[{name}] fleet up: schema {schema} at version 1, workers writing `amount`");
    platform.deploy(&s.stage, &env, &log_dir).await?;
    let mut ledger = Ledger { schema: &schema, accepted: Vec::new(), expected: HashMap::new() };
    let mut steps = Vec::new();
    for (i, step) in plan::steps(plan).iter().enumerate() {
        eprintln!("[{name}] step {}/{}: {}", i + 1, plan::steps(plan).len(), step.name);
        let r = run_step(platform, feed, s, &topology, &mut conn, &mut ledger, &log_dir, (run_id, plan, i), step).await;
        steps.push(r.with_context(|| format!("{name}: step {}", step.name))?);
    }
    platform.finish_stage().await?;
    if !s.keep_data {
        let _ = topology.delete(feed.channel()).await;
        let _ = zerodrop_ledger::drop_schema(feed.db(), &schema).await;
    }
    Ok(VariantResult { plan, schema, queue: topology.queue, steps })
}

/// The variant's fleet: its own queue and schema (named from the run and the variant's
/// index), the same sizes for both variants.
pub fn stage_env(s: &Settings, run_id: &str, index: usize, plan: Plan) -> StageEnv {
    StageEnv {
        queue: Topology::new(format!("zerodrop.{run_id}.migrate.{}", plan.as_str())).queue,
        schema: format!("zd_{}_mig{index}", run_id.replace('-', "").to_lowercase()),
        api_replicas: s.api_replicas,
        worker_replicas: s.worker_replicas,
        api_capacity: 32,
        job_work: s.job_work,
        index: 180 + index,
        listen_queues: false,
        api_env: Vec::new(),
        worker_env: Vec::new(),
    }
}

/// Every job accepted so far in the variant, for the whole-ledger check.
struct Ledger<'a> {
    schema: &'a str,
    accepted: Vec<String>,
    expected: HashMap<String, i64>,
}

#[allow(clippy::too_many_arguments)]
async fn run_step<P: Platform + RolloutWithEnv>(
    platform: &mut P,
    feed: &Feed,
    s: &Settings,
    topology: &Topology,
    conn: &mut migrate::PgConnection,
    ledger: &mut Ledger<'_>,
    log_dir: &Path,
    (run_id, plan, i): (&str, Plan, usize),
    step: &Step,
) -> Result<StepResult> {
    let prefix = format!("{run_id}-{}-s{}", plan.as_str(), i + 1);
    let errors_before = db_errors::snapshot(log_dir);
    let parked_before = topology.depths(feed.channel()).await.map(|(_, d)| d).unwrap_or(0);
    let load = platform.start_load(&s.load, &prefix, Arc::new(Live::default())).await?;
    let fed = feed.start(&topology.queue, format!("{prefix}-f"), s.feed_per_sec, s.load.duration).await?;
    tokio::time::sleep(s.trigger).await;
    let mut migrate_seconds = None;
    if let Some(v) = step.migrate_to {
        let t = Instant::now();
        migrate::migrate_to(conn, plan, v).await.with_context(|| format!("migrating to version {v}"))?;
        migrate_seconds = Some(t.elapsed().as_secs_f64());
        tracing::info!(plan = plan.as_str(), step = step.name, version = v, "migration step applied under load");
        eprintln!("[{}] schema at version {v} ({})", plan.as_str(), plan.step(v).map(|m| m.name).unwrap_or("?"));
    }
    let mut rollout_seconds = None;
    if let Some(w) = step.deploy {
        let env = [("ZD_LEDGER_WRITES".to_string(), w.as_str().to_string())];
        tracing::info!(plan = plan.as_str(), step = step.name, writes = w.as_str(), "rolling deploy of the workers");
        let took = platform.rollout_with_env(&env, Some(App::Worker)).await.context("the workers' rolling deploy")?;
        platform.wait_terminations().await?;
        rollout_seconds = Some(took.as_secs_f64());
        eprintln!(
            "[{}] workers rolled to ZD_LEDGER_WRITES={} in {:.1} s",
            plan.as_str(),
            w.as_str(),
            took.as_secs_f64()
        );
    }
    let result = load.await.context("the load task failed")??;
    let fed = fed.await.context("the feed task failed")??;
    let settled = feed::settle(feed, topology, ledger.schema).await;
    let mut accepted = result.accepted_jobs.clone();
    accepted.extend(fed.keys().cloned());
    let check = writes::check_amounts(feed.db(), ledger.schema, step.reads, &accepted, &fed).await?;
    ledger.accepted.extend(accepted);
    ledger.expected.extend(fed);
    let whole = writes::check_amounts(feed.db(), ledger.schema, step.reads, &ledger.accepted, &ledger.expected)
        .await
        .context("checking the whole ledger")?;
    let (old, new) = db_errors::since(&errors_before, &db_errors::snapshot(log_dir));
    let parked = topology.depths(feed.channel()).await.map(|(_, d)| d).unwrap_or(0).saturating_sub(parked_before);
    let failed = result.records.iter().filter(|r| r.class.is_failure()).count() as u64;
    Ok(StepResult {
        name: step.name.to_string(),
        schema_version: migrate::current_version(conn).await?,
        migration: step.migrate_to.and_then(|v| plan.step(v)).map(|m| m.name.to_string()),
        deploy: step.deploy,
        reads: step.reads,
        migrate_seconds,
        rollout_seconds,
        requests_sent: result.records.len() as u64,
        requests_failed: zerodrop_report::stats::wilson(failed, result.records.len() as u64),
        jobs: counts(&check),
        ledger_so_far: counts(&whole),
        db_errors_old_pods: old,
        db_errors_new_pods: new,
        parked: u64::from(parked),
        settled,
        lost_sample: check.lost.iter().take(5).cloned().collect(),
        wrong_sample: check.wrong.iter().take(5).cloned().collect(),
    })
}

fn counts(c: &AmountCheck) -> Counts {
    Counts {
        accepted: c.accepted,
        lost: c.lost.len() as u64,
        duplicated: c.duplicated.len() as u64,
        wrong: c.wrong.len() as u64,
    }
}
