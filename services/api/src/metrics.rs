use crate::routes::AppState;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters for `/metrics`, in Prometheus' text format.
#[derive(Default)]
pub struct Metrics {
    rejected: AtomicU64,
    published: AtomicU64,
}

impl Metrics {
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
    pub fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, s: &AppState) -> String {
        let stats = s.lc.conn_stats();
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        gauge("zerodrop_http_connections_open", "Open client connections.", "gauge", stats.open() as u64);
        gauge("zerodrop_http_requests_in_flight", "Requests being served.", "gauge", stats.in_flight() as u64);
        gauge("zerodrop_capacity_slots_busy", "Request slots in use.", "gauge", s.capacity.busy() as u64);
        gauge("zerodrop_capacity_slots_total", "Request slots of this instance.", "gauge", s.capacity.limit as u64);
        gauge(
            "zerodrop_capacity_rejected_total",
            "Requests refused with 503.",
            "counter",
            self.rejected.load(Ordering::Relaxed),
        );
        gauge("zerodrop_jobs_published_total", "Jobs answered 202.", "counter", self.published.load(Ordering::Relaxed));
        gauge(
            "zerodrop_cache_fills_total",
            "Cold cache slots filled.",
            "counter",
            s.cache.fills.load(Ordering::Relaxed),
        );
        gauge(
            "zerodrop_shutdown_phase",
            "0 starting, 1 serving, 2 deregistering, 3 draining, 4 disposing.",
            "gauge",
            s.lc.phase() as u64,
        );
        gauge("zerodrop_ready", "1 when /readyz answers 200.", "gauge", s.lc.is_ready() as u64);
        out
    }
}
