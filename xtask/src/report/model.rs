//! What an experiment hands to the report: raw measurements only. Every derived
//! number (rates, percentiles, checks, prose) is computed by the report from these.
//!
//! All `t_ms` / `*_us` offsets are relative to the start of that stage's load run
//! (`StageRun::load.started_unix_ms`), so the timeline, the events and the log lines
//! share one clock.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zerodrop_load::RunResult;
use zerodrop_stages::Stage;

pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub run_id: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// `local` or `kind`. The report never branches on it; it is printed.
    pub platform: String,
    /// The command line that produced the report.
    pub command: String,
    pub machine: Machine,
    pub profile: ExperimentProfile,
    /// Every stage run, repeat after repeat (`StageRun::repeat`), stages in order
    /// within a repeat.
    pub stages: Vec<StageRun>,
    /// How often each stage ran (`--repeat`).
    #[serde(default = "one")]
    pub repeats: u32,
    /// The guardian exercise run once per experiment.
    pub guardian: Option<GuardianCheck>,
    /// Set when a stage failed: the report holds only the stages before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
}

/// Which stage run failed and why; the stages before it are in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Incomplete {
    pub stage: String,
    /// 0-based, as `StageRun::repeat`.
    pub repeat: u32,
    pub reason: String,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub cpus: usize,
    pub os: String,
    pub kernel: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentProfile {
    /// `quick` or `default`.
    pub name: String,
    pub load: zerodrop_load::Profile,
    pub warmup_s: u32,
    pub steady_s: u32,
    pub cooldown_s: u32,
    pub api_replicas: u32,
    pub worker_replicas: u32,
    /// How long the Service keeps routing new connections to a terminating pod.
    pub propagation_delay_ms: u64,
    /// Jobs queued by the runner before the load starts.
    #[serde(default)]
    pub job_backlog: u32,
    /// Request slots per api instance.
    #[serde(default)]
    pub api_capacity: u32,
    /// How long the Service kept routing to a terminating pod, as the platform that
    /// ran knows it: a delay it applies (`configured_ms`), or one it measured. Absent
    /// in older reports, which show `propagation_delay_ms`.
    #[serde(default)]
    pub propagation: Option<Propagation>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Propagation {
    /// A delay the platform applies itself; `None` where nothing applies one.
    #[serde(default)]
    pub configured_ms: Option<u64>,
    #[serde(default)]
    pub measured: Option<MeasuredDelay>,
    /// What the numbers are, in words (printed with them).
    #[serde(default)]
    pub what: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasuredDelay {
    pub p50_ms: i64,
    pub max_ms: i64,
    /// How many measurements (pods).
    pub n: u32,
}

impl MeasuredDelay {
    /// Median (upper for an even count) and maximum of `ms`; `None` when empty.
    pub fn of(ms: &[i64]) -> Option<MeasuredDelay> {
        let mut v = ms.to_vec();
        v.sort_unstable();
        Some(MeasuredDelay { p50_ms: *v.get(v.len() / 2)?, max_ms: *v.last()?, n: v.len() as u32 })
    }
}

/// A `[from_us, to_us)` slice of a stage's load run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Window {
    pub from_us: u64,
    pub to_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRun {
    pub stage: Stage,
    /// 0-based repeat this run belongs to.
    #[serde(default)]
    pub repeat: u32,
    pub load: RunResult,
    /// Before the deploy: the baseline.
    pub steady: Window,
    /// The deploy window: from one guard second before the rollout trigger (requests
    /// in flight at the trigger belong to the deploy), the same length in every stage.
    pub roll: Window,
    /// From the rollout trigger until every new pod is ready and no old pod is
    /// counted (Kubernetes' notion of a complete rollout), api and worker together.
    pub rollout_seconds: f64,
    /// Ready api endpoints in the Service, one sample per change.
    pub endpoints: Vec<EndpointSample>,
    /// The desired number of api replicas.
    pub desired_endpoints: u32,
    pub events: Vec<PodEvent>,
    /// Lifecycle log lines (those with a `step` field) of every pod, in time order.
    pub logs: Vec<LogLine>,
    pub jobs: Jobs,
    /// Where this stage's raw per-pod logs are, relative to the report directory.
    pub pod_logs_dir: String,
    #[serde(default)]
    pub third_party: Option<ThirdPartyRun>,
}

/// `Stage` holds `&'static str` (lever, targets), so it only deserialises from
/// `'static` input; a report read from a file is not. Re-reads the value from a
/// leaked copy of its JSON text (a few hundred bytes per stage, once per load).

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct EndpointSample {
    pub t_ms: i64,
    pub ready: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodEventKind {
    Created,
    Ready,
    Unready,
    /// Deletion started: preStop (if any) begins, the endpoint removal is scheduled.
    Terminating,
    /// The Service stopped routing new connections to the pod.
    EndpointRemoved,
    Sigterm,
    Sigkill,
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodEvent {
    pub t_ms: i64,
    pub pod: String,
    /// `api` or `worker`.
    pub app: String,
    pub kind: PodEventKind,
    /// Free text, e.g. `exit code 0` or `killed by signal 9`.
    pub detail: String,
}

/// One structured lifecycle line a pod wrote (`{"step": ..., ...}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub t_ms: i64,
    /// The timestamp exactly as the pod logged it.
    pub timestamp: String,
    pub pod: String,
    pub app: String,
    /// e.g. `sigterm_received`, `readiness_failing`, `listener_closed`, `dispose`.
    pub step: String,
    /// The whole line's `fields` object (`resource`, `code`, counts ...).
    pub fields: serde_json::Value,
}

/// Accepted jobs reconciled against the ledger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Jobs {
    /// Answered 202 by the api.
    pub accepted: u64,
    /// Ledger rows for accepted ids.
    pub applied_rows: u64,
    /// Accepted but never applied.
    pub lost: u64,
    /// Accepted ids applied more than once (each such id counts once).
    pub duplicated: u64,
    /// Extra applications beyond the first, summed over duplicated ids.
    pub extra_applications: u64,
    pub dead_lettered: u64,
    /// Up to 10 examples each.
    pub lost_sample: Vec<String>,
    pub duplicated_sample: Vec<String>,
    /// The queue was empty and the ledger stable before reconciliation; if false, the
    /// wait timed out and `lost` may include jobs still in flight.
    pub settled: bool,
}

/// A single api instance with the final stage's settings, sent a request longer than
/// its drain budget, then SIGTERM: the guardian must force-exit it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuardianCheck {
    pub drain_budget_ms: u64,
    pub request_ms: u64,
    pub expected_exit_code: i32,
    pub exit_code: Option<i32>,
    /// Milliseconds from SIGTERM to exit.
    pub exit_after_ms: u64,
    /// What the client of the long request saw (a class key).
    pub client_outcome: String,
    pub logs: Vec<LogLine>,
}

/// A third-party client (`--alongside`) run during the stage's deploy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThirdPartyRun {
    pub command: String,
    /// Milliseconds from the stage's load start: when the client started and ended.
    pub started_ms: i64,
    pub ended_ms: i64,
    pub exit_code: Option<i32>,
    /// Relative to the report directory.
    pub output: String,
    /// Parsed from hey's summary; `None` for another tool's output.
    pub counts: Option<ClientCounts>,
}

/// A client's own tally: responses per status code and connection-level errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCounts {
    pub responses: BTreeMap<u16, u64>,
    pub refused: u64,
    pub reset: u64,
    pub other_errors: u64,
}

impl ClientCounts {
    pub fn total(&self) -> u64 {
        self.responses.values().sum::<u64>() + self.refused + self.reset + self.other_errors
    }
    pub fn failed(&self) -> u64 {
        self.total() - self.responses.iter().filter(|(c, _)| (200..300).contains(*c)).map(|(_, n)| n).sum::<u64>()
    }
}
