//! The kind platform's [`TwoVersions`]: v1 and v2 of the api side by side behind
//! HAProxy, on the cluster. The objects are `zerodrop_manifests::progressive`'s seven
//! (HAProxy's ConfigMap, Deployment and Service; per version a Deployment and a
//! Service), server-side applied in the run's namespace; HAProxy's one server per
//! backend is the version's Service.
//!
//! The runner reaches HAProxy through two port-forwards to its pod: the frontend
//! (smoke requests) and the runtime API, which HAProxy serves on the pod's loopback
//! (`STATS_SOCKET`). The load runs in the cluster as a Job aimed at HAProxy's Service
//! ([`load`]); each pod's own counters come from its `/metrics` over a port-forward of
//! its own ([`wire`]), kept per pod in a [`ledger::Ledger`].

mod fleet;
pub mod layout;
pub mod ledger;
pub mod load;
#[cfg(test)]
mod tests;
pub mod wire;

pub use fleet::KindVersionFleet;
pub use layout::{
    canary_map, rollout_limit, targets, Targets, CANARY, CAPACITY, QUEUE, ROUTER, STABLE, STABLE_BACKEND, UP_LIMIT,
};

use super::forward::Forward;
use super::objects::{service_port, Rendered};
use super::plan::{Plan, Step};
use super::{apply, rollout, KindOptions, KindPlatform};
use crate::router::runtime_api::RuntimeApi;
use crate::router::{TwoVersions, TwoVersionsSpec};
use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::path::Path;
use std::time::{Duration, Instant};
use wire::TcpTransport;
use zerodrop_manifests::{RenderOptions, APP_LABEL};

/// The render of a two-versions run: the run's namespace and images, `replicas` pods
/// per version.
pub fn render_for(opts: &KindOptions, spec: &TwoVersionsSpec) -> RenderOptions {
    RenderOptions { api_replicas: spec.replicas, api_capacity: CAPACITY, ..opts.render_options(QUEUE, "-") }
}

/// Exactly what is applied: `progressive()`'s seven objects for `spec` (nine with jobs). The manifests
/// name the versions `v1` and `v2`; a spec naming them otherwise is refused rather than
/// silently not honoured.
pub fn plan(o: &RenderOptions, spec: &TwoVersionsSpec) -> Result<Vec<Rendered>> {
    if (spec.v1.name, spec.v2.name) != ("v1", "v2") {
        bail!("the kind manifests name the versions v1 and v2, not {} and {}", spec.v1.name, spec.v2.name);
    }
    if spec.replicas == 0 {
        bail!("two versions need at least one pod each (replicas = 0)");
    }
    let o = RenderOptions { api_replicas: spec.replicas, ..o.clone() };
    let regressions = [spec.v1.regression.as_str(), spec.v2.regression.as_str()];
    Ok(Rendered::all(&zerodrop_manifests::progressive(&o, regressions, &spec.routing, spec.jobs.as_ref())))
}

/// The dry run of a two-versions run: the objects exactly as [`plan`] gives them to
/// the apply, and the steps around them.
pub fn dry_run(opts: &KindOptions, spec: &TwoVersionsSpec) -> Result<Plan> {
    let render = render_for(opts, spec);
    let objects = plan(&render, spec)?;
    let t = targets(&objects)?;
    let yaml = objects.iter().map(|o| serde_norway::to_string(&o.json)).collect::<Result<Vec<_>, _>>()?;
    let ns = &opts.namespace;
    let mut steps = vec![
        Step::Section(format!("Two versions behind HAProxy (namespace {ns})")),
        Step::Apply {
            what: objects
                .iter()
                .map(|o| format!("{} {}", o.kind.to_lowercase(), o.name))
                .collect::<Vec<_>>()
                .join(", "),
            yaml: yaml.join("---\n"),
        },
    ];
    let api = |s: String| Step::Api(s);
    steps.extend([
        api(format!(
            "wait for the rollouts of {ROUTER} ({:?}), {} ({:?} each)",
            rollout_limit(ROUTER),
            objects
                .iter()
                .filter(|o| o.kind == "Deployment" && o.name != ROUTER)
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            rollout_limit(STABLE)
        )),
        api(format!(
            "port-forward 127.0.0.1:<free> -> {}:{} (frontend) and 127.0.0.1:<free> -> {}:{} (runtime API)",
            t.router_selector, t.frontend_port, t.router_selector, t.runtime_port
        )),
        api(format!(
            "wait until HAProxy's runtime API answers and its health checks see every server UP ({UP_LIMIT:?}); \
             `set map {} weight 0`",
            canary_map()
        )),
        api(format!(
            "each load: a Job running zerodrop-load against {}:{} (no data-plane gate)",
            render.service_host(ROUTER),
            service_port(&objects, ROUTER)?
        )),
        api(format!(
            "each snapshot: `show stat`; GET /metrics of every {APP_LABEL}={STABLE} and {APP_LABEL}={CANARY} pod \
             (a port-forward to :{} each)",
            t.metrics_port
        )),
        api(format!(
            "retire stable: `set server {STABLE_BACKEND}/{STABLE} state drain`, scale deployment {STABLE} to 0, \
             watch until its pods are gone ({:?})",
            t.grace + Duration::from_secs(60)
        )),
        api("down: delete the deployments and load Jobs (their pods with no grace period), the services and the \
             configmap"
            .into()),
    ]);
    Ok(Plan { steps })
}

