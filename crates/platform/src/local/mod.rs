//! The local platform: real processes in their own PID namespaces, with the runner
//! playing the Deployment controller, the kubelet and the Service.

pub mod control;
pub mod deployment;
pub mod fault_relay;
pub mod follow;
mod guardian;
pub mod haproxy;
#[cfg(test)]
mod haproxy_routing_tests;
pub mod kubelet;
pub mod lab;
pub mod long_lived;
pub mod netns;
pub mod nft;
#[cfg(test)]
mod nft_kernel_tests;
pub mod platform;
pub mod pod;
pub mod prereq;
pub mod probe;
pub mod propagation;
pub mod recorder;
pub mod rollout;
pub mod service;
pub mod two_versions;

use anyhow::{bail, Result};
use deployment::Deployment;
use pod::{App, Isolation, Pod, PodTemplate};
use recorder::Recorder;
use service::{Dataplane, Service};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zerodrop_stages::Stage;

pub struct FleetConfig {
    pub api_replicas: u32,
    pub worker_replicas: u32,
    pub propagation: propagation::PropagationModel,
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
    /// Environment common to every pod (broker, database, queue, schema ...).
    pub base_env: Vec<(String, String)>,
    /// Extra environment for worker pods only.
    pub worker_env: Vec<(String, String)>,
    /// A command's own settings per app ([`crate::StageEnv::api_env`]), after the
    /// stage's, so they win.
    pub command_env: Vec<(App, String, String)>,
    pub isolation: Isolation,
    /// Third octet of the pods' 127.x.y.z addresses, so concurrent fleets never collide.
    pub subnet: u8,
    /// The Service's virtual IP (nftables DNAT in the lab's network namespace).
    pub vip: SocketAddrV4,
}

pub struct Fleet {
    cfg: FleetConfig,
    pub stage: Stage,
    pub rec: Arc<Recorder>,
    service: Arc<Service>,
    stop: CancellationToken,
    api: Deployment,
    worker: Deployment,
    seq: u32,
    terminations: Vec<JoinHandle<()>>,
    /// Environment changed by `rollout --set-env`, part of the pod template from the
    /// revision that introduced it on (as `kubectl set env` does).
    template_env: Vec<(App, String, String)>,
}

/// The experiment's bound on a rollout that stops making progress (as a Deployment's
/// `progressDeadlineSeconds`).
pub const ROLLOUT_PROGRESS_DEADLINE: Duration = Duration::from_secs(180);

