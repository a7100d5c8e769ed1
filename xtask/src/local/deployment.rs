//! The Deployment controller's rolling update, for one or more deployments at once:
//! scale the new revision up by at most `maxSurge` above the desired count, scale the
//! old one down while at least `replicas - maxUnavailable` pods stay available.
//! Terminating pods count for neither side, as in Kubernetes.

use super::pod::{App, Pod};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zerodrop_stages::Strategy;

pub struct Deployment {
    pub app: App,
    pub replicas: u32,
    pub revision: u32,
    pub pods: Vec<Arc<Pod>>,
}

/// What one reconcile step wants done.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: u32,
    /// Indexes into `Deployment::pods`.
    pub terminate: Vec<usize>,
    pub complete: bool,
}

fn live(p: &Pod) -> bool {
    !p.terminating.load(Ordering::SeqCst) && !p.exited.load(Ordering::SeqCst)
}

impl Deployment {
    pub fn live_pods(&self) -> impl Iterator<Item = &Arc<Pod>> {
        self.pods.iter().filter(|p| live(p))
    }

    pub fn ready_count(&self) -> u32 {
        self.live_pods().filter(|p| p.ready.load(Ordering::SeqCst)).count() as u32
    }

    /// One reconcile step towards `self.revision` under `strategy`.
    pub fn plan(&self, strategy: Strategy) -> Plan {
        let r = self.replicas;
        let mut old_ready = Vec::new();
        let mut old_unready = Vec::new();
        let (mut new_total, mut new_ready) = (0u32, 0u32);
        for (i, p) in self.pods.iter().enumerate() {
            if !live(p) {
                continue;
            }
            let ready = p.ready.load(Ordering::SeqCst);
            if p.revision == self.revision {
                new_total += 1;
                new_ready += ready as u32;
            } else if ready {
                old_ready.push(i);
            } else {
                old_unready.push(i);
            }
        }
        let old_total = (old_ready.len() + old_unready.len()) as u32;
        if old_total == 0 && new_total == r && new_ready == r {
            return Plan { complete: true, ..Plan::default() };
        }
        let max_total = r + strategy.max_surge;
        let create = max_total.saturating_sub(old_total + new_total).min(r.saturating_sub(new_total));
        // Unavailable old pods go first: removing them costs no availability.
        let mut terminate = old_unready;
        let min_available = r.saturating_sub(strategy.max_unavailable);
        let mut available = new_ready + old_ready.len() as u32;
        for i in old_ready {
            if available > min_available {
                terminate.push(i);
                available -= 1;
            }
        }
        // maxSurge 0 and maxUnavailable 0 would deadlock; Kubernetes rejects it too.
        Plan { create, terminate, complete: false }
    }
}
