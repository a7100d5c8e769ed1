//! Logs and traces. Logs are `tracing` lines on stdout, JSON when `ZD_LOG_FORMAT=json`
//! (the platforms set it, so lifecycle steps can be parsed back). Traces go through an
//! OpenTelemetry layer exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set, and are off otherwise. Flushing them is the last teardown step.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global subscriber for `service`. Call once, first thing in `main`.
pub fn init(service: &'static str) -> Telemetry {
    let json = std::env::var("ZD_LOG_FORMAT").map(|v| v == "json").unwrap_or(false);
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(false)
            .with_current_span(false)
            .with_span_list(false)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };

    let (provider, otel_error) = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => match otlp_provider(service) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(format!("OTLP exporter for {endpoint} not started: {e}"))),
        },
        _ => (None, None),
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    // W3C traceparent, so a job's trace crosses the queue (see zerodrop_jobs::trace).
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let registry =
        tracing_subscriber::registry().with(fmt.with_filter(filter())).with(otel.map(|l| l.with_filter(filter())));
    if registry.try_init().is_err() {
        eprintln!("a tracing subscriber was already installed; keeping it");
    }
    if let Some(e) = otel_error {
        tracing::warn!("{e}");
    }
    tracing::info!(step = "started", service, pid = std::process::id(), otlp = provider.is_some(), "starting");
    Telemetry { provider }
}

fn otlp_provider(service: &'static str) -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    // Since 0.33 the HTTP exporter retries a failed export (refused connection, 429/5xx)
    // up to 3 times with backoff; the final flush stays bounded by `Telemetry::flush`.
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    Ok(provider_for(service, exporter))
}

fn provider_for(service: &'static str, exporter: opentelemetry_otlp::SpanExporter) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build()
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter, waiting at most `budget`: an
    /// unreachable collector must not hold the exit until the guardian fires. Logs
    /// `telemetry_flushed`.
    pub fn flush(self, budget: Duration) {
        let Some(provider) = self.provider else {
            tracing::info!(step = "telemetry_flushed", otlp = false, exported = false, "telemetry flushed");
            return;
        };
        let (exported, timed_out) = flush_within(provider, budget);
        tracing::info!(
            step = "telemetry_flushed",
            otlp = true,
            exported,
            timed_out,
            budget_ms = budget.as_millis() as u64,
            "telemetry flushed"
        );
    }
}

/// Returns (exported, timed_out). On its own thread: the exporter's HTTP client blocks,
/// and a hung one is simply left behind when the process exits.
fn flush_within(provider: SdkTracerProvider, budget: Duration) -> (bool, bool) {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("otlp-flush".into()).spawn(move || {
        let flushed = provider.force_flush().is_ok();
        let _ = provider.shutdown_with_timeout(Duration::from_millis(100));
        let _ = tx.send(flushed);
    });
    match spawned {
        Ok(_) => match rx.recv_timeout(budget) {
            Ok(flushed) => (flushed, false),
            Err(_) => (false, true),
        },
        Err(_) => (false, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::Tracer as _;
    use opentelemetry_otlp::WithExportConfig;
    use std::time::Instant;

    /// A provider holding one finished span, exporting to `url` with a generous
    /// exporter timeout, so only `flush_within` can make the flush return early.
    fn provider_with_a_span(url: String) -> SdkTracerProvider {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let provider = provider_for("telemetry-test", exporter);
        provider.tracer("test").in_span("one", |_| {});
        provider
    }

    #[test]
    fn a_collector_that_never_answers_cannot_hold_the_flush_past_its_budget() {
        // The kernel completes the handshake from the backlog; nobody ever reads.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", silent.local_addr().unwrap());
        let provider = provider_with_a_span(url);
        let started = Instant::now();
        let (exported, timed_out) = flush_within(provider, Duration::from_millis(300));
        let took = started.elapsed();
        assert_eq!((exported, timed_out), (false, true));
        assert!(took < Duration::from_secs(2), "flush took {took:?}");
    }

    #[test]
    fn an_absent_collector_is_given_up_on_within_the_largest_budget() {
        // A port that was free a moment ago: connections are refused, which the 0.33
        // exporter retries with backoff. All of that must fit in the 2 s budget cap.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let provider = provider_with_a_span(format!("http://127.0.0.1:{port}/v1/traces"));
        let (exported, timed_out) = flush_within(provider, Duration::from_secs(2));
        assert_eq!((exported, timed_out), (false, false));
    }
}
