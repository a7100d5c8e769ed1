//! A TCP relay that slows or cuts the bytes it carries on command: the chaos runs'
//! fault on the api pods' broker path. The local platform runs a [`FaultRelay`] inside
//! the runner and sets its fault directly; on a cluster the `zerodrop-fault-relay`
//! binary runs it as a Deployment and takes the fault over HTTP ([`control::router`]),
//! so both platforms slow and cut bytes with the same code.

pub mod control;
mod fault;
mod relay;

pub use fault::{NetFault, MAX_DELAY};
pub use relay::{FaultRelay, RelayError};
