//! `/metrics` of the worker in the OpenMetrics text format (prometheus-client), named
//! like the api's: counters end in `_total`, the phase is a number and, per phase, a
//! 0/1 `_info` series a dashboard can select on without knowing the numbering.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use zerodrop_lifecycle::{Lifecycle, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

const PHASES: [Phase; 5] = [Phase::Starting, Phase::Serving, Phase::Deregistering, Phase::Draining, Phase::Disposing];

/// The consumer's counters; each outcome is one series of `zerodrop_worker_jobs_total`.
pub struct Metrics {
    registry: Registry,
    /// Ledger rows committed.
    pub applied: Counter,
    /// Idempotent mode: redeliveries of jobs already in the ledger, acked without effect.
    pub already_applied: Counter,
    /// Poison messages sent to the dead-letter queue.
    pub dead_lettered: Counter,
    /// Deliveries handed back to the broker (database error, or shutdown).
    pub requeued: Counter,
    /// Auto-ack mode: jobs whose database write failed; nobody will retry them.
    pub failed: Counter,
    /// Auto-ack mode: jobs cut off by the drain budget at shutdown (buffered or in
    /// progress); acked already, so lost.
    pub abandoned: Counter,
    in_flight: Gauge,
    phase: Gauge,
    phase_info: Family<PhaseLabel, Gauge>,
    ready: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let jobs = Family::<Outcome, Counter>::default();
        r.register("zerodrop_worker_jobs", "Deliveries handled, by outcome.", jobs.clone());
        // Every outcome is created up front, so a scrape shows 0 rather than nothing.
        let outcome = |name| jobs.get_or_create(&Outcome { outcome: name }).clone();
        let m = Metrics {
            applied: outcome("applied"),
            already_applied: outcome("already_applied"),
            dead_lettered: outcome("dead_lettered"),
            requeued: outcome("requeued"),
            failed: outcome("failed"),
            abandoned: outcome("abandoned"),
            in_flight: Gauge::default(),
            phase: Gauge::default(),
            phase_info: Family::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        r.register("zerodrop_worker_jobs_in_flight", "Jobs being processed.", m.in_flight.clone());
        r.register(
            "zerodrop_worker_phase",
            "Lifecycle phase: 0 starting, 1 serving, 2 deregistering, 3 draining, 4 disposing.",
            m.phase.clone(),
        );
        r.register("zerodrop_worker_phase_info", "1 for the phase this instance is in.", m.phase_info.clone());
        r.register("zerodrop_worker_ready", "1 when /readyz answers 200.", m.ready.clone());
        Metrics { registry: r, ..m }
    }

    /// Counts one job in flight until the guard is dropped.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// The text of one scrape; the phase and readiness are read at this moment.
    pub fn render(&self, lc: &Lifecycle) -> String {
        let phase = lc.phase();
        self.phase.set(phase as i64);
        for p in PHASES {
            self.phase_info.get_or_create(&PhaseLabel { phase: p.as_str() }).set(i64::from(p == phase));
        }
        self.ready.set(i64::from(lc.is_ready()));
        let mut out = String::with_capacity(2048);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerodrop_stages::AppBehaviour;

    #[test]
    fn counters_and_gauges_keep_the_names_the_runner_and_tests_read() {
        let m = Arc::new(Metrics::new());
        m.applied.inc();
        m.applied.inc();
        m.dead_lettered.inc();
        m.abandoned.inc_by(3);
        let lc = Lifecycle::new(AppBehaviour::naive());
        let guard = m.in_flight();
        let text = m.render(&lc);
        for want in [
            "zerodrop_worker_jobs_total{outcome=\"applied\"} 2",
            "zerodrop_worker_jobs_total{outcome=\"dead_lettered\"} 1",
            "zerodrop_worker_jobs_total{outcome=\"abandoned\"} 3",
            "zerodrop_worker_jobs_total{outcome=\"requeued\"} 0",
            "# TYPE zerodrop_worker_jobs counter",
            "zerodrop_worker_jobs_in_flight 1",
            "zerodrop_worker_phase 0",
            "zerodrop_worker_phase_info{phase=\"starting\"} 1",
            "zerodrop_worker_phase_info{phase=\"serving\"} 0",
            "zerodrop_worker_ready 0",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        drop(guard);
        assert!(m.render(&lc).contains("zerodrop_worker_jobs_in_flight 0"));
    }
}
