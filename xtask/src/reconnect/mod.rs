//! `cargo xtask reconnect`: the thundering reconnect. The same keep-alive load (2,000+
//! clients that reconnect at once when closed) runs across a rolling deploy twice, once
//! with every draining pod closing its connections at once and once with the closes
//! jittered over the drain; the report puts reconnect rate, accept queue, 503s and
//! latency on the cold pods side by side. Runs on the local platform and on a cluster.

mod analysis;
mod chart;
mod kind_plan;
pub mod profile;
mod report;
mod variant;

use crate::harness::{self, LocalSession, RunDir, Work};
use crate::platform_args::{Choice, PlatformArgs};
use anyhow::{Context, Result};
use profile::{ReconnectProfile, VARIANTS};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zerodrop_evidence::Propagation;
use zerodrop_platform::local::propagation::PropagationModel;
use zerodrop_platform::{KeepAliveLoad, Platform};

/// Runs on both platforms. Locally the clients run in the runner and the runner reads
/// the lab's listen queues itself; on a cluster (`--platform kind`) the clients run as
/// a `zerodrop-load keepalive` Job and every api pod carries a sidecar that prints its
/// own accept queue.
#[derive(clap::Args)]
pub struct Args {
    /// Where reports go; the run gets its own <run-id> directory inside.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// Keep-alive clients (at least 2,000 for the claim; fewer for a quick look).
    #[arg(long, default_value_t = ReconnectProfile::standard().load.clients,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    clients: u32,
    /// Exit 3 unless the at-once variant made 503s on the cold pods, jitter lowered the
    /// reconnect peak, and the verdicts on cold-pod 503s and on failed requests are
    /// `removed` or `reduced` (95% intervals apart; used by CI).
    #[arg(long)]
    assert: bool,
    #[command(flatten)]
    platform: PlatformArgs,
}

pub async fn run(a: Args) -> Result<()> {
    let mut profile = ReconnectProfile::standard();
    profile.load.clients = a.clients;
    let choice = a.platform.choose()?;
    let run = RunDir::new(&a.out);
    if choice == Choice::KindPlan {
        let p = kind_plan::plan(&a.platform.kind_options(&run), &profile)?;
        harness::print_plan("reconnect", "the plan", &p);
        return Ok(());
    }
    let wall = Instant::now();
    let command = RunDir::command();
    // One constant delay on local: this run is about the reconnect, not the propagation spread.
    let session = LocalSession::service(PropagationModel::constant(profile.propagation_delay));
    // Each variant rolls three api pods once; a cluster gets the rollout's own limit.
    let roll_timeout = profile.roll * 3 + Duration::from_secs(60);
    let needs_linux = "the local platform needs Linux (network and PID namespaces); use --platform kind elsewhere";
    let started = |run: &RunDir| {
        raise_nofile();
        eprintln!(
            "zerodrop reconnect {}: {} keep-alive clients, variants at-once and jittered",
            run.id, profile.load.clients
        );
    };
    let work = Variants { profile: &profile, run: &run };
    let (variants, platform_name, propagation) =
        harness::on_chosen(choice, &a.platform, &run, session, needs_linux, roll_timeout, started, work).await?;
    let report = report::ReconnectReport {
        run_id: run.id.clone(),
        command,
        platform: platform_name,
        machine: crate::experiment::machine(),
        wall_time_s: wall.elapsed().as_secs_f64(),
        profile,
        propagation,
        variants,
    };
    report::write(&report, &run.dir)?;
    for v in &report.variants {
        let s = &v.summary;
        eprintln!(
            "[{}] reconnects {} (peak {}/100 ms), accept queue peak {}, failed {}, 503 on cold pods {}",
            s.name,
            s.reconnects,
            s.peak_reconnects_per_100ms,
            s.accept_queue_peak,
            zerodrop_report::stats::describe(&s.failed),
            zerodrop_report::stats::describe(&s.cold_pods.http_503)
        );
    }
    eprintln!("report: {}", run.dir.join("report.md").display());
    if a.assert {
        check(&report.variants).map_err(|e| crate::exit::CheckFailed(format!("reconnect: {e}")))?;
    }
    Ok(())
}

