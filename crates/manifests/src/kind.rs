//! The kind cluster the manifests are meant for. Not a Kubernetes API object, so a
//! plain serde struct.

use crate::objects::yaml;
use serde::{Deserialize, Serialize};

/// `kind.x-k8s.io/v1alpha4` `Cluster`, only the fields this lab sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KindCluster {
    pub kind: String,
    pub api_version: String,
    pub name: String,
    pub nodes: Vec<KindNode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindNode {
    /// `control-plane` or `worker`.
    pub role: String,
    /// Node labels (kind sets them when it creates the node).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl KindCluster {
    /// One control plane and two workers: the api and worker pods on the first, the
    /// load generator on the second (labelled [`crate::POOL_LABEL`]` = load`). Every
    /// request then crosses nodes, and an endpoint change has to reach the load
    /// node's kube-proxy before its traffic stops: the propagation delay the
    /// readiness/preStop stage is about.
    pub fn zerodrop() -> KindCluster {
        let node = |role: &str, labels: &[(&str, &str)]| KindNode {
            role: role.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        KindCluster {
            kind: "Cluster".into(),
            api_version: "kind.x-k8s.io/v1alpha4".into(),
            name: "zerodrop".into(),
            nodes: vec![
                node("control-plane", &[]),
                node("worker", &[]),
                node("worker", &[(crate::POOL_LABEL, crate::LOAD_POOL)]),
            ],
        }
    }
}

/// [`KindCluster::zerodrop`] as YAML, for `kind create cluster --config`.
pub fn kind_cluster_config() -> String {
    yaml(&KindCluster::zerodrop())
}
