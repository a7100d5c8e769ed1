//! The pods of both versions as the runner has seen them: each pod's last object, when
//! it went away, and its last `/metrics` reading. Pure: the caller feeds it lists and
//! watch events with the time they arrived.
//!
//! A pod that has left still counts: what it served before exiting happened (its last
//! reading stays in the sums), and the time it ran is part of the pod-seconds. Lists
//! and watch events may arrive in any order the API allows; a deletion is final (a
//! pod object is never undeleted), so an older observation that arrives after a pod's
//! deletion cannot bring it back.

use super::super::pods::facts;
use crate::router::Counts;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher::Event;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
struct Entry {
    /// The pod's `app` label value (`api-v1`, `api-v2`).
    app: String,
    name: String,
    pod: Pod,
    gone_at: Option<Timestamp>,
    /// What the pod counted before its counters last went back to zero (a container
    /// restart starts them again).
    earlier: Counts,
    last: Option<Counts>,
}

impl Entry {
    fn total(&self) -> Counts {
        let mut c = self.earlier.clone();
        if let Some(l) = &self.last {
            c.add(l);
        }
        c
    }
}

/// Every pod seen, keyed by uid (a name may be reused by a new pod; a uid never is).
#[derive(Debug, Default)]
pub struct Ledger {
    pods: BTreeMap<String, Entry>,
    /// A watch's re-list under way: its scope (`app`) and the pods it listed so far.
    relist: Option<(String, BTreeSet<String>)>,
}

fn key(pod: &Pod) -> Option<String> {
    pod.metadata.uid.clone().or_else(|| pod.metadata.name.clone())
}

/// Whether a snapshot must have a fresh reading of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Running, Ready and not leaving: a failed read is an error.
    Required,
    /// Running but not Ready or being deleted: its last reading stands in.
    Optional,
    /// Nothing listens (no status, not started, or exited): not asked at all.
    Skip,
}

pub fn need(pod: &Pod) -> Need {
    let f = facts(pod);
    match (f.running, f.ready && !f.deleting) {
        (false, _) => Need::Skip,
        (true, true) => Need::Required,
        (true, false) => Need::Optional,
    }
}

/// When a pod stopped using its node: its container's exit when the API showed one,
/// else when it was seen gone (or now), and never after its `deletionTimestamp` (the
/// end of its grace period, by which the kubelet has killed it).
pub fn end_of(pod: &Pod, gone_at: Option<Timestamp>, now: Timestamp) -> Timestamp {
    let mut end = gone_at.unwrap_or(now).min(now);
    if let Some(d) = &pod.metadata.deletion_timestamp {
        end = end.min(d.0);
    }
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    let finished: Option<Vec<Timestamp>> = statuses
        .iter()
        .map(|c| c.state.as_ref().and_then(|s| s.terminated.as_ref()).and_then(|t| t.finished_at.as_ref()).map(|t| t.0))
        .collect();
    // Only when every container has exited is the pod done with its node.
    if let Some(last) = finished.and_then(|f| f.into_iter().max()) {
        end = end.min(last);
    }
    end
}

/// Seconds from the pod's `creationTimestamp` to [`end_of`]; 0 without a creation time.
pub fn lifetime_s(pod: &Pod, gone_at: Option<Timestamp>, now: Timestamp) -> f64 {
    let Some(start) = pod.metadata.creation_timestamp.as_ref().map(|t| t.0) else { return 0.0 };
    end_of(pod, gone_at, now).duration_since(start).as_secs_f64().max(0.0)
}

impl Ledger {
    /// One pod object of `app` as the API showed it; returns its name when it is new.
    pub fn observe(&mut self, app: &str, pod: &Pod) -> Option<String> {
        let (Some(k), Some(name)) = (key(pod), pod.metadata.name.clone()) else { return None };
        if let Some((scope, seen)) = &mut self.relist {
            if scope == app {
                seen.insert(k.clone());
            }
        }
        match self.pods.get_mut(&k) {
            Some(e) if e.gone_at.is_none() => {
                e.pod = pod.clone();
                None
            }
            Some(_) => None,
            None => {
                let e = Entry {
                    app: app.into(),
                    name: name.clone(),
                    pod: pod.clone(),
                    gone_at: None,
                    earlier: Counts::default(),
                    last: None,
                };
                self.pods.insert(k, e);
                Some(name)
            }
        }
    }

