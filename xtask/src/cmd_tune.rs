//! `cargo xtask tune`: measured deregistration delay → recommended preStop, drain
//! budget and grace, written as a stage override; `--compare` adds the three-setting
//! comparison. See `tune/`.

use crate::experiment::{machine, RunCtx};
use crate::harness::{self, LocalSession, RunDir, Work};
use crate::platform_args::{Choice, PlatformArgs};
use crate::tune::{compare, recommend, report, Plan};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;
use zerodrop_platform::profile::ExperimentProfile;
use zerodrop_platform::Platform;
use zerodrop_stages::{Stage, StageName};

#[derive(clap::Args)]
pub struct Args {
    /// Api pod terminations to measure (five per rolling deploy); at least 30.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(30..=500))]
    terminations: u32,
    /// Requests per second that each open a new connection, beside the keep-alive
    /// load: the measurement's resolution.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    fresh_rate: u32,
    /// The longest request the service allows (ms), for the drain budget; default:
    /// the load's slow request.
    #[arg(long)]
    longest_request_ms: Option<u64>,
    /// Then run the tuned, the folklore 15 s and a too-short preStop under identical load.
    #[arg(long)]
    compare: bool,
    /// With --compare: run every setting this many times (interleaved).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    repeat: u32,
    /// Where reports go; each run gets its own <run-id> directory inside.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    #[command(flatten)]
    platform: PlatformArgs,
}

pub async fn run(a: Args) -> Result<()> {
    let choice = a.platform.choose()?;
    if choice == Choice::KindPlan {
        return print_plan(&a);
    }
    let profile = ExperimentProfile::tune();
    let run = RunDir::new(&a.out);
    let session = LocalSession::service(profile.propagation);
    let roll_timeout = profile.roll * 3 + std::time::Duration::from_secs(60);
    let work = Tune { a: &a, run: &run, profile };
    let needs_linux = "the local platform needs Linux; use --platform kind elsewhere";
    harness::on_chosen(choice, &a.platform, &run, session, needs_linux, roll_timeout, |_| {}, work).await
}

/// `--dry-run`: the stage tune deploys again and again, as the kind platform applies it.
fn print_plan(a: &Args) -> Result<()> {
    let run = RunDir::new(&a.out);
    let stages = [Stage::get(StageName::SurgeJitter)];
    let plan =
        zerodrop_platform::kind::plan::build(&a.platform.kind_options(&run), &ExperimentProfile::tune(), &stages)?;
    harness::print_plan("tune", "the plan of one termination round", &plan);
    Ok(())
}

/// The measurement (and `--compare`), on whichever platform the harness brings up.
struct Tune<'a> {
    a: &'a Args,
    run: &'a RunDir,
    profile: ExperimentProfile,
}

impl<P: Platform> Work<P> for Tune<'_> {
    type Output = ();
    async fn run(self, platform: P) -> Result<()> {
        tune(self.a, &self.run.id, &self.run.dir, platform, self.profile).await
    }
}

