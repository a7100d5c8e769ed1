//! The api Service's endpoints, as its EndpointSlices say: how many are ready
//! (routed for new connections) over time, and when each pod stopped being routed.
//!
//! A slice endpoint is routed when `conditions.ready` is true (or unset, which the API
//! defines as ready). A terminating pod's endpoint is never ready, though it may stay
//! `serving` while its readiness probe passes; kube-proxy falls back to serving
//! terminating endpoints only when a Service has no ready endpoint at all.
//!
//! The table is pure: it is fed slices and says what changed. The watcher glue at the
//! bottom timestamps the changes on the runner's clock.

use super::state::Shared;
use crate::platform::{now_ms, RawEvent};
use crate::report::model::PodEventKind;
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The label the EndpointSlice controller puts on every slice of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    /// The pod behind the endpoint (its `targetRef`), or its first address.
    pub pod: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl EndpointView {
    fn conditions(&self) -> String {
        format!("ready={} serving={} terminating={}", self.ready, self.serving, self.terminating)
    }
}

pub fn endpoints_of(slice: &EndpointSlice) -> Vec<EndpointView> {
    slice
        .endpoints
        .iter()
        .filter_map(|e| {
            let pod = e.target_ref.as_ref().and_then(|r| r.name.clone()).or_else(|| e.addresses.first().cloned())?;
            let c = e.conditions.clone().unwrap_or_default();
            let ready = c.ready.unwrap_or(true);
            Some(EndpointView {
                pod,
                ready,
                serving: c.serving.unwrap_or(ready),
                terminating: c.terminating.unwrap_or(false),
            })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The number of routed endpoints changed to this.
    Count(u32),
    /// The pod's endpoint became routed.
    Routed { pod: String },
    /// The pod's endpoint stopped being routed; why, in the slice's own terms.
    Unrouted { pod: String, why: String },
}

/// Every slice of one Service, by slice name.
#[derive(Debug, Default)]
pub struct EndpointTable {
    slices: BTreeMap<String, Vec<EndpointView>>,
    routed: BTreeSet<String>,
    count: Option<u32>,
    /// Slices seen since a re-list began (watcher `Init`); `None` outside one.
    resync: Option<BTreeSet<String>>,
}

impl EndpointTable {
    pub fn apply(&mut self, slice: &EndpointSlice) -> Vec<Change> {
        let name = slice.metadata.name.clone().unwrap_or_default();
        if let Some(seen) = &mut self.resync {
            seen.insert(name.clone());
        }
        self.slices.insert(name, endpoints_of(slice));
        self.recompute()
    }

    pub fn delete(&mut self, slice_name: &str) -> Vec<Change> {
        self.slices.remove(slice_name);
        self.recompute()
    }

    /// A re-list starts: changes are held back until it is complete, so a half-listed
    /// state never shows up as a dip.
    pub fn begin_resync(&mut self) {
        self.resync = Some(BTreeSet::new());
    }

    /// The re-list is complete: slices it did not return are gone.
    pub fn end_resync(&mut self) -> Vec<Change> {
        if let Some(seen) = self.resync.take() {
            self.slices.retain(|name, _| seen.contains(name));
        }
        self.recompute()
    }

    /// Endpoints routed right now.
    pub fn ready(&self) -> u32 {
        self.routed.len() as u32
    }

    fn recompute(&mut self) -> Vec<Change> {
        if self.resync.is_some() {
            return Vec::new();
        }
        let now: BTreeSet<String> = self.slices.values().flatten().filter(|e| e.ready).map(|e| e.pod.clone()).collect();
        let mut changes = Vec::new();
        for pod in self.routed.difference(&now) {
            let why = match self.slices.iter().find_map(|(s, eps)| eps.iter().find(|e| &e.pod == pod).map(|e| (s, e))) {
                Some((slice, e)) => format!("{} in EndpointSlice {slice}", e.conditions()),
                None => "gone from the Service's EndpointSlices".to_string(),
            };
            changes.push(Change::Unrouted { pod: pod.clone(), why });
        }
        for pod in now.difference(&self.routed) {
            changes.push(Change::Routed { pod: pod.clone() });
        }
        let count = now.len() as u32;
        if self.count != Some(count) {
            changes.push(Change::Count(count));
            self.count = Some(count);
        }
        self.routed = now;
        changes
    }
}

/// How long after a pod turned terminating its endpoint stopped being routed: the
/// `endpoint_removed` events get this in their detail. A removal more than
/// [`SKEW_MS`] before the pod's terminating event is a readiness failure, not a
/// consequence of the termination. Pure; runs over a stage's events at the end.
pub fn annotate_removals(events: &mut [RawEvent]) {
    let terminating: BTreeMap<String, i64> =
        events.iter().filter(|e| e.kind == PodEventKind::Terminating).map(|e| (e.pod.clone(), e.unix_ms)).collect();
    for e in events.iter_mut().filter(|e| e.kind == PodEventKind::EndpointRemoved) {
        let note = match removal_delay(&terminating, &e.pod, e.unix_ms) {
            Some(d) => format!("{d} ms after the pod turned terminating"),
            None => "while the pod was not terminating (readiness failed)".to_string(),
        };
        e.detail = if e.detail.is_empty() { note } else { format!("{}; {note}", e.detail) };
    }
}

/// Two watch streams (pods, slices) deliver in their own order: a slice update can
/// be seen a few ms before the pod update that caused it.
pub const SKEW_MS: i64 = 250;

fn removal_delay(terminating: &BTreeMap<String, i64>, pod: &str, removed_at: i64) -> Option<i64> {
    let t = *terminating.get(pod)?;
    (removed_at >= t - SKEW_MS).then_some(removed_at - t)
}

/// (pod, ms from terminating to endpoint removal) for every pod that has both.
pub fn removal_delays(events: &[RawEvent]) -> Vec<(String, i64)> {
    let terminating: BTreeMap<String, i64> =
        events.iter().filter(|e| e.kind == PodEventKind::Terminating).map(|e| (e.pod.clone(), e.unix_ms)).collect();
    events
        .iter()
        .filter(|e| e.kind == PodEventKind::EndpointRemoved)
        .filter_map(|e| Some((e.pod.clone(), removal_delay(&terminating, &e.pod, e.unix_ms)?)))
        .collect()
}

/// Applies `changes` seen at `at` to the stage's record.
pub fn record(shared: &Shared, at: i64, changes: Vec<Change>) {
    if changes.is_empty() {
        return;
    }
    shared.with(|s| {
        for c in changes {
            match c {
                Change::Count(n) => s.samples.push((at, n)),
                Change::Unrouted { pod, why } => s.events.push(RawEvent {
                    unix_ms: at,
                    pod,
                    app: "api",
                    kind: PodEventKind::EndpointRemoved,
                    detail: why,
                }),
                Change::Routed { .. } => {}
            }
        }
    });
    shared.changed.notify_waiters();
}

/// Watches the slices of Service `service` until `stop`.
pub fn spawn_watch(
    api: Api<EndpointSlice>,
    service: &str,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let cfg = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
    tokio::spawn(async move {
        let mut table = EndpointTable::default();
        let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
        let (mut warned, mut synced) = (false, false);
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => break,
                ev = stream.next() => ev,
            };
            let Some(ev) = ev else { break };
            let at = now_ms();
            let changes = match ev {
                Ok(Event::Init) => {
                    table.begin_resync();
                    Vec::new()
                }
                Ok(Event::InitApply(s)) | Ok(Event::Apply(s)) => table.apply(&s),
                Ok(Event::Delete(s)) => table.delete(s.metadata.name.as_deref().unwrap_or_default()),
                Ok(Event::InitDone) => {
                    if !synced {
                        synced = true;
                        shared.with(|s| s.synced += 1);
                        shared.changed.notify_waiters();
                    }
                    table.end_resync()
                }
                Err(e) => {
                    if !warned {
                        eprintln!("warning: watching EndpointSlices: {e} (retrying)");
                        warned = true;
                    }
                    Vec::new()
                }
            };
            shared.ready_endpoints.store(table.ready(), std::sync::atomic::Ordering::Relaxed);
            record(&shared, at, changes);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (runner time, watch event type, slice).
    type WatchEvent = (i64, String, EndpointSlice);

    /// `testdata/endpointslices.json`: what a watch on the api Service's slices
    /// delivers during a naive-stage roll (maxSurge 0, maxUnavailable 1), with the
    /// times the pod watch saw each old pod turn terminating.
    fn recorded() -> (Vec<WatchEvent>, Vec<(String, i64)>) {
        let v: serde_json::Value = serde_json::from_str(include_str!("testdata/endpointslices.json")).unwrap();
        let events = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["t_ms"].as_i64().unwrap(),
                    e["type"].as_str().unwrap().to_string(),
                    serde_json::from_value(e["object"].clone()).unwrap(),
                )
            })
            .collect();
        let terminating =
            v["terminating"].as_object().unwrap().iter().map(|(k, t)| (k.clone(), t.as_i64().unwrap())).collect();
        (events, terminating)
    }

    fn replay() -> (Vec<(i64, u32)>, Vec<RawEvent>) {
        let (events, terminating) = recorded();
        let mut table = EndpointTable::default();
        let mut samples = Vec::new();
        let mut out: Vec<RawEvent> = terminating
            .iter()
            .map(|(pod, t)| RawEvent {
                unix_ms: *t,
                pod: pod.clone(),
                app: "api",
                kind: PodEventKind::Terminating,
                detail: String::new(),
            })
            .collect();
        for (t, kind, slice) in &events {
            let changes = match kind.as_str() {
                "DELETED" => table.delete(slice.metadata.name.as_deref().unwrap()),
                _ => table.apply(slice),
            };
            for c in changes {
                match c {
                    Change::Count(n) => samples.push((*t, n)),
                    Change::Unrouted { pod, why } => out.push(RawEvent {
                        unix_ms: *t,
                        pod,
                        app: "api",
                        kind: PodEventKind::EndpointRemoved,
                        detail: why,
                    }),
                    Change::Routed { .. } => {}
                }
            }
        }
        (samples, out)
    }

    #[test]
    fn ready_endpoint_counts_follow_the_slices() {
        let (samples, _) = replay();
        assert_eq!(
            samples,
            vec![(0, 3), (1_000, 2), (2_300, 3), (2_650, 2), (4_100, 3), (4_480, 2), (6_050, 3)],
            "one sample per change; a terminating endpoint that is still serving does not count"
        );
    }

    #[test]
    fn each_old_pod_gets_one_removal_with_its_delay_after_terminating() {
        let (_, mut events) = replay();
        let delays = removal_delays(&events);
        assert_eq!(
            delays,
            vec![
                ("api-7c9f6d5b8d-4xk2p".to_string(), 14),
                ("api-7c9f6d5b8d-9wq7m".to_string(), 31),
                ("api-7c9f6d5b8d-hb2cn".to_string(), 22)
            ]
        );
        annotate_removals(&mut events);
        let removed: Vec<&RawEvent> = events.iter().filter(|e| e.kind == PodEventKind::EndpointRemoved).collect();
        assert_eq!(removed.len(), 3, "gone-from-slice after already unrouted is not a second removal");
        assert_eq!(
            removed[0].detail,
            "ready=false serving=true terminating=true in EndpointSlice api-x7k2p; 14 ms after the pod turned terminating"
        );
    }

    /// Issue #8, defect 4: the report's propagation line on kind is the cluster's own
    /// measured delay, from these recorded slices.
    #[test]
    fn the_measured_propagation_comes_from_the_recorded_slices() {
        let (_, events) = replay();
        let ms: Vec<i64> = removal_delays(&events).into_iter().map(|(_, d)| d).collect();
        let p = crate::kind::measured_propagation(&ms);
        assert_eq!(p.configured_ms, None, "nothing on a cluster applies a configured delay");
        assert_eq!(p.measured, Some(crate::report::model::MeasuredDelay { p50_ms: 22, max_ms: 31, n: 3 }));
        assert!(p.what.contains("terminating") && p.what.contains("EndpointSlice"), "{}", p.what);
        assert_eq!(crate::kind::measured_propagation(&[]).measured, None);
    }

    #[test]
    fn a_readiness_failure_is_a_removal_without_termination() {
        let mut events = vec![
            RawEvent {
                unix_ms: 1000,
                pod: "a".into(),
                app: "api",
                kind: PodEventKind::EndpointRemoved,
                detail: String::new(),
            },
            RawEvent {
                unix_ms: 5000,
                pod: "a".into(),
                app: "api",
                kind: PodEventKind::Terminating,
                detail: String::new(),
            },
            RawEvent {
                unix_ms: 4900,
                pod: "b".into(),
                app: "api",
                kind: PodEventKind::EndpointRemoved,
                detail: String::new(),
            },
            RawEvent {
                unix_ms: 5000,
                pod: "b".into(),
                app: "api",
                kind: PodEventKind::Terminating,
                detail: String::new(),
            },
        ];
        annotate_removals(&mut events);
        assert_eq!(events[0].detail, "while the pod was not terminating (readiness failed)");
        assert_eq!(events[2].detail, "-100 ms after the pod turned terminating", "within the two watches' skew");
    }

    #[test]
    fn a_relist_never_shows_a_half_listed_dip() {
        let (events, _) = recorded();
        let mut table = EndpointTable::default();
        table.apply(&events[0].2);
        table.begin_resync();
        assert!(table.apply(&events[0].2).is_empty());
        assert_eq!(table.end_resync(), vec![]);
        assert_eq!(table.ready(), 3);
        table.begin_resync();
        let changes = table.end_resync();
        assert_eq!(changes.last(), Some(&Change::Count(0)), "a slice missing from the re-list is gone");
    }
}
