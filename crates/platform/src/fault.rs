//! A capability: faults on the path from the api pods to a dependency (the chaos runs).
//! The platform puts a relay it controls on that path; the runner then slows or cuts
//! it while load runs, and heals it again. Only the run's own fleet is affected: the
//! relay sits between its api pods and its own broker (in the runner on the local
//! platform, `local/fault_relay.rs`; a Deployment on a cluster, `kind/fault.rs`).

use serde::Serialize;
/// The fault and its JSON form live with the relay that applies it (`zerodrop-fault-relay`).
pub use zerodrop_fault_relay::NetFault;

/// Which dependency's path the relay sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dependency {
    /// The api pods' AMQP connection (the job publish).
    Broker,
}

#[allow(async_fn_in_trait)]
pub trait DependencyFaults: crate::Platform {
    /// From the next deploy on, the api pods reach `dep` through a relay this platform
    /// controls (no fault set yet).
    async fn relay_dependency(&mut self, dep: Dependency) -> anyhow::Result<()>;
    /// Sets (or with `None` clears) the fault on the relayed path, for the connections
    /// already open and for new ones, from now on. Async because the relay may be
    /// elsewhere (a pod on a cluster): it returns once the relay has confirmed it.
    async fn set_fault(&mut self, fault: Option<NetFault>) -> anyhow::Result<()>;
}
