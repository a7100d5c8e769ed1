//! The running two-versions fleet on a cluster, driven as a [`RoutedFleet`].

use super::layout::{Targets, CANARY, ROUTER, STABLE, STABLE_BACKEND};
use super::ledger::{need, Ledger, Need};
use super::load;
use super::wire::{fetch_metrics, TcpTransport};
use crate::kind::forward::Forward;
use crate::kind::log_stream::spawn_log_stream;
use crate::kind::objects::Rendered;
use crate::kind::{apply, KindOptions, FIELD_MANAGER};
use crate::router::runtime_api::RuntimeApi;
use crate::router::{Counts, RoutedFleet, Snapshot};
use crate::LoadRun;
use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zerodrop_load::Profile;
use zerodrop_manifests::{RenderOptions, APP_LABEL};

pub struct KindVersionFleet {
    pub(super) client: Client,
    pub(super) opts: KindOptions,
    pub(super) render: RenderOptions,
    pub(super) objects: Vec<Rendered>,
    pub(super) targets: Targets,
    pub(super) api: RuntimeApi<TcpTransport>,
    /// HAProxy's frontend, for `router_addr`.
    pub(super) frontend: Forward,
    /// HAProxy's runtime API; `api` connects through it.
    pub(super) runtime: Forward,
    pub(super) log_dir: PathBuf,
    pub(super) ledger: Mutex<Ledger>,
    /// Cuts the pods' log streams at `down`.
    pub(super) stop: CancellationToken,
    pub(super) log_tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The load Jobs applied so far, deleted at `down`.
    pub(super) jobs: Mutex<Vec<String>>,
    pub(super) loads: AtomicUsize,
}

/// A poisoned lock only means another task panicked while holding it; the data (a
/// ledger, a list of names) is still what it was.
fn locked<T, R>(m: &Mutex<T>, f: impl FnOnce(&mut T) -> R) -> R {
    f(&mut m.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The patch that scales a Deployment.
pub fn scale_patch(replicas: i32) -> serde_json::Value {
    serde_json::json!({ "spec": { "replicas": replicas } })
}

/// Waits, on a watch of `app`'s pods fed into `ledger`, until the watch has listed them
/// and none the ledger knows of is left.
pub async fn wait_gone(pods: Api<Pod>, ledger: &Mutex<Ledger>, app: &str, limit: Duration) -> Result<()> {
    let cfg = watcher::Config::default().labels(&format!("{APP_LABEL}={app}"));
    let mut stream = std::pin::pin!(watcher(pods, cfg).default_backoff());
    let work = async {
        let (mut listed, mut warned) = (false, false);
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    if !warned {
                        eprintln!("warning: watching the {app} pods: {e} (retrying)");
                        warned = true;
                    }
                    continue;
                }
            };
            listed |= matches!(ev, Event::InitDone);
            let left = locked(ledger, |l| {
                l.apply(app, &ev, Timestamp::now());
                l.present(app)
            });
            if listed && left.is_empty() {
                return Ok(());
            }
        }
        bail!("the watch of the {app} pods ended")
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => bail!("{app} pods still there after {limit:?}: {}", locked(ledger, |l| l.present(app)).join(", ")),
    }
}

/// Deletes one of the non-workload objects; already gone is fine.
async fn delete_object(client: &Client, ns: &str, o: &Rendered) -> Result<()> {
    let dp = DeleteParams::default();
    let r = match o.kind.as_str() {
        "Service" => Api::<Service>::namespaced(client.clone(), ns).delete(&o.name, &dp).await.map(|_| ()),
        "ConfigMap" => Api::<ConfigMap>::namespaced(client.clone(), ns).delete(&o.name, &dp).await.map(|_| ()),
        other => bail!("no delete for kind {other} ({})", o.name),
    };
    match r {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {} {}", o.kind, o.name)),
    }
}

