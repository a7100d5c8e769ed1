//! `cargo xtask blue-green`: a full green fleet (v2) beside blue (v1) behind HAProxy,
//! smoke tests pinned to green, one atomic switch under load, a bake judged by the
//! canary's gates, then blue retired through its lifecycle, or an instant rollback.

use crate::exit::CheckFailed;
use crate::harness::{self, LocalSession, RunDir, Work};
use crate::platform_args::{Choice, PlatformArgs};
use crate::progressive::blue_green::{self, BlueGreenReport, Window};
use crate::progressive::gate_args::GateArgs;
use crate::progressive::gates::{self, GateConfig, Observed};
use crate::progressive::lab;
use crate::progressive::model::{Decision, Step};
use crate::progressive::smoke;
use crate::progressive::stats::Detect;
use crate::progressive::steps::{self, Ticker};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zerodrop_load::Class;
use zerodrop_platform::router::{RoutedFleet, Snapshot, TwoVersions, TwoVersionsSpec};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The short profile: 250 req/s, 10 s baseline, bake sized for 0.1% vs 2%.
    #[arg(long)]
    quick: bool,
    /// Green's deliberate regression: `none`, `errors=2%`, `latency=+80ms`.
    #[arg(long, default_value = "none")]
    regression: String,
    /// Roll back to blue after the bake even when every gate passed (measures the
    /// rollback itself).
    #[arg(long)]
    force_rollback: bool,
    #[arg(long)]
    qps: Option<u32>,
    /// The bake's sample is sized like a canary step, and judged by the same gates.
    #[command(flatten)]
    gates: GateArgs,
    /// Requests pinned to green before the switch.
    #[arg(long, default_value_t = 50)]
    smoke: u32,
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// Exit 3 unless the outcome is this one (for CI): promoted, rolled-back.
    #[arg(long)]
    expect: Option<Expect>,
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    #[command(flatten)]
    platform: PlatformArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Expect {
    Promoted,
    RolledBack,
}

pub async fn run(a: Args) -> Result<()> {
    let detect = a.gates.detect(a.quick)?;
    if a.replicas == 0 || a.replicas > 20 {
        bail!("--replicas must be 1..=20");
    }
    let qps = a.qps.unwrap_or(if a.quick { 250 } else { 300 }).clamp(1, 2000);
    let choice = a.platform.choose()?;
    if choice == Choice::KindPlan {
        let opts = a.platform.kind_options(&RunDir::new(&a.out));
        let n = detect.sample_size().max(a.gates.min_requests);
        let p = crate::progressive::kind_plan::blue_green(
            &opts,
            &TwoVersionsSpec::v2_with(a.replicas, &a.regression),
            a.smoke,
            n,
        )?;
        harness::print_plan("blue-green", "the plan", &p);
        return Ok(());
    }
    let run = RunDir::new(&a.out);
    let r = BlueGreenReport {
        run_id: run.id.clone(),
        command: RunDir::command(),
        started_at: lab::started_at(),
        machine: crate::experiment::machine(),
        regression: a.regression.clone(),
        replicas: a.replicas,
        qps,
        smoke_requests: a.smoke,
        smoke_failed: 0,
        outcome: String::new(),
        forced_rollback: a.force_rollback,
        switch: None,
        bake: None,
        rollback: None,
        blue_retired_s: None,
        agreement: None,
        load: None,
        timeline: Vec::new(),
        pod_seconds: 0.0,
        overlap_s: 0.0,
        wall_s: 0.0,
    };
    let started =
        |run: &RunDir| eprintln!("zerodrop blue-green {}: green regression {}, {qps} req/s", run.id, a.regression);
    let work = BlueGreen { a: a.clone(), detect, qps, log_dir: run.dir.join("logs"), report: r };
    let r = harness::on_chosen(
        choice,
        &a.platform,
        &run,
        LocalSession::routing_tier(),
        "the local platform needs Linux (network and PID namespaces); use --platform kind elsewhere",
        crate::cmd_canary::KIND_ROLL_TIMEOUT,
        started,
        work,
    )
    .await?;
    blue_green::write(&r, &run.dir)?;
    eprintln!("[blue-green] {}: report {}", r.outcome, run.dir.join("report.md").display());
    let failed = r.load.as_ref().map(|l| l.failed).unwrap_or(0);
    let mut problems = Vec::new();
    if r.agreement.as_ref().is_some_and(|g| !g.within_1pct) {
        problems.push("HAProxy's and the apps' counts differ by more than 1%".to_string());
    }
    if a.regression == "none" && failed > 0 {
        problems.push(format!("{failed} requests failed with a clean green"));
    }
    let got = if r.outcome == "promoted" { Expect::Promoted } else { Expect::RolledBack };
    match a.expect {
        Some(w) if w != got => problems.push(format!("outcome {}, expected {w:?}", r.outcome)),
        None if got != Expect::Promoted && !a.force_rollback => problems.push(format!("outcome {}", r.outcome)),
        _ => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CheckFailed(problems.join("; ")).into())
    }
}

