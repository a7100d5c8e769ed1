//! The guardian exercise on a real cluster: one api pod with the final stage's
//! settings gets a request longer than its whole shutdown budget (reached through a
//! port-forward), then the pod is terminated the Kubernetes way (its Deployment
//! scaled to zero: preStop, SIGTERM, grace period). The guardian must force the exit
//! with its own code before the kubelet's SIGKILL.

use super::forward::{ready_pod, Forward};
use super::log_stream::spawn_log_stream;
use super::objects::{find, Rendered};
use super::pods::facts;
use super::{apply, rollout, KindOptions};
use crate::now_ms;
use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::wait::await_condition;
use kube::Client;
use std::path::Path;
use std::time::Duration;
use zerodrop_evidence as evidence;
use zerodrop_evidence::GuardianCheck;
use zerodrop_jobs::Topology;
use zerodrop_stages::{Stage, StageName};

pub const NAME: &str = "api-guardian";
/// Mirrors `zerodrop_lifecycle::EXIT_GUARDIAN` (the runner does not link the
/// services' library; the lifecycle's own test pins the value).
const EXIT_GUARDIAN: i32 = 70;

pub fn queue(opts: &KindOptions) -> String {
    Topology::new(format!("zerodrop.guardian.{}", opts.run_id)).queue
}

/// The final stage's api Deployment, renamed and relabelled so no Service selects
/// it, with one replica.
pub fn objects(opts: &KindOptions) -> Result<Vec<Rendered>> {
    let render = zerodrop_manifests::RenderOptions {
        api_replicas: 1,
        worker_replicas: 0,
        ..opts.render_options(&queue(opts), "zd_guardian")
    };
    let all = Rendered::all(&zerodrop_manifests::stage(&Stage::get(StageName::SurgeJitter), &render));
    let api = find(&all, "Deployment", "api").context("the final stage renders no api Deployment")?;
    let mut d = api.clone();
    d.name = NAME.into();
    let j = &mut d.json;
    j["metadata"]["name"] = NAME.into();
    let app = zerodrop_manifests::APP_LABEL;
    j["metadata"]["labels"][app] = NAME.into();
    j["spec"]["selector"]["matchLabels"][app] = NAME.into();
    j["spec"]["template"]["metadata"]["labels"][app] = NAME.into();
    Ok(vec![d])
}

pub async fn run(client: &Client, opts: &KindOptions, amqp_url: &str, log_dir: &Path) -> Result<GuardianCheck> {
    let stage = Stage::get(StageName::SurgeJitter);
    let b = stage.api;
    std::fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let ns = &opts.namespace;
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let objs = objects(opts)?;
    let applied = apply::apply_all(client, ns, &objs).await?;
    let generation = applied.first().map(|a| a.generation).unwrap_or(0);
    let result = exercise(&deployments, &pods, generation, &stage, log_dir).await;
    let background =
        DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
    let _ = deployments.delete(NAME, &background).await;
    crate::guardian::delete_queues(amqp_url, &Topology::new(queue(opts))).await;
    let (exit_code, exit_after_ms, client_outcome, logs, request_ms) = result?;
    Ok(GuardianCheck {
        drain_budget_ms: b.drain_budget.as_millis() as u64,
        request_ms,
        expected_exit_code: EXIT_GUARDIAN,
        exit_code,
        exit_after_ms,
        client_outcome,
        logs,
    })
}

type Outcome = (Option<i32>, u64, String, Vec<zerodrop_evidence::LogLine>, u64);

async fn exercise(
    deployments: &Api<Deployment>,
    pods: &Api<Pod>,
    generation: i64,
    stage: &Stage,
    log_dir: &Path,
) -> Result<Outcome> {
    let b = stage.api;
    rollout::wait_complete(deployments, NAME, generation, Duration::from_secs(120)).await?;
    let selector = format!("{}={NAME}", zerodrop_manifests::APP_LABEL);
    let pod = ready_pod(pods, &selector).await?;
    let log_path = log_dir.join(format!("{pod}.log"));
    let logs_task =
        spawn_log_stream(pods.clone(), pod.clone(), log_path.clone(), None, tokio_util::sync::CancellationToken::new());
    let forward = Forward::start(pods.clone(), selector, zerodrop_manifests::App::Api.port().1 as u16).await?;

    // The request must outlast preStop + the whole budget the guardian enforces.
    let request_ms = (stage.pod.pre_stop + b.guardian_deadline() + Duration::from_secs(3)).as_millis() as u64;
    let client = tokio::spawn(crate::guardian::long_request(forward.local, request_ms));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted_at = now_ms();
    // Scaled to zero rather than the pod deleted: no replacement pod appears.
    deployments
        .patch(
            NAME,
            &PatchParams { field_manager: Some(super::FIELD_MANAGER.into()), ..PatchParams::default() },
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .context("scaling the guardian deployment to zero")?;
    let limit = stage.pod.grace + Duration::from_secs(20);
    let ended = tokio::time::timeout(
        limit,
        await_condition(pods.clone(), &pod, |p: Option<&Pod>| p.is_none_or(|p| facts(p).terminated.is_some())),
    )
    .await;
    let exited_at = now_ms();
    let exit_code = match ended {
        Ok(Ok(Some(p))) => facts(&p).terminated.map(|t| t.exit_code),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => return Err(e).context("watching the guardian pod"),
        Err(_) => anyhow::bail!("the guardian pod {pod} did not exit within {limit:?}"),
    };
    let client_outcome = client.await.context("guardian client task")?;
    drop(forward);
    let _ = tokio::time::timeout(Duration::from_secs(15), logs_task).await;
    // SIGTERM comes after preStop; the app's own `sigterm_received` line dates it.
    let lines = evidence::read_pod_log(&log_path, &pod, "api", deleted_at);
    let sigterm_at = lines
        .iter()
        .find(|l| l.step == "sigterm_received")
        .map(|l| deleted_at + l.t_ms)
        .unwrap_or(deleted_at + stage.pod.pre_stop.as_millis() as i64);
    let logs = evidence::read_pod_log(&log_path, &pod, "api", sigterm_at);
    Ok((exit_code, (exited_at - sigterm_at).max(0) as u64, client_outcome, logs, request_ms))
}
