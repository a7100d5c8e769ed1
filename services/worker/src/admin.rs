//! The admin HTTP surface: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use zerodrop_lifecycle::Lifecycle;

/// Counters of the consumer, exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Ledger rows committed.
    pub applied: AtomicU64,
    /// Idempotent mode: redeliveries of jobs already in the ledger, acked without effect.
    pub already_applied: AtomicU64,
    /// Poison messages sent to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Deliveries handed back to the broker (database error, or shutdown).
    pub requeued: AtomicU64,
    /// Auto-ack mode: jobs whose database write failed; nobody will retry them.
    pub failed: AtomicU64,
    /// Auto-ack mode: jobs cut off by the drain budget at shutdown (buffered or in
    /// progress); acked already, so lost.
    pub abandoned: AtomicU64,
    /// Jobs being processed right now.
    pub in_flight: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one job in flight until the guard is dropped.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    pub fn render(&self, lc: &Lifecycle) -> String {
        let mut out = String::with_capacity(1024);
        let jobs = [
            ("applied", &self.applied),
            ("already_applied", &self.already_applied),
            ("dead_lettered", &self.dead_lettered),
            ("requeued", &self.requeued),
            ("failed", &self.failed),
            ("abandoned", &self.abandoned),
        ];
        out.push_str("# HELP zerodrop_worker_jobs_total Deliveries handled, by outcome.\n");
        out.push_str("# TYPE zerodrop_worker_jobs_total counter\n");
        for (outcome, c) in jobs {
            let _ = writeln!(out, "zerodrop_worker_jobs_total{{outcome=\"{outcome}\"}} {}", c.load(Ordering::Relaxed));
        }
        let gauges = [
            ("zerodrop_worker_jobs_in_flight", "Jobs being processed.", self.in_flight.load(Ordering::SeqCst)),
            (
                "zerodrop_worker_phase",
                "Lifecycle phase: 0 starting, 1 serving, 2 deregistering, 3 draining, 4 disposing.",
                lc.phase() as u8 as u64,
            ),
            ("zerodrop_worker_ready", "1 when /readyz answers 200.", u64::from(lc.is_ready())),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Admin {
    lc: Lifecycle,
    metrics: Arc<Metrics>,
}

pub fn router(lc: Lifecycle, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .with_state(Admin { lc, metrics })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(a): State<Admin>) -> Response {
    let ready = a.lc.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready, "phase": a.lc.phase().as_str() }))).into_response()
}

async fn metrics_text(State(a): State<Admin>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], a.metrics.render(&a.lc)).into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "not found" }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerodrop_stages::AppBehaviour;

    #[test]
    fn metrics_render_counters_and_gauges() {
        let m = Arc::new(Metrics::default());
        Metrics::inc(&m.applied);
        Metrics::inc(&m.applied);
        Metrics::inc(&m.dead_lettered);
        let lc = Lifecycle::new(AppBehaviour::naive());
        let guard = m.in_flight();
        let text = m.render(&lc);
        assert!(text.contains("zerodrop_worker_jobs_total{outcome=\"applied\"} 2"), "{text}");
        assert!(text.contains("zerodrop_worker_jobs_total{outcome=\"dead_lettered\"} 1"), "{text}");
        assert!(text.contains("zerodrop_worker_jobs_total{outcome=\"requeued\"} 0"), "{text}");
        assert!(text.contains("zerodrop_worker_jobs_in_flight 1"), "{text}");
        assert!(text.contains("zerodrop_worker_phase 0"), "{text}");
        assert!(text.contains("zerodrop_worker_ready 0"), "{text}");
        drop(guard);
        assert!(m.render(&lc).contains("zerodrop_worker_jobs_in_flight 0"));
    }
}
