//! Three preStop settings under identical load: the tuned one, the folklore 15 s and
//! one too short (≈ 0.5× the measured p99). Same profile, same stage, same drain
//! budget; only preStop (and the grace period that must fit it) differ.

use super::overrides::StageOverride;
use super::recommend::{self, Recommendation};
use super::{trial, Plan};
use crate::experiment::RunCtx;
use anyhow::Result;
use serde::Serialize;
use zerodrop_load::Class;
use zerodrop_platform::Platform;
use zerodrop_report::model::{PodEventKind, StageRun};
use zerodrop_report::stats::{self, Rate, Spread};
use zerodrop_stages::Stage;

/// One setting's values.
#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    pub name: &'static str,
    pub over: StageOverride,
}

pub fn settings(r: &Recommendation, worker_budget_ms: u64) -> Vec<Setting> {
    let mk = |name, pre_stop: u64, note: &str| {
        let g = recommend::grace_for(pre_stop, r.drain_budget_ms, worker_budget_ms, r.too_short_pre_stop_ms);
        Setting {
            name,
            over: StageOverride {
                pre_stop_ms: Some(pre_stop),
                // preStop alone holds the pod in service: one knob to compare.
                deregistration_wait_ms: Some(0),
                api_drain_budget_ms: Some(r.drain_budget_ms),
                grace_ms: Some(g.grace_ms),
                note: note.to_string(),
            },
        }
    };
    vec![
        mk("tuned", r.pre_stop_ms, "3x the measured deregistration p99"),
        mk("folklore-15s", recommend::FOLKLORE_PRE_STOP_MS, "the folklore 15 s"),
        mk("too-short", r.too_short_pre_stop_ms, "0.5x the measured deregistration p99"),
    ]
}

/// One run of one setting.
#[derive(Debug, Clone, Serialize)]
pub struct SettingRun {
    pub setting: &'static str,
    pub repeat: u32,
    pub requests: u64,
    pub failed: u64,
    pub refused: u64,
    pub reset: u64,
    pub http_503: u64,
    pub rollout_s: f64,
    /// Rollout trigger → the last old pod exited.
    pub deploy_window_s: Option<f64>,
    pub fresh: Option<super::fresh::FreshCounts>,
    pub pod_logs_dir: String,
}

pub fn summarise(
    setting: &'static str,
    repeat: u32,
    run: &StageRun,
    fresh: Option<super::fresh::FreshCounts>,
) -> SettingRun {
    let w = zerodrop_load::window_stats(&run.load.records, run.roll.from_us, run.roll.to_us);
    let c = |k: Class| w.by_class.get(k.key()).copied().unwrap_or(0);
    SettingRun {
        setting,
        repeat,
        requests: w.total,
        failed: w.failed,
        refused: c(Class::Refused),
        reset: c(Class::Reset),
        http_503: c(Class::Http503),
        rollout_s: run.rollout_seconds,
        deploy_window_s: deploy_window_s(run),
        fresh,
        pod_logs_dir: run.pod_logs_dir.clone(),
    }
}

/// From the trigger (one guard interval after the deploy window opens) to the last
/// exit of a pod that was told to terminate.
pub fn deploy_window_s(run: &StageRun) -> Option<f64> {
    let trigger_ms = (run.roll.from_us / 1000) as i64 + crate::experiment::DEPLOY_GUARD.as_millis() as i64;
    let terminated: Vec<&str> =
        run.events.iter().filter(|e| e.kind == PodEventKind::Terminating).map(|e| e.pod.as_str()).collect();
    let last_exit = run
        .events
        .iter()
        .filter(|e| e.kind == PodEventKind::Exited && terminated.contains(&e.pod.as_str()))
        .map(|e| e.t_ms)
        .max()?;
    Some((last_exit - trigger_ms) as f64 / 1000.0)
}

/// Per setting, pooled over repeats.
#[derive(Debug, Clone, Serialize)]
pub struct SettingSummary {
    pub setting: &'static str,
    pub pre_stop_ms: u64,
    pub grace_ms: u64,
    pub failed: Rate,
    pub refused: Rate,
    pub fresh_failed: Option<Rate>,
    pub rollout_s: Spread,
    pub deploy_window_s: Spread,
    pub repeats: usize,
}

