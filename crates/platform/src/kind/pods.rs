//! Pods as the API server reports them: a pure tracker that turns successive pod
//! objects into the report's pod events. The time of each observation is the caller's;
//! the watch that feeds the tracker from the API is `pod_watch.rs`, which also needs
//! the stage's shared state and the log streams, both of which build on this module.

use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use zerodrop_evidence::PodEventKind;

/// The Job controller's label on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: Option<String>,
}

impl Terminated {
    pub fn describe(&self) -> String {
        let mut s = match self.signal.or_else(|| (self.exit_code > 128).then_some(self.exit_code - 128)) {
            Some(sig) => format!("killed by signal {sig} (exit code {})", self.exit_code),
            None => format!("exit code {}", self.exit_code),
        };
        if let Some(r) = self.reason.as_deref().filter(|r| !matches!(*r, "Completed" | "Error")) {
            s.push_str(&format!(", {r}"));
        }
        s
    }

    fn sigkilled(&self) -> bool {
        (self.exit_code == 137 || self.signal == Some(9)) && self.reason.as_deref() != Some("OOMKilled")
    }
}

/// What the tracker needs from one pod object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub node: Option<String>,
    pub ip: Option<String>,
    pub ready: bool,
    pub deleting: bool,
    pub grace_s: Option<i64>,
    pub running: bool,
    pub terminated: Option<Terminated>,
    /// Why the container is waiting (ContainerCreating, ErrImageNeverPull, CrashLoopBackOff ...).
    pub waiting: Option<String>,
    pub restarts: i32,
    /// Native sidecars (init containers with `restartPolicy: Always`), by name.
    pub sidecars: Vec<String>,
}

pub fn facts(pod: &Pod) -> PodFacts {
    let st = pod.status.as_ref();
    let ready = st
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let cs = st.and_then(|s| s.container_statuses.as_ref()).and_then(|v| v.first());
    let state = cs.and_then(|c| c.state.as_ref());
    PodFacts {
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        ip: st.and_then(|s| s.pod_ip.clone()),
        ready,
        deleting: pod.metadata.deletion_timestamp.is_some(),
        grace_s: pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds)),
        running: state.is_some_and(|s| s.running.is_some()),
        terminated: state.and_then(|s| s.terminated.as_ref()).map(|t| Terminated {
            exit_code: t.exit_code,
            signal: t.signal,
            reason: t.reason.clone(),
        }),
        waiting: state.and_then(|s| s.waiting.as_ref()).map(|w| {
            format!(
                "{}{}",
                w.reason.clone().unwrap_or_default(),
                w.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
            )
        }),
        restarts: cs.map(|c| c.restart_count).unwrap_or(0),
        sidecars: pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .map(|c| c.name.clone())
            .collect(),
    }
}

#[derive(Debug, Clone, Default)]
struct Track {
    ready: bool,
    /// When we saw the deletion start, and the grace period it was given.
    terminating: Option<(i64, i64)>,
    exited: bool,
    last: PodFacts,
    /// When the API last showed the pod.
    seen_at: i64,
}

/// Turns successive observations of pods into events. Pure: the caller supplies the
/// time of each observation.
#[derive(Debug, Default)]
pub struct PodTracker {
    pods: BTreeMap<String, Track>,
    /// Pods listed since a re-list began (watcher `Init`); `None` outside one.
    resync: Option<std::collections::BTreeSet<String>>,
}

/// (when, kind, detail).
pub type Seen = Vec<(i64, PodEventKind, String)>;

impl PodTracker {
    pub fn knows(&self, pod: &str) -> bool {
        self.pods.contains_key(pod)
    }

    pub fn observe(&mut self, at: i64, f: &PodFacts, pre_stop_ms: u64) -> Seen {
        let mut out = Vec::new();
        if let Some(listed) = &mut self.resync {
            listed.insert(f.name.clone());
        }
        let t = self.pods.entry(f.name.clone()).or_insert_with(|| {
            let detail = match &f.node {
                Some(n) => format!("scheduled on {n}"),
                None => "pending".to_string(),
            };
            out.push((at, PodEventKind::Created, detail));
            Track::default()
        });
        if f.deleting && t.terminating.is_none() {
            let grace = f.grace_s.unwrap_or(30);
            t.terminating = Some((at, grace));
            out.push((at, PodEventKind::Terminating, format!("preStop {pre_stop_ms} ms, grace {} ms", grace * 1000)));
        }
        if f.ready && !t.ready && !t.exited {
            let ip = f.ip.as_deref().map(|ip| format!(" ({ip})")).unwrap_or_default();
            out.push((at, PodEventKind::Ready, format!("Ready condition True{ip}")));
        }
        if !f.ready && t.ready {
            let when = if t.terminating.is_some() { " while terminating" } else { "" };
            out.push((at, PodEventKind::Unready, format!("Ready condition False{when}")));
        }
        t.ready = f.ready;
        if let (Some(term), false) = (&f.terminated, t.exited) {
            if let (true, Some((since, grace))) = (term.sigkilled(), t.terminating) {
                // The kubelet sends SIGKILL when the grace period (counted from the
                // deletion, preStop included) runs out; the API shows only the exit.
                let kill_at = (since + grace * 1000).min(at);
                out.push((
                    kill_at,
                    PodEventKind::Sigkill,
                    format!("grace period over: SIGKILL (inferred from {})", term.describe()),
                ));
            }
            out.push((at, PodEventKind::Exited, term.describe()));
            t.exited = true;
        }
        t.last = f.clone();
        t.seen_at = at;
        out
    }

