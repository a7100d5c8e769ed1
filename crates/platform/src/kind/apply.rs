//! Server-side apply of rendered objects, field manager `zerodrop`, and the deletes
//! that end a stage.

use super::objects::Rendered;
use super::FIELD_MANAGER;
use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::Client;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// What an apply returned that the caller may wait on.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    pub generation: i64,
}

async fn ssa<K>(api: Api<K>, o: &Rendered) -> Result<Applied>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + serde::Serialize,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let out = api
        .patch(&o.name, &params, &Patch::Apply(&o.json))
        .await
        .with_context(|| format!("applying {} {}", o.kind, o.name))?;
    Ok(Applied { generation: out.meta().generation.unwrap_or(0) })
}

/// Applies one object. Namespaced objects go to their own `metadata.namespace`, or
/// `namespace` when they carry none.
pub async fn apply(client: &Client, namespace: &str, o: &Rendered) -> Result<Applied> {
    let ns = o.namespace.as_deref().unwrap_or(namespace);
    match o.kind.as_str() {
        "Namespace" => ssa(Api::<Namespace>::all(client.clone()), o).await,
        "Deployment" => ssa(Api::<Deployment>::namespaced(client.clone(), ns), o).await,
        "Service" => ssa(Api::<Service>::namespaced(client.clone(), ns), o).await,
        "Job" => ssa(Api::<Job>::namespaced(client.clone(), ns), o).await,
        "ConfigMap" => ssa(Api::<ConfigMap>::namespaced(client.clone(), ns), o).await,
        other => bail!("cannot apply kind {other} ({})", o.name),
    }
}

pub async fn apply_all(client: &Client, namespace: &str, objects: &[Rendered]) -> Result<Vec<Applied>> {
    let mut out = Vec::with_capacity(objects.len());
    for o in objects {
        out.push(apply(client, namespace, o).await?);
    }
    Ok(out)
}

/// Deletes the named Deployments and Jobs (their pods in the background), then every
/// pod with `app` label among `apps` or belonging to one of the Jobs with no grace
/// period, and waits until none is left: the end of a stage's fleet, like the local
/// platform's SIGKILL.
pub async fn delete_fleet(
    client: &Client,
    ns: &str,
    deployments: &[&str],
    jobs: &[String],
    timeout: Duration,
) -> Result<()> {
    let background =
        DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
    let d_api = Api::<Deployment>::namespaced(client.clone(), ns);
    for d in deployments {
        ignore_not_found(d_api.delete(d, &background).await).with_context(|| format!("deleting deployment {d}"))?;
    }
    let j_api = Api::<Job>::namespaced(client.clone(), ns);
    for j in jobs {
        ignore_not_found(j_api.delete(j, &background).await).with_context(|| format!("deleting job {j}"))?;
    }
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let now = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
    let mut selectors: Vec<String> =
        deployments.iter().map(|d| format!("{}={d}", zerodrop_manifests::APP_LABEL)).collect();
    selectors.extend(jobs.iter().map(|j| format!("{}={j}", super::pods::JOB_NAME_LABEL)));
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = 0;
        for sel in &selectors {
            let lp = ListParams::default().labels(sel);
            let list = pods.list(&lp).await.with_context(|| format!("listing pods {sel}"))?;
            left += list.items.len();
            if !list.items.is_empty() {
                ignore_not_found(pods.delete_collection(&now, &lp).await.map(|_| ()))
                    .with_context(|| format!("deleting pods {sel}"))?;
            }
        }
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} pod(s) of the previous fleet still exist after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn ignore_not_found<T>(r: kube::Result<T>) -> kube::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
