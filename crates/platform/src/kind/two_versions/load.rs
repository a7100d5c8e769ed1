//! The load of a routed fleet: the in-cluster generator as a Job (the stage
//! experiment's own, [`load_job`]) aimed at the routing tier's Service, so requests
//! enter through HAProxy as a client pod's would. It runs without the data-plane gate:
//! the gate's probes would go through HAProxy too, where they count in the backends'
//! counters that the report holds against the apps' own (which leave probes out), and
//! HAProxy, not the Service, decides which pod answers them.

use super::super::load_job;
use super::super::log_stream::{spawn_log_stream, LineHook};
use super::super::objects::{service_port, Rendered};
use super::super::pods::{facts, Terminated, JOB_NAME_LABEL};
use super::super::{apply, KindOptions};
use super::layout::ROUTER;
use crate::LoadRun;
use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use kube::runtime::wait::await_condition;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use zerodrop_load::Profile;
use zerodrop_manifests::RenderOptions;

/// `--job-prefix` of the routed load, as on the local platform.
pub const JOB_PREFIX: &str = "progressive";
/// From the apply to the load pod running: scheduling and, on first use, the pull.
pub const START_LIMIT: Duration = Duration::from_secs(180);
/// From the pod running to its log saying requests flow.
pub const BEGIN_LIMIT: Duration = Duration::from_secs(60);

/// The `n`th load Job of the run: `profile` against the routing tier's Service.
pub fn job_object(
    opts: &KindOptions,
    render: &RenderOptions,
    objects: &[Rendered],
    profile: &Profile,
    n: usize,
) -> Result<zerodrop_manifests::Object> {
    let port = service_port(objects, ROUTER)?;
    let target = format!("{}:{port}", render.service_host(ROUTER));
    let spec = zerodrop_manifests::LoadJobSpec {
        // Its own name space: the stage experiment's Jobs are `load-<stage>-<run>`.
        name: load_job::job_name(&format!("routed-{}", opts.run_id), n),
        args: load_job::args(profile, &target, JOB_PREFIX, &[]),
    };
    Ok(zerodrop_manifests::load_job(&spec, render))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    Complete,
    Failed(String),
}

