//! `/metrics` (prometheus-client), in OpenMetrics or the classic text format as the
//! scraper asks (`exposition.rs`). Per-route request counts and latencies are what a
//! canary analysis reads; `zerodrop_build_info` says which version answered.

use crate::capacity::{Capacity, WarmCache};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use zerodrop_lifecycle::exposition::Format;
use zerodrop_lifecycle::{Lifecycle, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Route {
    pub route: String,
}

/// One client's requests by outcome: what a canary judged by client reads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientOutcome {
    pub client: String,
    /// `5xx` or `other`.
    pub outcome: &'static str,
}

/// The routes the load sends; probes and scrapes are no client's traffic.
const USER_ROUTES: [&str; 2] = ["/work", "/jobs"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Label {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// Latency buckets (seconds): fine around the 5 ms fast request, so a p95 read from
/// them can tell a +80 ms regression apart, and wide enough for the 250 ms slow one.
const BUCKETS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.006, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5];

const PHASES: [Phase; 5] = [Phase::Starting, Phase::Serving, Phase::Deregistering, Phase::Draining, Phase::Disposing];

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    duration: Family<Route, Histogram>,
    clients: Family<ClientOutcome, Counter>,
    rejected: Counter,
    published: Counter,
    cache_fills: Counter,
    connections_open: Gauge,
    in_flight: Gauge,
    slots_busy: Gauge,
    slots_total: Gauge,
    phase: Gauge,
    phase_info: Family<Label, Gauge>,
    ready: Gauge,
    pub breaker: crate::breaker::BreakerMetrics,
}

impl Metrics {
    /// Help texts are given without a final period: prometheus-client's registry adds
    /// one to every help text.
    pub fn new(version: &str) -> Metrics {
        let mut r = Registry::default();
        let requests = Family::<RouteStatus, Counter>::default();
        r.register("zerodrop_http_requests", "Requests answered, by matched route and status", requests.clone());
        let duration = Family::<Route, Histogram>::new_with_constructor(|| Histogram::new(BUCKETS));
        r.register("zerodrop_http_request_duration_seconds", "Time to answer, by matched route", duration.clone());
        let clients = Family::<ClientOutcome, Counter>::default();
        r.register(
            "zerodrop_client_requests",
            "Requests of /work and /jobs that named a client (x-zd-client), by client and outcome",
            clients.clone(),
        );
        let build = Family::<VersionLabel, Gauge>::default();
        build.get_or_create(&VersionLabel { version: version.to_string() }).set(1);
        r.register("zerodrop_build_info", "Always 1; the version label says which build answers", build);
        let m = Metrics {
            requests,
            duration,
            clients,
            rejected: Counter::default(),
            published: Counter::default(),
            cache_fills: Counter::default(),
            connections_open: Gauge::default(),
            in_flight: Gauge::default(),
            slots_busy: Gauge::default(),
            slots_total: Gauge::default(),
            phase: Gauge::default(),
            phase_info: Family::default(),
            ready: Gauge::default(),
            breaker: Default::default(),
            registry: Registry::default(),
        };
        r.register("zerodrop_capacity_rejected", "Requests refused with 503", m.rejected.clone());
        r.register("zerodrop_jobs_published", "Jobs accepted (answered 202)", m.published.clone());
        r.register("zerodrop_cache_fills", "Cold cache slots filled", m.cache_fills.clone());
        r.register("zerodrop_http_connections_open", "Open client connections", m.connections_open.clone());
        r.register("zerodrop_http_requests_in_flight", "Requests being served", m.in_flight.clone());
        r.register("zerodrop_capacity_slots_busy", "Request slots in use", m.slots_busy.clone());
        r.register("zerodrop_capacity_slots_total", "Request slots of this instance", m.slots_total.clone());
        r.register(
            "zerodrop_shutdown_phase",
            "0 starting, 1 serving, 2 deregistering, 3 draining, 4 disposing",
            m.phase.clone(),
        );
        r.register("zerodrop_shutdown_phase_info", "1 for the phase this instance is in", m.phase_info.clone());
        r.register("zerodrop_ready", "1 when /readyz answers 200", m.ready.clone());
        m.breaker.register(&mut r);
        Metrics { registry: r, ..m }
    }

