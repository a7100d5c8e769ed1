//! The HTTP server's live counters, in a module of their own: the server counts into
//! them and the [`Lifecycle`](crate::Lifecycle) owns them (so `/metrics` and the drain
//! read them without a server), and neither of those two modules needs the other for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

/// Live counters of the server, read by `/metrics` and by the drain.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Counted by the server (`http.rs`) for as long as a connection lives.
    pub(crate) open: AtomicUsize,
    /// Counted by the server while a request is in the router.
    pub(crate) in_flight: AtomicUsize,
    /// Notified by the server when `open` drops to zero.
    pub(crate) all_closed: Notify,
    /// Accept instants of traffic connections (the deregistration measurement).
    pub accepts: crate::accepts::AcceptLog,
}

impl ConnStats {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}
