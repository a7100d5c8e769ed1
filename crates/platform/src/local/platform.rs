//! The local platform behind the [`Platform`] interface.

use super::nft::VIP;
use super::pod::Isolation;
use super::recorder::Recorder;
use super::{guardian, Fleet, FleetConfig};
use crate::{LoadRun, Observed, Platform, PodLog, StageEnv};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zerodrop_evidence::{GuardianCheck, PodEventKind};
use zerodrop_load::{Live, Profile};
use zerodrop_stages::Stage;

pub struct LocalPlatform {
    amqp_url: String,
    database_url: String,
    bin_dir: PathBuf,
    isolation: Isolation,
    propagation: super::propagation::PropagationModel,
    fleet: Option<Fleet>,
    rec: Arc<Recorder>,
    log_dir: PathBuf,
    /// The lab's run id, for `cargo xtask client --run`.
    lab_run: String,
    /// The chaos runs' relay on the api pods' broker path, and the AMQP URL through it.
    broker_relay: Option<(super::fault_relay::FaultRelay, String)>,
}

impl LocalPlatform {
    pub fn new(
        amqp_url: String,
        database_url: String,
        bin_dir: PathBuf,
        isolation: Isolation,
        propagation: super::propagation::PropagationModel,
        lab_run: String,
    ) -> Self {
        LocalPlatform {
            amqp_url,
            database_url,
            bin_dir,
            isolation,
            propagation,
            fleet: None,
            rec: Arc::new(Recorder::default()),
            log_dir: PathBuf::new(),
            lab_run,
            broker_relay: None,
        }
    }

    pub(crate) fn set_broker_relay(&mut self, relay: super::fault_relay::FaultRelay, url: String) {
        self.broker_relay = Some((relay, url));
    }

    pub(crate) fn broker_relay(&self) -> Option<&super::fault_relay::FaultRelay> {
        self.broker_relay.as_ref().map(|(r, _)| r)
    }

    pub(crate) fn fleet(&mut self) -> Result<&mut Fleet> {
        self.fleet.as_mut().context("no fleet deployed")
    }

    /// The deployed fleet's Service address, for clients the runner starts itself; the
    /// endpoints it has now are recorded as the load's starting point.
    pub(crate) fn service_vip(&mut self) -> Result<std::net::SocketAddrV4> {
        let svc = self.fleet()?.service();
        self.rec.endpoints_now(svc.ready_endpoints());
        Ok(svc.vip())
    }
}

impl Platform for LocalPlatform {
    fn describe(&self) -> String {
        format!("local ({})", self.isolation.describe())
    }

    fn propagation(&self) -> Option<zerodrop_evidence::Propagation> {
        Some(zerodrop_evidence::Propagation {
            configured_ms: Some(self.propagation.mean().as_millis() as u64),
            measured: None,
            what: format!("the local Service applies each endpoint change {}", self.propagation.describe()),
        })
    }

    fn amqp_url(&self) -> &str {
        &self.amqp_url
    }

    fn database_url(&self) -> &str {
        &self.database_url
    }

    async fn deploy(&mut self, stage: &Stage, env: &StageEnv, log_dir: &Path) -> Result<()> {
        self.rec = Arc::new(Recorder::default());
        self.log_dir = log_dir.to_path_buf();
        let cfg = FleetConfig {
            api_replicas: env.api_replicas,
            worker_replicas: env.worker_replicas,
            propagation: self.propagation,
            bin_dir: self.bin_dir.clone(),
            log_dir: log_dir.to_path_buf(),
            base_env: vec![
                ("AMQP_URL".into(), self.amqp_url.clone()),
                ("DATABASE_URL".into(), self.database_url.clone()),
                ("ZD_QUEUE".into(), env.queue.clone()),
                ("ZD_DB_SCHEMA".into(), env.schema.clone()),
                ("ZD_CAPACITY".into(), env.api_capacity.to_string()),
            ],
            worker_env: vec![("ZD_JOB_WORK_MS".into(), env.job_work.as_millis().to_string())],
            command_env: self.command_env(env),
            isolation: self.isolation,
            subnet: (env.index % 200) as u8 + 1,
            vip: VIP,
        };
        self.fleet = Some(Fleet::up(cfg, stage.clone(), self.rec.clone()).await?);
        Ok(())
    }

    async fn start_load(&mut self, profile: &Profile, job_prefix: &str, live: Arc<Live>) -> Result<LoadRun> {
        let svc = self.fleet()?.service();
        self.rec.endpoints_now(svc.ready_endpoints());
        // A plain client of the Service's virtual IP: which pod a new connection
        // reaches is the kernel's DNAT decision, not ours.
        let resolver: Arc<dyn zerodrop_load::Resolver> =
            Arc::new(zerodrop_load::FixedResolver(std::net::SocketAddr::V4(svc.vip())));
        let (profile, prefix) = (profile.clone(), job_prefix.to_string());
        Ok(tokio::spawn(async move { Ok(zerodrop_load::run(&profile, resolver, &prefix, live).await) }))
    }

