//! `cargo xtask up | rollout | status | logs | down` on a cluster: every decision that
//! reads an API response, as plain functions over the API's own objects (the xtask
//! side only lists, patches and prints). Nothing here assumes an order of events: each
//! function reads one consistent listing and says what it shows.

use super::endpoints::endpoints_of;
use super::rollout::{rollout_state, RolloutState, RESTARTED_AT};
use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The `platform` value of a state file written by `up --platform kind`.
pub const PLATFORM: &str = "kind";

/// What `up --platform kind` leaves in target/zerodrop-up/state.json: the cluster is
/// the control plane, so this is all the other commands need to find the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindRecord {
    /// Always [`PLATFORM`].
    pub platform: String,
    pub context: String,
    pub namespace: String,
    pub stage: String,
    /// The kind cluster `up` created (no --context), to name in `down`'s hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_cluster: Option<String>,
}

impl KindRecord {
    pub fn new(context: String, namespace: String, stage: String, created_cluster: Option<String>) -> KindRecord {
        KindRecord { platform: PLATFORM.into(), context, namespace, stage, created_cluster }
    }
}

/// Reads a state file's text: `Some` when it names the kind platform, `None` when it
/// is the local platform's (which has no `platform` field, or `"local"`).
pub fn kind_record(text: &str) -> Result<Option<KindRecord>> {
    let v: serde_json::Value = serde_json::from_str(text).context("the fleet state file is not JSON")?;
    match v.get("platform").and_then(|p| p.as_str()) {
        Some(PLATFORM) => Ok(Some(serde_json::from_value(v).context("reading the kind fleet's state record")?)),
        None | Some("local") => Ok(None),
        Some(other) => anyhow::bail!("the fleet state file names an unknown platform {other:?}"),
    }
}

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRow {
    pub name: String,
    pub app: String,
    pub phase: String,
    /// `ready/total` containers.
    pub ready: String,
    pub restarts: i32,
    pub node: String,
    /// The reason worth a look (CrashLoopBackOff, Terminating, ...), else `-`.
    pub state: String,
}

/// The status rows of a pod listing, in name order. A pod the API has not yet given a
/// status (just created) shows `Pending`, `0/N` and no node rather than failing.
pub fn pod_rows(pods: &[Pod]) -> Vec<PodRow> {
    let mut rows: Vec<PodRow> = pods.iter().map(pod_row).collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

fn pod_row(p: &Pod) -> PodRow {
    let name = p.metadata.name.clone().unwrap_or_default();
    let app = p.metadata.labels.as_ref().and_then(|l| l.get("app").cloned()).unwrap_or_else(|| "-".into());
    let total = p.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
    let st = p.status.as_ref();
    let statuses = st.and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    let ready = statuses.iter().filter(|c| c.ready).count();
    let restarts = statuses.iter().map(|c| c.restart_count).sum();
    let phase = st.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
    let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "-".into());
    let state = if p.metadata.deletion_timestamp.is_some() {
        "Terminating".to_string()
    } else {
        statuses
            .iter()
            .find_map(|c| {
                let s = c.state.as_ref()?;
                s.waiting.as_ref().and_then(|w| w.reason.clone()).or_else(|| {
                    s.terminated.as_ref().map(|t| t.reason.clone().unwrap_or_else(|| format!("exit {}", t.exit_code)))
                })
            })
            .unwrap_or_else(|| "-".into())
    };
    PodRow { name, app, phase, ready: format!("{ready}/{total}"), restarts, node, state }
}

/// The api Service's ready endpoints across all its slices, by pod name (or address
/// when a slice gives no `targetRef`), each once, in name order. A `ready` of `null`
/// is unknown and read as ready, as the discovery.k8s.io/v1 API asks; a terminating
/// endpoint is not counted.
pub fn ready_endpoints(slices: &[EndpointSlice]) -> Vec<String> {
    let mut out: Vec<String> =
        slices.iter().flat_map(endpoints_of).filter(|e| e.ready && !e.terminating).map(|e| e.pod).collect();
    out.sort();
    out.dedup();
    out
}

