//! The local platform's [`TwoVersions`](crate::router::TwoVersions): two versions of
//! the api side by side behind HAProxy, in the lab's network namespace: `replicas` v1
//! pods in `stable`, `replicas` v2 pods in `canary`, each a real process tree with the
//! final stage's lifecycle (drain, reverse teardown). The apps' counters are read from
//! each pod's `/metrics` over plain HTTP. With [`JobsSpec`], two workers as well: v1's
//! on the work queue and v2's on the shadow sink, each writing its own ledger schema.

use super::haproxy::{Haproxy, Layout, Server};
use super::kubelet;
use super::pod::{App, Isolation, Pod, PodTemplate};
use super::recorder::Recorder;
use crate::router::{Counts, JobsSpec, RoutedFleet, Snapshot, TwoVersionsSpec};
use crate::LoadRun;
use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zerodrop_load::{Live, Profile};
use zerodrop_stages::{Stage, StageName};

/// Where the routing tier listens inside the lab.
pub const ROUTER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 96, 1, 1), 8000);

/// The fleet of one run, with the pods' lifetimes for the pod-seconds count.
pub struct VersionFleet {
    pub stable: Vec<Arc<Pod>>,
    pub canary: Vec<Arc<Pod>>,
    /// With jobs: the work queue's worker (v1) and the shadow sink's (v2).
    pub workers: Vec<Arc<Pod>>,
    pub router: Haproxy,
    stage: Stage,
    rec: Arc<Recorder>,
    started: Instant,
    ended: Vec<(String, Instant)>,
    /// Each pod's last /metrics reading: a retired pod's counts outlive its process.
    seen: std::sync::Mutex<std::collections::HashMap<String, Counts>>,
}

/// The broker and the database as the pods reach them.
pub struct Backing<'a> {
    pub amqp_url: &'a str,
    pub database_url: &'a str,
}