    /// The pod object is gone from the API (its last state is `pod`).
    pub fn deleted(&mut self, app: &str, pod: &Pod, at: Timestamp) -> Option<String> {
        let new = self.observe(app, pod);
        if let Some(e) = key(pod).and_then(|k| self.pods.get_mut(&k)) {
            e.gone_at.get_or_insert(at);
        }
        new
    }

    fn unlisted_are_gone(&mut self, app: &str, listed: &BTreeSet<String>, at: Timestamp) {
        for (k, e) in self.pods.iter_mut() {
            if e.app == app && e.gone_at.is_none() && !listed.contains(k) {
                e.gone_at = Some(at);
            }
        }
    }

    /// A complete list of `app`'s pods at `at`: a known pod it lacks is gone (`at` is
    /// an upper bound of when). Returns the pods new to the ledger.
    pub fn listed(&mut self, app: &str, pods: &[Pod], at: Timestamp) -> Vec<String> {
        let new = pods.iter().filter_map(|p| self.observe(app, p)).collect();
        let seen: BTreeSet<String> = pods.iter().filter_map(key).collect();
        self.unlisted_are_gone(app, &seen, at);
        new
    }

    /// One event of a watch on `app`'s pods. After a re-list (`Init` .. `InitDone`),
    /// the pods it did not list were deleted while the watch was not delivering: the
    /// watcher sends no delete for them. Returns the pods new to the ledger.
    pub fn apply(&mut self, app: &str, ev: &Event<Pod>, at: Timestamp) -> Vec<String> {
        match ev {
            Event::Init => {
                self.relist = Some((app.to_string(), BTreeSet::new()));
                Vec::new()
            }
            Event::InitApply(p) | Event::Apply(p) => self.observe(app, p).into_iter().collect(),
            Event::Delete(p) => self.deleted(app, p, at).into_iter().collect(),
            Event::InitDone => {
                if let Some((scope, seen)) = self.relist.take() {
                    self.unlisted_are_gone(&scope, &seen, at);
                }
                Vec::new()
            }
        }
    }

    /// A fresh `/metrics` reading of `pod`. A reading below the last one means the
    /// counters started again: what was counted before is kept.
    pub fn reading(&mut self, pod: &Pod, c: Counts) {
        let Some(e) = key(pod).and_then(|k| self.pods.get_mut(&k)) else { return };
        if let Some(last) = e.last.take() {
            if c.requests < last.requests {
                e.earlier.add(&last);
            }
        }
        e.last = Some(c);
    }

    /// `app`'s counts: every pod ever seen, a departed one with its last reading.
    pub fn counts(&self, app: &str) -> Counts {
        let mut total = Counts::default();
        for e in self.pods.values().filter(|e| e.app == app) {
            total.add(&e.total());
        }
        total
    }

    /// The names of `app`'s pods not seen gone.
    pub fn present(&self, app: &str) -> Vec<String> {
        self.pods.values().filter(|e| e.app == app && e.gone_at.is_none()).map(|e| e.name.clone()).collect()
    }

    pub fn pod_seconds(&self, now: Timestamp) -> f64 {
        self.pods.values().map(|e| lifetime_s(&e.pod, e.gone_at, now)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::List;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ready() -> Pod {
        serde_json::from_str(include_str!("testdata/pod-api-v1-ready.json")).unwrap()
    }

    /// A pod the API has just created: no node, no status at all.
    const NO_STATUS: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"api-v1-5d9c7b8f6-x2x9q","generateName":"api-v1-5d9c7b8f6-","namespace":"zerodrop-r1","uid":"0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f","resourceVersion":"5120","creationTimestamp":"2026-11-23T13:02:30Z","labels":{"app":"api-v1","pod-template-hash":"5d9c7b8f6","zerodrop.dev/version":"v1"}},"spec":{"containers":[{"name":"api","image":"zerodrop-api:init-t"}],"terminationGracePeriodSeconds":12}}"#;