    fn client_hint(&self) -> Option<String> {
        Some(super::netns::client_hint(&self.lab_run, VIP))
    }

    fn service_url(&self) -> Option<String> {
        Some(format!("http://{}", VIP.ip()))
    }

    fn ready_endpoints(&self) -> u32 {
        self.fleet.as_ref().map(|f| f.service().ready_endpoints()).unwrap_or(0)
    }

    async fn rollout(&mut self) -> Result<Duration> {
        self.fleet()?.rollout().await
    }

    async fn wait_terminations(&mut self) -> Result<()> {
        self.fleet()?.wait_terminations().await;
        Ok(())
    }

    async fn finish_stage(&mut self) -> Result<Observed> {
        if let Some(f) = self.fleet.take() {
            f.down().await;
        }
        let events = self.rec.events();
        let mut pod_logs: Vec<PodLog> = Vec::new();
        for e in &events {
            if e.kind == PodEventKind::Created && !pod_logs.iter().any(|p| p.pod == e.pod) {
                pod_logs.push(PodLog {
                    pod: e.pod.clone(),
                    app: e.app,
                    path: self.log_dir.join(format!("{}.log", e.pod)),
                });
            }
        }
        Ok(Observed { events, endpoints: self.rec.endpoint_samples(), pod_logs })
    }

    async fn guardian_exercise(&mut self, log_dir: &Path) -> Result<GuardianCheck> {
        guardian::run(&self.amqp_url, &self.bin_dir, self.isolation, log_dir).await
    }
}

impl crate::KeepAliveLoad for LocalPlatform {
    async fn start_keepalive_load(
        &mut self,
        profile: &zerodrop_load::keepalive::KeepAliveProfile,
        live: Arc<Live>,
    ) -> Result<tokio::task::JoinHandle<Result<zerodrop_load::keepalive::KeepAliveResult>>> {
        let svc = self.fleet()?.service();
        self.rec.endpoints_now(svc.ready_endpoints());
        let (profile, addr) = (profile.clone(), std::net::SocketAddr::V4(svc.vip()));
        Ok(tokio::spawn(async move { Ok(zerodrop_load::keepalive::run(&profile, addr, live).await) }))
    }

    fn watch_listen_queues(&mut self, every: Duration) -> Result<crate::accept_queue::Watch> {
        // The runner lives in the lab's network namespace: its /proc/net/tcp lists
        // every pod's listening socket, and its netstat counts their drops.
        Ok(crate::accept_queue::Reader::new(super::pod::App::Api.port()).watch(every))
    }
}

impl crate::router::TwoVersions for LocalPlatform {
    type Fleet = super::two_versions::VersionFleet;

    async fn two_versions(&mut self, spec: &crate::router::TwoVersionsSpec, log_dir: &Path) -> Result<Self::Fleet> {
        let backing = super::two_versions::Backing { amqp_url: &self.amqp_url, database_url: &self.database_url };
        super::two_versions::VersionFleet::up(backing, &self.bin_dir, self.isolation, spec, log_dir).await
    }
}

impl LocalPlatform {
    /// [`StageEnv::api_env`] and [`StageEnv::worker_env`], each tagged with its app;
    /// with a fault relay, the api pods' broker URL points at it.
    fn command_env(&self, env: &StageEnv) -> Vec<(super::pod::App, String, String)> {
        use super::pod::App;
        let tag = |app: App, vars: &[(String, String)]| {
            vars.iter().map(move |(k, v)| (app, k.clone(), v.clone())).collect::<Vec<_>>()
        };
        let relay = self.broker_relay.iter().map(|(_, url)| (App::Api, "AMQP_URL".to_string(), url.clone()));
        [tag(App::Api, &env.api_env), tag(App::Worker, &env.worker_env), relay.collect()].concat()
    }
}

/// Faults on the api pods' broker path, through a relay in the runner
/// ([`super::fault_relay`]).
impl crate::DependencyFaults for LocalPlatform {
    async fn relay_dependency(&mut self, dep: crate::Dependency) -> Result<()> {
        match dep {
            crate::Dependency::Broker => {
                let (ep, _) = crate::infra::amqp_endpoint(self.amqp_url())?;
                let crate::infra::Endpoint::Tcp { host, port } = ep else {
                    anyhow::bail!("the broker is not reached over TCP; nothing to relay")
                };
                let relay = super::fault_relay::FaultRelay::start((host, port)).await?;
                let url = super::netns::rewrite_authority(self.amqp_url(), &relay.addr().to_string())?;
                eprintln!("[chaos] api pods reach the broker through the fault relay at {}", relay.addr());
                self.set_broker_relay(relay, url);
                Ok(())
            }
        }
    }

    async fn set_fault(&mut self, fault: Option<crate::NetFault>) -> Result<()> {
        let relay = self.broker_relay().context("no fault relay: call relay_dependency before deploy")?;
        relay.set(fault);
        tracing::info!(step = "fault", fault = ?fault, "fault on the broker path");
        Ok(())
    }
}
