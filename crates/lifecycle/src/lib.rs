//! The shutdown discipline shared by the api and the worker.
//!
//! One [`Lifecycle`] per process owns the phase (readiness), the SIGTERM handling the
//! stage asks for, and the sequence from SIGTERM to exit:
//!
//! ```text
//! SIGTERM -> readiness fails -> deregistration wait (still serving) -> listener closed
//!         -> drain in-flight + keep-alive (budget) -> dispose resources in reverse
//!            acquisition order -> telemetry flush -> exit 0
//! ```
//!
//! A guardian OS thread force-exits with [`EXIT_GUARDIAN`] if the sequence overruns.
//! Every step writes one structured log line with a `step` field, so a report can
//! prove the order from the logs alone.

pub mod accepts;
mod conn_stats;
pub mod exposition;
mod guardian;
mod head_timeout;
pub mod http;
mod sequence;
mod signals;
mod state;
pub mod telemetry;

pub use sequence::{Drain, Teardown};
pub use state::{Lifecycle, Phase};
pub use telemetry::Telemetry;

/// Exit code when the guardian had to force the exit: the drain budget was exceeded.
pub const EXIT_GUARDIAN: i32 = 70;
/// Exit code when a second SIGTERM arrived during the graceful sequence.
pub const EXIT_SECOND_SIGNAL: i32 = 71;