/// `status`'s text: the pods table and the Service's ready endpoints.
pub fn status_text(record: &KindRecord, pods: &[Pod], slices: &[EndpointSlice]) -> String {
    let mut out = format!(
        "stage {} (namespace {}, context {})\n{:<34} {:<7} {:<10} {:<6} {:>8} {:<22} {}\n",
        record.stage, record.namespace, record.context, "POD", "APP", "PHASE", "READY", "RESTARTS", "NODE", "STATE"
    );
    for r in pod_rows(pods) {
        out += &format!(
            "{:<34} {:<7} {:<10} {:<6} {:>8} {:<22} {}\n",
            r.name, r.app, r.phase, r.ready, r.restarts, r.node, r.state
        );
    }
    out += &format!("service api ready endpoints: {:?}", ready_endpoints(slices));
    out
}

/// The restart patch, plus `env` set on every container of the template (a strategic
/// merge: containers and env entries merge by name, the rest of the spec is kept).
pub fn rollout_patch(d: &Deployment, at: &str, env: &[(String, String)]) -> serde_json::Value {
    let mut patch = super::rollout::restart_patch(at);
    if env.is_empty() {
        return patch;
    }
    let names: Vec<String> = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let env: Vec<serde_json::Value> = env.iter().map(|(k, v)| serde_json::json!({ "name": k, "value": v })).collect();
    let containers: Vec<serde_json::Value> =
        names.iter().map(|n| serde_json::json!({ "name": n, "env": env.clone() })).collect();
    patch["spec"]["template"]["spec"] = serde_json::json!({ "containers": containers });
    patch
}

/// The reasons a container waits that no amount of waiting fixes.
const FATAL_WAITING: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
];

/// A pod of the new revision that failed, with the container whose log tells why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedPod {
    pub pod: String,
    pub container: String,
    /// The failure is in an earlier run of the container: read its `previous` log.
    pub previous: bool,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Complete,
    /// Still going; one line per deployment saying what it waits for.
    Progressing(Vec<String>),
    Failed {
        why: String,
        pod: Option<FailedPod>,
    },
}

/// A pod of our rollout's revision: its template annotation carries our restart value
/// (pods get the template's annotations), whatever ReplicaSet it belongs to.
pub fn is_new_revision(p: &Pod, at: &str) -> bool {
    p.metadata.annotations.as_ref().and_then(|a| a.get(RESTARTED_AT)).is_some_and(|v| v == at)
}

/// Why a pod failed, if it did: a container waiting for a reason waiting cannot fix,
/// or a container that last terminated with a non-zero code and has restarted.
pub fn pod_failure(p: &Pod) -> Option<FailedPod> {
    let name = p.metadata.name.clone().unwrap_or_default();
    let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
    for c in statuses {
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let last_why = last.map(|t| {
            format!("last exit {}{}", t.exit_code, t.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())
        });
        if let Some(reason) = waiting.and_then(|w| w.reason.as_deref()).filter(|r| FATAL_WAITING.contains(r)) {
            let msg = waiting.and_then(|w| w.message.clone());
            let why = [Some(reason.to_string()), last_why, msg].into_iter().flatten().collect::<Vec<_>>().join("; ");
            return Some(FailedPod { pod: name, container: c.name.clone(), previous: last.is_some(), why });
        }
        if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()).filter(|t| t.exit_code != 0) {
            return Some(FailedPod {
                pod: name,
                container: c.name.clone(),
                previous: false,
                why: format!(
                    "exited {}{}",
                    t.exit_code,
                    t.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                ),
            });
        }
    }
    None
}

