//! `cargo xtask chaos`: the same fault on the api pods' broker path (+800 ms each way)
//! under the same open-loop load, twice: without and with the publish breaker. Steady
//! load → fault on → fault off, in three equal phases; the report puts error rates,
//! p50/p99, the breaker's transitions, the time to open and to recover, and the jobs'
//! reconciliation side by side.
//!
//! Runs on both platforms through [`DependencyFaults`]: locally the relay is in the
//! runner (`zerodrop_platform::local::fault_relay`); on a cluster it is a
//! `broker-relay` Deployment between the api pods and RabbitMQ, set through a
//! port-forward to its control API (`zerodrop_platform::kind::fault`). `--dry-run`
//! prints the kind plan (`kind_plan.rs`).

mod analysis;
mod kind_plan;
mod profile;
mod report;
mod variant;

use crate::harness::{self, LocalSession, RunDir, Work};
use crate::platform_args::{Choice, PlatformArgs};
use anyhow::{Context, Result};
use profile::{ChaosProfile, VARIANTS};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zerodrop_platform::local::propagation::PropagationModel;
use zerodrop_platform::{Dependency, DependencyFaults};

#[derive(clap::Args)]
pub struct Args {
    /// Where reports go; the run gets its own <run-id> directory inside.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// 10 s phases instead of 20 s (CI: about 2 minutes for both variants).
    #[arg(long)]
    quick: bool,
    /// Exit 3 unless: without the breaker the fault made `/work` fail; with it, `/work`
    /// failed less (95% intervals apart), the breaker opened and every pod that opened
    /// closed again after the heal; and no variant lost a job or applied one twice.
    #[arg(long)]
    assert: bool,
    #[command(flatten)]
    platform: PlatformArgs,
}

/// A cluster's bound on one rolling deploy (chaos deploys fresh fleets and never
/// rolls them; the bound is the platform's required setting).
const KIND_ROLL_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn run(a: Args) -> Result<()> {
    let choice = a.platform.choose()?;
    let profile = ChaosProfile::new(a.quick);
    let run = RunDir::new(&a.out);
    if choice == Choice::KindPlan {
        let p = kind_plan::plan(&a.platform.kind_options(&run), &profile)?;
        harness::print_plan("chaos", "the plan", &p);
        return Ok(());
    }
    let wall = Instant::now();
    let command = RunDir::command();
    let started = |run: &RunDir| {
        eprintln!(
            "zerodrop chaos {}: fault {} on the broker path, {} s phases, variants no-breaker and breaker",
            run.id,
            profile.fault.describe(),
            profile.phase_ms / 1000
        )
    };
    let session = LocalSession::service(PropagationModel::constant(Duration::ZERO));
    let needs_linux = "the local platform needs Linux (network and PID namespaces); use --platform kind elsewhere";
    let work = Variants { profile: &profile, run: &run };
    let (variants, platform) =
        harness::on_chosen(choice, &a.platform, &run, session, needs_linux, KIND_ROLL_TIMEOUT, started, work).await?;
    let report = report::ChaosReport {
        run_id: run.id.clone(),
        command,
        platform,
        machine: crate::experiment::machine(),
        wall_time_s: wall.elapsed().as_secs_f64(),
        profile,
        variants,
    };
    report::write(&report, &run.dir)?;
    for v in &report.variants {
        if let Some(f) = v.phase("fault") {
            eprintln!(
                "[{}] fault phase: /work failed {}, /work p99 {:.0} ms, /jobs failed {}; open after {}, recovered after {}; jobs lost {}, applied twice {}",
                v.name,
                zerodrop_report::stats::describe(&f.work.failed),
                f.work.p99_ms.value,
                zerodrop_report::stats::describe(&f.jobs.failed),
                ms_or(v.timing.to_open_ms, "never"),
                ms_or(v.timing.to_close_ms, "—"),
                v.jobs.lost,
                v.jobs.applied_twice
            );
        }
    }
    eprintln!("report: {}", run.dir.join("report.md").display());
    if a.assert {
        check(&report.variants).map_err(|e| crate::exit::CheckFailed(format!("chaos: {e}")))?;
    }
    Ok(())
}

fn ms_or(v: Option<u64>, none: &str) -> String {
    v.map_or_else(|| none.to_string(), |ms| format!("{ms} ms"))
}

fn check(v: &[report::Variant]) -> std::result::Result<(), String> {
    use zerodrop_report::stats::{verdict, Verdict};
    let [a, b] = v else { return Err("expected two variants".into()) };
    for x in v {
        if x.jobs.lost > 0 || x.jobs.applied_twice > 0 {
            return Err(format!("{}: {} jobs lost, {} applied twice", x.name, x.jobs.lost, x.jobs.applied_twice));
        }
    }
    let (Some(fa), Some(fb)) = (a.phase("fault"), b.phase("fault")) else { return Err("no fault phase".into()) };
    if fa.work.failed.k == 0 {
        return Err("without the breaker the fault made no /work request fail: the pile-up did not show".into());
    }
    match verdict(&[(fa.work.failed.k, fa.work.failed.n)], &[(fb.work.failed.k, fb.work.failed.n)]) {
        Verdict::Removed | Verdict::Reduced => {}
        other => return Err(format!("/work failures during the fault, breaker against none: {}", other.as_str())),
    }
    if b.timing.to_open_ms.is_none() {
        return Err("the breaker never opened during the fault".into());
    }
    if b.timing.to_close_ms.is_none() {
        return Err("a breaker that opened did not close again after the heal".into());
    }
    Ok(())
}

struct Variants<'a> {
    profile: &'a ChaosProfile,
    run: &'a RunDir,
}

impl<P: DependencyFaults> Work<P> for Variants<'_> {
    type Output = (Vec<report::Variant>, String);
    async fn run(self, mut platform: P) -> Result<Self::Output> {
        platform.relay_dependency(Dependency::Broker).await?;
        let mut ctx = variant::Ctx::connect(&platform).await?;
        let mut out = Vec::new();
        for (index, (name, breaker)) in VARIANTS.into_iter().enumerate() {
            eprintln!("[{name}] variant {}/{}", index + 1, VARIANTS.len());
            let v = ctx.run(&mut platform, self.profile, &self.run.id, &self.run.dir, index, name, breaker).await;
            out.push(v.with_context(|| format!("variant {name}"))?);
        }
        ctx.close().await;
        Ok((out, platform.describe()))
    }
}
