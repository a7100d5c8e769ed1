//! `cargo xtask long-lived`: SSE streams and long operations across a rolling deploy
//! whose pods may drain for 600 s or more. Streams must be told to reconnect and
//! resume elsewhere without losing an event; an operation that cannot finish in
//! what is left of the drain must be refused at admission with 503 + Retry-After,
//! never cut. Everything is counted; the run exits 3 if anything was lost or cut.
//!
//! The clients are the platform's to run ([`LongLivedLoad`]): in this process on the
//! local platform, as a Job in the cluster on kind.

mod kind_plan;
mod report;

use crate::harness::{self, LocalSession, RunDir, Work};
use crate::platform_args::{Choice, PlatformArgs};
use anyhow::{Context, Result};
use report::{Config, LongReport};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zerodrop_jobs::Topology;
use zerodrop_platform::local::propagation::PropagationModel;
use zerodrop_platform::long_lived::{LongLivedLoad, LongLivedRun, Spec, Tallies};
use zerodrop_platform::{Platform, StageEnv};
use zerodrop_stages::{Stage, StageName};

#[derive(clap::Args)]
pub struct Args {
    /// Where reports go; the run gets its own <run-id> directory inside.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// The api pods' drain budget in seconds: how long a terminating pod keeps its
    /// streams and operations (600 or more for the claim).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(20..=3600))]
    drain_s: u64,
    /// SSE clients.
    #[arg(long, default_value_t = 40)]
    streams: u32,
    /// Long-operation clients.
    #[arg(long, default_value_t = 32)]
    op_clients: u32,
    #[command(flatten)]
    platform: PlatformArgs,
}

/// Bounds the rolling deploy on kind: it completes once the new pods are available;
/// the old pods' drains are waited for separately, up to their grace.
const KIND_ROLL_TIMEOUT: Duration = Duration::from_secs(300);
/// api pods rolled.
const API_REPLICAS: u32 = 2;

fn stage(drain: Duration) -> Stage {
    let mut s = Stage::get(StageName::SurgeJitter);
    s.api.drain_budget = drain;
    s.api.deregistration_wait = Duration::from_secs(5);
    s.pod.grace = s.pod.pre_stop + s.api.deregistration_wait + drain + Duration::from_secs(15);
    s
}

/// Operation lengths as fractions of the drain budget, alternating per client. A
/// long one started before SIGTERM still fits the budget; one asked for on a draining
/// pod after a short one (about a minute into the drain) does not, and must be refused.
fn op_lengths(drain: Duration) -> Vec<Duration> {
    [0.15, 0.95].iter().map(|f| drain.mul_f64(*f)).collect()
}

fn spec(a: &Args) -> Spec {
    Spec { streams: a.streams, op_clients: a.op_clients, op_lengths: op_lengths(Duration::from_secs(a.drain_s)) }
}

/// The run's one fleet: queue and schema of its own, two api pods, one worker.
fn env(run_id: &str) -> StageEnv {
    StageEnv {
        queue: Topology::new(format!("zerodrop.{run_id}.long-lived")).queue,
        schema: format!("zd_{}_long", run_id.replace('-', "").to_lowercase()),
        api_replicas: API_REPLICAS,
        worker_replicas: 1,
        api_capacity: 32,
        job_work: Duration::from_millis(10),
        index: 150,
        listen_queues: false,
        api_env: Vec::new(),
        worker_env: Vec::new(),
    }
}

