use crate::record::{Class, Record};
use hdrhistogram::Histogram;
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
    let mut by_class: BTreeMap<String, u64> = Class::ALL.iter().map(|c| (c.key().to_string(), 0)).collect();
    let mut latency = Latency::new();
    let (mut total, mut failed, mut ok) = (0u64, 0u64, 0u64);
    for r in records.iter().filter(|r| r.at_us >= from_us && r.at_us < to_us) {
        total += 1;
        if r.class.is_failure() {
            failed += 1;
        } else {
            ok += 1;
        }
        *by_class.entry(r.class.key().to_string()).or_default() += 1;
        latency.record(r.latency_us);
    }
    let secs = to_us.saturating_sub(from_us) as f64 / 1e6;
    WindowStats {
        total,
        failed,
        by_class,
        latency_ms: latency.summary(),
        ok_per_sec: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
    }
}

/// Per-second buckets by intended start.
pub fn timeline(records: &[Record]) -> Vec<Second> {
    let Some(last) = records.iter().map(|r| r.at_us / 1_000_000).max() else {
        return Vec::new();
    };
    // Empty seconds stay in the timeline: a gap is itself a finding.
    let mut buckets: Vec<(Second, Latency)> =
        (0..=last).map(|t| (Second { t: t as u32, ..Second::default() }, Latency::new())).collect();
    for r in records {
        let (sec, lat) = &mut buckets[(r.at_us / 1_000_000) as usize];
        sec.sent += 1;
        if r.class.is_failure() {
            *sec.errors.entry(r.class.key().to_string()).or_default() += 1;
        } else {
            sec.ok += 1;
        }
        lat.record(r.latency_us);
    }
    buckets
        .into_iter()
        .map(|(mut sec, lat)| {
            sec.p99_ms = lat.summary().p99;
            sec
        })
        .collect()
}

/// Microsecond histogram; the max is kept exactly, since hdrhistogram only knows it
/// to its precision.
struct Latency {
    hist: Option<Histogram<u64>>,
    max_us: u64,
}

impl Latency {
    fn new() -> Self {
        // Three significant digits, auto-resizing: any latency fits.
        Latency { hist: Histogram::new(3).ok(), max_us: 0 }
    }

    fn record(&mut self, us: u64) {
        self.max_us = self.max_us.max(us);
        if let Some(h) = &mut self.hist {
            // `record` grows the auto-resizing histogram; `saturating_record` would
            // clamp to its current (tiny) range.
            if h.record(us).is_err() {
                h.saturating_record(us);
            }
        }
    }

    fn summary(&self) -> LatencySummary {
        match &self.hist {
            // hdrhistogram reports a bucket's highest value, which can exceed the
            // real maximum; clamping keeps p99 <= max.
            Some(h) if !h.is_empty() => LatencySummary {
                p50: h.value_at_quantile(0.5).min(self.max_us) as f64 / 1000.0,
                p99: h.value_at_quantile(0.99).min(self.max_us) as f64 / 1000.0,
                max: self.max_us as f64 / 1000.0,
            },
            _ => LatencySummary::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Kind;

    fn rec(at_ms: u64, latency_ms: u64, class: Class) -> Record {
        Record::new(at_ms * 1000, latency_ms * 1000, class, Kind::Fast)
    }

    /// 100 requests in the first second with latencies 1..=100 ms, two of them failed,
    /// and three in the third second.
    fn sample() -> Vec<Record> {
        let mut v: Vec<Record> = (0..100).map(|i| rec(i * 10, i + 1, Class::Ok)).collect();
        v[10].class = Class::Refused;
        v[20].class = Class::Http503;
        v.extend([rec(2000, 5, Class::Ok), rec(2100, 7, Class::Reset), rec(2999, 9, Class::Reset)]);
        v
    }

    #[test]
    fn window_counts_classes_and_percentiles() {
        let w = window_stats(&sample(), 0, 1_000_000);
        assert_eq!((w.total, w.failed), (100, 2));
        assert_eq!(w.by_class.len(), Class::ALL.len());
        assert!(Class::ALL.iter().all(|c| w.by_class.contains_key(c.key())));
        assert_eq!(w.by_class["ok"], 98);
        assert_eq!(w.by_class["refused"], 1);
        assert_eq!(w.by_class["http_503"], 1);
        assert_eq!(w.by_class["timeout"], 0);
        assert!((w.latency_ms.p50 - 50.0).abs() <= 0.1, "p50 {}", w.latency_ms.p50);
        assert!((w.latency_ms.p99 - 99.0).abs() <= 0.1, "p99 {}", w.latency_ms.p99);
        assert_eq!(w.latency_ms.max, 100.0);
        assert!((w.ok_per_sec - 98.0).abs() < 1e-9);
    }

    #[test]
    fn window_bounds_are_half_open() {
        let w = window_stats(&sample(), 2_000_000, 2_999_000);
        assert_eq!((w.total, w.failed), (2, 1));
        assert!((w.ok_per_sec - 1.0 / 0.999).abs() < 1e-9);
    }

    #[test]
    fn empty_window_has_every_key_and_zeros() {
        let w = window_stats(&[], 0, 1_000_000);
        assert_eq!(w.total, 0);
        assert_eq!(w.by_class.len(), Class::ALL.len());
        assert_eq!(w.latency_ms, LatencySummary::default());
        assert_eq!(window_stats(&sample(), 5, 5).ok_per_sec, 0.0);
    }

    #[test]
    fn timeline_keeps_empty_seconds() {
        let t = timeline(&sample());
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].t, t[0].sent, t[0].ok), (0, 100, 98));
        assert_eq!(t[0].errors.len(), 2);
        assert_eq!(t[0].errors["refused"], 1);
        assert!((t[0].p99_ms - 99.0).abs() <= 0.1);
        assert_eq!((t[1].sent, t[1].p99_ms), (0, 0.0));
        assert!(t[1].errors.is_empty());
        assert_eq!((t[2].t, t[2].sent, t[2].ok), (2, 3, 1));
        assert_eq!(t[2].errors["reset"], 2);
        assert_eq!(t[2].p99_ms, 9.0);
        assert!(timeline(&[]).is_empty());
    }
}
