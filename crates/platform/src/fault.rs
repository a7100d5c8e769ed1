//! A capability: faults on the path from the api pods to a dependency (the chaos runs).
//! The platform puts a relay it controls on that path; the runner then slows or cuts
//! it while load runs, and heals it again. Only the lab's own fleet is affected: the
//! relay sits between the lab's api pods and the lab's own broker.

use serde::Serialize;
use std::time::Duration;

/// Which dependency's path the relay sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dependency {
    /// The api pods' AMQP connection (the job publish).
    Broker,
}

/// What the relay does to the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NetFault {
    /// Every chunk is held this long, in each direction (throughput unchanged).
    Delay {
        #[serde(rename = "ms", serialize_with = "as_ms")]
        each_way: Duration,
    },
    /// Nothing is forwarded until the fault is removed; then what was held goes on
    /// (a partition that heals, with TCP retransmitting what it held).
    Cut,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl NetFault {
    pub fn describe(&self) -> String {
        match self {
            NetFault::Delay { each_way } => format!("+{} ms each way", each_way.as_millis()),
            NetFault::Cut => "cut (nothing forwarded)".into(),
        }
    }
}

#[allow(async_fn_in_trait)]
pub trait DependencyFaults: crate::Platform {
    /// From the next deploy on, the api pods reach `dep` through a relay this platform
    /// controls (no fault set yet).
    async fn relay_dependency(&mut self, dep: Dependency) -> anyhow::Result<()>;
    /// Sets (or with `None` clears) the fault on the relayed path, for the connections
    /// already open and for new ones, from now on.
    fn set_fault(&mut self, fault: Option<NetFault>) -> anyhow::Result<()>;
}
