//! A capability: two versions of the api side by side behind a routing tier whose
//! split, counters and drain the runner drives (`canary`, `blue-green`). The routing
//! tier is HAProxy on both platforms, driven through its runtime API
//! ([`runtime_api`]); only how a command reaches that API, and where the pods run,
//! differ.

pub mod runtime_api;

use anyhow::Result;
use std::net::SocketAddr;
use std::path::Path;
pub use zerodrop_evidence::routing::{BackendStat, Counts, Snapshot};
use zerodrop_load::Profile;
pub use zerodrop_manifests::{JobsSpec, MatchOn, RouteRule, Routing, StickyKey};

/// One version of the api: its name (`v1`, `v2`) and its deliberate regression
/// (`none`, `errors=2%`, `latency=+80ms`; the api's `ZD_REGRESSION`).
#[derive(Debug, Clone)]
pub struct VersionSpec {
    pub name: &'static str,
    pub regression: String,
}

/// What `two_versions` brings up: `replicas` pods of each version, and the routing
/// tier's rules.
#[derive(Debug, Clone)]
pub struct TwoVersionsSpec {
    pub replicas: u32,
    pub v1: VersionSpec,
    pub v2: VersionSpec,
    /// Header and cookie rules that reach the canary whatever the weight.
    pub routing: Routing,
    /// Jobs and their ledgers; `None` runs no worker (the api's jobs then only queue).
    pub jobs: Option<JobsSpec>,
}

impl TwoVersionsSpec {
    /// v1 as it is and v2 with `regression`, the change under test (the canary, or
    /// blue-green's green).
    pub fn v2_with(replicas: u32, regression: &str) -> TwoVersionsSpec {
        TwoVersionsSpec {
            replicas,
            v1: VersionSpec { name: "v1", regression: "none".into() },
            v2: VersionSpec { name: "v2", regression: regression.into() },
            routing: Routing::default(),
            jobs: None,
        }
    }
}

/// A platform that can run two versions behind a routing tier.
#[allow(async_fn_in_trait)]
pub trait TwoVersions {
    type Fleet: RoutedFleet;
    /// v1 in the routing tier's `stable` backend and v2 in `canary`, every pod ready
    /// and seen UP by the routing tier's health checks, all traffic on stable. Pod and
    /// routing-tier logs go to `log_dir`.
    async fn two_versions(&mut self, spec: &TwoVersionsSpec, log_dir: &Path) -> Result<Self::Fleet>;
}

/// Two versions behind a routing tier, running.
#[allow(async_fn_in_trait)]
pub trait RoutedFleet {
    /// Where this runner reaches the routing tier's frontend (smoke requests).
    fn router_addr(&self) -> SocketAddr;
    /// Starts `profile` through the routing tier; returns once it is under way.
    async fn start_load(&self, profile: Profile) -> Result<crate::LoadRun>;
    /// The canary's share of new requests, in permille; returns once the routing tier
    /// reports the new value.
    async fn set_canary_permille(&self, permille: u32) -> Result<()>;
    /// Both sides' counters now. A pod on its way out (or gone) counts with its last
    /// reading: what it served before exiting still happened.
    async fn snapshot(&self) -> Result<Snapshot>;
    /// Takes the stable pods out of the routing tier (drain), then terminates them
    /// the kubelet's way; returns when they are gone.
    async fn retire_stable(&mut self) -> Result<()>;
    /// Pod-seconds used so far: every pod from the fleet's start to its end (or now).
    fn pod_seconds(&self) -> f64;
    /// Stops everything the fleet started.
    async fn down(self);
}
