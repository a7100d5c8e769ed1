//! What every handler shares. Its own module, so that the handlers and middleware
//! outside `routes.rs` depend on the state and not on the router that mounts them.

use crate::breaker::Breaker;
use crate::capacity::{Capacity, WarmCache};
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::version::Version;
use std::sync::Arc;
use std::time::Duration;
use zerodrop_lifecycle::Lifecycle;

pub struct AppState {
    pub lc: Lifecycle,
    pub publisher: Arc<Publisher>,
    pub breaker: Breaker,
    pub faults: Arc<crate::fault::Faults>,
    pub capacity: Capacity,
    pub cache: WarmCache,
    pub metrics: Arc<Metrics>,
    pub max_work_ms: u64,
    pub request_timeout: Duration,
    pub body_read_timeout: Duration,
    pub version: Version,
}
