use crate::{Profile, Resolver, RunResult};
use std::sync::Arc;

/// Running counters a progress display can read while a run is going.
#[derive(Debug, Default)]
pub struct Live {
    _private: (),
}

#[derive(Debug, Clone, Default)]
pub struct LiveSnapshot {
    pub sent: u64,
    pub ok: u64,
    /// Failure class key -> count.
    pub errors: std::collections::BTreeMap<String, u64>,
}

impl Live {
    pub fn snapshot(&self) -> LiveSnapshot {
        todo!()
    }
}

/// Runs `profile` against the endpoints `resolver` hands out. Job ids are
/// `{job_prefix}-{sequence}`. Stops by itself after `profile.duration` plus the
/// request timeout.
pub async fn run(profile: &Profile, resolver: Arc<dyn Resolver>, job_prefix: &str, live: Arc<Live>) -> RunResult {
    let _ = (profile, resolver, job_prefix, live);
    todo!()
}