impl VersionFleet {
    /// Starts both versions with the final stage's settings and the routing tier in
    /// front of them; returns once HAProxy sees every pod UP.
    pub async fn up(
        backing: Backing<'_>,
        bin_dir: &Path,
        isolation: Isolation,
        spec: &TwoVersionsSpec,
        log_dir: &Path,
    ) -> Result<VersionFleet> {
        std::fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let stage = Stage::get(StageName::SurgeJitter);
        let rec = Arc::new(Recorder::default());
        let mut sides = Vec::new();
        for (subnet, v) in [(1u8, &spec.v1), (2u8, &spec.v2)] {
            let mut pods = Vec::new();
            for i in 1..=spec.replicas {
                let queue = spec.jobs.as_ref().map_or("zerodrop.progressive", |j| j.queue.as_str());
                let mut env: Vec<(String, String)> = vec![
                    ("AMQP_URL".into(), backing.amqp_url.to_string()),
                    ("ZD_QUEUE".into(), queue.into()),
                    ("ZD_CAPACITY".into(), "64".into()),
                    ("ZD_VERSION".into(), v.name.into()),
                    ("ZD_REGRESSION".into(), v.regression.clone()),
                ];
                if let Some(j) = &spec.jobs {
                    env.push(("ZD_SHADOW_QUEUE".into(), j.shadow_queue.clone()));
                }
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
        let mut workers = Vec::new();
        if let Some(j) = &spec.jobs {
            for (i, w) in workers_of(j, &backing).into_iter().enumerate() {
                let mut env = w.env;
                env.extend(stage.worker.to_env().into_iter().map(|(k, v)| (k.to_string(), v)));
                let t = PodTemplate {
                    app: App::Worker,
                    revision: i as u32 + 1,
                    entrypoint: stage.pod.entrypoint,
                    readiness: stage.pod.readiness,
                    bin_dir: bin_dir.to_path_buf(),
                    env,
                    isolation,
                };
                let ip = Ipv4Addr::new(127, 78, 3, i as u8 + 1);
                workers.push(Pod::start(&t, w.name.into(), ip, log_dir, rec.clone()).await?);
            }
        }
        wait_ready(stable.iter().chain(&canary).chain(&workers), log_dir).await?;
        let server = |p: &Arc<Pod>| Server { name: p.name.clone(), addr: p.addr };
        let layout = Layout {
            bind: ROUTER.into(),
            stable: stable.iter().map(server).collect(),
            canary: canary.iter().map(server).collect(),
            routing: spec.routing.clone(),
        };
        let router = Haproxy::start(&layout, &log_dir.join("haproxy")).await?;
        router.api.wait_all_up(Duration::from_secs(15)).await?;
        Ok(VersionFleet {
            stable,
            canary,
            workers,
            router,
            stage,
            rec,
            started: Instant::now(),
            ended: Vec::new(),
            seen: Default::default(),
        })
    }

    /// The apps' counters of one side. A pod on its way out (or gone) counts with its
    /// last reading: what it served before exiting still happened.
    async fn sum(&self, pods: &[Arc<Pod>]) -> Result<Counts> {
        let mut total = Counts::default();
        for p in pods {
            let leaving = p.terminating.load(Ordering::SeqCst) || p.exited.load(Ordering::SeqCst);
            let reading = match fetch(p.addr).await {
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
}

impl RoutedFleet for VersionFleet {
    fn router_addr(&self) -> SocketAddr {
        self.router.bind
    }

    /// The runner's own load generator, aimed at the routing tier's address.
    async fn start_load(&self, profile: Profile) -> Result<LoadRun> {
        let resolver: Arc<dyn zerodrop_load::Resolver> = Arc::new(zerodrop_load::FixedResolver(self.router.bind));
        Ok(tokio::spawn(async move {
            Ok(zerodrop_load::run(&profile, resolver, "progressive", Arc::new(Live::new())).await)
        }))
    }

    async fn set_canary_permille(&self, permille: u32) -> Result<()> {
        self.router.api.set_permille(permille).await
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            router: self.router.api.stats().await?,
            app_stable: self.sum(&self.stable).await?,
            app_canary: self.sum(&self.canary).await?,
        })
    }

    /// Drain at the routing tier first, then the kubelet's way: preStop, SIGTERM, the
    /// app's own drain, SIGKILL only past the grace period.
    async fn retire_stable(&mut self) -> Result<()> {
        for p in &self.stable {
            self.router.api.drain("stable", &p.name).await?;
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

    fn pod_seconds(&self) -> f64 {
        self.stable
            .iter()
            .chain(&self.canary)
            .map(|p| {
                let end = self.ended.iter().find(|(n, _)| *n == p.name).map(|(_, t)| *t).unwrap_or_else(Instant::now);
                end.saturating_duration_since(self.started).as_secs_f64()
            })
            .sum()
    }

    async fn down(self) {
        self.router.stop().await;
        for p in self.stable.iter().chain(&self.canary).chain(&self.workers) {
            p.signal(libc::SIGKILL);
        }
        for p in self.stable.iter().chain(&self.canary).chain(&self.workers) {
            p.kill_now().await;
        }
    }
}

/// One worker of a two-versions fleet: its pod name and its own environment.
struct WorkerSpec {
    name: &'static str,
    env: Vec<(String, String)>,
}

/// v1's worker on the work queue and the users' ledger; v2's on the shadow sink and
/// the shadow ledger (the shadow exercises v2 end to end, its writes included).
fn workers_of(j: &JobsSpec, backing: &Backing<'_>) -> Vec<WorkerSpec> {
    let env = |queue: &str, schema: &str| {
        vec![
            ("AMQP_URL".to_string(), backing.amqp_url.to_string()),
            ("DATABASE_URL".to_string(), backing.database_url.to_string()),
            ("ZD_QUEUE".to_string(), queue.to_string()),
            ("ZD_DB_SCHEMA".to_string(), schema.to_string()),
        ]
    };
    vec![
        WorkerSpec { name: zerodrop_manifests::WORKER, env: env(&j.queue, &j.schema) },
        WorkerSpec { name: zerodrop_manifests::SHADOW_WORKER, env: env(&j.shadow_queue, &j.shadow_schema) },
    ]
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

/// GET http://addr/metrics with a plain HTTP/1.0 request (no client library needed).
async fn fetch(addr: SocketAddr) -> Result<Counts> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: pod\r\n\r\n").await?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let raw = tokio::time::timeout(Duration::from_secs(2), work)
        .await
        .with_context(|| format!("{addr}/metrics did not answer within 2 s"))?
        .with_context(|| format!("reading {addr}/metrics"))?;
    let Some((head, body)) = raw.split_once("\r\n\r\n") else { bail!("{addr}/metrics: no HTTP body") };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{addr}/metrics answered {}", head.lines().next().unwrap_or(""));
    }
    Ok(zerodrop_evidence::routing::parse_metrics(body))
}
