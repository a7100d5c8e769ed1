//! Each api pod's life as the stage recorded it, read from the platform's pod events
//! and the pod's own lifecycle log lines: the intervals a failed or slow request is
//! matched against. Times are milliseconds from the stage's load start.

use crate::model::{PodEventKind, StageRun};
use std::collections::BTreeMap;

/// One api pod's recorded moments; `None` where the stage did not record one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodLife {
    pub created: Option<i64>,
    /// Deletion began (preStop starts, the endpoint's removal is scheduled).
    pub terminating: Option<i64>,
    /// Termination began (SIGTERM sent, or the pod's own `sigterm_received`).
    pub sigterm: Option<i64>,
    /// It stopped accepting connections: `listener_closed`, an exit or a SIGKILL,
    /// whichever came first.
    pub stopped_listening: Option<i64>,
    /// The Service stopped routing new connections to it.
    pub endpoint_removed: Option<i64>,
    pub sigkill: Option<i64>,
    pub exited: Option<i64>,
    /// The end of its cold period: `cache_warm`, or `warmed` when it warmed before
    /// reporting ready; `i64::MAX` for a pod that never logged it while others did (it
    /// never served enough requests to warm). `None`: no pod of the run logs it (an
    /// older report).
    pub warm: Option<i64>,
    /// It drained: `drain_started`, and whether `drain_complete` said clean (every
    /// request in flight finished, every connection closed).
    pub drain_started: Option<i64>,
    pub drained_clean: Option<i64>,
}

impl PodLife {
    /// Cold at `t`: it had started, and its cold period had not ended. A pod that
    /// never logged the end of its cold period is not called cold (nothing shows it).
    pub fn cold_at(&self, t: i64) -> bool {
        match self.warm {
            Some(w) => t < w && self.created.is_none_or(|c| t >= c),
            None => false,
        }
    }

    /// Serving at full strength at `t`: warm (or never said otherwise), not being
    /// deleted, still listening. What the fleet needs `desired` of.
    pub fn warm_and_serving_at(&self, t: i64) -> bool {
        self.created.is_none_or(|c| t >= c)
            && !self.cold_at(t)
            && self.terminating.is_none_or(|x| t < x)
            && self.sigterm.is_none_or(|x| t < x)
            && self.stopped_listening.is_none_or(|x| t < x)
    }

    /// Inside a drain that finished clean at `t` (`reach` ms past its end): nothing
    /// in flight was cut by it, so what broke then was an idle connection it closed.
    pub fn clean_drain_at(&self, t: i64, reach: i64) -> bool {
        match (self.drain_started, self.drained_clean) {
            (Some(s), Some(e)) => t >= s && t <= e + reach,
            _ => false,
        }
    }

    /// Shutting down at `t`: termination had begun by then.
    pub fn shutting_down_at(&self, t: i64) -> bool {
        self.sigterm.is_some_and(|s| t >= s)
    }

    /// Not listening any more but still routed at some moment of `[from, to]`, with
    /// `lag` ms for a client to see the removal.
    pub fn dead_but_routed_during(&self, from: i64, to: i64, lag: i64) -> bool {
        let Some(stopped) = self.stopped_listening else { return false };
        let routed_until = self.endpoint_removed.map_or(i64::MAX, |r| r.saturating_add(lag));
        stopped <= to && from <= routed_until && stopped <= routed_until
    }
}

fn earliest(slot: &mut Option<i64>, t: i64) {
    *slot = Some(slot.map_or(t, |s| s.min(t)));
}

/// Every api pod of `run`, by name.
pub fn api_pods(run: &StageRun) -> BTreeMap<String, PodLife> {
    let mut pods: BTreeMap<String, PodLife> = BTreeMap::new();
    for e in run.events.iter().filter(|e| e.app == "api") {
        let p = pods.entry(e.pod.clone()).or_default();
        match e.kind {
            PodEventKind::Created => earliest(&mut p.created, e.t_ms),
            PodEventKind::Sigterm => earliest(&mut p.sigterm, e.t_ms),
            // The last removal: an earlier one was undone (an api pod unready for a
            // while as it re-made its broker connection, routed again after), and only
            // the one at its shutdown leaves a stopped listener routed.
            PodEventKind::EndpointRemoved => p.endpoint_removed = p.endpoint_removed.max(Some(e.t_ms)),
            PodEventKind::Sigkill => {
                earliest(&mut p.sigkill, e.t_ms);
                earliest(&mut p.stopped_listening, e.t_ms);
            }
            PodEventKind::Exited => {
                earliest(&mut p.exited, e.t_ms);
                earliest(&mut p.stopped_listening, e.t_ms);
            }
            PodEventKind::Terminating => earliest(&mut p.terminating, e.t_ms),
            PodEventKind::Ready | PodEventKind::Unready => {}
        }
    }
    for l in run.logs.iter().filter(|l| l.app == "api") {
        let p = pods.entry(l.pod.clone()).or_default();
        match l.step.as_str() {
            // The app's handler, or the init forwarding it (stage pid1: the app dies of it
            // without a word).
            "sigterm_received" | "signal_forwarded" => earliest(&mut p.sigterm, l.t_ms),
            "listener_closed" => earliest(&mut p.stopped_listening, l.t_ms),
            "cache_warm" | "warmed" => earliest(&mut p.warm, l.t_ms),
            "drain_started" => earliest(&mut p.drain_started, l.t_ms),
            "drain_complete" if l.fields.get("clean").and_then(|v| v.as_bool()) == Some(true) => {
                earliest(&mut p.drained_clean, l.t_ms)
            }
            _ => {}
        }
    }
    // When the api logs the end of its cold period (any pod did), a pod that never
    // logged it was cold for as long as the run saw it.
    if pods.values().any(|p| p.warm.is_some()) {
        for p in pods.values_mut().filter(|p| p.warm.is_none()) {
            p.warm = Some(i64::MAX);
        }
    }
    for p in pods.values_mut() {
        // A platform that cannot see the signal itself (kind: the kubelet sends it) and an
        // app that logs nothing on it (the shell entrypoint ignores it): termination
        // began with the deletion, as far as anything shows.
        if p.sigterm.is_none() {
            p.sigterm = p.terminating;
        }
    }
    pods
}

/// The number of ready api endpoints in force at `t` (the last sample at or before
/// it); `None` before the first sample.
pub fn ready_at(run: &StageRun, t: i64) -> Option<u32> {
    run.endpoints.iter().filter(|e| e.t_ms <= t).max_by_key(|e| e.t_ms).map(|e| e.ready)
}
