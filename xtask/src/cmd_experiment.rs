//! `cargo xtask experiment`.

use crate::experiment::{machine, RunCtx};
use crate::infra::Backends;
use crate::local::platform::LocalPlatform;
use crate::local::pod::Isolation;
use crate::platform::Platform;
use crate::profile::ExperimentProfile;
use crate::report::model::{self, Report};
use crate::workspace;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use zerodrop_stages::{Stage, StageName};

#[derive(clap::Args)]
pub struct Args {
    /// The short profile: all six stages in a few minutes on a 2-core machine.
    #[arg(long)]
    quick: bool,
    /// Only these stages, comma-separated (default: all six, in order).
    #[arg(long, value_parser = crate::parse_stages)]
    stages: Option<std::vec::Vec<StageName>>,
    /// Where reports go; each run gets its own <run-id> directory inside.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// Keep each stage's queues and ledger schema instead of deleting them.
    #[arg(long)]
    keep_data: bool,
    /// Exit non-zero unless the first stage run lost requests or jobs and the last
    /// stage run lost nothing (used by CI).
    #[arg(long)]
    assert_fixed: bool,
}

pub async fn run(a: Args) -> Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("the local platform needs Linux (PID namespaces, 127.0.0.0/8 addresses); use --platform kind elsewhere");
    }
    let profile = if a.quick { ExperimentProfile::quick() } else { ExperimentProfile::default_profile() };
    let stages: Vec<Stage> = a.stages.clone().unwrap_or_else(|| StageName::ALL.to_vec()).into_iter().map(Stage::get).collect();
    let run_id = workspace::run_id();
    let out_dir = if a.out.is_absolute() { a.out.join(&run_id) } else { workspace::root().join(&a.out).join(&run_id) };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    eprintln!("zerodrop experiment {run_id}: profile {}, stages {}", profile.name, stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "));

    let bin_dir = workspace::build_services()?;
    let isolation = Isolation::detect();
    eprintln!("[platform] local: {}", isolation.describe());
    let backends = Backends::acquire(&out_dir).await?;
    eprintln!("[infra] {}", backends.describe());

    let platform = LocalPlatform::new(backends.amqp_url.clone(), backends.database_url.clone(), bin_dir, isolation, profile.propagation_delay);
    // Ctrl-C abandons the running stage: the private servers are released below, and
    // the pods die with this process (PR_SET_PDEATHSIG on every pod).
    let result = tokio::select! {
        r = run_stages(&a, &run_id, &out_dir, platform, profile, stages, command) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; pods stopped, private servers released, partial logs kept in {}", out_dir.display())),
    };
    if let Err(e) = backends.release().await {
        eprintln!("warning: stopping the private servers: {e:#}");
    }
    let report = result?;
    crate::report::write(&report, &out_dir).context("writing the report")?;
    print_summary(&report, &out_dir);
    if a.assert_fixed {
        assert_fixed(&report)?;
    }
    Ok(())
}

async fn run_stages<P: Platform>(
    a: &Args,
    run_id: &str,
    out_dir: &std::path::Path,
    platform: P,
    profile: ExperimentProfile,
    stages: Vec<Stage>,
    command: String,
) -> Result<Report> {
    let mut ctx = RunCtx::new(run_id.to_string(), out_dir.to_path_buf(), profile.clone(), a.keep_data, platform).await?;
    let started_at = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let mut runs = Vec::new();
    for (i, stage) in stages.into_iter().enumerate() {
        let name = stage.name;
        let run = ctx.run_stage(stage, i).await.with_context(|| format!("stage {name}"))?;
        let roll = zerodrop_load::window_stats(&run.load.records, run.roll.from_us, run.roll.to_us);
        eprintln!(
            "[{name}] done: {} requests in the roll window, {} failed; jobs accepted {}, lost {}, duplicated {}",
            roll.total, roll.failed, run.jobs.accepted, run.jobs.lost, run.jobs.duplicated
        );
        runs.push(run);
    }
    ctx.progress.phase("guardian exercise");
    let guardian = match ctx.platform.guardian_exercise(&out_dir.join("logs/guardian")).await {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("warning: the guardian exercise failed: {e:#}");
            None
        }
    };
    let ctx_platform = ctx.platform.describe();
    ctx.close().await;
    let p = &profile;
    Ok(Report {
        run_id: run_id.to_string(),
        started_at,
        platform: ctx_platform,
        command: format!("cargo xtask {command}"),
        machine: machine(),
        profile: model::ExperimentProfile {
            name: p.name.to_string(),
            load: p.load.clone(),
            warmup_s: p.warmup.as_secs() as u32,
            steady_s: p.steady.as_secs() as u32,
            cooldown_s: p.cooldown.as_secs() as u32,
            api_replicas: p.api_replicas,
            worker_replicas: p.worker_replicas,
            propagation_delay_ms: p.propagation_delay.as_millis() as u64,
        },
        stages: runs,
        guardian,
    })
}

fn print_summary(r: &Report, dir: &std::path::Path) {
    println!();
    println!("{:<20} {:>8} {:>7} {:>8} {:>6} {:>7} {:>6} {:>9} {:>5} {:>5}", "stage", "requests", "failed", "refused", "reset", "timeout", "503", "roll p99", "lost", "dup");
    for s in &r.stages {
        let w = zerodrop_load::window_stats(&s.load.records, s.roll.from_us, s.roll.to_us);
        let c = |k: &str| w.by_class.get(k).copied().unwrap_or(0);
        println!(
            "{:<20} {:>8} {:>7} {:>8} {:>6} {:>7} {:>6} {:>7.0}ms {:>5} {:>5}",
            s.stage.name.as_str(),
            w.total,
            w.failed,
            c("refused"),
            c("reset"),
            c("timeout"),
            c("http_503"),
            w.latency_ms.p99,
            s.jobs.lost,
            s.jobs.duplicated
        );
    }
    if let Some(g) = &r.guardian {
        println!("guardian: exit code {:?} (expected {}) {} ms after SIGTERM", g.exit_code, g.expected_exit_code, g.exit_after_ms);
    }
    println!("\nreport: {}", dir.join("report.md").display());
}

/// CI's contract: the lossy baseline loses something, the last stage loses nothing.
fn assert_fixed(r: &Report) -> Result<()> {
    let (Some(first), Some(last)) = (r.stages.first(), r.stages.last()) else { bail!("no stage ran") };
    // Requests count from the start of the steady window to the end of the roll:
    // the warm-up is excluded, as it is from every number in the report.
    let loss = |s: &model::StageRun| {
        let w = zerodrop_load::window_stats(&s.load.records, s.steady.from_us, s.roll.to_us);
        (w.failed, s.jobs.lost, s.jobs.duplicated)
    };
    let (ff, fl, _) = loss(first);
    if ff == 0 && fl == 0 {
        bail!("{} lost nothing (0 failed requests, 0 lost jobs): the baseline no longer demonstrates the problem", first.stage.name);
    }
    let (lf, ll, ld) = loss(last);
    if lf != 0 || ll != 0 || ld != 0 || !last.jobs.settled {
        bail!("{} lost something: {lf} failed requests, {ll} lost jobs, {ld} duplicated jobs (settled: {})", last.stage.name, last.jobs.settled);
    }
    eprintln!("assert-fixed: {} lost {ff} requests and {fl} jobs; {} lost nothing", first.stage.name, last.stage.name);
    Ok(())
}
