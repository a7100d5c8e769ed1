//! [`LongLivedLoad`] on the local platform: the clients run in the runner's own process,
//! which lives in the lab's network namespace where the Service's virtual IP answers.

use super::platform::LocalPlatform;
use crate::long_lived::{LongLivedLoad, LongLivedRun, Spec, Tallies};
use anyhow::Result;
use std::net::SocketAddr;
use std::time::Duration;
use zerodrop_load::long_lived::Running;

pub struct LocalRun(Running);

impl LongLivedLoad for LocalPlatform {
    type Run = LocalRun;

    async fn start_long_lived(&mut self, spec: &Spec) -> Result<LocalRun> {
        let vip = self.service_vip()?;
        // A plain client of the Service's virtual IP: which pod a new connection
        // reaches is the kernel's DNAT decision, not ours.
        Ok(LocalRun(zerodrop_load::long_lived::start(SocketAddr::V4(vip), spec)))
    }
}

impl LongLivedRun for LocalRun {
    async fn no_new(&mut self) -> Result<()> {
        self.0.no_new();
        Ok(())
    }

    async fn finish(self, limit: Duration) -> Result<Tallies> {
        Ok(self.0.finish(limit).await)
    }
}
