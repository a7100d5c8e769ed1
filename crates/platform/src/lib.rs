//! The one interface between the runner's commands and a platform, and its two
//! implementations: `local` (processes on this machine, in a lab network namespace)
//! and `kind` (a real cluster through kube-rs). The experiment and the report only ever
//! see what the trait declares; what a platform observed comes back in
//! `zerodrop_evidence`'s words.

pub mod accept_queue;
pub mod fault;
pub mod guardian;
pub mod infra;
pub mod kind;
pub mod local;
pub mod long_lived;
mod private_dir;
pub mod profile;
pub mod reconfigure;
pub mod router;
mod sys;
pub mod uid;
pub mod workspace;

use anyhow::Result;
pub use fault::{Dependency, DependencyFaults, NetFault};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use zerodrop_evidence::GuardianCheck;
pub use zerodrop_evidence::{now_ms, Observed, PodLog, RawEvent};
use zerodrop_load::{Live, Profile, RunResult};
use zerodrop_stages::Stage;

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
    /// The stage's listen queues will be watched ([`KeepAliveLoad::watch_listen_queues`]):
    /// on a cluster every api pod then carries a sidecar that reads them.
    pub listen_queues: bool,
    /// A command's own settings for the api pods (fault injection, the breaker), set
    /// after the platform's and the stage's, so they win. Empty for the staircase.
    pub api_env: Vec<(String, String)>,
    /// The same for the worker pods (which ledger columns they write).
    pub worker_env: Vec<(String, String)>,
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
    fn propagation(&self) -> Option<zerodrop_evidence::Propagation> {
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

/// A capability: the keep-alive client profile against the api Service, and a view of
/// the api pods' listen queues (the thundering reconnect). Locally the runner shares
/// the pods' network namespace and reads both itself; on a cluster the clients run
/// as a Job and each api pod's sidecar reads its own queue.
#[allow(async_fn_in_trait)]
pub trait KeepAliveLoad: Platform {
    /// Starts the keep-alive clients; returns once they are connecting, with a task
    /// resolving to what they measured.
    async fn start_keepalive_load(
        &mut self,
        profile: &zerodrop_load::keepalive::KeepAliveProfile,
        live: Arc<Live>,
    ) -> Result<JoinHandle<Result<zerodrop_load::keepalive::KeepAliveResult>>>;
    /// Starts watching the api pods' listen queues, sampled every `every`. The stage
    /// must have been deployed with [`StageEnv::listen_queues`].
    fn watch_listen_queues(&mut self, every: Duration) -> Result<accept_queue::Watch>;
}

/// Which platform a command runs on (`--platform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlatformKind {
    // kind when Docker and kind are on PATH, else local (see kind::prereq::choose_auto).
    Auto,
    Local,
    Kind,
}

/// A rollout failed or made no progress in time (the runner exits 4 on it).
#[derive(Debug, thiserror::Error)]
#[error("rollout failed: {0}")]
pub struct RolloutFailed(pub String);
