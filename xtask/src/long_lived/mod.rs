//! `cargo xtask long-lived`: SSE streams and long operations across a rolling deploy
//! whose pods may drain for 600 s or more. Streams must be told to reconnect and
//! resume elsewhere without losing an event; an operation that cannot finish in
//! what is left of the drain must be refused at admission with 503 + Retry-After,
//! never cut. Everything is counted; the run exits 3 if anything was lost or cut.

mod clients;

use crate::harness::{self, LocalSession, RunDir, Work};
use anyhow::{Context, Result};
use clients::{OpTally, StreamTally};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use zerodrop_jobs::Topology;
use zerodrop_platform::local::propagation::PropagationModel;
use zerodrop_platform::{Platform, StageEnv};
use zerodrop_report::folder::Folder;
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
}

#[derive(Debug, Serialize)]
struct Config {
    api_replicas: u32,
    drain_budget_s: u64,
    deregistration_wait_s: u64,
    pre_stop_s: u64,
    grace_s: u64,
    streams: u32,
    op_clients: u32,
    op_lengths_s: Vec<u64>,
    event_tick_ms: u64,
}

#[derive(Debug, Serialize)]
struct LongReport {
    run_id: String,
    command: String,
    platform: String,
    wall_time_s: f64,
    config: Config,
    streams: StreamTally,
    ops: OpTally,
}

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

pub async fn run(a: Args) -> Result<()> {
    harness::enter_local("`long-lived` runs on the local platform, which needs Linux (network and PID namespaces)")
        .await?;
    let wall = Instant::now();
    let drain = Duration::from_secs(a.drain_s);
    let st = stage(drain);
    st.validate().map_err(anyhow::Error::msg)?;
    let run = RunDir::new(&a.out);
    let (run_id, out_dir) = (run.id.clone(), run.dir.clone());
    let log_dir = out_dir.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let command = RunDir::command();
    eprintln!(
        "zerodrop long-lived {run_id}: drain budget {} s, {} streams, {} op clients",
        a.drain_s, a.streams, a.op_clients
    );
    let session = LocalSession::service(PropagationModel::constant(Duration::from_millis(1500)));
    let work = Fleet { a: &a, st: &st, run_id: &run_id, log_dir: &log_dir };
    let (streams, ops, platform) = harness::on_local(&run, session, work).await?;
    let report = LongReport {
        run_id,
        command,
        platform,
        wall_time_s: wall.elapsed().as_secs_f64(),
        config: Config {
            api_replicas: 2,
            drain_budget_s: a.drain_s,
            deregistration_wait_s: st.api.deregistration_wait.as_secs(),
            pre_stop_s: st.pod.pre_stop.as_secs(),
            grace_s: st.pod.grace.as_secs(),
            streams: a.streams,
            op_clients: a.op_clients,
            op_lengths_s: op_lengths(drain).iter().map(|d| d.as_secs()).collect(),
            event_tick_ms: 100,
        },
        streams,
        ops,
    };
    write(&report, &out_dir)?;
    eprint!("{}", summary(&report));
    eprintln!("report: {}", out_dir.join("report.md").display());
    let (s, o) = (&report.streams, &report.ops);
    if s.gaps + s.duplicates + s.cut + o.cut > 0 || o.retry_refused_again + o.refused_without_retry_after > 0 {
        return Err(crate::exit::CheckFailed("events lost or operations cut; see the report".into()).into());
    }
    Ok(())
}

/// The fleet's run on whichever platform the harness brings up; its pods stopped
/// however the run ends.
struct Fleet<'a> {
    a: &'a Args,
    st: &'a Stage,
    run_id: &'a str,
    log_dir: &'a Path,
}

impl<P: Platform> Work<P> for Fleet<'_> {
    type Output = (StreamTally, OpTally, String);
    async fn run(self, mut platform: P) -> Result<Self::Output> {
        let result = run_fleet(&mut platform, self.a, self.st, self.run_id, self.log_dir).await;
        let _ = platform.finish_stage().await;
        let (streams, ops) = result?;
        Ok((streams, ops, platform.describe()))
    }
}

async fn run_fleet<P: Platform>(
    platform: &mut P,
    a: &Args,
    st: &Stage,
    run_id: &str,
    log_dir: &Path,
) -> Result<(StreamTally, OpTally)> {
    let amqp = lapin::Connection::connect(platform.amqp_url(), lapin::ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let ch = amqp.create_channel().await.context("opening an AMQP channel")?;
    let topology = Topology::new(format!("zerodrop.{run_id}.long-lived"));
    topology.declare(&ch).await.context("declaring the queues")?;
    let db = zerodrop_ledger::connect(platform.database_url()).await.context("connecting to PostgreSQL")?;
    let schema = format!("zd_{}_long", run_id.replace('-', "").to_lowercase());
    zerodrop_ledger::create_schema(&db, &schema).await.context("creating the ledger schema")?;
    let env = StageEnv {
        queue: topology.queue.clone(),
        schema,
        api_replicas: 2,
        worker_replicas: 1,
        api_capacity: 32,
        job_work: Duration::from_millis(10),
        index: 150,
        listen_queues: false,
    };
    platform.deploy(st, &env, log_dir).await?;
    let url = platform.service_url().context("the platform has no Service address")?;
    let addr: std::net::SocketAddr = format!("{}:80", url.trim_start_matches("http://")).parse()?;
    let (no_new, stop) = (CancellationToken::new(), CancellationToken::new());
    let (streams, ops) = (Arc::new(Mutex::new(StreamTally::default())), Arc::new(Mutex::new(OpTally::default())));
    let (mut tasks, mut op_tasks) = (Vec::new(), Vec::new());
    for _ in 0..a.streams {
        tasks.push(tokio::spawn(clients::stream_client(addr, streams.clone(), no_new.clone())));
    }
    let lengths = op_lengths(Duration::from_secs(a.drain_s));
    for i in 0..a.op_clients as usize {
        let mine: Vec<_> = (0..lengths.len()).map(|k| lengths[(i + k) % lengths.len()]).collect();
        op_tasks.push(tokio::spawn(clients::op_client(addr, mine, ops.clone(), no_new.clone(), stop.clone())));
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    eprintln!("[long-lived] rolling deploy; old pods may take up to {} s to drain", a.drain_s);
    platform.rollout().await.context("the rolling deploy failed")?;
    platform.wait_terminations().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Every old pod is gone: start nothing new, and let the operations in flight (the
    // retries of the refused ones among them) finish on the new pods.
    no_new.cancel();
    eprintln!("[long-lived] old pods gone; waiting for the operations in flight");
    let longest = lengths.iter().max().copied().unwrap_or_default() + Duration::from_secs(30);
    let waited = tokio::time::timeout(longest, futures::future::join_all(op_tasks)).await;
    stop.cancel();
    if waited.is_err() {
        eprintln!("warning: operations still in flight after {} s; abandoned", longest.as_secs());
        // The detached clients count themselves as abandoned on `stop`.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = topology.delete(&ch).await;
    let _ = ch.close(200, "done".into()).await;
    let _ = amqp.close(200, "done".into()).await;
    let s = streams.lock().map(|t| t.clone()).unwrap_or_default();
    let o = ops.lock().map(|t| t.clone()).unwrap_or_default();
    Ok((s, o))
}

fn summary(r: &LongReport) -> String {
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

fn write(r: &LongReport, dir: &Path) -> Result<()> {
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