/// The pods of a Deployment that is not done, each with what it waits for.
pub fn not_ready(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| {
            let f = super::pods::facts(p);
            if f.ready && !f.deleting {
                return None;
            }
            let why = if f.deleting {
                "being deleted".to_string()
            } else if p.status.is_none() {
                "no status yet".to_string()
            } else if let Some(w) = f.waiting {
                w
            } else if let Some(t) = f.terminated {
                format!("exited: {}", t.describe())
            } else if f.running {
                let restarts = if f.restarts > 0 { format!(" ({} restarts)", f.restarts) } else { String::new() };
                format!("running, not Ready{restarts}")
            } else {
                p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "no phase".into())
            };
            Some(format!("{}: {why}", f.name))
        })
        .collect()
}

async fn describe_pods(pods: &Api<Pod>, app: &str) -> String {
    match pods.list(&ListParams::default().labels(&format!("{APP_LABEL}={app}"))).await {
        Ok(l) if l.items.is_empty() => "no pods".into(),
        Ok(l) => {
            let waiting = not_ready(&l.items);
            if waiting.is_empty() {
                "every pod ready".into()
            } else {
                format!("pods not ready: {}", waiting.join("; "))
            }
        }
        Err(e) => format!("its pods could not be listed: {e}"),
    }
}

/// Waits until HAProxy's runtime API answers: its pod has no readiness probe, so a
/// complete rollout does not promise that HAProxy has bound its stats socket yet, and
/// `wait_all_up` stops at the first command that fails. No API object can say when
/// it has, so this asks, a bounded number of times.
async fn wait_answering(api: &RuntimeApi<TcpTransport>, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        match api.command("show info").await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("haproxy's runtime API did not answer within {limit:?}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

impl TwoVersions for KindPlatform {
    type Fleet = KindVersionFleet;

    async fn two_versions(&mut self, spec: &TwoVersionsSpec, log_dir: &Path) -> Result<KindVersionFleet> {
        std::fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let render = render_for(&self.opts, spec);
        let objects = plan(&render, spec)?;
        let targets = targets(&objects)?;
        let ns = self.opts.namespace.clone();
        let applied = apply::apply_all(&self.client, &ns, &objects).await?;
        let n = objects.len();
        tracing::info!(step = "applied", namespace = %ns, objects = n, "two versions and the routing tier applied");
        let (deployments, pods) = (self.deployments(), self.pods());
        let waits = objects.iter().zip(&applied).filter(|(o, _)| o.kind == "Deployment").map(|(o, a)| {
            let (deployments, pods) = (deployments.clone(), pods.clone());
            async move {
                if let Err(e) =
                    rollout::wait_complete(&deployments, &o.name, a.generation, rollout_limit(&o.name)).await
                {
                    let why = describe_pods(&pods, &o.name).await;
                    return Err(e).with_context(|| format!("deployment {}: {why}", o.name));
                }
                tracing::info!(step = "rollout_complete", deployment = %o.name, "rollout complete");
                Ok::<_, anyhow::Error>(())
            }
        });
        futures::future::try_join_all(waits).await?;
        let frontend = Forward::start(pods.clone(), targets.router_selector.clone(), targets.frontend_port).await?;
        let runtime = Forward::start(pods.clone(), targets.router_selector.clone(), targets.runtime_port).await?;
        let (fe, rt) = (frontend.local, runtime.local);
        tracing::info!(step = "forward_opened", frontend = %fe, runtime_api = %rt, "port-forwards to haproxy open");
        let api = RuntimeApi { transport: TcpTransport(runtime.local), map: canary_map() };
        wait_answering(&api, UP_LIMIT).await?;
        api.wait_all_up(UP_LIMIT).await.context("waiting for haproxy's health checks to see api-v1 and api-v2")?;
        // The contract is all traffic on stable, whatever the map held before.
        api.set_permille(0).await.context("putting all traffic on stable")?;
        tracing::info!(step = "weight_set", permille = 0u32, "all traffic on stable");
        let fleet = KindVersionFleet {
            client: self.client.clone(),
            opts: self.opts.clone(),
            render,
            objects,
            targets,
            api,
            frontend,
            runtime,
            log_dir: log_dir.to_path_buf(),
            ledger: Default::default(),
            stop: Default::default(),
            log_tasks: Default::default(),
            jobs: Default::default(),
            loads: Default::default(),
        };
        fleet.start_following().await?;
        Ok(fleet)
    }
}
