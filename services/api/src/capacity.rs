//! Capacity is a property of each instance, not of the shared CPU: a fixed number of
//! request slots, and a cache that starts cold. A reconnect storm onto a fresh
//! instance therefore shows up as queueing behind the cache fill and then as 503s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

pub struct Capacity {
    slots: Arc<Semaphore>,
    pub limit: usize,
}

impl Capacity {
    pub fn new(limit: usize) -> Self {
        Capacity { slots: Arc::new(Semaphore::new(limit.max(1))), limit: limit.max(1) }
    }
    /// A slot, or `None` when the instance is full.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
    pub fn busy(&self) -> usize {
        self.limit - self.slots.available_permits()
    }
}

pub const CACHE_SLOTS: usize = 32;

/// A lazily filled cache: the first request to touch a slot fills it, one fill at a
/// time (like a connection pool growing, or a JIT warming up).
pub struct WarmCache {
    filled: Mutex<[bool; CACHE_SLOTS]>,
    fill_cost: Duration,
    next: AtomicU64,
    pub fills: AtomicU64,
}

impl WarmCache {
    pub fn new(fill_cost: Duration) -> Self {
        WarmCache {
            filled: Mutex::new([false; CACHE_SLOTS]),
            fill_cost,
            next: AtomicU64::new(0),
            fills: AtomicU64::new(0),
        }
    }

    /// Touches the next slot, filling it first if it is cold.
    pub async fn touch(&self) {
        let slot = (self.next.fetch_add(1, Ordering::Relaxed) % CACHE_SLOTS as u64) as usize;
        let mut filled = self.filled.lock().await;
        if !filled[slot] {
            tokio::time::sleep(self.fill_cost).await;
            filled[slot] = true;
            let fills = self.fills.fetch_add(1, Ordering::Relaxed) + 1;
            // The end of the cold period, in the log: the report tells a request
            // served cold from one served warm by this line's time.
            if fills == CACHE_SLOTS as u64 {
                tracing::info!(
                    step = "cache_warm",
                    slots = CACHE_SLOTS,
                    "every cache slot filled: the instance is warm"
                );
            }
        }
    }

    /// Fills every slot, before the instance reports ready.
    pub async fn fill_all(&self) {
        for _ in 0..CACHE_SLOTS {
            self.touch().await;
        }
    }

    pub async fn warm_slots(&self) -> usize {
        self.filled.lock().await.iter().filter(|f| **f).count()
    }
}