    /// Running, not Ready yet (its readiness probe has not passed).
    const NOT_READY: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"api-v2-7f6b5c4d3-k8m2n","namespace":"zerodrop-r1","uid":"6f5e4d3c-2b1a-4098-8765-43210fedcba9","resourceVersion":"5133","creationTimestamp":"2026-11-23T13:02:31Z","labels":{"app":"api-v2","zerodrop.dev/version":"v2"}},"spec":{"containers":[{"name":"api","image":"zerodrop-api:init-t"}],"nodeName":"zerodrop-worker2"},"status":{"phase":"Running","conditions":[{"type":"Ready","status":"False","lastProbeTime":null,"lastTransitionTime":"2026-11-23T13:02:31Z","reason":"ContainersNotReady","message":"containers with unready status: [api]"}],"podIP":"10.244.2.9","startTime":"2026-11-23T13:02:31Z","containerStatuses":[{"name":"api","state":{"running":{"startedAt":"2026-11-23T13:02:32Z"}},"lastState":{},"ready":false,"restartCount":0,"image":"docker.io/library/zerodrop-api:init-t","imageID":"","started":true}]}}"#;

    /// The ready pod once `kubectl scale --replicas=0` reached it: still running and
    /// Ready in the API, deletionTimestamp = deletion + its 12 s grace period.
    fn deleting() -> Pod {
        let mut v: serde_json::Value = serde_json::from_str(include_str!("testdata/pod-api-v1-ready.json")).unwrap();
        v["metadata"]["deletionTimestamp"] = "2026-11-23T13:05:12Z".into();
        v["metadata"]["deletionGracePeriodSeconds"] = 12.into();
        serde_json::from_value(v).unwrap()
    }

    /// The ready pod's final object, delivered with the watch's DELETED event: its
    /// container exited 4 s after the deletion began.
    fn exited() -> Pod {
        let mut v: serde_json::Value = serde_json::to_value(deleting()).unwrap();
        v["status"]["containerStatuses"][0]["state"] = serde_json::json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "2026-11-23T13:02:11Z", "finishedAt": "2026-11-23T13:05:04Z"}});
        serde_json::from_value(v).unwrap()
    }

    fn counts(requests: u64) -> Counts {
        Counts { requests, errors_5xx: 1, buckets: [(u64::MAX, requests)].into(), ..Counts::default() }
    }

    #[test]
    fn what_a_snapshot_asks_of_each_pod() {
        assert_eq!(need(&ready()), Need::Required);
        assert_eq!(need(&serde_json::from_str(NO_STATUS).unwrap()), Need::Skip, "nothing listens yet");
        assert_eq!(need(&serde_json::from_str(NOT_READY).unwrap()), Need::Optional);
        assert_eq!(need(&deleting()), Need::Optional, "on its way out: the last reading may stand in");
        assert_eq!(need(&exited()), Need::Skip);
    }

    #[test]
    fn an_empty_list_means_every_known_pod_of_that_version_is_gone() {
        let mut l = Ledger::default();
        let now = at("2026-11-23T13:06:00Z");
        assert_eq!(l.listed("api-v1", &[ready()], at("2026-11-23T13:03:00Z")), ["api-v1-5d9c7b8f6-r7t4w"]);
        l.reading(&ready(), counts(40));
        let list: List<Pod> = serde_json::from_str(
            r#"{"apiVersion":"v1","kind":"PodList","metadata":{"resourceVersion":"1"},"items":[]}"#,
        )
        .unwrap();
        assert!(l.listed("api-v2", &list.items, now).is_empty());
        assert_eq!(l.present("api-v1").len(), 1, "a list of api-v2 says nothing about api-v1");
        l.listed("api-v1", &list.items, at("2026-11-23T13:04:00Z"));
        assert!(l.present("api-v1").is_empty());
        assert_eq!(l.counts("api-v1").requests, 40, "what it served before it went still counts");
        // Created 13:02:10, last listed 13:03, missing from the 13:04 list.
        assert_eq!(l.pod_seconds(now), 110.0);
        assert_eq!(Ledger::default().pod_seconds(now), 0.0);
    }

    #[test]
    fn a_pod_ends_at_its_exit_its_grace_period_or_when_seen_gone() {
        let now = at("2026-11-23T13:10:00Z");
        assert_eq!(lifetime_s(&ready(), None, now), 470.0, "still running: until now");
        assert_eq!(lifetime_s(&deleting(), None, now), 182.0, "killed by the end of its grace period at the latest");
        assert_eq!(lifetime_s(&exited(), Some(now), now), 174.0, "its container's own exit");
        assert_eq!(lifetime_s(&serde_json::from_str(NO_STATUS).unwrap(), None, at("2026-11-23T13:02:40Z")), 10.0);
        let mut nameless = ready();
        nameless.metadata.creation_timestamp = None;
        assert_eq!(lifetime_s(&nameless, None, now), 0.0);
        // A clock behind the API server's never gives a negative lifetime.
        assert_eq!(lifetime_s(&ready(), None, at("2026-11-23T13:00:00Z")), 0.0);
    }

    #[test]
    fn watch_events_in_any_order_the_api_allows() {
        let t = |s: &str| at(&format!("2026-11-23T13:05:{s}Z"));
        let mut l = Ledger::default();
        // The watch began after the pod was deleted: a DELETED for a pod never seen.
        assert_eq!(l.apply("api-v1", &Event::Delete(exited()), t("05")), ["api-v1-5d9c7b8f6-r7t4w"]);
        assert!(l.present("api-v1").is_empty());
        // A list answered before the deletion, processed after it: no resurrection.
        assert!(l.listed("api-v1", &[ready()], t("06")).is_empty());
        assert!(l.present("api-v1").is_empty());
        assert_eq!(l.pod_seconds(t("30")), 174.0);

        // A re-list: the pods it does not show were deleted unseen.
        let mut l = Ledger::default();
        let other: Pod = serde_json::from_str(NO_STATUS).unwrap();
        l.listed("api-v1", &[ready(), other.clone()], t("00"));
        for ev in [Event::Init, Event::InitApply(other.clone())] {
            l.apply("api-v1", &ev, t("01"));
        }
        assert_eq!(l.present("api-v1").len(), 2, "nothing is concluded before InitDone");
        l.apply("api-v1", &Event::InitDone, t("02"));
        assert_eq!(l.present("api-v1"), ["api-v1-5d9c7b8f6-x2x9q"]);
        // A re-list of another version leaves this one alone.
        for ev in [Event::Init, Event::InitDone] {
            l.apply("api-v2", &ev, t("03"));
        }
        assert_eq!(l.present("api-v1").len(), 1);
    }

    #[test]
    fn a_restarted_container_s_counts_add_to_what_it_had() {
        let mut l = Ledger::default();
        l.listed("api-v2", &[serde_json::from_str(NOT_READY).unwrap()], at("2026-11-23T13:03:00Z"));
        let p: Pod = serde_json::from_str(NOT_READY).unwrap();
        l.reading(&p, counts(100));
        l.reading(&p, counts(130));
        assert_eq!(l.counts("api-v2").requests, 130);
        l.reading(&p, counts(5)); // the container restarted
        let c = l.counts("api-v2");
        assert_eq!((c.requests, c.errors_5xx, c.buckets[&u64::MAX]), (135, 2, 135));
        // A reading of a pod the ledger does not know is ignored, not invented.
        l.reading(&ready(), counts(1));
        assert_eq!(l.counts("api-v1").requests, 0);
    }
}
