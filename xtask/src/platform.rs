//! The one interface between the experiment and a platform. The experiment and the
//! report only ever see what is declared here; `local` (processes on this machine)
//! and, later, `kind` (a real cluster) implement it.

use crate::report::model::{GuardianCheck, PodEventKind};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use zerodrop_load::{Live, Profile, RunResult};
use zerodrop_stages::Stage;

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

/// What differs between the stages of one run besides the stage itself: where the
/// jobs go and how big the fleet is.
#[derive(Debug, Clone)]
pub struct StageEnv {
    pub queue: String,
    pub schema: String,
    pub api_replicas: u32,
    pub worker_replicas: u32,
    pub api_capacity: u32,
    pub job_work: Duration,
    /// Keeps pod addresses of different stages apart.
    pub index: usize,
}

/// A load run under way; resolves to its result.
pub type LoadRun = JoinHandle<Result<RunResult>>;

#[allow(async_fn_in_trait)]
pub trait Platform {
    /// One line for progress output and the report.
    fn describe(&self) -> String;
    /// Broker and database as the runner reaches them (for reconciliation).
    fn amqp_url(&self) -> &str;
    fn database_url(&self) -> &str;
    /// A fresh api + worker deployment of `stage`, every pod ready. Pod logs go to
    /// `log_dir`.
    async fn deploy(&mut self, stage: &Stage, env: &StageEnv, log_dir: &Path) -> Result<()>;
    /// Starts `profile` against the api Service; returns once requests are flowing.
    async fn start_load(&mut self, profile: &Profile, job_prefix: &str, live: Arc<Live>) -> Result<LoadRun>;
    /// One line telling a human how to aim their own client (curl, wrk, hey) at the
    /// api Service during the stage, where the platform offers a way.
    fn client_hint(&self) -> Option<String> {
        None
    }
    /// The api Service's URL as a process started by this runner reaches it (for
    /// `--alongside`), where the platform offers one.
    fn service_url(&self) -> Option<String> {
        None
    }
    /// How long the Service keeps routing to a terminating pod, as this platform
    /// knows it (a delay it applies, or what it measured over the stages so far).
    fn propagation(&self) -> Option<crate::report::model::Propagation> {
        None
    }
    /// Starts the keep-alive client profile against the api Service (the thundering
    /// reconnect). A platform without a runner-side client in the Service's network
    /// says so.
    async fn start_keepalive_load(
        &mut self,
        _profile: &zerodrop_load::keepalive::KeepAliveProfile,
        _live: Arc<Live>,
    ) -> Result<JoinHandle<zerodrop_load::keepalive::KeepAliveResult>> {
        anyhow::bail!("{} cannot run the keep-alive client profile", self.describe())
    }
    /// A reader of the api pods' listen queues (accept queue length and backlog), where
    /// the runner shares their network namespace.
    fn listen_queues(&self) -> Option<crate::reconnect::accept_queue::Reader> {
        None
    }
    /// Ready api endpoints right now (for the progress line).
    fn ready_endpoints(&self) -> u32;
    /// Rolling restart of both deployments; returns when both are complete.
    async fn rollout(&mut self) -> Result<Duration>;
    /// Waits until every pod told to terminate has exited.
    async fn wait_terminations(&mut self) -> Result<()>;
    /// Stops the stage's fleet and hands over what was observed.
    async fn finish_stage(&mut self) -> Result<Observed>;
    /// One api instance with the final stage's settings, a request longer than its
    /// budget, SIGTERM: the guardian must force the exit.
    async fn guardian_exercise(&mut self, log_dir: &Path) -> Result<GuardianCheck>;
}
