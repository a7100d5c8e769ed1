//! The local platform's [`crate::DependencyFaults`] relay: a [`FaultRelay`] in the
//! runner, on the lab's loopback, between the api pods and the lab's broker. The relay
//! itself lives in `zerodrop-fault-relay`, which the kind platform runs as a pod; it is
//! re-exported here so the local platform's users name it where they always have.

pub use zerodrop_fault_relay::FaultRelay;