/// The rollout's verdict from one listing of the rolled deployments (with the
/// generation our patch produced for each) and the namespace's pods. A failed pod of
/// the new revision fails the rollout; so does a deployment whose controller reports
/// `Progressing=False` (`ProgressDeadlineExceeded`). A deployment whose status lacks
/// `observedGeneration` is still waiting for the controller.
pub fn rollout_verdict(deployments: &[(Deployment, i64)], pods: &[Pod], at: &str) -> Verdict {
    let mut failed: Vec<&Pod> = pods.iter().filter(|p| is_new_revision(p, at)).collect();
    failed.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    if let Some(f) = failed.into_iter().find_map(pod_failure) {
        return Verdict::Failed { why: format!("pod {} failed: {}", f.pod, f.why), pod: Some(f) };
    }
    let mut waiting = Vec::new();
    for (d, generation) in deployments {
        let name = d.metadata.name.clone().unwrap_or_default();
        let stalled = d
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"))
            .filter(|c| c.status == "False");
        if let Some(c) = stalled {
            let why = format!(
                "deployment {name}: {}{}",
                c.reason.as_deref().unwrap_or("Progressing=False"),
                c.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
            );
            return Verdict::Failed { why, pod: None };
        }
        if let RolloutState::Waiting(w) = rollout_state(d, *generation) {
            waiting.push(format!("{name}: {w}"));
        }
    }
    if waiting.is_empty() {
        Verdict::Complete
    } else {
        Verdict::Progressing(waiting)
    }
}

/// `--progress-deadline`: the rollout fails when what it waits for has not changed
/// for this long.
pub struct Progress {
    deadline: Duration,
    last: Vec<String>,
    since: Instant,
}

impl Progress {
    pub fn new(deadline: Duration, now: Instant) -> Progress {
        Progress { deadline, last: Vec::new(), since: now }
    }

    /// Records what the rollout now waits for; returns the lines to print when it
    /// changed, or `Err` with the reason when it has not changed within the deadline.
    pub fn observe(&mut self, waiting: &[String], now: Instant) -> std::result::Result<Vec<String>, String> {
        if waiting != self.last.as_slice() {
            self.last = waiting.to_vec();
            self.since = now;
            return Ok(self.last.clone());
        }
        if now.duration_since(self.since) >= self.deadline {
            return Err(format!("no progress for {:?}: {}", self.deadline, self.last.join("; ")));
        }
        Ok(Vec::new())
    }
}

