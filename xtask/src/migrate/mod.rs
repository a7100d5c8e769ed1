//! `cargo xtask migrate`: `ledger.amount` renamed to `amount_cents` under load, twice
//! on the same load: by expand-and-contract (each step its own migration or worker
//! deploy) and by the destructive one-step rename (the negative control). The report
//! counts requests, jobs lost, applied twice or with a wrong amount, and the workers'
//! database errors, per step.

mod db_errors;
mod feed;
mod kind_plan;
mod plan;
mod report;
mod variant;

use crate::harness::{self, LocalSession, RunDir, Work};
use crate::platform_args::{Choice, PlatformArgs};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zerodrop_load::Mix;
use zerodrop_platform::local::propagation::PropagationModel;
use zerodrop_platform::profile::ExperimentProfile;
use zerodrop_platform::reconfigure::RolloutWithEnv;
use zerodrop_platform::Platform;
use zerodrop_stages::{Stage, StageName};

/// Runs on both platforms through the `RolloutWithEnv` capability: locally a new
/// revision of the lab's worker Deployment, on a cluster a strategic-merge patch of
/// the worker Deployment's env.
#[derive(clap::Args)]
pub struct Args {
    /// Where reports go; the run gets its own <run-id> directory inside.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// Shorter steps and less load (CI): the pair in about 2.5 minutes.
    #[arg(long)]
    quick: bool,
    /// Exit 3 unless expand-and-contract shows 0 database errors, 0 parked, 0 lost,
    /// 0 duplicated and 0 wrong jobs, and the destructive control at least one failure.
    #[arg(long)]
    assert: bool,
    /// Keep each variant's queue and ledger schema after the run.
    #[arg(long)]
    keep_data: bool,
    #[command(flatten)]
    platform: PlatformArgs,
}

/// A cluster's rollout bound for one workers' deploy.
const KIND_ROLL_TIMEOUT: Duration = Duration::from_secs(300);

fn settings(quick: bool, keep_data: bool) -> (variant::Settings, &'static str) {
    let base = if quick { ExperimentProfile::quick() } else { ExperimentProfile::default_profile() };
    let mut load = base.load.clone();
    // Old workers must meet jobs during the roll: a tenth of the requests are jobs.
    load.mix = Mix { fast: 80, slow: 10, job: 10 };
    let (secs, trigger) = if quick { (14, 3) } else { (30, 8) };
    load.duration = Duration::from_secs(secs);
    let s = variant::Settings {
        stage: Stage::get(StageName::SurgeJitter),
        load,
        trigger: Duration::from_secs(trigger),
        feed_per_sec: 10,
        api_replicas: 2,
        worker_replicas: 3,
        job_work: Duration::from_millis(20),
        keep_data,
    };
    (s, base.name)
}

pub async fn run(a: Args) -> Result<()> {
    let choice = a.platform.choose()?;
    let (s, profile_name) = settings(a.quick, a.keep_data);
    let run = RunDir::new(&a.out);
    if choice == Choice::KindPlan {
        let p = kind_plan::plan(&a.platform.kind_options(&run), &s)?;
        harness::print_plan("migrate", "the plan", &p);
        return Ok(());
    }
    let wall = Instant::now();
    let command = RunDir::command();
    let session = LocalSession::service(PropagationModel::constant(Duration::from_millis(1000)));
    let needs_linux = "the local platform needs Linux (network and PID namespaces); use --platform kind elsewhere";
    let started = |run: &RunDir| eprintln!("zerodrop migrate {}: expand-contract, then destructive", run.id);
    let work = Variants { s: &s, run: &run };
    let (variants, platform) =
        harness::on_chosen(choice, &a.platform, &run, session, needs_linux, KIND_ROLL_TIMEOUT, started, work).await?;
    let report = report::MigrateReport {
        run_id: run.id.clone(),
        command,
        platform,
        machine: crate::experiment::machine(),
        wall_time_s: wall.elapsed().as_secs_f64(),
        setup: report::Setup {
            profile: profile_name,
            stage: s.stage.name.as_str().to_string(),
            api_replicas: s.api_replicas,
            worker_replicas: s.worker_replicas,
            job_work_ms: s.job_work.as_millis() as u64,
            load_rate_per_sec: s.load.rate_per_sec,
            load_seconds_per_step: s.load.duration.as_secs(),
            trigger_seconds: s.trigger.as_secs(),
            job_share_percent: s.load.mix.job,
            feed_per_sec: s.feed_per_sec,
        },
        variants,
    };
    report::write(&report, &run.dir)?;
    eprint!("{}", report::summary(&report));
    eprintln!("report: {}", run.dir.join("report.md").display());
    if a.assert {
        check(&report.variants).map_err(|e| crate::exit::CheckFailed(format!("migrate: {e}")))?;
    }
    Ok(())
}

fn check(v: &[report::VariantResult]) -> std::result::Result<(), String> {
    let [ec, destructive] = v else { return Err("expected two variants".into()) };
    let n = ec.failures();
    if n > 0 {
        return Err(format!(
            "expand-and-contract counted {n} failures (database errors, parked, lost, duplicated or wrong jobs)"
        ));
    }
    if destructive.failures() == 0 {
        return Err("the destructive control broke nothing: no database error and no lost or wrong job".into());
    }
    Ok(())
}

/// Both variants on a platform that can roll the workers with a changed env.
struct Variants<'a> {
    s: &'a variant::Settings,
    run: &'a RunDir,
}

impl<P: Platform + RolloutWithEnv> Work<P> for Variants<'_> {
    type Output = (Vec<report::VariantResult>, String);
    async fn run(self, mut platform: P) -> Result<Self::Output> {
        let feed = feed::Feed::connect(platform.amqp_url(), platform.database_url()).await?;
        let mut out = Vec::new();
        for (index, p) in plan::VARIANTS.into_iter().enumerate() {
            let r = variant::run(&mut platform, &feed, self.s, &self.run.id, &self.run.dir, index, p).await;
            match r {
                Ok(v) => out.push(v),
                Err(e) => {
                    let _ = platform.finish_stage().await;
                    feed.close().await;
                    return Err(e).with_context(|| format!("variant {}", p.as_str()));
                }
            }
        }
        feed.close().await;
        Ok((out, platform.describe()))
    }
}
