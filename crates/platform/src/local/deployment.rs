//! The Deployment controller's rolling update, for one or more deployments at once:
//! scale the new revision up by at most `maxSurge` above the desired count, scale the
//! old one down while at least `replicas - maxUnavailable` pods stay available.
//! Terminating pods count for neither side, as in Kubernetes.

use super::pod::Pod;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zerodrop_stages::Strategy;

pub struct Deployment {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(old_ready: u32) -> Deployment {
        let pods = (0..old_ready).map(|i| Pod::fake(&format!("old-{i}"), 1, true)).collect();
        Deployment { replicas: 3, revision: 2, pods }
    }

    /// Drives a rollout to completion, making new pods ready one step after they are
    /// created; returns the fewest available and the most live pods seen.
    fn simulate(strategy: Strategy) -> (u32, u32) {
        let mut d = dep(3);
        let (mut min_available, mut max_live) = (u32::MAX, 0);
        for step in 0..50 {
            for p in d.pods.iter().filter(|p| p.revision == 2) {
                p.ready.store(true, Ordering::SeqCst);
            }
            let plan = d.plan(strategy);
            if plan.complete {
                return (min_available, max_live);
            }
            for i in plan.terminate {
                d.pods[i].terminating.store(true, Ordering::SeqCst);
            }
            for n in 0..plan.create {
                d.pods.push(Pod::fake(&format!("new-{step}-{n}"), 2, false));
            }
            let live: Vec<_> = d.live_pods().collect();
            max_live = max_live.max(live.len() as u32);
            min_available = min_available.min(d.ready_count());
        }
        panic!("rollout did not complete");
    }

    #[test]
    fn max_unavailable_one_dips_to_two_and_never_surges() {
        assert_eq!(simulate(Strategy { max_surge: 0, max_unavailable: 1 }), (2, 3));
    }

    #[test]
    fn surge_one_keeps_every_replica_available() {
        let (min_available, max_live) = simulate(Strategy { max_surge: 1, max_unavailable: 0 });
        assert_eq!(min_available, 3);
        assert_eq!(max_live, 4);
    }

    #[test]
    fn unready_old_pods_go_first() {
        let mut d = dep(2);
        d.pods.push(Pod::fake("old-sick", 1, false));
        let plan = d.plan(Strategy { max_surge: 0, max_unavailable: 1 });
        assert_eq!(plan.terminate.first(), Some(&2));
    }
}