/// Blue-green on a platform that can run two versions behind a routing tier.
struct BlueGreen {
    a: Args,
    detect: Detect,
    qps: u32,
    log_dir: PathBuf,
    report: BlueGreenReport,
}

impl<P: TwoVersions> Work<P> for BlueGreen {
    type Output = BlueGreenReport;

    async fn run(self, mut platform: P) -> Result<BlueGreenReport> {
        let BlueGreen { a, detect, qps, log_dir, mut report } = self;
        let spec = TwoVersionsSpec::v2_with(a.replicas, &a.regression);
        let mut fleet = platform.two_versions(&spec, &log_dir).await.context("starting blue, green and HAProxy")?;
        let res = drive(&mut fleet, &a, detect, qps, &mut report).await;
        report.pod_seconds = fleet.pod_seconds();
        fleet.down().await;
        res.map(|()| report)
    }
}

async fn drive(
    fleet: &mut impl RoutedFleet,
    a: &Args,
    detect: Detect,
    qps: u32,
    r: &mut BlueGreenReport,
) -> Result<()> {
    let cfg = a.gates.gates();
    let n = detect.sample_size().max(a.gates.min_requests);
    let baseline_s = if a.quick { 10 } else { 30 };
    let bake_min = Duration::from_secs(if a.quick { 10 } else { 30 });
    let bake_s = (n as f64 / qps as f64).max(bake_min.as_secs_f64());
    let load_s = 3.0 + baseline_s as f64 + 5.0 + bake_s + 25.0;
    let t0 = Instant::now();
    let first = fleet.snapshot().await?;
    let load = fleet.start_load(lab::profile(qps, Duration::from_secs_f64(load_s))).await?;
    let mut ticker = Ticker::new(t0, first.clone());
    ticker.hold(fleet, Duration::from_secs(3)).await?;
    let b0 = ticker.tick(fleet).await?;
    let b1 = ticker.hold(fleet, Duration::from_secs(baseline_s)).await?;

    r.smoke_failed = smoke::run(fleet.router_addr(), a.smoke).await;
    eprintln!("[blue-green] smoke: {}/{} failed against green", r.smoke_failed, a.smoke);
    let overlap_start = t0;
    if r.smoke_failed > 0 {
        r.outcome = "rejected by the smoke tests (no user traffic reached green)".into();
    } else {
        let (sw, quiet) = change(fleet, &mut ticker, 1000).await?;
        eprintln!("[blue-green] switched to green in {:.1} ms", sw.1);
        r.switch = Some(Window { at_s: sw.0, latency_ms: sw.1, old_side_quiet_ms: quiet, requests: 0, failed: 0 });
        let start = ticker.tick(fleet).await?;
        let t = Instant::now();
        let end = loop {
            let s = ticker.hold(fleet, Duration::from_secs(1)).await?;
            let enough = s.router.1.since(start.router.1).requests >= n && t.elapsed() >= bake_min;
            if enough || t.elapsed().as_secs_f64() > bake_s * 2.0 + 15.0 {
                break s;
            }
        };
        let bake = judge(&cfg, n, &b0, &b1, &start, &end, t.elapsed().as_secs_f64(), ticker.now_s());
        eprintln!("[blue-green] bake: {}", bake.decision.as_str());
        let failed_gate = bake.decision == Decision::Rollback;
        r.bake = Some(bake);
        if failed_gate || a.force_rollback {
            let (rb, quiet) = change(fleet, &mut ticker, 0).await?;
            eprintln!("[blue-green] rolled back to blue in {:.1} ms", rb.1);
            r.rollback =
                Some(Window { at_s: rb.0, latency_ms: rb.1, old_side_quiet_ms: quiet, requests: 0, failed: 0 });
            r.outcome = if failed_gate { "rolled back (a gate failed)" } else { "rolled back (forced)" }.into();
            ticker.hold(fleet, Duration::from_secs(5)).await?;
        } else {
            fleet.retire_stable().await?;
            r.blue_retired_s = Some(ticker.now_s() - sw.0);
            r.outcome = "promoted".into();
        }
    }
    r.overlap_s = overlap_start.elapsed().as_secs_f64();
    while !load.is_finished() {
        ticker.hold(fleet, Duration::from_secs(1)).await?;
    }
    let result = load.await.context("the load generator panicked")??;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = ticker.tick(fleet).await?;
    // The load started a moment after t0; its records count from its own start.
    let offset_s = result.started_unix_ms as f64 / 1000.0
        - (zerodrop_platform::now_ms() as f64 / 1000.0 - t0.elapsed().as_secs_f64());
    for w in [r.switch.as_mut(), r.rollback.as_mut()].into_iter().flatten() {
        let (from, to) = (((w.at_s - offset_s - 1.0) * 1e6) as i64, ((w.at_s - offset_s + 5.0) * 1e6) as i64);
        let inside: Vec<_> =
            result.records.iter().filter(|x| (x.at_us as i64) >= from && (x.at_us as i64) < to).collect();
        w.requests = inside.len() as u64;
        w.failed = inside.iter().filter(|x| x.class != Class::Ok).count() as u64;
    }
    r.agreement = Some(lab::agreement(&last, &first));
    r.load = Some(lab::summarise(&result));
    r.timeline = ticker.ticks;
    r.wall_s = t0.elapsed().as_secs_f64();
    Ok(())
}

