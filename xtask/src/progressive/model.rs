//! What a canary or blue-green run measured, as written to report.json.

use super::gates::{Gate, GateConfig};
use super::stats::{Detect, PlanDuration, ZTest};
use serde::Serialize;
use std::collections::BTreeMap;
use zerodrop_report::stats::Rate;

/// One version over a step: the routing tier's counts (what the gates judge), the
/// apps' own counts beside them, and the p95 from the apps' histograms.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Rate,
    pub p95_ms: Option<f64>,
    pub app_requests: u64,
    pub app_errors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Gates passed: on to the next step.
    Promote,
    /// A gate failed: back to 0%.
    Rollback,
    /// The last step (100%) held without errors.
    Promoted,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Promote => "promote",
            Decision::Rollback => "ROLLBACK",
            Decision::Promoted => "promoted",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub weight_pct: f64,
    pub start_s: f64,
    pub held_s: f64,
    /// Canary requests the step waited for (the sample size).
    pub required: u64,
    pub stable: Side,
    pub canary: Side,
    pub z: ZTest,
    /// The same step by client, when the load names its clients.
    pub by_client: Option<super::clients::ByClient>,
    pub gates: Vec<Gate>,
    pub decision: Decision,
}

/// One second of the routing tier's counters.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tick {
    pub t_s: f64,
    pub weight_pct: f64,
    pub stable_requests: u64,
    pub stable_errors: u64,
    pub canary_requests: u64,
    pub canary_errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    /// Seconds since the run's start when the failing gate was evaluated.
    pub breach_s: f64,
    /// From the breach until HAProxy's map showed weight 0.
    pub to_zero_ms: f64,
    /// From the breach until the canary pods' counters stopped moving (its last
    /// in-flight request answered).
    pub canary_quiet_ms: f64,
}

/// The blast radius: requests the bad version served, and what an all-at-once
/// rollout of it would have served over the same window.
#[derive(Debug, Clone, Serialize)]
pub struct BlastRadius {
    pub canary_requests: u64,
    pub canary_errors: u64,
    pub window_s: f64,
    pub all_at_once_requests: u64,
    pub all_at_once_errors_expected: f64,
    pub how: String,
}

/// The two sources of counts over the whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub router_stable: u64,
    pub app_stable: u64,
    pub router_canary: u64,
    pub app_canary: u64,
    pub router_errors: u64,
    pub app_errors: u64,
    pub max_diff_pct: f64,
    pub within_1pct: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    pub rate_per_sec: u32,
    pub total: u64,
    pub failed: u64,
    pub by_class: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub regression: String,
    pub steps_pct: Vec<f64>,
    pub qps: u32,
    pub replicas: u32,
    pub detect: Detect,
    pub gates: GateConfig,
    pub final_hold_s: f64,
    pub max_duration_s: f64,
    /// Testers reaching v2 by a header or cookie rule (`--route-header`, `--route-cookie`).
    pub routing: Option<super::routing::RuleSettings>,
    /// Named clients, sticky or not, and how the error gate judges (`--clients`).
    pub clients: Option<super::clients::ClientSettings>,
    /// A shadow phase before the steps (`--shadow`).
    pub shadow: Option<super::shadow::ShadowSettings>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CanaryReport {
    pub run_id: String,
    pub command: String,
    pub started_at: String,
    pub machine: zerodrop_report::model::Machine,
    pub settings: Settings,
    pub sample_size: u64,
    pub plan: PlanDuration,
    /// promoted, rolled back, or refused (low-traffic guard).
    pub outcome: String,
    pub steps: Vec<Step>,
    pub rollback: Option<Rollback>,
    pub blast_radius: Option<BlastRadius>,
    pub agreement: Option<Agreement>,
    pub load: Option<LoadSummary>,
    /// What reached v2 by rule and by weight, when the run had a rule.
    pub routing: Option<super::routing::RuleReport>,
    /// The shadow phase's paired comparison, when the run had one.
    pub shadow: Option<super::shadow::ShadowReport>,
    pub timeline: Vec<Tick>,
    pub pod_seconds: f64,
    pub wall_s: f64,
}