/// The last `n` lines of a log.
pub fn last_lines(log: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// The namespace's fleet, reached through the record's context.
async fn client(rec: &KindRecord) -> Result<kube::Client> {
    super::connect(&rec.context).await
}

/// `up --platform kind --dry-run`: the session's plan, then the stage's objects.
pub fn up_plan(opts: &super::KindOptions, stage: &zerodrop_stages::Stage) -> Result<super::plan::Plan> {
    let mut p = super::plan::session(opts)?;
    let env = super::plan::stage_env(&opts.run_id, &crate::profile::ExperimentProfile::quick(), stage, 0);
    p.section(format!("Stage {} (left running in namespace {})", stage.name, opts.namespace));
    p.apply(format!("stage {}", stage.name), &zerodrop_manifests::stage(stage, &opts.stage_render(&env)));
    p.api("wait for deployments api and worker (rollout condition); write target/zerodrop-up/state.json and exit");
    Ok(p)
}

/// `up --platform kind`: sets up (or reaches) the cluster as the experiment does,
/// applies the base objects and the stage's, waits for them and returns the record.
/// The namespace outlives the command; on failure what was created is removed.
pub async fn up(opts: super::KindOptions, stage: &zerodrop_stages::Stage) -> Result<KindRecord> {
    let mut session = super::Session::new(super::KindOptions { keep: true, ..opts });
    let result = async {
        session.setup().await?;
        let opts = session.opts.clone();
        // Base objects (namespace, broker, database) and their waits; its port-forwards close on drop.
        drop(super::KindPlatform::connect(opts.clone(), Duration::from_secs(600)).await?);
        let client = super::connect(&opts.context_name()).await?;
        let env = super::plan::stage_env(&opts.run_id, &crate::profile::ExperimentProfile::quick(), stage, 0);
        let objects = super::objects::Rendered::all(&zerodrop_manifests::stage(stage, &opts.stage_render(&env)));
        let applied = super::apply::apply_all(&client, &opts.namespace, &objects).await?;
        let api = kube::Api::<Deployment>::namespaced(client, &opts.namespace);
        for (o, a) in objects.iter().zip(&applied) {
            if o.kind == "Deployment" {
                super::rollout::wait_complete(&api, &o.name, a.generation, Duration::from_secs(300)).await?;
            }
        }
        Ok(KindRecord::new(
            opts.context_name(),
            opts.namespace.clone(),
            stage.name.to_string(),
            opts.creates_cluster().then(|| opts.cluster.clone()),
        ))
    }
    .await;
    if result.is_err() {
        session.opts.keep = false;
        session.teardown().await;
    }
    result
}

/// `status` on the cluster: one listing of the pods and of the api Service's slices.
pub async fn status(rec: &KindRecord) -> Result<String> {
    let c = client(rec).await?;
    let pods = kube::Api::<Pod>::namespaced(c.clone(), &rec.namespace)
        .list(&Default::default())
        .await
        .with_context(|| format!("listing pods in namespace {}", rec.namespace))?;
    let lp = kube::api::ListParams::default().labels(&format!("{}=api", super::endpoints::SERVICE_NAME_LABEL));
    let slices = kube::Api::<EndpointSlice>::namespaced(c, &rec.namespace)
        .list(&lp)
        .await
        .with_context(|| format!("listing the api Service's EndpointSlices in namespace {}", rec.namespace))?;
    Ok(status_text(rec, &pods.items, &slices.items))
}

/// `rollout` on the cluster: the restart patch (with `env`) on `only` or api and
/// worker, then a listing every second until [`rollout_verdict`] decides; a failure is
/// [`crate::RolloutFailed`] naming the pod and the last lines of its log.
pub async fn rollout(
    rec: &KindRecord,
    deadline: Duration,
    env: &[(String, String)],
    only: Option<&str>,
    mut out: impl FnMut(String),
) -> Result<()> {
    let c = client(rec).await?;
    let api = kube::Api::<Deployment>::namespaced(c.clone(), &rec.namespace);
    let pods_api = kube::Api::<Pod>::namespaced(c, &rec.namespace);
    let names: Vec<&str> = match only {
        Some(n) => vec![n],
        None => vec!["api", "worker"],
    };
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .context("formatting the restart time")?;
    let mut generations = Vec::new();
    for n in &names {
        let d = api.get(n).await.with_context(|| format!("reading deployment {n}"))?;
        let pp = kube::api::PatchParams { field_manager: Some(super::FIELD_MANAGER.into()), ..Default::default() };
        let patched = api
            .patch(n, &pp, &kube::api::Patch::Strategic(rollout_patch(&d, &at, env)))
            .await
            .with_context(|| format!("patching deployment {n} to restart its pods"))?;
        let g = patched.metadata.generation.with_context(|| format!("deployment {n} has no generation"))?;
        out(format!("rollout of deployment {n} to generation {g} (restartedAt {at})"));
        generations.push(((*n).to_string(), g));
    }
    let started = Instant::now();
    let mut progress = Progress::new(deadline, started);
    loop {
        let mut ds = Vec::new();
        for (n, g) in &generations {
            ds.push((api.get(n).await.with_context(|| format!("reading deployment {n}"))?, *g));
        }
        let pods = pods_api.list(&Default::default()).await.context("listing pods")?.items;
        let t = started.elapsed().as_secs_f64();
        match rollout_verdict(&ds, &pods, &at) {
            Verdict::Complete => {
                out(format!("rollout complete in {t:.1} s (old pods may still be terminating)"));
                return Ok(());
            }
            Verdict::Failed { why, pod } => {
                let mut msg = why;
                if let Some(p) = pod {
                    let lp = kube::api::LogParams {
                        container: Some(p.container.clone()),
                        previous: p.previous,
                        tail_lines: Some(20),
                        ..Default::default()
                    };
                    match pods_api.logs(&p.pod, &lp).await {
                        Ok(log) => {
                            msg += &format!("\nlast lines of {}'s log:\n", p.pod);
                            msg += &last_lines(&log, 20).join("\n");
                        }
                        Err(e) => msg += &format!("\n(could not read {}'s log: {e})", p.pod),
                    }
                }
                return Err(crate::RolloutFailed(msg).into());
            }
            Verdict::Progressing(waiting) => match progress.observe(&waiting, Instant::now()) {
                Ok(lines) => lines.into_iter().for_each(|l| out(format!("{t:>6.1}s {l}"))),
                Err(why) => return Err(crate::RolloutFailed(why).into()),
            },
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `logs` on the cluster: without a pod, the pods' names; with one, its log, followed
/// with `follow` until the stream ends or Ctrl-C.
pub async fn logs(rec: &KindRecord, pod: Option<&str>, follow: bool) -> Result<()> {
    use futures::{AsyncBufReadExt, TryStreamExt};
    let api = kube::Api::<Pod>::namespaced(client(rec).await?, &rec.namespace);
    let Some(pod) = pod else {
        if follow {
            anyhow::bail!("on the kind platform, `logs -f` follows one pod: name it (see `cargo xtask status`)");
        }
        for r in pod_rows(&api.list(&Default::default()).await.context("listing pods")?.items) {
            println!("{}", r.name);
        }
        return Ok(());
    };
    if !follow {
        print!("{}", api.logs(pod, &Default::default()).await.with_context(|| format!("reading pod {pod}'s log"))?);
        return Ok(());
    }
    let lp = kube::api::LogParams { follow: true, ..Default::default() };
    let mut lines = api.log_stream(pod, &lp).await.with_context(|| format!("following pod {pod}'s log"))?.lines();
    loop {
        tokio::select! {
            l = lines.try_next() => match l.with_context(|| format!("reading pod {pod}'s log"))? {
                Some(l) => println!("{l}"),
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `down` on the cluster: deletes the namespace and waits until it is gone.
pub async fn down(rec: &KindRecord) -> Result<()> {
    super::delete_namespace(&client(rec).await?, &rec.namespace, Duration::from_secs(180)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::List;

    const AT: &str = "2026-12-05T07:30:00Z";

    fn pods(json: serde_json::Value) -> Vec<Pod> {
        serde_json::from_value::<List<Pod>>(json).unwrap().items
    }

    fn slices(json: serde_json::Value) -> Vec<EndpointSlice> {
        serde_json::from_value::<List<EndpointSlice>>(json).unwrap().items
    }

    /// A PodList as `GET /api/v1/namespaces/ns/pods` returns it: a new-revision api
    /// pod crash-looping (with lastState), a running old worker, a pod just created
    /// (no status at all) and an old api pod being deleted.
    fn recorded_pods() -> Vec<Pod> {
        pods(serde_json::json!({
          "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "4711"},
          "items": [
            {"metadata": {"name": "api-7d9f-abcde", "namespace": "ns", "labels": {"app": "api"},
                          "annotations": {"zerodrop.dev/restartedAt": AT}},
             "spec": {"nodeName": "zerodrop-worker", "containers": [{"name": "api", "image": "zerodrop-api:init-t"}]},
             "status": {"phase": "Running",
               "containerStatuses": [{"name": "api", "ready": false, "restartCount": 3, "image": "zerodrop-api:init-t", "imageID": "",
                 "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=api"}},
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-12-05T07:30:10Z", "finishedAt": "2026-12-05T07:30:11Z"}}}]}},
            {"metadata": {"name": "worker-5c6b-xyz12", "namespace": "ns", "labels": {"app": "worker"}},
             "spec": {"nodeName": "zerodrop-worker2", "containers": [{"name": "worker"}]},
             "status": {"phase": "Running",
               "containerStatuses": [{"name": "worker", "ready": true, "restartCount": 0, "image": "w", "imageID": "",
                 "state": {"running": {"startedAt": "2026-12-05T07:00:00Z"}}}]}},
            {"metadata": {"name": "api-7d9f-fresh", "namespace": "ns", "labels": {"app": "api"},
                          "annotations": {"zerodrop.dev/restartedAt": AT}},
             "spec": {"containers": [{"name": "api"}]}},
            {"metadata": {"name": "api-6c8e-old01", "namespace": "ns", "labels": {"app": "api"},
                          "deletionTimestamp": "2026-12-05T07:30:05Z", "deletionGracePeriodSeconds": 30},
             "spec": {"nodeName": "zerodrop-worker", "containers": [{"name": "api"}]},
             "status": {"phase": "Running",
               "containerStatuses": [{"name": "api", "ready": true, "restartCount": 0, "image": "a", "imageID": "",
                 "state": {"running": {"startedAt": "2026-12-05T07:00:00Z"}}}]}}
          ]
        }))
    }

    #[test]
    fn status_rows_read_every_pod_shape_the_api_returns() {
        let rows = pod_rows(&recorded_pods());
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["api-6c8e-old01", "api-7d9f-abcde", "api-7d9f-fresh", "worker-5c6b-xyz12"]);
        assert_eq!(
            rows[1],
            PodRow {
                name: "api-7d9f-abcde".into(),
                app: "api".into(),
                phase: "Running".into(),
                ready: "0/1".into(),
                restarts: 3,
                node: "zerodrop-worker".into(),
                state: "CrashLoopBackOff".into(),
            }
        );
        // No status yet: Pending, nothing ready, no node; not an error.
        assert_eq!((rows[2].phase.as_str(), rows[2].ready.as_str(), rows[2].node.as_str()), ("Pending", "0/1", "-"));
        assert_eq!(rows[0].state, "Terminating");
        assert_eq!((rows[3].ready.as_str(), rows[3].state.as_str()), ("1/1", "-"));
        assert!(pod_rows(&pods(
            serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
        ))
        .is_empty());
    }

    #[test]
    fn ready_endpoints_read_null_as_ready_and_skip_terminating_and_duplicates() {
        let s = slices(serde_json::json!({
          "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1", "metadata": {},
          "items": [
            {"metadata": {"name": "api-abc", "labels": {"kubernetes.io/service-name": "api"}}, "addressType": "IPv4",
             "endpoints": [
               {"addresses": ["10.244.1.5"], "conditions": {"ready": null, "serving": null, "terminating": null},
                "targetRef": {"kind": "Pod", "name": "api-7d9f-abcde", "namespace": "ns"}},
               {"addresses": ["10.244.1.6"], "conditions": {"ready": false, "serving": true, "terminating": true},
                "targetRef": {"kind": "Pod", "name": "api-6c8e-old01", "namespace": "ns"}},
               {"addresses": ["10.244.2.9"], "conditions": {"ready": true}}
             ]},
            {"metadata": {"name": "api-def", "labels": {"kubernetes.io/service-name": "api"}}, "addressType": "IPv4",
             "endpoints": [
               {"addresses": ["10.244.1.5"], "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": "api-7d9f-abcde", "namespace": "ns"}}
             ]},
            {"metadata": {"name": "api-empty"}, "addressType": "IPv4", "endpoints": null}
          ]
        }));
        assert_eq!(ready_endpoints(&s), ["10.244.2.9", "api-7d9f-abcde"]);
        assert!(ready_endpoints(&[]).is_empty());
        let rec = KindRecord::new("kind-zerodrop".into(), "zerodrop-x".into(), "naive".into(), None);
        let text = status_text(&rec, &recorded_pods(), &s);
        assert!(text.starts_with("stage naive (namespace zerodrop-x, context kind-zerodrop)\nPOD"), "{text}");
        assert!(text.ends_with("service api ready endpoints: [\"10.244.2.9\", \"api-7d9f-abcde\"]"), "{text}");
    }

    fn deployment(json: serde_json::Value) -> Deployment {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_crash_looping_new_pod_fails_the_rollout_naming_it_and_its_previous_log() {
        let d = deployment(serde_json::json!({
          "apiVersion": "apps/v1", "kind": "Deployment",
          "metadata": {"name": "api", "generation": 2},
          "spec": {"replicas": 3, "selector": {}, "template": {"spec": {"containers": [{"name": "api"}]}}},
          "status": {"observedGeneration": 2, "replicas": 4, "updatedReplicas": 2, "availableReplicas": 3}
        }));
        match rollout_verdict(&[(d, 2)], &recorded_pods(), AT) {
            Verdict::Failed { why, pod: Some(p) } => {
                assert_eq!(p.pod, "api-7d9f-abcde");
                assert_eq!(p.container, "api");
                assert!(p.previous, "the crash is in the last run: read the previous log");
                assert!(why.contains("CrashLoopBackOff; last exit 1 (Error)"), "{why}");
            }
            v => panic!("{v:?}"),
        }
        // The same crash in a pod of another revision is not this rollout's failure.
        let d = deployment(serde_json::json!({"metadata": {"name": "api", "generation": 2}}));
        assert!(matches!(rollout_verdict(&[(d, 2)], &recorded_pods(), "other"), Verdict::Progressing(_)));
    }

    #[test]
    fn a_status_without_observed_generation_is_still_progressing() {
        let d = deployment(serde_json::json!({
          "apiVersion": "apps/v1", "kind": "Deployment",
          "metadata": {"name": "worker", "generation": 5},
          "spec": {"replicas": 2, "selector": {}, "template": {}},
          "status": {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
        }));
        assert_eq!(
            rollout_verdict(&[(d, 5)], &[], AT),
            Verdict::Progressing(vec!["worker: the controller has observed generation 0, not 5".into()])
        );
    }

    #[test]
    fn complete_only_when_every_deployment_is_done_and_a_deadline_condition_fails() {
        let done = deployment(serde_json::json!({
          "metadata": {"name": "api", "generation": 2},
          "spec": {"replicas": 1, "selector": {}, "template": {}},
          "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}
        }));
        assert_eq!(rollout_verdict(&[(done.clone(), 2)], &[], AT), Verdict::Complete);
        let stuck = deployment(serde_json::json!({
          "metadata": {"name": "worker", "generation": 3},
          "spec": {"replicas": 1, "selector": {}, "template": {}},
          "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                            "message": "ReplicaSet \"worker-1\" has timed out progressing."}]}
        }));
        match rollout_verdict(&[(done, 2), (stuck, 3)], &[], AT) {
            Verdict::Failed { why, pod: None } => {
                assert!(why.starts_with("deployment worker: ProgressDeadlineExceeded"), "{why}")
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn progress_resets_on_change_and_fails_after_the_deadline_unchanged() {
        let t0 = Instant::now();
        let mut p = Progress::new(Duration::from_secs(10), t0);
        let a = vec!["api: 1 of 3 replicas updated".to_string()];
        assert_eq!(p.observe(&a, t0).unwrap(), a);
        assert!(p.observe(&a, t0 + Duration::from_secs(9)).unwrap().is_empty());
        let b = vec!["api: 2 of 3 replicas updated".to_string()];
        assert_eq!(p.observe(&b, t0 + Duration::from_secs(9)).unwrap(), b);
        assert!(p.observe(&b, t0 + Duration::from_secs(18)).is_ok());
        let e = p.observe(&b, t0 + Duration::from_secs(19)).unwrap_err();
        assert!(e.contains("2 of 3 replicas updated"), "{e}");
    }

    #[test]
    fn the_state_record_round_trips_and_a_local_state_is_not_kind() {
        let rec = KindRecord::new(
            "kind-zerodrop".into(),
            "zerodrop-20261205".into(),
            "naive".into(),
            Some("zerodrop".into()),
        );
        let text = serde_json::to_string_pretty(&rec).unwrap();
        assert!(text.contains("\"platform\": \"kind\""), "{text}");
        assert_eq!(kind_record(&text).unwrap(), Some(rec));
        let local =
            r#"{"control": "/t/control", "service": "127.96.0.1:80", "stage": "naive", "logs": "/t/logs", "pid": 7}"#;
        assert_eq!(kind_record(local).unwrap(), None);
        assert!(kind_record(r#"{"platform": "nomad"}"#).is_err());
    }

    #[test]
    fn the_env_patch_merges_by_container_name_and_keeps_the_restart() {
        let d = deployment(serde_json::json!({
          "metadata": {"name": "api"},
          "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "api"}, {"name": "sidecar"}]}}}
        }));
        let p = rollout_patch(&d, AT, &[("ZD_X".into(), "1".into())]);
        assert_eq!(p.pointer("/spec/template/metadata/annotations/zerodrop.dev~1restartedAt").unwrap(), AT);
        assert_eq!(p.pointer("/spec/template/spec/containers/1/name").unwrap(), "sidecar");
        assert_eq!(
            p.pointer("/spec/template/spec/containers/0/env/0").unwrap(),
            &serde_json::json!({"name": "ZD_X", "value": "1"})
        );
        assert_eq!(rollout_patch(&d, AT, &[]), super::super::rollout::restart_patch(AT));
        assert_eq!(last_lines("a\nb\nc\n", 2), ["b", "c"]);
    }
}
