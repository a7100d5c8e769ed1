//! How late the local Service learns an endpoint change. Real clusters do not have
//! one constant: the EndpointSlice update reaches every node's kube-proxy through its
//! own watch (a per-node lag that stays roughly the same for the node), and each
//! kube-proxy applies it at its next sync (a per-change wait). The model: every
//! pod is placed on one of `nodes` nodes, round robin; a change to a pod's endpoint
//! lands `base + skew(node) + U[0, sync_jitter)` after it happened, with the node
//! skews drawn once per run from `seed`, in `[0, node_skew_max)`.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropagationModel {
    pub base: Duration,
    pub nodes: u32,
    pub node_skew_max: Duration,
    pub sync_jitter: Duration,
    pub seed: u64,
}

impl PropagationModel {
    /// Every change exactly `d` late: for runs about something else than the spread
    /// (reconnect, long-lived) and for the controller's tests.
    pub const fn constant(d: Duration) -> Self {
        PropagationModel { base: d, nodes: 1, node_skew_max: Duration::ZERO, sync_jitter: Duration::ZERO, seed: 0 }
    }

    pub fn min(&self) -> Duration {
        self.base
    }

    /// The average delay (skew and jitter are uniform).
    pub fn mean(&self) -> Duration {
        self.base + self.node_skew_max / 2 + self.sync_jitter / 2
    }

    pub fn max(&self) -> Duration {
        self.base + self.node_skew_max + self.sync_jitter
    }

    /// One line for the report's profile table.
    pub fn describe(&self) -> String {
        if self.node_skew_max.is_zero() && self.sync_jitter.is_zero() {
            return format!("constant {} ms", self.base.as_millis());
        }
        format!(
            "{} ms + per-node skew U[0, {}) ms over {} nodes (fixed for the run) + per-sync jitter U[0, {}) ms, seed {}: {}–{} ms",
            self.base.as_millis(),
            self.node_skew_max.as_millis(),
            self.nodes,
            self.sync_jitter.as_millis(),
            self.seed,
            self.min().as_millis(),
            self.max().as_millis()
        )
    }

    pub fn sampler(&self) -> Sampler {
        let mut rng = SplitMix(self.seed);
        let skews = (0..self.nodes.max(1)).map(|_| rng.below(self.node_skew_max)).collect();
        Sampler { model: *self, skews, rng, placed: Vec::new() }
    }
}

/// Draws delays: node skews fixed at creation, jitter per call, deterministic for a seed.
pub struct Sampler {
    model: PropagationModel,
    skews: Vec<Duration>,
    rng: SplitMix,
    /// Pods in the order they were first seen: their node is their index mod nodes.
    placed: Vec<String>,
}

impl Sampler {
    pub fn node_of(&mut self, pod: &str) -> usize {
        let i = match self.placed.iter().position(|p| p == pod) {
            Some(i) => i,
            None => {
                self.placed.push(pod.to_string());
                self.placed.len() - 1
            }
        };
        i % self.skews.len()
    }

    /// How late this change to `pod`'s endpoint reaches the kernel's rules.
    pub fn delay(&mut self, pod: &str) -> Duration {
        let node = self.node_of(pod);
        self.model.base + self.skews[node] + self.rng.below(self.model.sync_jitter)
    }
}

/// splitmix64: tiny, seedable, good enough to spread delays.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, d: Duration) -> Duration {
        let ms = d.as_millis() as u64;
        if ms == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(self.next() % ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> PropagationModel {
        PropagationModel {
            base: Duration::from_millis(1000),
            nodes: 3,
            node_skew_max: Duration::from_millis(600),
            sync_jitter: Duration::from_millis(400),
            seed: 7,
        }
    }

    #[test]
    fn delays_stay_in_range_vary_and_repeat_for_a_seed() {
        let m = model();
        let mut s = m.sampler();
        let pods: Vec<String> = (0..60).map(|i| format!("api-r1-{i}")).collect();
        let d: Vec<Duration> = pods.iter().map(|p| s.delay(p)).collect();
        assert!(d.iter().all(|x| *x >= m.min() && *x < m.max()), "{d:?}");
        let distinct: std::collections::BTreeSet<_> = d.iter().collect();
        assert!(distinct.len() > 20, "a distribution, not a constant: {distinct:?}");
        let mut again = m.sampler();
        assert_eq!(pods.iter().map(|p| again.delay(p)).collect::<Vec<_>>(), d, "same seed, same delays");
        let mut other = PropagationModel { seed: 8, ..m }.sampler();
        assert_ne!(pods.iter().map(|p| other.delay(p)).collect::<Vec<_>>(), d);
    }

    #[test]
    fn a_node_keeps_its_skew_and_pods_are_placed_round_robin() {
        let m = PropagationModel { sync_jitter: Duration::ZERO, ..model() };
        let mut s = m.sampler();
        assert_eq!([s.node_of("a"), s.node_of("b"), s.node_of("c"), s.node_of("d"), s.node_of("a")], [0, 1, 2, 0, 0]);
        assert_eq!(s.delay("a"), s.delay("d"), "same node, no jitter: same delay");
        assert_eq!(s.delay("a"), s.delay("a"));
    }

    #[test]
    fn constant_is_the_old_behaviour() {
        let mut s = PropagationModel::constant(Duration::from_millis(1500)).sampler();
        assert!((0..10).all(|i| s.delay(&i.to_string()) == Duration::from_millis(1500)));
        assert_eq!(PropagationModel::constant(Duration::from_millis(1500)).describe(), "constant 1500 ms");
        assert!(model().describe().contains("per-node skew U[0, 600) ms over 3 nodes"), "{}", model().describe());
    }
}
