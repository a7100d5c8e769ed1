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
//!
//! It also names the pods the load generator's data-plane gate must reach before the
//! load starts ([`awaited_pods`]): the slices say which endpoints the control plane
//! routes; only a probe through the Service shows that the node's rules carry them.

use super::state::Shared;
use crate::{now_ms, RawEvent};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zerodrop_evidence::PodEventKind;

/// The label the EndpointSlice controller puts on every slice of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    /// The pod behind the endpoint (its `targetRef`), or its first address.
    pub pod: String,
    /// `pod` is a Pod's name from `targetRef`, not an address: what the pod's
    /// `x-zd-pod` answers carry.
    pub named: bool,
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
            let target = e.target_ref.as_ref().and_then(|r| Some((r.name.clone()?, r.kind.as_deref())));
            let (pod, named) = match target {
                Some((name, kind)) => (name, kind.is_none_or(|k| k == "Pod")),
                None => (e.addresses.first().cloned()?, false),
            };
            let c = e.conditions.clone().unwrap_or_default();
            let ready = c.ready.unwrap_or(true);
            Some(EndpointView {
                pod,
                named,
                ready,
                serving: c.serving.unwrap_or(ready),
                terminating: c.terminating.unwrap_or(false),
            })
        })
        .collect()
}

/// The pods a probe through the Service must reach, in name order, from the
/// endpoints of every slice of the Service ([`endpoints_of`]): ready and not
/// terminating, named by their `targetRef` Pod. Per the discovery.k8s.io/v1 API, a
/// missing `ready` is unknown and read as ready, a missing `terminating` as not
/// terminating. An endpoint can sit in two slices for a moment (the controller moving
/// it); it is awaited once, and not at all if either copy says terminating. An
/// endpoint without a Pod `targetRef` has no name to await.
pub fn awaited_pods<'a>(views: impl IntoIterator<Item = &'a EndpointView> + Clone) -> Vec<String> {
    let leaving: BTreeSet<&str> = views.clone().into_iter().filter(|e| e.terminating).map(|e| e.pod.as_str()).collect();
    let pods: BTreeSet<&str> = views
        .into_iter()
        .filter(|e| e.named && e.ready && !e.terminating && !leaving.contains(e.pod.as_str()))
        .map(|e| e.pod.as_str())
        .collect();
    pods.into_iter().map(str::to_string).collect()
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

    /// What one event of the slices' watch changes, as [`spawn_watch`] applies it:
    /// a re-list (`Init` .. `InitDone`) is held back until complete.
    pub fn on_event(&mut self, ev: &Event<EndpointSlice>) -> Vec<Change> {
        match ev {
            Event::Init => {
                self.begin_resync();
                Vec::new()
            }
            Event::InitApply(s) | Event::Apply(s) => self.apply(s),
            Event::Delete(s) => self.delete(s.metadata.name.as_deref().unwrap_or_default()),
            Event::InitDone => self.end_resync(),
        }
    }

    /// Endpoints routed right now.
    pub fn ready(&self) -> u32 {
        self.routed.len() as u32
    }

    /// [`awaited_pods`] over every slice held; `None` during a re-list, whose
    /// half-listed state is no answer.
    pub fn awaited_pods(&self) -> Option<Vec<String>> {
        self.resync.is_none().then(|| awaited_pods(self.slices.values().flatten()))
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
                Ok(ev) => {
                    if matches!(ev, Event::InitDone) && !synced {
                        synced = true;
                        shared.with(|s| s.synced += 1);
                        shared.changed.notify_waiters();
                    }
                    table.on_event(&ev)
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
            if let Some(pods) = table.awaited_pods() {
                shared.with(|s| s.awaited_pods = pods);
            }
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
        assert_eq!(p.measured, Some(zerodrop_evidence::MeasuredDelay { p50_ms: 22, max_ms: 31, n: 3 }));
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

    /// `testdata/endpointslices-awaited.json`: a list of the api Service's slices,
    /// then watch events, in the API's own JSON.
    fn awaited_fixture() -> (Vec<EndpointSlice>, Vec<(String, EndpointSlice)>) {
        let v: serde_json::Value = serde_json::from_str(include_str!("testdata/endpointslices-awaited.json")).unwrap();
        let slices = serde_json::from_value(v["snapshot"].clone()).unwrap();
        let events = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["type"].as_str().unwrap().to_string(), serde_json::from_value(e["object"].clone()).unwrap()))
            .collect();
        (slices, events)
    }

    fn apply_event(table: &mut EndpointTable, kind: &str, slice: &EndpointSlice) {
        match kind {
            "DELETED" => table.delete(slice.metadata.name.as_deref().unwrap()),
            "ADDED" | "MODIFIED" => table.apply(slice),
            other => panic!("not a watch event type: {other}"),
        };
    }

    const A: &str = "api-5d8f7c9b4-2xq7k";
    const B: &str = "api-5d8f7c9b4-8mzt4";
    const C: &str = "api-5d8f7c9b4-kw9rj";
    const D: &str = "api-5d8f7c9b4-p4n6d";
    const E: &str = "api-5d8f7c9b4-h7c2v";
    const F: &str = "api-5d8f7c9b4-z3l8s";

    #[test]
    fn awaited_pods_are_the_ready_non_terminating_targets_of_a_list() {
        let (slices, _) = awaited_fixture();
        assert_eq!(slices.len(), 4);
        assert!(slices[1].endpoints.is_empty() && slices[2].endpoints.is_empty(), "`endpoints` null or absent");
        // Ready a and b; c's conditions are empty and e's absent: unknown ready reads
        // as ready, unknown terminating as not terminating. d is not ready yet; the
        // old pods are terminating (one of them still ready, as publishNotReadyAddresses
        // allows); 10.244.3.9 has no targetRef, so no pod name to await.
        let views: Vec<EndpointView> = slices.iter().flat_map(endpoints_of).collect();
        assert_eq!(awaited_pods(&views), vec![A, B, E, C]);
        let noref = endpoints_of(&slices[3]).into_iter().find(|e| e.pod == "10.244.3.9").unwrap();
        assert!(!noref.named && noref.ready);
        let mut table = EndpointTable::default();
        for s in &slices {
            table.apply(s);
        }
        assert_eq!(table.awaited_pods(), Some(awaited_pods(&views)));
        assert_eq!(table.ready(), 6, "routed counts every ready endpoint, named or not");
    }

    #[test]
    fn watch_events_after_the_list_move_the_awaited_pods() {
        let (slices, events) = awaited_fixture();
        let mut table = EndpointTable::default();
        table.begin_resync();
        for s in &slices {
            table.apply(s);
            assert_eq!(table.awaited_pods(), None, "a half-listed state is no answer");
        }
        table.end_resync();
        let mut after = Vec::new();
        for (kind, slice) in &events {
            apply_event(&mut table, kind, slice);
            after.push(table.awaited_pods().unwrap());
        }
        assert_eq!(after[0], vec![A, B, E, C, D], "MODIFIED: d turned ready");
        assert_eq!(after[1], vec![A, B, E, C, D, F], "ADDED: a, listed in two slices, is awaited once");
        assert_eq!(after[2], vec![A, B, E, D, F], "MODIFIED: c turned terminating");
        assert_eq!(after[3], after[2], "DELETED: the empty slice had nothing");
        // A DELETED for a slice never seen is nothing to undo.
        table.delete("api-never-listed");
        assert_eq!(table.awaited_pods().unwrap(), after[3]);
    }

    /// The API orders the events of one object, never those of different objects: in
    /// any order of these (one per slice), the end is the same.
    #[test]
    fn the_awaited_pods_do_not_depend_on_the_order_across_slices() {
        let (slices, events) = awaited_fixture();
        let n = events.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut ends = std::collections::BTreeSet::new();
        let mut seen = 0;
        // Heap's algorithm: every permutation of the events.
        let mut c = vec![0; n];
        let mut run = |order: &[usize]| {
            let mut table = EndpointTable::default();
            for s in &slices {
                table.apply(s);
            }
            for &i in order {
                apply_event(&mut table, &events[i].0, &events[i].1);
            }
            ends.insert(table.awaited_pods().unwrap());
            seen += 1;
        };
        run(&order);
        let mut i = 0;
        while i < n {
            if c[i] < i {
                order.swap(if i % 2 == 0 { 0 } else { c[i] }, i);
                run(&order);
                c[i] += 1;
                i = 0;
            } else {
                c[i] = 0;
                i += 1;
            }
        }
        assert_eq!(seen, 24);
        assert_eq!(ends.into_iter().collect::<Vec<_>>(), vec![vec![A, B, E, D, F]]);
        // A slice first seen as MODIFIED (its ADDED fell before the watch began) counts.
        let mut table = EndpointTable::default();
        apply_event(&mut table, "MODIFIED", &events[1].1);
        assert_eq!(table.awaited_pods().unwrap(), vec![A, F]);
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
