//! `cargo xtask tune`: measure the deregistration delay from the pods' side over
//! many terminations under load, recommend preStop / drain budget / grace from it,
//! write the recommendation as a stage override, and (with `--compare`) run the
//! tuned, the folklore and a too-short setting side by side under identical load.
//! Everything goes through [`Platform`], so it is the same on every platform.

pub mod chart;
pub mod compare;
pub mod fresh;
pub mod measure;
pub mod overrides;
pub mod recommend;
pub mod report;

use crate::experiment::RunCtx;
use anyhow::Result;
use measure::Termination;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use zerodrop_platform::Platform;
use zerodrop_report::model::StageRun;
use zerodrop_stages::Stage;

/// What the command was asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub terminations: u32,
    pub fresh_rate: u32,
    pub longest_request_ms: u64,
    pub compare: bool,
    pub repeat: u32,
}

/// One fleet, one load run, one rolling deploy, with the fresh-connection client
/// beside the load.
pub struct Trial {
    pub run: StageRun,
    pub fresh: Option<fresh::FreshCounts>,
}

/// Runs `stage` once; `k` keeps queues, schemas, addresses and log directories apart.
pub async fn trial<P: Platform>(ctx: &mut RunCtx<P>, stage: Stage, k: u32, rate: u32) -> Result<Trial> {
    let stop = CancellationToken::new();
    let addr = ctx.platform.service_url().and_then(|u| fresh::addr_of(&u));
    let log = addr.map(|a| fresh::start(a, rate, stop.clone()));
    let run = ctx.run_stage(stage, k as usize, k).await;
    stop.cancel();
    let run = run?;
    // Counted over the deploy window only, as the load's own counts are.
    let origin = run.load.started_unix_ms as i64;
    let fresh =
        log.map(|l| l.counts(origin + (run.roll.from_us / 1000) as i64, origin + (run.roll.to_us / 1000) as i64));
    Ok(Trial { run, fresh })
}

/// The measurement half's result.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub terminations: Vec<Termination>,
    /// Pods whose log had no measurement (no `listener_closed` with the fields).
    pub unmeasured: u32,
    pub dereg_ms: Option<recommend::Dist>,
    pub platform_dereg_ms: Option<recommend::Dist>,
    pub latency_ms: Option<recommend::Dist>,
    pub censored: usize,
    /// Pods that saw no new connection after termination began.
    pub no_accept: usize,
    pub fresh_rate: u32,
    /// Mean gap between two fresh connections to one pod: the measurement's resolution.
    pub resolution_ms: Option<f64>,
    pub trial_dirs: Vec<String>,
    pub fresh_failed: u64,
    pub fresh_total: u64,
}

/// `trials` of `stage`, pooled.
pub async fn measure<P: Platform>(ctx: &mut RunCtx<P>, stage: &Stage, plan: &Plan, k: &mut u32) -> Result<Measured> {
    let per = ctx.profile.api_replicas.max(1);
    let trials = plan.terminations.div_ceil(per);
    let (mut terms, mut lat, mut dirs, mut unmeasured) = (Vec::new(), Vec::new(), Vec::new(), 0u32);
    let (mut fresh_failed, mut fresh_total) = (0, 0);
    for i in 0..trials {
        eprintln!("[tune] measurement trial {}/{trials}: {} api pods terminated under load", i + 1, per);
        let t = trial(ctx, stage.clone(), *k, plan.fresh_rate).await?;
        *k += 1;
        let got = measure::terminations(&t.run);
        let terminated = t
            .run
            .events
            .iter()
            .filter(|e| e.app == "api" && e.kind == zerodrop_report::model::PodEventKind::Terminating)
            .count();
        unmeasured += terminated.saturating_sub(got.len()) as u32;
        terms.extend(got);
        lat.extend(measure::ok_latencies_ms(&t.run));
        dirs.push(t.run.pod_logs_dir.clone());
        if let Some(f) = t.fresh {
            fresh_failed += f.failed();
            fresh_total += f.total;
        }
    }
    let last: Vec<f64> = terms.iter().filter_map(|t| t.last_accept_ms.map(|m| m as f64)).collect();
    let platform: Vec<f64> = terms.iter().filter_map(|t| t.platform_ms.map(|m| m as f64)).collect();
    let endpoints = ctx.profile.api_replicas as f64;
    Ok(Measured {
        censored: terms.iter().filter(|t| t.censored()).count(),
        no_accept: terms.iter().filter(|t| t.last_accept_ms.is_none()).count(),
        dereg_ms: recommend::dist(&last),
        platform_dereg_ms: recommend::dist(&platform),
        latency_ms: recommend::dist(&lat),
        terminations: terms,
        unmeasured,
        fresh_rate: plan.fresh_rate,
        resolution_ms: (plan.fresh_rate > 0 && fresh_total > 0).then(|| 1000.0 * endpoints / plan.fresh_rate as f64),
        trial_dirs: dirs,
        fresh_failed,
        fresh_total,
    })
}