impl KindVersionFleet {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.opts.namespace)
    }

    /// Streams each named pod's log into `<log_dir>/<pod>.log`.
    fn follow(&self, names: Vec<String>) {
        let tasks: Vec<JoinHandle<()>> = names
            .into_iter()
            .map(|n| {
                let path = self.log_dir.join(format!("{n}.log"));
                spawn_log_stream(self.pods(), n, path, None, self.stop.clone())
            })
            .collect();
        locked(&self.log_tasks, |t| t.extend(tasks));
    }

    async fn list(&self, app: &str) -> Result<Vec<Pod>> {
        let lp = ListParams::default().labels(&format!("{APP_LABEL}={app}"));
        Ok(self.pods().list(&lp).await.with_context(|| format!("listing the {app} pods"))?.items)
    }

    /// Lists `app`'s pods into the ledger (following the logs of new ones).
    async fn refresh(&self, app: &str) -> Result<Vec<Pod>> {
        let pods = self.list(app).await?;
        let new = locked(&self.ledger, |l| l.listed(app, &pods, Timestamp::now()));
        self.follow(new);
        Ok(pods)
    }

    pub(super) async fn start_following(&self) -> Result<()> {
        let router = self.list(ROUTER).await?;
        self.follow(router.iter().filter_map(|p| p.metadata.name.clone()).collect());
        // The workers, with jobs: their logs say which ledger each job reached.
        for w in [zerodrop_manifests::WORKER, zerodrop_manifests::SHADOW_WORKER] {
            if self.objects.iter().any(|o| o.kind == "Deployment" && o.name == w) {
                let pods = self.list(w).await?;
                self.follow(pods.iter().filter_map(|p| p.metadata.name.clone()).collect());
            }
        }
        self.refresh(STABLE).await?;
        self.refresh(CANARY).await?;
        Ok(())
    }

    /// One pod's fresh counts, or `None` when its last reading must stand in. A pod
    /// that should answer and does not is asked once more, then looked at again: one
    /// that has meanwhile begun to leave (or is gone) keeps its last reading.
    async fn read_pod(&self, pod: &Pod) -> Result<Option<Counts>> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let port = self.targets.metrics_port;
        let first = match need(pod) {
            Need::Skip => return Ok(None),
            Need::Optional => return Ok(fetch_metrics(&self.pods(), &name, port).await.ok()),
            Need::Required => fetch_metrics(&self.pods(), &name, port).await,
        };
        let err = match first {
            Ok(c) => return Ok(Some(c)),
            Err(_) => match fetch_metrics(&self.pods(), &name, port).await {
                Ok(c) => return Ok(Some(c)),
                Err(e) => e,
            },
        };
        match self.pods().get_opt(&name).await {
            Ok(Some(now)) if need(&now) == Need::Required => Err(err),
            Ok(_) => Ok(None),
            Err(_) => Err(err),
        }
    }

    /// `app`'s counts: every pod's fresh reading, or its last one.
    async fn read_version(&self, app: &str) -> Result<Counts> {
        let pods = self.refresh(app).await?;
        let reads = futures::future::join_all(pods.iter().map(|p| self.read_pod(p))).await;
        locked(&self.ledger, |l| {
            for (p, r) in pods.iter().zip(reads) {
                if let Some(c) = r? {
                    l.reading(p, c);
                }
            }
            Ok(l.counts(app))
        })
    }
}

impl RoutedFleet for KindVersionFleet {
    fn router_addr(&self) -> SocketAddr {
        self.frontend.local
    }

    async fn start_load(&self, profile: Profile) -> Result<LoadRun> {
        let n = self.loads.fetch_add(1, Ordering::SeqCst);
        let job = Rendered::from_object(&load::job_object(&self.opts, &self.render, &self.objects, &profile, n)?);
        locked(&self.jobs, |j| j.push(job.name.clone()));
        load::start(&self.client, &self.opts.namespace, &job, &profile, &self.log_dir, &self.stop).await
    }

    async fn set_canary_permille(&self, permille: u32) -> Result<()> {
        self.api.set_permille(permille).await?;
        tracing::info!(step = "weight_set", permille, "canary weight set");
        Ok(())
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        let router = self.api.stats().await?;
        let (app_stable, app_canary) =
            futures::future::try_join(self.read_version(STABLE), self.read_version(CANARY)).await?;
        Ok(Snapshot { router, app_stable, app_canary })
    }

    /// Drain at HAProxy first, then the kubelet's way: scaled to zero, each pod gets
    /// its preStop, SIGTERM and grace period; returns when the API has no v1 pod left.
    async fn retire_stable(&mut self) -> Result<()> {
        self.api.drain(STABLE_BACKEND, STABLE).await?;
        tracing::info!(step = "drained", server = %format!("{STABLE_BACKEND}/{STABLE}"), "stable drained at haproxy");
        let deployments = Api::<Deployment>::namespaced(self.client.clone(), &self.opts.namespace);
        let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        deployments
            .patch(STABLE, &pp, &Patch::Merge(scale_patch(0)))
            .await
            .with_context(|| format!("scaling deployment {STABLE} to zero"))?;
        tracing::info!(step = "scaled_to_zero", deployment = STABLE, "stable scaled to zero");
        let limit = self.targets.grace + Duration::from_secs(60);
        wait_gone(self.pods(), &self.ledger, STABLE, limit).await?;
        tracing::info!(step = "stable_gone", deployment = STABLE, "no stable pod left");
        Ok(())
    }

    fn pod_seconds(&self) -> f64 {
        locked(&self.ledger, |l| l.pod_seconds(Timestamp::now()))
    }

    async fn down(self) {
        let KindVersionFleet { client, opts, objects, frontend, runtime, stop, log_tasks, jobs, .. } = self;
        drop((frontend, runtime));
        stop.cancel();
        for t in locked(&log_tasks, std::mem::take) {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), t).await.is_err() {
                abort.abort();
            }
        }
        let ns = &opts.namespace;
        let jobs = locked(&jobs, |j| j.clone());
        let workloads: Vec<&str> = objects.iter().filter(|o| o.kind == "Deployment").map(|o| o.name.as_str()).collect();
        if let Err(e) = apply::delete_fleet(&client, ns, &workloads, &jobs, Duration::from_secs(120)).await {
            eprintln!("warning: stopping the two versions: {e:#}");
        }
        for o in objects.iter().filter(|o| o.kind != "Deployment") {
            if let Err(e) = delete_object(&client, ns, o).await {
                eprintln!("warning: {e:#}");
            }
        }
        let (n, j) = (objects.len(), jobs.len());
        tracing::info!(step = "deleted", namespace = %ns, objects = n, jobs = j, "two versions deleted");
    }
}
