//! Two versions of the api side by side behind HAProxy, in the lab's network
//! namespace: `replicas` v1 pods in `stable`, `replicas` v2 pods in `canary`, each a
//! real process tree with the final stage's lifecycle (drain, reverse teardown).

use super::scrape::{self, Counts};
use anyhow::{bail, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerodrop_platform::infra::Backends;
use zerodrop_platform::local::haproxy::{BackendStat, Haproxy, Layout, Server};
use zerodrop_platform::local::kubelet;
use zerodrop_platform::local::pod::{App, Isolation, Pod, PodTemplate};
use zerodrop_platform::local::recorder::Recorder;
use zerodrop_stages::{Stage, StageName};

/// Where the routing tier listens inside the lab.
pub const ROUTER: &str = "127.96.1.1:8000";

pub struct VersionSpec {
    pub name: &'static str,
    pub regression: String,
}

/// The fleet of one run, with the pods' lifetimes for the pod-seconds count.
pub struct Fleet {
    pub stable: Vec<Arc<Pod>>,
    pub canary: Vec<Arc<Pod>>,
    pub router: Haproxy,
    stage: Stage,
    rec: Arc<Recorder>,
    started: Instant,
    ended: Vec<(String, Instant)>,
    /// Each pod's last /metrics reading: a retired pod's counts outlive its process.
    seen: std::sync::Mutex<std::collections::HashMap<String, Counts>>,
}

/// Both sides' counters at one instant: the routing tier's and the apps'.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub router: (BackendStat, BackendStat),
    pub app_stable: Counts,
    pub app_canary: Counts,
}

impl Fleet {
    pub async fn up(
        backends: &Backends,
        bin_dir: &Path,
        log_dir: &Path,
        replicas: u32,
        v1: &VersionSpec,
        v2: &VersionSpec,
    ) -> Result<Fleet> {
        std::fs::create_dir_all(log_dir)?;
        let stage = Stage::get(StageName::SurgeJitter);
        let rec = Arc::new(Recorder::default());
        let isolation = Isolation::detect();
        let mut sides = Vec::new();
        for (subnet, v) in [(1u8, v1), (2u8, v2)] {
            let mut pods = Vec::new();
            for i in 1..=replicas {
                let mut env: Vec<(String, String)> = vec![
                    ("AMQP_URL".into(), backends.amqp_url.clone()),
                    ("ZD_QUEUE".into(), "zerodrop.progressive".into()),
                    ("ZD_CAPACITY".into(), "64".into()),
                    ("ZD_VERSION".into(), v.name.into()),
                    ("ZD_REGRESSION".into(), v.regression.clone()),
                ];
                env.extend(stage.api.to_env().into_iter().map(|(k, v)| (k.to_string(), v)));
                let t = PodTemplate {
                    app: App::Api,
                    revision: subnet as u32,
                    entrypoint: stage.pod.entrypoint,
                    readiness: stage.pod.readiness,
                    bin_dir: bin_dir.to_path_buf(),
                    env,
                    isolation,
                };
                let ip = Ipv4Addr::new(127, 78, subnet, i as u8);
                pods.push(Pod::start(&t, format!("api-{}-{i}", v.name), ip, log_dir, rec.clone()).await?);
            }
            sides.push(pods);
        }
        let canary = sides.pop().unwrap_or_default();
        let stable = sides.pop().unwrap_or_default();
        wait_ready(stable.iter().chain(&canary), log_dir).await?;
        let server = |p: &Arc<Pod>| Server { name: p.name.clone(), addr: p.addr };
        let layout = Layout {
            bind: ROUTER.parse()?,
            stable: stable.iter().map(server).collect(),
            canary: canary.iter().map(server).collect(),
        };
        let router = Haproxy::start(&layout, &log_dir.join("haproxy")).await?;
        router.wait_all_up(Duration::from_secs(15)).await?;
        Ok(Fleet {
            stable,
            canary,
            router,
            stage,
            rec,
            started: Instant::now(),
            ended: Vec::new(),
            seen: Default::default(),
        })
    }

    pub fn router_addr(&self) -> SocketAddr {
        self.router.bind
    }

    pub async fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            router: self.router.stats().await?,
            app_stable: self.sum(&self.stable).await?,
            app_canary: self.sum(&self.canary).await?,
        })
    }

    /// Takes `pods` out of the routing tier (drain) and terminates them the kubelet's
    /// way: preStop, SIGTERM, the app's own drain, SIGKILL only past the grace period.
    pub async fn retire_stable(&mut self) -> Result<()> {
        for p in &self.stable {
            self.router.drain("stable", &p.name).await?;
        }
        let mut handles = Vec::new();
        for p in &self.stable {
            p.terminating.store(true, Ordering::SeqCst);
            handles.push(tokio::spawn(kubelet::terminate(p.clone(), self.stage.pod, self.rec.clone())));
        }
        for h in handles {
            let _ = h.await;
        }
        for p in &self.stable {
            self.ended.push((p.name.clone(), Instant::now()));
        }
        Ok(())
    }

    /// Pod-seconds used so far: every pod from the fleet's start to its end (or now).
    pub fn pod_seconds(&self) -> f64 {
        self.stable
            .iter()
            .chain(&self.canary)
            .map(|p| {
                let end = self.ended.iter().find(|(n, _)| *n == p.name).map(|(_, t)| *t).unwrap_or_else(Instant::now);
                end.saturating_duration_since(self.started).as_secs_f64()
            })
            .sum()
    }

    /// The apps' counters of one side. A pod on its way out (or gone) counts with its
    /// last reading: what it served before exiting still happened.
    async fn sum(&self, pods: &[Arc<Pod>]) -> Result<Counts> {
        let mut total = Counts::default();
        for p in pods {
            let leaving = p.terminating.load(Ordering::SeqCst) || p.exited.load(Ordering::SeqCst);
            let reading = match scrape::fetch(p.addr).await {
                Ok(c) => c,
                Err(e) if !leaving => return Err(e),
                Err(_) => self.seen.lock().ok().and_then(|m| m.get(&p.name).cloned()).unwrap_or_default(),
            };
            total.add(&reading);
            if let Ok(mut m) = self.seen.lock() {
                m.insert(p.name.clone(), reading);
            }
        }
        Ok(total)
    }

    pub async fn down(self) {
        self.router.stop().await;
        for p in self.stable.iter().chain(&self.canary) {
            p.signal(libc::SIGKILL);
        }
        for p in self.stable.iter().chain(&self.canary) {
            p.kill_now().await;
        }
    }
}

async fn wait_ready<'a>(pods: impl Iterator<Item = &'a Arc<Pod>> + Clone, log_dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if pods.clone().all(|p| p.ready.load(Ordering::SeqCst)) {
            return Ok(());
        }
        if let Some(dead) = pods.clone().find(|p| p.exited.load(Ordering::SeqCst)) {
            let log = std::fs::read_to_string(&dead.log_path).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("pod {} exited during startup:\n{}", dead.name, tail.join("\n"));
        }
        if Instant::now() > deadline {
            bail!("the two versions were not ready within 60 s; see {}", log_dir.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where a run's pod logs go.
pub fn log_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("logs")
}
