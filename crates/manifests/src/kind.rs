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
}

impl KindCluster {
    /// One control plane and two workers: with pods spread over two nodes, an
    /// endpoint change has to reach another node's kube-proxy before traffic there
    /// stops, which is the propagation delay the readiness/preStop stage is about.
    pub fn zerodrop() -> KindCluster {
        KindCluster {
            kind: "Cluster".into(),
            api_version: "kind.x-k8s.io/v1alpha4".into(),
            name: "zerodrop".into(),
            nodes: ["control-plane", "worker", "worker"].map(|role| KindNode { role: role.into() }).to_vec(),
        }
    }
}

/// [`KindCluster::zerodrop`] as YAML, for `kind create cluster --config`.
pub fn kind_cluster_config() -> String {
    yaml(&KindCluster::zerodrop())
}