    pub fn rejected(&self) {
        self.rejected.inc();
    }
    pub fn published(&self) {
        self.published.inc();
    }

    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        self.requests.get_or_create(&RouteStatus { route: route.to_string(), status }).inc();
        self.duration.get_or_create(&Route { route: route.to_string() }).observe(seconds);
    }

    /// Counts one answered request of a user route against the client that sent it.
    pub fn observe_client(&self, client: u32, status: u16) {
        let outcome = if (500..600).contains(&status) { "5xx" } else { "other" };
        self.clients.get_or_create(&ClientOutcome { client: format!("c{client}"), outcome }).inc();
    }

    /// The text of one scrape; the gauges are read from their sources at this moment.
    pub fn render(&self, lc: &Lifecycle, capacity: &Capacity, cache: &WarmCache, format: Format) -> String {
        let stats = lc.conn_stats();
        self.connections_open.set(stats.open() as i64);
        self.in_flight.set(stats.in_flight() as i64);
        self.slots_busy.set(capacity.busy() as i64);
        self.slots_total.set(capacity.limit as i64);
        let fills = cache.fills.load(Ordering::Relaxed);
        self.cache_fills.inc_by(fills.saturating_sub(self.cache_fills.get()));
        let phase = lc.phase();
        self.phase.set(phase as i64);
        for p in PHASES {
            self.phase_info.get_or_create(&Label { phase: p.as_str().into() }).set((p == phase) as i64);
        }
        self.ready.set(lc.is_ready() as i64);
        format.encode(&self.registry)
    }
}

/// Counts and times every request that matched a route, labelled by the route's
/// pattern (not the raw path, which would make the label set unbounded).
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let client = crate::version::client_of(req.headers());
    let started = Instant::now();
    let res = next.run(req).await;
    if let Some(route) = route {
        let status = res.status().as_u16();
        metrics.observe(&route, status, started.elapsed().as_secs_f64());
        if let Some(c) = client.filter(|_| USER_ROUTES.contains(&route.as_str())) {
            metrics.observe_client(c, status);
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_names_are_rendered_in_both_formats() {
        let m = Metrics::new("v2");
        m.observe("/work", 200, 0.006);
        m.observe("/work", 500, 0.006);
        m.observe_client(3, 500);
        m.observe_client(3, 200);
        m.published();
        // The formats differ in how a counter family is named, and in where `le` goes
        // among a bucket's labels (Prometheus' parsers read either order).
        for (format, counter_type, bucket) in [
            (
                Format::OpenMetrics,
                "# TYPE zerodrop_jobs_published counter",
                "zerodrop_http_request_duration_seconds_bucket{le=\"0.0075\",route=\"/work\"} 2",
            ),
            (
                Format::Prometheus,
                "# TYPE zerodrop_jobs_published_total counter",
                "zerodrop_http_request_duration_seconds_bucket{route=\"/work\",le=\"0.0075\"} 2",
            ),
        ] {
            let out = format.encode(&m.registry);
            for want in [
                "zerodrop_http_requests_total{route=\"/work\",status=\"200\"} 1",
                "zerodrop_http_requests_total{route=\"/work\",status=\"500\"} 1",
                "zerodrop_build_info{version=\"v2\"} 1",
                "zerodrop_client_requests_total{client=\"c3\",outcome=\"5xx\"} 1",
                "zerodrop_client_requests_total{client=\"c3\",outcome=\"other\"} 1",
                "zerodrop_jobs_published_total 1",
                "# TYPE zerodrop_http_connections_open gauge",
                counter_type,
                bucket,
            ] {
                assert!(out.contains(want), "{format:?}: missing {want} in\n{out}");
            }
            assert_eq!(out.ends_with("# EOF\n"), format == Format::OpenMetrics, "{out}");
            let helps: Vec<&str> = out.lines().filter(|l| l.starts_with("# HELP ")).collect();
            assert!(helps.len() >= 12, "{out}");
            for help in helps {
                assert!(help.ends_with('.') && !help.ends_with(".."), "{help}");
            }
        }
    }
}