fn check(v: &[report::Variant]) -> std::result::Result<(), String> {
    use zerodrop_report::stats::{verdict, Verdict};
    let [a, j] = v else { return Err("expected two variants".into()) };
    let (a, j) = (&a.summary, &j.summary);
    if a.cold_pods.http_503.k == 0 {
        return Err("the at-once variant made no 503s on the cold pods: the storm did not show".into());
    }
    // One stray 503 in ten thousand is noise, not a verdict: what must hold is that
    // jitter lowers the cold pods' 503 rate beyond the two intervals' overlap.
    let cold = |s: &analysis::VariantSummary| (s.cold_pods.http_503.k, s.cold_pods.http_503.n);
    match verdict(&[cold(a)], &[cold(j)]) {
        Verdict::Removed | Verdict::Reduced => {}
        other => return Err(format!("503s on the cold pods, jittered against at-once: {}", other.as_str())),
    }
    if j.peak_reconnects_per_100ms >= a.peak_reconnects_per_100ms {
        return Err("jitter did not lower the reconnect peak".into());
    }
    match verdict(&[(a.failed.k, a.failed.n)], &[(j.failed.k, j.failed.n)]) {
        Verdict::Removed | Verdict::Reduced => Ok(()),
        other => Err(format!("failed requests, jittered against at-once: {}", other.as_str())),
    }
}

/// Both variants, on a platform that can run the keep-alive clients and show the
/// listen queues; hands back what ran and where.
struct Variants<'a> {
    profile: &'a ReconnectProfile,
    run: &'a RunDir,
}

impl<P: Platform + KeepAliveLoad> Work<P> for Variants<'_> {
    type Output = (Vec<report::Variant>, String, Option<Propagation>);
    async fn run(self, mut platform: P) -> Result<Self::Output> {
        let variants = run_variants(&mut platform, self.profile, &self.run.id, &self.run.dir).await?;
        Ok((variants, platform.describe(), platform.propagation()))
    }
}

async fn run_variants<P: Platform + KeepAliveLoad>(
    platform: &mut P,
    profile: &ReconnectProfile,
    run_id: &str,
    out_dir: &std::path::Path,
) -> Result<Vec<report::Variant>> {
    let mut ctx = variant::Ctx::connect(platform).await?;
    let mut out = Vec::new();
    for (index, (name, close)) in VARIANTS.into_iter().enumerate() {
        eprintln!("[{name}] variant {}/{}", index + 1, VARIANTS.len());
        let v = ctx.run(platform, profile, run_id, out_dir, index, name, close).await;
        let v = v.with_context(|| format!("variant {name}"))?;
        out.push(v);
    }
    ctx.close().await;
    Ok(out)
}

/// 2,000+ sockets on each side: lift the soft open-files limit to the hard one (the
/// pods inherit it).
fn raise_nofile() {
    let soft = match lift_nofile() {
        Ok(soft) => soft,
        Err((hard, _)) => {
            eprintln!("warning: could not raise the open-files limit to {hard}");
            hard
        }
    };
    eprintln!("[limits] open files: {soft}");
}

/// Sets the soft RLIMIT_NOFILE to the hard one if it is lower; the soft limit then
/// (RLIM_INFINITY as u64::MAX, as the kernel numbers it), or the hard limit it could
/// not be raised to.
fn lift_nofile() -> Result<u64, (u64, std::io::Error)> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let l = getrlimit(Resource::Nofile);
    let number = |v: Option<u64>| v.unwrap_or(u64::MAX);
    let (soft, hard) = (number(l.current), number(l.maximum));
    if soft >= hard {
        return Ok(soft);
    }
    match setrlimit(Resource::Nofile, rustix::process::Rlimit { current: l.maximum, maximum: l.maximum }) {
        Ok(()) => Ok(hard),
        Err(e) => Err((hard, e.into())),
    }
}

#[cfg(test)]
mod tests {
    /// The soft open-files limit ends at the hard one, and a second raise changes nothing.
    #[test]
    fn lifting_the_open_files_limit_is_idempotent() {
        use rustix::process::{getrlimit, Resource};
        let first = super::lift_nofile().expect("raising the soft limit to the hard one is always allowed");
        let after = getrlimit(Resource::Nofile);
        assert_eq!(after.current, after.maximum);
        assert_eq!(first, after.current.unwrap_or(u64::MAX));
        assert_eq!(super::lift_nofile().unwrap(), first);
        assert_eq!(getrlimit(Resource::Nofile), after);
    }
}