async fn tune<P: Platform>(a: &Args, run_id: &str, out: &Path, platform: P, profile: ExperimentProfile) -> Result<()> {
    let started = Instant::now();
    let started_at =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let command = format!("cargo xtask {}", std::env::args().skip(1).collect::<Vec<_>>().join(" "));
    let stage = Stage::get(StageName::SurgeJitter);
    let plan = Plan {
        terminations: a.terminations,
        fresh_rate: a.fresh_rate,
        longest_request_ms: a.longest_request_ms.unwrap_or(profile.load.slow_ms as u64),
        compare: a.compare,
        repeat: a.repeat,
    };
    eprintln!("[tune] {run_id}: {} terminations on {}", plan.terminations, platform.describe());
    let mut ctx = RunCtx::new(run_id.to_string(), out.to_path_buf(), profile.clone(), false, platform).await?;
    let mut k = 0u32;
    let measured = crate::tune::measure(&mut ctx, &stage, &plan, &mut k).await?;
    let (Some(dereg), Some(latency)) = (measured.dereg_ms, measured.latency_ms) else {
        ctx.close().await;
        bail!(
            "no api pod logged a deregistration measurement (listener_closed with last_accept_after_term_ms); see the pod logs in {}",
            out.display()
        );
    };
    let worker_budget = stage.worker.drain_budget.as_millis() as u64;
    let rec = recommend::recommend(&dereg, &latency, plan.longest_request_ms, worker_budget);
    let settings = compare::settings(&rec, worker_budget);
    let tuned = settings[0].over.clone();
    let override_file = "recommended.json";
    tuned.write(&out.join(override_file))?;
    print_measured(&measured, &rec, &out.join(override_file));

    let runs = if plan.compare { compare::run(&mut ctx, &stage, &settings, &plan, &mut k).await? } else { Vec::new() };
    let platform_name = ctx.platform.describe();
    let propagation = ctx.platform.propagation();
    ctx.close().await;
    let summary = compare::summaries(&settings, &runs);
    let p = &profile;
    let r = report::TuneReport {
        run_id: run_id.to_string(),
        started_at,
        platform: platform_name,
        command,
        wall_time_s: started.elapsed().as_secs_f64(),
        machine: machine(),
        profile: zerodrop_report::model::ExperimentProfile {
            name: p.name.to_string(),
            load: p.load.clone(),
            warmup_s: p.warmup.as_secs() as u32,
            steady_s: p.steady.as_secs() as u32,
            cooldown_s: p.cooldown.as_secs() as u32,
            api_replicas: p.api_replicas,
            worker_replicas: p.worker_replicas,
            propagation_delay_ms: p.propagation.mean().as_millis() as u64,
            job_backlog: p.job_backlog,
            api_capacity: p.api_capacity,
            propagation,
        },
        roll_s: p.roll.as_secs() as u32,
        stage: stage.name.to_string(),
        longest_request_ms: plan.longest_request_ms,
        worker_drain_budget_ms: worker_budget,
        measured,
        recommendation: rec,
        override_file: override_file.into(),
        settings: if plan.compare { settings } else { Vec::new() },
        runs,
        summary: if plan.compare { summary } else { Vec::new() },
    };
    report::write(&r, &crate::tune::chart::svg(&r), out)?;
    if plan.compare {
        println!("\n{}", report::verdict(&r.summary));
    }
    println!("wall time: {:.1} min\nreport: {}", r.wall_time_s / 60.0, out.join("report.md").display());
    Ok(())
}

fn print_measured(m: &crate::tune::Measured, r: &recommend::Recommendation, file: &Path) {
    let d = |x: Option<recommend::Dist>| {
        x.map(|d| format!("n={} p50={:.0} p99={:.0} max={:.0}", d.n, d.p50, d.p99, d.max)).unwrap_or("none".into())
    };
    println!("\nderegistration delay, pod side (ms): {}", d(m.dereg_ms));
    println!("  platform's own view (ms):          {}", d(m.platform_dereg_ms));
    println!("request latency, 2xx (ms):           {}", d(m.latency_ms));
    println!(
        "recommended: preStop {} ms, api drain budget {} ms, grace {} ms (too short for the comparison: {} ms)",
        r.pre_stop_ms, r.drain_budget_ms, r.grace_ms, r.too_short_pre_stop_ms
    );
    println!("stage override: {} (cargo xtask experiment --override {})", file.display(), file.display());
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(line: &str) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("tune").chain(line.split_whitespace())).map(|c| c.args)
    }

    #[test]
    fn at_least_thirty_terminations_and_the_platforms_of_experiment() {
        let a = parse("").unwrap();
        assert_eq!((a.terminations, a.fresh_rate, a.repeat, a.compare), (30, 100, 1, false));
        assert_eq!(a.platform.platform, zerodrop_platform::PlatformKind::Auto);
        let err = parse("--terminations 29").err().unwrap().to_string();
        assert!(err.contains("30"), "{err}");
        assert_eq!(
            parse("--platform kind --context kind-lab").unwrap().platform.platform,
            zerodrop_platform::PlatformKind::Kind
        );
        assert!(parse("--fresh-rate 0").is_err());
    }
}
