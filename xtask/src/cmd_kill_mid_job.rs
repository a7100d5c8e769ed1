//! `cargo xtask kill-mid-job`: SIGKILL a worker after its transaction committed and
//! before its ack, let the broker redeliver, and count the side effect in the ledger,
//! once with and once without the idempotent consumer.

use anyhow::{bail, Context, Result};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerodrop_jobs::{Job, Topology};
use zerodrop_platform::infra::Backends;
use zerodrop_platform::local::pod::{App, Isolation, Pod, PodTemplate};
use zerodrop_platform::local::recorder::Recorder;
use zerodrop_platform::workspace;
use zerodrop_stages::{Entrypoint, Stage, StageName};

#[derive(clap::Args)]
pub struct Args {
    /// Where the write-up goes.
    #[arg(long, default_value = "reports")]
    out: std::path::PathBuf,
}

struct Outcome {
    idempotent: bool,
    rows_when_killed: i64,
    rows_after_redelivery: i64,
    settled: bool,
}

pub async fn run(a: Args) -> Result<()> {
    let run_id = workspace::run_id();
    let dir = workspace::root().join(&a.out).join(format!("kill-mid-job-{run_id}"));
    std::fs::create_dir_all(&dir)?;
    let bin_dir = workspace::build_services()?;
    let backends = Backends::acquire(&dir).await?;
    eprintln!("[infra] {}", backends.describe());
    let mut outcomes = Vec::new();
    let mut failure = None;
    for (i, idempotent) in [false, true].into_iter().enumerate() {
        match once(&backends, &bin_dir, &dir, &run_id, i, idempotent).await {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    backends.release().await?;
    if let Some(e) = failure {
        return Err(e);
    }
    let md = write_up(&outcomes, &run_id);
    std::fs::write(dir.join("kill-mid-job.md"), &md)?;
    println!("{md}");
    println!("written to {}", dir.join("kill-mid-job.md").display());
    if outcomes.iter().any(|o| o.idempotent && o.rows_after_redelivery != 1) {
        bail!("the idempotent consumer applied the job other than exactly once");
    }
    Ok(())
}

async fn once(
    b: &Backends,
    bin_dir: &std::path::Path,
    dir: &std::path::Path,
    run_id: &str,
    i: usize,
    idempotent: bool,
) -> Result<Outcome> {
    let tag = if idempotent { "idempotent" } else { "plain" };
    let topology = Topology::new(format!("zerodrop.kmj.{run_id}.{tag}"));
    let schema = format!("zd_kmj_{}_{}", run_id.replace('-', ""), i);
    let db = zerodrop_ledger::connect(&b.database_url).await?;
    zerodrop_ledger::create_schema(&db, &schema).await?;
    let conn =
        Connection::connect(&b.amqp_url, ConnectionProperties::default()).await.context("connecting to RabbitMQ")?;
    let ch = conn.create_channel().await?;
    topology.declare(&ch).await?;
    let job = Job { id: format!("kmj-{tag}-1"), amount: 42 };
    ch.basic_publish(
        "".into(),
        topology.queue.as_str().into(),
        BasicPublishOptions::default(),
        &job.to_payload(),
        BasicProperties::default().with_delivery_mode(2),
    )
    .await?
    .await?;

    let mut behaviour = Stage::get(StageName::RequeueIdempotency).worker;
    behaviour.idempotent = idempotent;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let template = |post_commit_ms: u64| {
        let mut env: Vec<(String, String)> = vec![
            ("AMQP_URL".into(), b.amqp_url.clone()),
            ("DATABASE_URL".into(), b.database_url.clone()),
            ("ZD_QUEUE".into(), topology.queue.clone()),
            ("ZD_DB_SCHEMA".into(), schema.clone()),
            ("ZD_JOB_WORK_MS".into(), "100".into()),
            ("ZD_POST_COMMIT_MS".into(), post_commit_ms.to_string()),
        ];
        env.extend(behaviour.to_env().into_iter().map(|(k, v)| (k.to_string(), v)));
        PodTemplate {
            app: App::Worker,
            revision: 1,
            entrypoint: Entrypoint::Init,
            readiness: Stage::get(StageName::RequeueIdempotency).pod.readiness,
            bin_dir: bin_dir.to_path_buf(),
            env,
            isolation: Isolation::detect(),
        }
    };
    let rec = Arc::new(Recorder::default());
    // Post-commit work (a receipt, a notification) keeps the job un-acked after the
    // side effect committed: the window a crash turns into a redelivery.
    let first = Pod::start(
        &template(5_000),
        format!("worker-{tag}-1"),
        Ipv4Addr::new(127, 77, 251, 1 + i as u8 * 2),
        &logs,
        rec.clone(),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while zerodrop_ledger::count_rows(&db, &schema, &job.id).await? < 1 {
        if Instant::now() > deadline || first.exited.load(Ordering::SeqCst) {
            first.kill_now().await;
            bail!("the worker never committed the job; see {}", first.log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill_now().await;
    let rows_when_killed = zerodrop_ledger::count_rows(&db, &schema, &job.id).await?;
    eprintln!("[{tag}] SIGKILLed {} after its commit, before its ack: {rows_when_killed} ledger row(s)", first.name);

    let second =
        Pod::start(&template(0), format!("worker-{tag}-2"), Ipv4Addr::new(127, 77, 251, 2 + i as u8 * 2), &logs, rec)
            .await?;
    let mut settled = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stable = Instant::now();
    let mut last = rows_when_killed;
    while Instant::now() < deadline {
        let rows = zerodrop_ledger::count_rows(&db, &schema, &job.id).await?;
        if rows != last {
            last = rows;
            stable = Instant::now();
        }
        let (ready, _) = topology.depths(&ch).await?;
        // The redelivered message was consumed (ready 0) and nothing changed for 2 s.
        if ready == 0 && second.ready.load(Ordering::SeqCst) && stable.elapsed() > Duration::from_secs(2) {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.kill_now().await;
    let rows_after_redelivery = zerodrop_ledger::count_rows(&db, &schema, &job.id).await?;
    eprintln!("[{tag}] after redelivery to {}: {rows_after_redelivery} ledger row(s)", second.name);
    let _ = topology.delete(&ch).await;
    let _ = zerodrop_ledger::drop_schema(&db, &schema).await;
    let _ = conn.close(200, "done".into()).await;
    Ok(Outcome { idempotent, rows_when_killed, rows_after_redelivery, settled })
}

fn write_up(outcomes: &[Outcome], run_id: &str) -> String {
    let mut md = format!("# Kill mid-job ({run_id})\n\nCommand: `cargo xtask kill-mid-job`\n\nA worker (manual ack after commit) applies one job, commits, and is SIGKILLed during its post-commit work, before it acks. The broker redelivers the job to a second worker. The ledger keeps one row per application.\n\n| consumer | ledger rows when killed | ledger rows after redelivery | exactly once? |\n|---|---:|---:|:---:|\n");
    for o in outcomes {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            if o.idempotent { "idempotent (dedupe by job id in the same transaction)" } else { "plain (no dedupe)" },
            o.rows_when_killed,
            o.rows_after_redelivery,
            if o.rows_after_redelivery == 1 && o.settled { "yes" } else { "**no**" }
        );
    }
    md.push_str("\nWithout the dedupe the redelivered job is applied a second time; with it, the second worker finds the job id already recorded in the same transaction and only acks.\n");
    md
}