    /// The pod object is gone from the API.
    pub fn deleted(&mut self, at: i64, name: &str) -> Seen {
        match self.pods.get_mut(name) {
            Some(t) if !t.exited => {
                t.exited = true;
                t.ready = false;
                vec![(at, PodEventKind::Exited, "pod deleted (exit status not observed)".to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// A re-list begins (the watch fell behind, e.g. `410 Gone`): the pods it lists
    /// are observed as usual; [`PodTracker::end_resync`] ends it.
    pub fn begin_resync(&mut self) {
        self.resync = Some(Default::default());
    }

    /// The re-list is complete. A pod it did not list is gone from the API: it was
    /// deleted while the watch was not delivering, and its exit was never shown. It
    /// exits here, once, at `at` (an upper bound), saying so; `(pod, events)` each.
    pub fn end_resync(&mut self, at: i64) -> Vec<(String, Seen)> {
        let Some(listed) = self.resync.take() else { return Vec::new() };
        self.pods
            .iter_mut()
            .filter(|(name, t)| !listed.contains(*name) && !t.exited)
            .map(|(name, t)| {
                t.exited = true;
                t.ready = false;
                let detail = format!(
                    "pod gone at a re-list after a watch gap: exit status and time not observed (at or before \
                     this, after it was last seen {} ms earlier)",
                    at - t.seen_at
                );
                (name.clone(), vec![(at, PodEventKind::Exited, detail)])
            })
            .collect()
    }

    /// The app of a tracked pod, by the labels it last showed.
    pub fn app(&self, pod: &str) -> Option<&'static str> {
        self.pods.get(pod).and_then(|t| app_of(&t.last.labels))
    }

    /// Pods told to terminate that have not exited yet.
    pub fn awaiting_exit(&self) -> Vec<String> {
        self.pods.iter().filter(|(_, t)| t.terminating.is_some() && !t.exited).map(|(n, _)| n.clone()).collect()
    }

    /// One line per pod that is not ready, with the reason its container gives.
    pub fn not_ready(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, t)| !t.ready && !t.exited && t.terminating.is_none())
            .map(|(n, t)| {
                let why = t.last.waiting.clone().unwrap_or_else(|| {
                    if t.last.running {
                        "running, readiness failing".into()
                    } else {
                        "not started".into()
                    }
                });
                let restarts =
                    if t.last.restarts > 0 { format!(", {} restarts", t.last.restarts) } else { String::new() };
                format!("{n}: {why}{restarts}")
            })
            .collect()
    }
}

/// Whether the pod's log can be followed yet: the pod is bound to a node and its
/// container has started (or already ended). Before that the API server answers a
/// log request with `200` and an empty body, and a followed stream ends at once.
pub fn log_ready(f: &PodFacts) -> bool {
    f.node.is_some() && (f.running || f.terminated.is_some())
}

/// Which of the stage's apps a pod belongs to, by the manifests' `app` label.
pub fn app_of(labels: &BTreeMap<String, String>) -> Option<&'static str> {
    match labels.get(zerodrop_manifests::APP_LABEL).map(String::as_str) {
        Some("api") => Some("api"),
        Some("worker") => Some("worker"),
        _ => None,
    }
}

pub(super) fn job_of(labels: &BTreeMap<String, String>) -> Option<&str> {
    labels.get(JOB_NAME_LABEL).or_else(|| labels.get("job-name")).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> PodFacts {
        facts(&serde_json::from_value(json).unwrap())
    }

    fn base(extra_meta: serde_json::Value, status: serde_json::Value) -> serde_json::Value {
        let mut meta =
            serde_json::json!({"name": "api-7c9f6d5b8d-4xk2p", "namespace": "zerodrop", "labels": {"app": "api"}});
        if let (Some(m), Some(x)) = (meta.as_object_mut(), extra_meta.as_object()) {
            m.extend(x.clone());
        }
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": "zerodrop-worker", "terminationGracePeriodSeconds": 12, "containers": [{"name": "api", "image": "zerodrop-api:shell-t"}]},
            "status": status
        })
    }

    fn running(ready: bool) -> serde_json::Value {
        serde_json::json!({
            "phase": "Running", "podIP": "10.244.1.5",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "containerStatuses": [{"name": "api", "image": "zerodrop-api:shell-t", "imageID": "", "ready": ready, "restartCount": 0, "state": {"running": {"startedAt": "2026-11-23T13:02:12Z"}}}]
        })
    }

    /// A pod with the accept-queue sidecar, as the API returns it: the sidecar is an
    /// init container with `restartPolicy: Always`, listed in `initContainerStatuses`
    /// (running while the api container is waiting); the pod's own state is still the
    /// api container's, and the sidecar is found by name.
    #[test]
    fn a_native_sidecar_is_named_and_does_not_stand_for_the_api_container() {
        let mut json = base(
            serde_json::json!({}),
            serde_json::json!({
                "phase": "Pending", "podIP": "10.244.1.5",
                "conditions": [{"type": "Ready", "status": "False"}],
                "initContainerStatuses": [{"name": "queues", "image": "zerodrop-load:t", "imageID": "", "ready": true, "restartCount": 0, "started": true, "state": {"running": {"startedAt": "2026-11-23T13:02:11Z"}}}],
                "containerStatuses": [{"name": "api", "image": "zerodrop-api:shell-t", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]
            }),
        );
        json["spec"]["initContainers"] = serde_json::json!([
            {"name": "queues", "image": "zerodrop-load:t", "restartPolicy": "Always", "args": ["queues", "--port", "8080"]},
            {"name": "migrate", "image": "x"}
        ]);
        let f = pod(json);
        assert_eq!(f.sidecars, ["queues"], "a plain init container is not a sidecar");
        assert!(!f.running && !f.ready);
        assert_eq!(f.waiting.as_deref(), Some("PodInitializing"));
        assert!(!log_ready(&f), "the api container's log is not there yet");
        assert!(pod(base(serde_json::json!({}), running(true))).sidecars.is_empty());
    }

    #[test]
    fn a_naive_pod_is_created_ready_terminating_sigkilled_and_exits() {
        let mut t = PodTracker::default();
        let deleting =
            serde_json::json!({"deletionTimestamp": "2026-11-23T13:02:41Z", "deletionGracePeriodSeconds": 12});
        let seq = [
            (0, pod(base(serde_json::json!({}), serde_json::json!({"phase": "Pending"})))),
            (900, pod(base(serde_json::json!({}), running(true)))),
            (5_000, pod(base(deleting.clone(), running(true)))),
            (5_040, pod(base(deleting.clone(), running(false)))),
            (
                17_900,
                pod(base(
                    deleting.clone(),
                    serde_json::json!({
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "False"}],
                        "containerStatuses": [{"name": "api", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                            "state": {"terminated": {"exitCode": 137, "reason": "Error"}}}]
                    }),
                )),
            ),
        ];
        let mut seen = Vec::new();
        for (at, f) in &seq {
            seen.extend(t.observe(*at, f, 0));
            if *at == 5_040 {
                assert_eq!(t.awaiting_exit(), vec!["api-7c9f6d5b8d-4xk2p".to_string()]);
            }
        }
        seen.extend(t.deleted(18_000, "api-7c9f6d5b8d-4xk2p"));
        let kinds: Vec<(i64, PodEventKind)> = seen.iter().map(|(at, k, _)| (*at, *k)).collect();
        assert_eq!(
            kinds,
            vec![
                (0, PodEventKind::Created),
                (900, PodEventKind::Ready),
                (5_000, PodEventKind::Terminating),
                (5_040, PodEventKind::Unready),
                (17_000, PodEventKind::Sigkill),
                (17_900, PodEventKind::Exited),
            ]
        );
        assert_eq!(seen[2].2, "preStop 0 ms, grace 12000 ms");
        assert_eq!(seen[5].2, "killed by signal 9 (exit code 137)");
        assert!(t.awaiting_exit().is_empty());
    }

    #[test]
    fn a_pod_deleted_before_its_exit_was_seen_still_exits_once() {
        let mut t = PodTracker::default();
        t.observe(0, &pod(base(serde_json::json!({}), running(true))), 0);
        assert_eq!(t.deleted(10, "api-7c9f6d5b8d-4xk2p").len(), 1);
        assert!(t.deleted(11, "api-7c9f6d5b8d-4xk2p").is_empty());
    }

    #[test]
    fn not_ready_pods_say_why() {
        let mut t = PodTracker::default();
        let waiting = serde_json::json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "api", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "image not present"}}}]
        });
        t.observe(0, &pod(base(serde_json::json!({}), waiting)), 0);
        assert_eq!(t.not_ready(), vec!["api-7c9f6d5b8d-4xk2p: ErrImageNeverPull: image not present".to_string()]);
        assert_eq!(app_of(&pod(base(serde_json::json!({}), running(true))).labels), Some("api"));
    }

    #[test]
    fn exit_details() {
        let t = |c, s, r: Option<&str>| Terminated { exit_code: c, signal: s, reason: r.map(String::from) }.describe();
        assert_eq!(t(0, None, Some("Completed")), "exit code 0");
        assert_eq!(t(70, None, Some("Error")), "exit code 70");
        assert_eq!(t(137, None, Some("OOMKilled")), "killed by signal 9 (exit code 137), OOMKilled");
    }
}
