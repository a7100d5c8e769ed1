//! Where pods may run and what they reserve there: resource requests and limits for
//! every workload, and the placement that keeps the load generator off the api pods'
//! node, so that what it measures crosses nodes (and another node's kube-proxy).

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodAffinityTerm, PodAntiAffinity,
    PreferredSchedulingTerm, ResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

/// The node label the kind cluster puts on the worker kept for the load generator.
pub const POOL_LABEL: &str = "zerodrop.dev/pool";
/// [`POOL_LABEL`]'s value on that worker.
pub const LOAD_POOL: &str = "load";
const HOSTNAME: &str = "kubernetes.io/hostname";

/// What one container reserves (requests) and may use at most (a memory limit).
/// No CPU limit anywhere: CFS throttling would stretch exactly the timings the lab
/// measures (drains, readiness, preStop), while a request is enough for scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserve {
    pub cpu_milli: u32,
    pub memory_mi: u32,
    pub memory_limit_mi: u32,
}

impl Reserve {
    pub const API: Reserve = Reserve { cpu_milli: 100, memory_mi: 64, memory_limit_mi: 256 };
    pub const WORKER: Reserve = Reserve { cpu_milli: 100, memory_mi: 64, memory_limit_mi: 256 };
    /// The broker: an Erlang VM that grows with queued messages.
    pub const RABBITMQ: Reserve = Reserve { cpu_milli: 200, memory_mi: 256, memory_limit_mi: 1024 };
    pub const POSTGRES: Reserve = Reserve { cpu_milli: 100, memory_mi: 128, memory_limit_mi: 512 };
    /// The load generator keeps every request's record until it prints the result.
    pub const LOAD: Reserve = Reserve { cpu_milli: 250, memory_mi: 128, memory_limit_mi: 1024 };
    /// The accept-queue sidecar reads two small /proc files every 50 ms.
    pub const QUEUES: Reserve = Reserve { cpu_milli: 10, memory_mi: 8, memory_limit_mi: 32 };
    /// The broker relay copies the api pods' AMQP bytes (tens of kB/s in a chaos run);
    /// a delay holds chunks in memory for at most the delay.
    pub const RELAY: Reserve = Reserve { cpu_milli: 50, memory_mi: 16, memory_limit_mi: 128 };

    pub fn requirements(self) -> ResourceRequirements {
        let q = |s: String| Quantity(s);
        ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), q(format!("{}m", self.cpu_milli))),
                ("memory".to_string(), q(format!("{}Mi", self.memory_mi))),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), q(format!("{}Mi", self.memory_limit_mi)))])),
            ..ResourceRequirements::default()
        }
    }
}

/// The api and worker pods never go to the node kept for the load generator. `NotIn`
/// also matches a node without the label, so on a cluster that has no such node
/// this constrains nothing.
pub fn app_affinity() -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![pool("NotIn")]),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// The load pod prefers the load node and, above all, a node without an api pod.
/// Preferred, not required: on a one-node cluster it must still run (the runner
/// then reports that the load and the api pods shared a node).
pub fn load_affinity(api_selector: BTreeMap<String, String>) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![PreferredSchedulingTerm {
                weight: 50,
                preference: NodeSelectorTerm {
                    match_expressions: Some(vec![pool("In")]),
                    ..NodeSelectorTerm::default()
                },
            }]),
            ..NodeAffinity::default()
        }),
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(api_selector),
                        ..LabelSelector::default()
                    }),
                    topology_key: HOSTNAME.into(),
                    ..PodAffinityTerm::default()
                },
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn pool(operator: &str) -> NodeSelectorRequirement {
    NodeSelectorRequirement { key: POOL_LABEL.into(), operator: operator.into(), values: Some(vec![LOAD_POOL.into()]) }
}