impl Fleet {
    /// Creates both deployments at revision 1 and waits until every pod is ready.
    pub async fn up(cfg: FleetConfig, stage: Stage, rec: Arc<Recorder>) -> Result<Fleet> {
        if !netns::inside() {
            // The Service is nftables rules in the current network namespace: outside
            // the lab they would land in this machine's own firewall.
            bail!("a local fleet runs only inside the lab's network namespace (see local/netns.rs)");
        }
        let stop = CancellationToken::new();
        let plane = Dataplane::Nft { vip: cfg.vip };
        let service = Service::new(cfg.propagation, rec.clone(), stop.clone(), plane).await?;
        let api = Deployment { replicas: cfg.api_replicas, revision: 1, pods: Vec::new() };
        let worker = Deployment { replicas: cfg.worker_replicas, revision: 1, pods: Vec::new() };
        let mut fleet = Fleet {
            cfg,
            stage,
            rec,
            service,
            stop,
            api,
            worker,
            seq: 0,
            terminations: Vec::new(),
            template_env: Vec::new(),
        };
        for app in [App::Api, App::Worker] {
            let n = fleet.deployment(app).replicas;
            for _ in 0..n {
                fleet.create_pod(app).await?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = fleet.api.ready_count() == fleet.api.replicas
                && fleet.worker.ready_count() == fleet.worker.replicas
                && fleet.service.ready_endpoints() == fleet.api.replicas;
            if ready {
                return Ok(fleet);
            }
            if let Some(dead) = fleet.all_pods().find(|p| p.exited.load(Ordering::SeqCst)) {
                let log = std::fs::read_to_string(&dead.log_path).unwrap_or_default();
                let tail: Vec<_> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
                bail!("pod {} exited during startup; its last log lines:\n{}", dead.name, tail.join("\n"));
            }
            if Instant::now() > deadline {
                bail!(
                    "the fleet did not become ready within 60 s; see the pod logs in {}",
                    fleet.cfg.log_dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn deployment(&mut self, app: App) -> &mut Deployment {
        match app {
            App::Api => &mut self.api,
            App::Worker => &mut self.worker,
        }
    }

    pub fn all_pods(&self) -> impl Iterator<Item = &Arc<Pod>> {
        self.api.pods.iter().chain(self.worker.pods.iter())
    }

    pub fn service(&self) -> Arc<Service> {
        self.service.clone()
    }

    async fn create_pod(&mut self, app: App) -> Result<()> {
        self.seq += 1;
        let seq = self.seq;
        let dep = self.deployment(app);
        let revision = dep.revision;
        let name = format!("{}-r{}-{}", app.name(), revision, seq);
        let ip = Ipv4Addr::new(127, 77, self.cfg.subnet, (seq % 250 + 1) as u8);
        let b = match app {
            App::Api => self.stage.api,
            App::Worker => self.stage.worker,
        };
        let mut env = self.cfg.base_env.clone();
        if app == App::Worker {
            env.extend(self.cfg.worker_env.iter().cloned());
        }
        env.extend(b.to_env().into_iter().map(|(k, v)| (k.to_string(), v)));
        env.extend(self.stage.pod.to_app_env().into_iter().map(|(k, v)| (k.to_string(), v)));
        env.extend(self.cfg.command_env.iter().filter(|(a, _, _)| *a == app).map(|(_, k, v)| (k.clone(), v.clone())));
        // Later entries win: the command's environment is the process's, set in order.
        env.extend(self.template_env.iter().filter(|(a, _, _)| *a == app).map(|(_, k, v)| (k.clone(), v.clone())));
        let t = PodTemplate {
            app,
            revision,
            entrypoint: self.stage.pod.entrypoint,
            readiness: self.stage.pod.readiness,
            bin_dir: self.cfg.bin_dir.clone(),
            env,
            isolation: self.cfg.isolation,
        };
        let pod = Pod::start(&t, name, ip, &self.cfg.log_dir, self.rec.clone()).await?;
        if app == App::Api {
            self.service.watch(pod.clone());
        }
        self.deployment(app).pods.push(pod);
        Ok(())
    }

    fn terminate(&mut self, pod: Arc<Pod>) {
        if pod.terminating.swap(true, Ordering::SeqCst) {
            return;
        }
        let h = tokio::spawn(kubelet::terminate(pod, self.stage.pod, self.rec.clone()));
        self.terminations.push(h);
    }

    /// Both deployments as the rollout watch sees them.
    pub fn deployments(&self) -> [(&'static str, &Deployment); 2] {
        [(App::Api.name(), &self.api), (App::Worker.name(), &self.worker)]
    }

    /// Starts a rolling restart of both deployments, or of `only` one: a new
    /// pod-template revision, with `set_env` added to its pods' environment from this
    /// revision on.
    pub fn begin_rollout(&mut self, set_env: Vec<(String, String)>, only: Option<App>) {
        for app in [App::Api, App::Worker] {
            if only.is_none_or(|o| o == app) {
                self.deployment(app).revision += 1;
                self.template_env.extend(set_env.iter().map(|(k, v)| (app, k.clone(), v.clone())));
            }
        }
    }

    /// One reconcile step of the rollout, honouring the stage's strategy: terminates
    /// and creates what the plan says. True when both deployments are complete.
    pub async fn rollout_step(&mut self) -> Result<bool> {
        let strategy = self.stage.strategy;
        let mut complete = true;
        for app in [App::Api, App::Worker] {
            let plan = self.deployment(app).plan(strategy);
            complete &= plan.complete;
            let victims: Vec<_> = plan.terminate.iter().map(|&i| self.deployment(app).pods[i].clone()).collect();
            for pod in victims {
                self.terminate(pod);
            }
            for _ in 0..plan.create {
                self.create_pod(app).await?;
            }
        }
        Ok(complete)
    }

    /// A rolling restart of both deployments at once, to completion. Fails with
    /// [`crate::RolloutFailed`] and the reason, as `rollout --watch` would.
    pub async fn rollout(&mut self) -> Result<Duration> {
        self.rollout_with(Vec::new(), None).await
    }

    /// [`Fleet::rollout`] of a new pod template: `set_env` added from this revision
    /// on, of both deployments or `only` one (`crate::reconfigure::RolloutWithEnv`).
    pub async fn rollout_with(&mut self, set_env: Vec<(String, String)>, only: Option<App>) -> Result<Duration> {
        let started = Instant::now();
        self.begin_rollout(set_env, only);
        let mut watch = rollout::Watch::new(ROLLOUT_PROGRESS_DEADLINE, started);
        let rec = self.rec.clone();
        loop {
            let changed = rec.changed.notified();
            let complete = self.rollout_step().await?;
            match watch.check(&self.deployments(), complete, Instant::now()).0 {
                rollout::Verdict::Complete => return Ok(started.elapsed()),
                rollout::Verdict::Failed(why) => return Err(crate::RolloutFailed(why).into()),
                rollout::Verdict::Progressing => {}
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), changed).await;
        }
    }

    /// Waits until every pod that was told to terminate has exited.
    pub async fn wait_terminations(&mut self) {
        for h in self.terminations.drain(..) {
            let _ = h.await;
        }
    }

    /// Stops everything at once (outside any measurement).
    pub async fn down(mut self) {
        self.stop.cancel();
        if let Err(e) = self.service.close().await {
            eprintln!("warning: removing the Service's rules: {e:#}");
        }
        let pods: Vec<_> = self.all_pods().cloned().collect();
        for p in &pods {
            p.signal(libc::SIGKILL);
        }
        for p in &pods {
            p.kill_now().await;
        }
        for h in self.terminations.drain(..) {
            h.abort();
        }
    }
}
