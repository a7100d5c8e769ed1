//! Where a stage's load pod ran relative to its api pods. Only with the load on
//! another node does every request cross nodes, so that an endpoint change must
//! reach the load node's kube-proxy before the load stops using it; on one shared
//! node the measured run says less about a real cluster, and the report says so.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The load pod's node ran no api pod of the stage.
    Separate { load: String, api: BTreeSet<String> },
    /// The load pod shared a node with at least one api pod.
    Shared { node: String },
    /// The load pod's or the api pods' node was never seen.
    Unknown,
}

impl Placement {
    pub fn of(load_node: Option<&str>, api_nodes: &BTreeSet<String>) -> Placement {
        match load_node {
            Some(n) if api_nodes.contains(n) => Placement::Shared { node: n.to_string() },
            Some(n) if !api_nodes.is_empty() => Placement::Separate { load: n.to_string(), api: api_nodes.clone() },
            _ => Placement::Unknown,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Placement::Separate { load, api } => {
                format!("load pod on {load}, api pods on {}: every request crossed nodes", join(api))
            }
            Placement::Shared { node } => format!(
                "load pod on {node}, which also ran api pods: part of the traffic stayed on one node (the cluster \
                 had no node free of api pods)"
            ),
            Placement::Unknown => "the load pod's or the api pods' node was not seen".into(),
        }
    }
}

fn join(s: &BTreeSet<String>) -> String {
    s.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// One sentence over the run's stages for the report.
pub fn summary(all: &[Placement]) -> Option<String> {
    if all.is_empty() {
        return None;
    }
    let separate = all.iter().filter(|p| matches!(p, Placement::Separate { .. })).count();
    Some(format!("the load pod ran on a node without api pods in {separate} of {} stages", all.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_judged_on_the_nodes_seen() {
        let api: BTreeSet<String> = ["zerodrop-worker".to_string()].into();
        let p = Placement::of(Some("zerodrop-worker2"), &api);
        assert_eq!(
            p.describe(),
            "load pod on zerodrop-worker2, api pods on zerodrop-worker: every request crossed nodes"
        );
        let shared = Placement::of(Some("zerodrop-worker"), &api);
        assert!(matches!(shared, Placement::Shared { .. }));
        assert_eq!(Placement::of(None, &api), Placement::Unknown);
        assert_eq!(Placement::of(Some("n"), &BTreeSet::new()), Placement::Unknown);
        assert_eq!(
            summary(&[p, shared]).as_deref(),
            Some("the load pod ran on a node without api pods in 1 of 2 stages")
        );
        assert_eq!(summary(&[]), None);
    }
}
