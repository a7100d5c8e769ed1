use crate::record::{Class, Record};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Aggregate of the requests whose intended start falls in a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    pub total: u64,
    pub failed: u64,
    /// Every [`Class`] key, zeros included.
    pub by_class: BTreeMap<String, u64>,
    /// Milliseconds, over all requests in the window (failed ones included).
    pub latency_ms: LatencySummary,
    /// Successful responses per second of window.
    pub ok_per_sec: f64,
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    pub t: u32,
    pub sent: u64,
    pub ok: u64,
    /// Failure class key -> count (only non-zero entries).
    pub errors: BTreeMap<String, u64>,
    pub p99_ms: f64,
}

/// Stats over records with `from_us <= at_us < to_us`.
pub fn window_stats(records: &[Record], from_us: u64, to_us: u64) -> WindowStats {
    let _ = (records, from_us, to_us, Class::ALL);
    todo!("implemented in the load crate")
}

/// Per-second buckets by intended start.
pub fn timeline(records: &[Record]) -> Vec<Second> {
    let _ = records;
    todo!("implemented in the load crate")
}
