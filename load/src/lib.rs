//! zerodrop-load: an open-loop HTTP load generator.
//!
//! Requests are scheduled at a constant arrival rate; each one's latency is measured
//! from its *intended* start, so a stalled server cannot slow the generator down and
//! hide its own latency (no coordinated omission). Every request is classified the
//! way an operator needs to tell failure modes apart: refused, reset, timeout, and
//! HTTP status classes.
//!
//! Which address a new connection goes to is decided at connect time by a
//! [`Resolver`], the way kube-proxy's rules pick an endpoint when a connection is
//! opened. Keep-alive connections stay on the endpoint they were opened to.

pub mod clients;
mod engine;
pub mod gate;
pub mod keepalive;
pub mod listen_queue;
pub mod long_lived;
pub mod profile;
pub mod record;
pub mod stats;
pub mod target;
pub mod wire;

pub use clients::{Clients, CLIENT_HEADER, MAX_CLIENTS};
pub use engine::{run, Live, LiveSnapshot};
pub use gate::{await_pods, GateConfig, GateError, GateState};
pub use profile::{Mark, Mirror, Mix, Profile};
pub use record::{Class, Kind, Mirrored, Record, RunResult};
pub use stats::{timeline, window_stats, LatencySummary, Second, WindowStats};

use std::net::SocketAddr;

/// Picks the endpoint for a *new* connection.
pub trait Resolver: Send + Sync + 'static {
    /// `None` means the Service has no endpoints; the request fails as refused, as it
    /// would against kube-proxy's REJECT rule.
    fn pick(&self) -> Option<SocketAddr>;
}

/// Always the same address: a real Service's ClusterIP, or a single server.
pub struct FixedResolver(pub SocketAddr);

impl Resolver for FixedResolver {
    fn pick(&self) -> Option<SocketAddr> {
        Some(self.0)
    }
}
