//! The names and places of a two-versions fleet: what the manifests call its objects,
//! and where the runner connects, all read from the rendered plan. A leaf: the rest of
//! `two_versions` refers to it, it to none of them.

use super::super::objects::{forward_target, service_port, Rendered};
use anyhow::{Context, Result};
use std::time::Duration;
use zerodrop_manifests::{HAPROXY_DIR, STATS_SOCKET};

/// The api's queue, as on the local platform.
pub const QUEUE: &str = "zerodrop.progressive";
/// `ZD_CAPACITY` of each api pod, as on the local platform, so both platforms'
/// versions shed load alike.
pub const CAPACITY: u32 = 64;
/// The Deployments and Services the manifests name. Each version's Service is also
/// the one server of its HAProxy backend, under the same name.
pub const ROUTER: &str = "haproxy";
pub const STABLE: &str = "api-v1";
pub const CANARY: &str = "api-v2";
/// HAProxy's backend of v1.
pub const STABLE_BACKEND: &str = "stable";
/// How long HAProxy's health checks may take to see both versions UP.
pub const UP_LIMIT: Duration = Duration::from_secs(60);

/// The split's map inside HAProxy's pod.
pub fn canary_map() -> String {
    format!("{HAPROXY_DIR}/canary.map")
}

/// Bound on one Deployment's rollout: HAProxy's image comes from Docker Hub on first
/// use (minutes), the api's are on the nodes already.
pub fn rollout_limit(deployment: &str) -> Duration {
    Duration::from_secs(if deployment == ROUTER { 600 } else { 180 })
}

/// The port of HAProxy's TCP stats socket (`ipv4@127.0.0.1:9999` -> 9999).
pub fn stats_port(socket: &str) -> Result<u16> {
    let (_, port) = socket.rsplit_once(':').with_context(|| format!("stats socket {socket:?} has no port"))?;
    port.parse().with_context(|| format!("stats socket {socket:?}: bad port {port:?}"))
}

/// Where the runner connects, all read from the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// HAProxy's pods.
    pub router_selector: String,
    /// HAProxy's frontend, in its pod.
    pub frontend_port: u16,
    /// HAProxy's runtime API, on its pod's loopback.
    pub runtime_port: u16,
    /// Each api pod's `/metrics`.
    pub metrics_port: u16,
    /// The api pods' grace period.
    pub grace: Duration,
}

pub fn targets(objects: &[Rendered]) -> Result<Targets> {
    let fe = forward_target(objects, ROUTER, service_port(objects, ROUTER)?)?;
    let api = forward_target(objects, STABLE, service_port(objects, STABLE)?)?;
    let grace = super::super::objects::find(objects, "Deployment", STABLE)
        .and_then(|d| d.json.pointer("/spec/template/spec/terminationGracePeriodSeconds")?.as_u64())
        .with_context(|| format!("deployment {STABLE} has no terminationGracePeriodSeconds"))?;
    Ok(Targets {
        router_selector: fe.pod_selector,
        frontend_port: fe.container_port,
        runtime_port: stats_port(STATS_SOCKET)?,
        metrics_port: api.container_port,
        grace: Duration::from_secs(grace),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_api_port_comes_from_the_stats_socket() {
        assert_eq!(stats_port(STATS_SOCKET).unwrap(), 9999);
        assert_eq!(stats_port("ipv4@127.0.0.1:9999").unwrap(), 9999);
        assert!(stats_port("/run/haproxy.sock").is_err());
        assert!(stats_port("ipv4@127.0.0.1:http").is_err());
    }
}
