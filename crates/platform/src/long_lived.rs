//! A capability: the long-lived run's clients (SSE streams, long operations) against
//! the api Service of the deployed stage. Locally they run inside the runner, in the
//! lab's network namespace; on a cluster they run as a `zerodrop-load long-lived` Job
//! that the runner signals through a port-forward. Either way the counts are
//! `zerodrop_load::long_lived`'s, so the report cannot tell the platforms apart.

use anyhow::Result;
use std::time::Duration;
pub use zerodrop_load::long_lived::{Spec, Tallies};

#[allow(async_fn_in_trait)]
pub trait LongLivedLoad: crate::Platform {
    type Run: LongLivedRun;
    /// Starts the clients against the deployed stage's api Service; returns once they
    /// run.
    async fn start_long_lived(&mut self, spec: &Spec) -> Result<Self::Run>;
}

/// The clients under way.
#[allow(async_fn_in_trait)]
pub trait LongLivedRun {
    /// Start no new stream or operation; those in flight go on.
    async fn no_new(&mut self) -> Result<()>;
    /// Waits up to `limit` for the operations in flight, abandons the rest, and hands
    /// back the counts.
    async fn finish(self, limit: Duration) -> Result<Tallies>;
}
