//! `/metrics` of the worker (prometheus-client), in OpenMetrics or the classic text
//! format as the scraper asks (`exposition.rs`), named like the api's: counters end in
//! `_total`, durations in `_seconds`, the phase is a number and, per phase, a 0/1
//! `_info` series a dashboard can select on without knowing the numbering.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use zerodrop_lifecycle::exposition::Format;
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

/// Buckets (seconds) of both job histograms: a ledger insert takes milliseconds, a
/// retried job holds its delivery through a pause of up to 4 s, and a backlog or a
/// hanging database stretches either wait to tens of seconds.
const JOB_BUCKETS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

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
    processing: Histogram,
    queue_wait: Histogram,
    phase: Gauge,
    phase_info: Family<PhaseLabel, Gauge>,
    ready: Gauge,
}

impl Metrics {
    /// Help texts are given without a final period: prometheus-client's registry adds
    /// one to every help text.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let jobs = Family::<Outcome, Counter>::default();
        r.register("zerodrop_worker_jobs", "Deliveries handled, by outcome", jobs.clone());
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
            processing: Histogram::new(JOB_BUCKETS),
            queue_wait: Histogram::new(JOB_BUCKETS),
            phase: Gauge::default(),
            phase_info: Family::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        r.register("zerodrop_worker_jobs_in_flight", "Jobs being processed", m.in_flight.clone());
        r.register(
            "zerodrop_worker_job_processing_seconds",
            "Time from taking a delivery to its ack, reject or requeue (with auto-ack, to the end of its processing)",
            m.processing.clone(),
        );
        r.register(
            "zerodrop_worker_job_queue_wait_seconds",
            "Time from a job's publish (by the api, or a retry's re-publish) to the worker taking its delivery",
            m.queue_wait.clone(),
        );
        r.register(
            "zerodrop_worker_phase",
            "Lifecycle phase: 0 starting, 1 serving, 2 deregistering, 3 draining, 4 disposing",
            m.phase.clone(),
        );
        r.register("zerodrop_worker_phase_info", "1 for the phase this instance is in", m.phase_info.clone());
        r.register("zerodrop_worker_ready", "1 when /readyz answers 200", m.ready.clone());
        Metrics { registry: r, ..m }
    }

    /// Counts one job in flight until the guard is dropped.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// One delivery, from being taken to being settled.
    pub fn processed(&self, took: Duration) {
        self.processing.observe(took.as_secs_f64());
    }

    /// One delivery's time in the queue (see `stamp.rs`).
    pub fn waited(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// The text of one scrape; the phase and readiness are read at this moment.
    pub fn render(&self, lc: &Lifecycle, format: Format) -> String {
        let phase = lc.phase();
        self.phase.set(phase as i64);
        for p in PHASES {
            self.phase_info.get_or_create(&PhaseLabel { phase: p.as_str() }).set(i64::from(p == phase));
        }
        self.ready.set(i64::from(lc.is_ready()));
        format.encode(&self.registry)
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
        for format in [Format::OpenMetrics, Format::Prometheus] {
            let text = m.render(&lc, format);
            for want in [
                "zerodrop_worker_jobs_total{outcome=\"applied\"} 2",
                "zerodrop_worker_jobs_total{outcome=\"dead_lettered\"} 1",
                "zerodrop_worker_jobs_total{outcome=\"abandoned\"} 3",
                "zerodrop_worker_jobs_total{outcome=\"requeued\"} 0",
                "zerodrop_worker_jobs_in_flight 1",
                "zerodrop_worker_phase 0",
                "zerodrop_worker_phase_info{phase=\"starting\"} 1",
                "zerodrop_worker_phase_info{phase=\"serving\"} 0",
                "zerodrop_worker_ready 0",
            ] {
                assert!(text.contains(want), "{format:?}: missing {want} in\n{text}");
            }
        }
        assert!(m.render(&lc, Format::OpenMetrics).contains("# TYPE zerodrop_worker_jobs counter"));
        assert!(m.render(&lc, Format::Prometheus).contains("# TYPE zerodrop_worker_jobs_total counter"));
        drop(guard);
        assert!(m.render(&lc, Format::Prometheus).contains("zerodrop_worker_jobs_in_flight 0"));
    }

    #[test]
    fn job_histograms_count_in_seconds() {
        let m = Metrics::new();
        m.processed(Duration::from_millis(7));
        m.waited(Duration::from_secs(3));
        let text = m.render(&Lifecycle::new(AppBehaviour::naive()), Format::Prometheus);
        for want in [
            "# TYPE zerodrop_worker_job_processing_seconds histogram",
            "zerodrop_worker_job_processing_seconds_bucket{le=\"0.005\"} 0",
            "zerodrop_worker_job_processing_seconds_bucket{le=\"0.01\"} 1",
            "zerodrop_worker_job_processing_seconds_count 1",
            "# TYPE zerodrop_worker_job_queue_wait_seconds histogram",
            "zerodrop_worker_job_queue_wait_seconds_bucket{le=\"2.5\"} 0",
            "zerodrop_worker_job_queue_wait_seconds_bucket{le=\"5\"} 1",
            "zerodrop_worker_job_queue_wait_seconds_sum 3",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn every_help_text_ends_in_one_period() {
        let m = Metrics::new();
        let lc = Lifecycle::new(AppBehaviour::naive());
        for format in [Format::OpenMetrics, Format::Prometheus] {
            let text = m.render(&lc, format);
            let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
            assert_eq!(helps.len(), 7, "{text}");
            for help in helps {
                assert!(help.ends_with('.') && !help.ends_with(".."), "{help}");
            }
        }
    }
}
