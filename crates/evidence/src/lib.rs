//! What a platform observed, in the words every platform and the report share: pod
//! events, endpoint samples, lifecycle log lines, the propagation delay and the
//! guardian exercise. A platform produces these; the report reads them; neither knows
//! the other.

mod read;
pub mod routing;

pub use read::{parse_line, read_pod_log};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Wall-clock milliseconds since the epoch: the clock every observation carries.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Something the platform saw happen to a pod, on the wall clock (unix ms).
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub unix_ms: i64,
    pub pod: String,
    pub app: &'static str,
    pub kind: PodEventKind,
    pub detail: String,
}

/// A pod's log, as kept on the runner's disk.
#[derive(Debug, Clone)]
pub struct PodLog {
    pub pod: String,
    pub app: &'static str,
    pub path: PathBuf,
}

/// Everything a platform observed during one stage.
#[derive(Debug, Default)]
pub struct Observed {
    pub events: Vec<RawEvent>,
    /// (unix ms, ready api endpoints), one sample per change.
    pub endpoints: Vec<(i64, u32)>,
    pub pod_logs: Vec<PodLog>,
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

impl Propagation {
    /// One line for a report: what the platform measured, else the delay it applies.
    pub fn describe(&self) -> String {
        match (self.measured, self.configured_ms) {
            (Some(m), configured) => {
                let configured = configured.map(|c| format!("; configured {c} ms")).unwrap_or_default();
                format!(
                    "measured p50 {} ms, max {} ms over {} pods: {}{configured}",
                    m.p50_ms, m.max_ms, m.n, self.what
                )
            }
            (None, Some(c)) if self.what.is_empty() => {
                format!("{c} ms (Service keeps routing to a terminating pod)")
            }
            (None, Some(c)) => format!("{c} ms on average: {}", self.what),
            (None, None) => format!("not measured: {}", self.what),
        }
    }
}

impl MeasuredDelay {
    /// Median (upper for an even count) and maximum of `ms`; `None` when empty.
    pub fn of(ms: &[i64]) -> Option<MeasuredDelay> {
        let mut v = ms.to_vec();
        v.sort_unstable();
        Some(MeasuredDelay { p50_ms: *v.get(v.len() / 2)?, max_ms: *v.last()?, n: v.len() as u32 })
    }
}
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