/// The Job's terminal condition, if it has one yet. `SuccessCriteriaMet` and
/// `FailureTarget` come before it while the pod may still be terminating: not an end.
pub fn job_end(job: &Job) -> Option<JobEnd> {
    let conditions = job.status.as_ref()?.conditions.as_deref()?;
    let holds = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
    if let Some(c) = holds("Failed") {
        let why = [c.reason.as_deref(), c.message.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(": ");
        return Some(JobEnd::Failed(if why.is_empty() { "no reason given".into() } else { why }));
    }
    holds("Complete").map(|_| JobEnd::Complete)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadPod {
    /// Not started yet, and why.
    Waiting(String),
    Running,
    Exited(Terminated),
}

pub fn load_pod_state(pod: &Pod) -> LoadPod {
    let Some(status) = &pod.status else { return LoadPod::Waiting("no status yet".into()) };
    let f = facts(pod);
    match (f.terminated, f.running) {
        (Some(t), _) => LoadPod::Exited(t),
        (None, true) => LoadPod::Running,
        (None, false) => LoadPod::Waiting(
            f.waiting.or_else(|| status.phase.clone()).unwrap_or_else(|| "no container status yet".into()),
        ),
    }
}

/// Waits (on a watch of the Job's pods) for a pod that runs or has already exited.
async fn wait_load_pod(pods: &Api<Pod>, job: &str, limit: Duration) -> Result<String> {
    let cfg = watcher::Config::default().labels(&format!("{JOB_NAME_LABEL}={job}"));
    let mut stream = std::pin::pin!(watcher(pods.clone(), cfg).default_backoff());
    let mut why = "no pod yet".to_string();
    let found = tokio::time::timeout(limit, async {
        while let Some(ev) = stream.next().await {
            let Ok(Event::Apply(p) | Event::InitApply(p)) = ev else { continue };
            let name = p.metadata.name.clone().unwrap_or_default();
            match load_pod_state(&p) {
                LoadPod::Waiting(w) => why = format!("{name}: {w}"),
                LoadPod::Running | LoadPod::Exited(_) => return Some(name),
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(pod)) => Ok(pod),
        Ok(None) => bail!("the watch of the load Job {job}'s pods ended"),
        Err(_) => bail!("the load Job {job}'s pod did not start within {limit:?}: {why}"),
    }
}

/// Applies `job`, returns once its log says requests flow; the [`LoadRun`] resolves
/// with the generator's result once the Job has ended.
pub async fn start(
    client: &Client,
    ns: &str,
    job: &Rendered,
    profile: &Profile,
    log_dir: &Path,
    stop: &CancellationToken,
) -> Result<LoadRun> {
    apply::apply(client, ns, job).await?;
    tracing::info!(step = "applied", job = %job.name, "load Job applied");
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let pod = wait_load_pod(&pods, &job.name, START_LIMIT).await?;
    let (began, mut began_rx) = tokio::sync::watch::channel(false);
    let hook: LineHook = Box::new(move |line| {
        if load_job::load_began(line) {
            began.send_replace(true);
        }
    });
    let path = log_dir.join(format!("{}.log", job.name));
    let stream = spawn_log_stream(pods.clone(), pod.clone(), path.clone(), Some(hook), stop.child_token());
    // Reduced to plain values at once: the channel's read guard must not live on.
    let waited = tokio::time::timeout(BEGIN_LIMIT, began_rx.wait_for(|b| *b)).await.map(|r| r.is_ok());
    match waited {
        Ok(true) => {}
        // The stream ended (the pod exited) before a line said so: its whole log decides.
        Ok(false) => {
            let full =
                pods.logs(&pod, &LogParams::default()).await.with_context(|| format!("reading the log of {pod}"))?;
            if !full.lines().any(load_job::load_began) {
                let lines: Vec<&str> = full.lines().collect();
                let tail = lines[lines.len().saturating_sub(10)..].join("\n");
                bail!("the load Job {} ended before its load began; the last lines of {pod}'s log:\n{tail}", job.name);
            }
        }
        Err(_) => bail!("the load Job {} did not begin within {BEGIN_LIMIT:?} (see {})", job.name, path.display()),
    }
    tracing::info!(step = "load_began", job = %job.name, pod = %pod, "load under way");
    let jobs = Api::<Job>::namespaced(client.clone(), ns);
    let limit = profile.duration + profile.request_timeout + Duration::from_secs(120);
    let name = job.name.clone();
    Ok(tokio::spawn(async move {
        let ended =
            tokio::time::timeout(limit, await_condition(jobs, &name, |j: Option<&Job>| j.and_then(job_end).is_some()))
                .await
                .map_err(|_| anyhow!("the load Job {name} did not finish within {limit:?}"))?
                .with_context(|| format!("watching the load Job {name}"))?;
        let end = ended.as_ref().and_then(job_end);
        let abort = stream.abort_handle();
        if tokio::time::timeout(Duration::from_secs(30), stream).await.is_err() {
            abort.abort();
        }
        let streamed = std::fs::read_to_string(&path).unwrap_or_default();
        let result = match load_job::extract_result(&streamed) {
            Ok(r) => Ok(r),
            // The stream may have broken off; the pod keeps its whole log.
            Err(first) => match pods.logs(&pod, &LogParams::default()).await {
                Ok(full) => load_job::extract_result(&full).map_err(|_| first),
                Err(_) => Err(first),
            },
        };
        tracing::info!(step = "load_finished", job = %name, ok = result.is_ok(), "load Job ended");
        result.with_context(|| match end {
            Some(JobEnd::Failed(why)) => format!("the load Job {name} failed ({why})"),
            _ => format!("the load Job {name} ({pod})"),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn job(status: &str) -> Job {
        serde_json::from_str(&format!(
            r#"{{"apiVersion":"batch/v1","kind":"Job","metadata":{{"name":"load-0-routed-r1","namespace":"zerodrop-r1","uid":"11111111-2222-4333-8444-555555555555","resourceVersion":"6001","generation":1,"creationTimestamp":"2026-11-23T13:03:00Z","labels":{{"app":"load"}}}},"spec":{{"backoffLimit":0,"template":{{"metadata":{{"labels":{{"app":"load"}}}},"spec":{{"restartPolicy":"Never","containers":[{{"name":"load","image":"zerodrop-load:t"}}]}}}}}}{status}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_job_has_ended_only_on_its_terminal_condition() {
        assert_eq!(job_end(&job("")), None, "no status at all");
        assert_eq!(job_end(&job(r#","status":{"startTime":"2026-11-23T13:03:00Z","active":1,"ready":0}"#)), None);
        assert_eq!(job_end(&job(r#","status":{"conditions":[],"active":1}"#)), None);
        let met = r#","status":{"conditions":[{"type":"SuccessCriteriaMet","status":"True","lastProbeTime":"2026-11-23T13:04:00Z","lastTransitionTime":"2026-11-23T13:04:00Z","reason":"CompletionsReached","message":"Reached expected number of succeeded pods"}],"terminating":1}"#;
        assert_eq!(job_end(&job(met)), None, "its pod may still be terminating");
        let complete = r#","status":{"conditions":[{"type":"SuccessCriteriaMet","status":"True","lastProbeTime":"2026-11-23T13:04:00Z","lastTransitionTime":"2026-11-23T13:04:00Z","reason":"CompletionsReached","message":"Reached expected number of succeeded pods"},{"type":"Complete","status":"True","lastProbeTime":"2026-11-23T13:04:01Z","lastTransitionTime":"2026-11-23T13:04:01Z","reason":"CompletionsReached","message":"Reached expected number of succeeded pods"}],"startTime":"2026-11-23T13:03:00Z","completionTime":"2026-11-23T13:04:01Z","succeeded":1,"terminating":0}"#;
        assert_eq!(job_end(&job(complete)), Some(JobEnd::Complete));
        let failed = r#","status":{"conditions":[{"type":"FailureTarget","status":"True","lastProbeTime":"2026-11-23T13:04:00Z","lastTransitionTime":"2026-11-23T13:04:00Z","reason":"BackoffLimitExceeded","message":"Job has reached the specified backoff limit"},{"type":"Failed","status":"True","lastProbeTime":"2026-11-23T13:04:01Z","lastTransitionTime":"2026-11-23T13:04:01Z","reason":"BackoffLimitExceeded","message":"Job has reached the specified backoff limit"}],"failed":1}"#;
        assert_eq!(
            job_end(&job(failed)),
            Some(JobEnd::Failed("BackoffLimitExceeded: Job has reached the specified backoff limit".into()))
        );
        let not_yet = r#","status":{"conditions":[{"type":"Complete","status":"False","lastProbeTime":"2026-11-23T13:04:01Z","lastTransitionTime":"2026-11-23T13:04:01Z"}]}"#;
        assert_eq!(job_end(&job(not_yet)), None);
    }

    #[test]
    fn the_load_pod_is_under_way_once_it_runs_or_has_exited() {
        let pod = |status: &str| -> Pod {
            serde_json::from_str(&format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"load-0-routed-r1-x7k2m","namespace":"zerodrop-r1","uid":"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee","creationTimestamp":"2026-11-23T13:03:00Z","labels":{{"app":"load","batch.kubernetes.io/job-name":"load-0-routed-r1"}}}},"spec":{{"restartPolicy":"Never","containers":[{{"name":"load","image":"zerodrop-load:t"}}]}}{status}}}"#
            ))
            .unwrap()
        };
        assert_eq!(load_pod_state(&pod("")), LoadPod::Waiting("no status yet".into()));
        assert_eq!(
            load_pod_state(&pod(r#","status":{"phase":"Pending","qosClass":"Burstable"}"#)),
            LoadPod::Waiting("Pending".into())
        );
        let pulling = r#","status":{"phase":"Pending","containerStatuses":[{"name":"load","state":{"waiting":{"reason":"ErrImageNeverPull","message":"Container image \"zerodrop-load:t\" is not present with pull policy of Never"}},"lastState":{},"ready":false,"restartCount":0,"image":"zerodrop-load:t","imageID":""}]}"#;
        assert!(
            matches!(load_pod_state(&pod(pulling)), LoadPod::Waiting(w) if w.starts_with("ErrImageNeverPull: Container image"))
        );
        let running = r#","status":{"phase":"Running","containerStatuses":[{"name":"load","state":{"running":{"startedAt":"2026-11-23T13:03:02Z"}},"lastState":{},"ready":true,"restartCount":0,"image":"zerodrop-load:t","imageID":"","started":true}]}"#;
        assert_eq!(load_pod_state(&pod(running)), LoadPod::Running);
        let done = r#","status":{"phase":"Failed","containerStatuses":[{"name":"load","state":{"terminated":{"exitCode":1,"reason":"Error","startedAt":"2026-11-23T13:03:02Z","finishedAt":"2026-11-23T13:03:03Z"}},"lastState":{},"ready":false,"restartCount":0,"image":"zerodrop-load:t","imageID":""}]}"#;
        assert!(matches!(load_pod_state(&pod(done)), LoadPod::Exited(t) if t.exit_code == 1));
    }

    #[test]
    fn the_load_enters_through_the_routing_tier_without_the_gate() {
        let opts = KindOptions::new(None, false, "20261123-130150".into(), "t".into(), PathBuf::from("/tmp"));
        let spec = super::super::tests::spec(2, "errors=2%");
        let render = super::super::render_for(&opts, &spec);
        let objects = super::super::plan(&render, &spec).unwrap();
        let p = Profile::default();
        let o = job_object(&opts, &render, &objects, &p, 1).unwrap();
        assert_eq!(o.name(), "load-1-routed-20261123-130150");
        assert_eq!(o.metadata().namespace.as_deref(), Some("zerodrop-20261123-130150"));
        let args: Vec<String> =
            serde_json::from_value(o.to_json().pointer("/spec/template/spec/containers/0/args").cloned().unwrap())
                .unwrap();
        let flag = |f: &str| args.iter().position(|a| a == f).map(|i| args[i + 1].clone());
        assert_eq!(flag("--target").as_deref(), Some("haproxy.zerodrop-20261123-130150.svc.cluster.local:80"));
        assert_eq!(flag("--job-prefix").as_deref(), Some(JOB_PREFIX));
        assert!(!args.iter().any(|a| a.starts_with("--await")), "{args:?}");
        assert_eq!(
            args,
            load_job::args(&p, &flag("--target").unwrap(), JOB_PREFIX, &[]),
            "the stage load's own arguments"
        );
    }
}
