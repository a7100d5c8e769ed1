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

// The platform's vocabulary: what was observed about pods, endpoints and the guardian.
// The report reads it; it is defined beside the platforms' other observations.
pub use zerodrop_evidence::{
    EndpointSample, GuardianCheck, LogLine, MeasuredDelay, PodEvent, PodEventKind, Propagation,
};

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