pub async fn run(a: Args) -> Result<()> {
    let choice = a.platform.choose()?;
    let drain = Duration::from_secs(a.drain_s);
    let st = stage(drain);
    st.validate().map_err(anyhow::Error::msg)?;
    let run = RunDir::new(&a.out);
    if choice == Choice::KindPlan {
        let p = kind_plan::plan(&a.platform.kind_options(&run), &st, &env(&run.id), &spec(&a))?;
        harness::print_plan("long-lived", "the plan", &p);
        return Ok(());
    }
    let wall = Instant::now();
    let command = RunDir::command();
    let started = |run: &RunDir| {
        eprintln!(
            "zerodrop long-lived {}: drain budget {} s, {} streams, {} op clients",
            run.id, a.drain_s, a.streams, a.op_clients
        )
    };
    let session = LocalSession::service(PropagationModel::constant(Duration::from_millis(1500)));
    let work = Fleet { spec: spec(&a), st: &st, run_id: &run.id, log_dir: run.dir.join("logs") };
    let needs_linux = "the local platform needs Linux (network and PID namespaces); use --platform kind elsewhere";
    let (tallies, platform) =
        harness::on_chosen(choice, &a.platform, &run, session, needs_linux, KIND_ROLL_TIMEOUT, started, work).await?;
    let report = LongReport {
        run_id: run.id.clone(),
        command,
        platform,
        wall_time_s: wall.elapsed().as_secs_f64(),
        config: Config {
            api_replicas: API_REPLICAS,
            drain_budget_s: a.drain_s,
            deregistration_wait_s: st.api.deregistration_wait.as_secs(),
            pre_stop_s: st.pod.pre_stop.as_secs(),
            grace_s: st.pod.grace.as_secs(),
            streams: a.streams,
            op_clients: a.op_clients,
            op_lengths_s: op_lengths(drain).iter().map(|d| d.as_secs()).collect(),
            event_tick_ms: 100,
        },
        streams: tallies.streams,
        ops: tallies.ops,
    };
    report::write(&report, &run.dir)?;
    eprint!("{}", report::summary(&report));
    eprintln!("report: {}", run.dir.join("report.md").display());
    let (s, o) = (&report.streams, &report.ops);
    if s.gaps + s.duplicates + s.cut + o.cut > 0 || o.retry_refused_again + o.refused_without_retry_after > 0 {
        return Err(crate::exit::CheckFailed("events lost or operations cut; see the report".into()).into());
    }
    Ok(())
}

/// The fleet's run on whichever platform the harness brings up; its pods stopped
/// however the run ends.
struct Fleet<'a> {
    spec: Spec,
    st: &'a Stage,
    run_id: &'a str,
    log_dir: PathBuf,
}

impl<P: Platform + LongLivedLoad> Work<P> for Fleet<'_> {
    type Output = (Tallies, String);
    async fn run(self, mut platform: P) -> Result<Self::Output> {
        let result = self.run_fleet(&mut platform).await;
        let _ = platform.finish_stage().await;
        Ok((result?, platform.describe()))
    }
}

impl Fleet<'_> {
    async fn run_fleet<P: Platform + LongLivedLoad>(&self, platform: &mut P) -> Result<Tallies> {
        std::fs::create_dir_all(&self.log_dir).with_context(|| format!("creating {}", self.log_dir.display()))?;
        let amqp = lapin::Connection::connect(platform.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .context("connecting to RabbitMQ")?;
        let ch = amqp.create_channel().await.context("opening an AMQP channel")?;
        let env = env(self.run_id);
        let topology = Topology::new(format!("zerodrop.{}.long-lived", self.run_id));
        topology.declare(&ch).await.context("declaring the queues")?;
        let db = zerodrop_ledger::connect(platform.database_url()).await.context("connecting to PostgreSQL")?;
        zerodrop_ledger::create_schema(&db, &env.schema).await.context("creating the ledger schema")?;
        let tallies = async {
            platform.deploy(self.st, &env, &self.log_dir).await?;
            let mut clients = platform.start_long_lived(&self.spec).await.context("starting the clients")?;
            tokio::time::sleep(Duration::from_secs(15)).await;
            eprintln!(
                "[long-lived] rolling deploy; old pods may take up to {} s to drain",
                self.st.api.drain_budget.as_secs()
            );
            platform.rollout().await.context("the rolling deploy failed")?;
            platform.wait_terminations().await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            // Every old pod is gone: start nothing new, and let the operations in flight
            // (the retries of the refused ones among them) finish on the new pods.
            clients.no_new().await.context("telling the clients to start nothing new")?;
            eprintln!("[long-lived] old pods gone; waiting for the operations in flight");
            clients.finish(self.spec.longest_op() + Duration::from_secs(30)).await
        }
        .await;
        let _ = topology.delete(&ch).await;
        let _ = ch.close(200, "done".into()).await;
        let _ = amqp.close(200, "done".into()).await;
        tallies
    }
}