pub fn summaries(settings: &[Setting], runs: &[SettingRun]) -> Vec<SettingSummary> {
    settings
        .iter()
        .map(|s| {
            let mine: Vec<&SettingRun> = runs.iter().filter(|r| r.setting == s.name).collect();
            let pool =
                |f: fn(&SettingRun) -> u64| stats::pooled(&mine.iter().map(|r| (f(r), r.requests)).collect::<Vec<_>>());
            let fresh: Vec<(u64, u64)> = mine.iter().filter_map(|r| r.fresh.map(|f| (f.failed(), f.total))).collect();
            SettingSummary {
                setting: s.name,
                pre_stop_ms: s.over.pre_stop_ms.unwrap_or(0),
                grace_ms: s.over.grace_ms.unwrap_or(0),
                failed: pool(|r| r.failed),
                refused: pool(|r| r.refused),
                fresh_failed: (!fresh.is_empty()).then(|| stats::pooled(&fresh)),
                rollout_s: stats::spread(&mine.iter().map(|r| r.rollout_s).collect::<Vec<_>>()),
                deploy_window_s: stats::spread(&mine.iter().filter_map(|r| r.deploy_window_s).collect::<Vec<_>>()),
                repeats: mine.len(),
            }
        })
        .collect()
}

/// Every setting once per repeat, interleaved (tuned, folklore, too-short, then
/// again), so a slow phase of the machine does not land on one setting only.
pub async fn run<P: Platform>(
    ctx: &mut RunCtx<P>,
    base: &Stage,
    settings: &[Setting],
    plan: &Plan,
    k: &mut u32,
) -> Result<Vec<SettingRun>> {
    let mut out = Vec::new();
    for rep in 0..plan.repeat {
        for s in settings {
            let mut stage = base.clone();
            s.over.apply(&mut stage).map_err(|e| anyhow::anyhow!("setting {}: {e}", s.name))?;
            eprintln!("[tune] compare {} (repeat {}/{}): {}", s.name, rep + 1, plan.repeat, s.over.describe());
            let t = trial(ctx, stage, *k, plan.fresh_rate).await?;
            *k += 1;
            let r = summarise(s.name, rep, &t.run, t.fresh);
            eprintln!(
                "[tune] {}: {} requests, {} failed ({} refused), rollout {:.1} s, deploy window {:.1} s",
                s.name,
                r.requests,
                r.failed,
                r.refused,
                r.rollout_s,
                r.deploy_window_s.unwrap_or(f64::NAN)
            );
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_settings_share_everything_but_pre_stop_and_fit_their_grace() {
        let r =
            Recommendation { pre_stop_ms: 5900, drain_budget_ms: 1000, grace_ms: 14_000, too_short_pre_stop_ms: 1000 };
        let s = settings(&r, 5000);
        assert_eq!(s.iter().map(|s| s.name).collect::<Vec<_>>(), ["tuned", "folklore-15s", "too-short"]);
        assert_eq!(s.iter().map(|s| s.over.pre_stop_ms.unwrap()).collect::<Vec<_>>(), [5900, 15_000, 1000]);
        assert!(s.iter().all(|s| s.over.api_drain_budget_ms == Some(1000) && s.over.deregistration_wait_ms == Some(0)));
        assert_eq!(s[1].over.grace_ms, Some(23_000), "15 s + the worker's 5 s + 3 s");
        for x in &s {
            let mut stage = Stage::get(zerodrop_stages::StageName::SurgeJitter);
            assert_eq!(x.over.apply(&mut stage), Ok(true), "{}", x.name);
        }
    }

    #[test]
    fn pooled_rates_and_spreads_per_setting() {
        let r = Recommendation { pre_stop_ms: 5000, drain_budget_ms: 1000, grace_ms: 9000, too_short_pre_stop_ms: 800 };
        let s = settings(&r, 1000);
        let run = |setting, repeat, failed, refused, window| SettingRun {
            setting,
            repeat,
            requests: 1000,
            failed,
            refused,
            reset: 0,
            http_503: 0,
            rollout_s: 5.0 + repeat as f64,
            deploy_window_s: Some(window),
            fresh: None,
            pod_logs_dir: String::new(),
        };
        let runs = vec![run("tuned", 0, 0, 0, 9.0), run("tuned", 1, 0, 0, 10.0), run("too-short", 0, 12, 12, 6.0)];
        let sum = summaries(&s, &runs);
        assert_eq!(sum[0].failed.k, 0);
        assert_eq!(sum[0].failed.n, 2000);
        assert!(sum[0].failed.ci95[1] > 0.0, "zero events still has an upper bound");
        assert_eq!(sum[0].deploy_window_s.median, 9.5);
        assert_eq!(sum[1].repeats, 0, "folklore did not run");
        assert_eq!((sum[2].refused.k, sum[2].refused.n), (12, 1000));
    }
}