/// Sets the green share; returns ((at s, runtime API latency ms), old side quiet ms).
async fn change(fleet: &impl RoutedFleet, ticker: &mut Ticker, permille: u32) -> Result<((f64, f64), f64)> {
    let (at, at_s) = (Instant::now(), ticker.now_s());
    fleet.set_canary_permille(permille).await?;
    let latency_ms = at.elapsed().as_secs_f64() * 1000.0;
    ticker.weight_pct = permille as f64 / 10.0;
    tracing::info!(step = "switch", permille, latency_ms, "routing tier switched");
    let old = |s: &Snapshot| if permille == 1000 { s.app_stable.requests } else { s.app_canary.requests };
    let mut last = old(&fleet.snapshot().await?);
    let mut changed = Duration::ZERO;
    while at.elapsed() < changed + Duration::from_millis(300) && at.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = old(&fleet.snapshot().await?);
        if now != last {
            (last, changed) = (now, at.elapsed());
        }
    }
    Ok(((at_s, latency_ms), changed.as_secs_f64() * 1000.0))
}

/// The bake judged like a canary step: green since the switch against blue's
/// baseline window before it.
#[allow(clippy::too_many_arguments)]
fn judge(
    cfg: &GateConfig,
    n: u64,
    b0: &Snapshot,
    b1: &Snapshot,
    start: &Snapshot,
    end: &Snapshot,
    held_s: f64,
    now_s: f64,
) -> Step {
    let stable = steps::side(b1, b0, false);
    let canary = steps::side(end, start, true);
    let obs =
        |s: &crate::progressive::model::Side| Observed { errors: s.errors, requests: s.requests, p95_ms: s.p95_ms };
    let (z, gates) = gates::evaluate(cfg, obs(&stable), obs(&canary));
    let decision = if gates.iter().all(|g| g.pass) { Decision::Promoted } else { Decision::Rollback };
    Step {
        weight_pct: 100.0,
        start_s: now_s - held_s,
        held_s,
        required: n,
        stable,
        canary,
        z,
        by_client: None,
        gates,
        decision,
    }
}
