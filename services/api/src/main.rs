//! zerodrop-api: the HTTP half of the lossy pair. How it shuts down is decided by the
//! stage's ZD_* environment (see zerodrop-stages); the code path is the same for all.
//!
//! Errors: every 4xx and 5xx a route gives is `{"error": <reason>, "status": <code>}`.
//! Two kinds of answer carry no reason. hyper answers a request that never reaches
//! the router by itself, with a status and an empty body: 400 for a malformed request
//! line or header, 431 for a head above 64 KiB or with more than 100 header fields
//! (`zerodrop_lifecycle::http::MAX_HEAD_BYTES`); hyper 1.x has no hook to add a body.
//! And a head not complete within `ZD_HEADER_READ_TIMEOUT_MS` is not answered at all:
//! the connection is closed. A body that stalls for `ZD_BODY_READ_TIMEOUT_MS` is
//! answered 408 with a reason (`body_timeout.rs`).

mod body_timeout;
mod breaker;
mod capacity;
mod config;
mod conn_cost;
mod error;
mod fault;
mod long_op;
mod metrics;
mod publisher;
mod routes;
mod shadow;
mod state;
mod stream;
mod timeout;
mod version;

use anyhow::Context;
use capacity::{Capacity, WarmCache};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use zerodrop_jobs::Topology;
use zerodrop_lifecycle::http::Server;
use zerodrop_lifecycle::{telemetry, Lifecycle, Teardown};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let telemetry = telemetry::init("api");
    match run(telemetry).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            tracing::error!(step = "startup_failed", error = format!("{e:#}"), "api failed to start");
            std::process::exit(1);
        }
    }
}

async fn run(telemetry: telemetry::Telemetry) -> anyhow::Result<i32> {
    let cfg = config::Config::from_env()?;
    let version = version::Version::from_env()?;
    tracing::info!(step = "version", version = %version.name, regression = %version.regression, "version");
    let lc = Lifecycle::new(cfg.behaviour);
    lc.install_signal_handlers().context("installing signal handlers")?;

    // Acquired in dependency order; the lifecycle disposes them in reverse.
    let mut teardown = Teardown::new();
    let publisher = publisher::Publisher::connect(
        &cfg.amqp_url,
        Topology::new(&cfg.queue),
        cfg.shadow_queue.as_ref().map(Topology::new),
        cfg.behaviour.publisher_confirms,
    )
    .await?;
    tracing::info!(
        step = "shadow_sink",
        queue = cfg.shadow_queue.as_deref().unwrap_or("-"),
        "where shadow copies of jobs go (`-`: none; a copied job is refused)"
    );
    // Stopped by the teardown's first step, so a connection closed on purpose is not
    // mistaken for a lost one.
    let supervising = CancellationToken::new();
    let supervisor = publisher.supervise(lc.clone(), supervising.clone());
    let p = publisher.clone();
    teardown.acquired("amqp_connection", move || async move { p.close_connection().await });
    let p = publisher.clone();
    teardown.acquired("amqp_channel", move || async move { p.close_channel().await });
    let p = publisher.clone();
    teardown.acquired("publisher", move || async move {
        supervising.cancel();
        let _ = supervisor.await;
        p.settle().await
    });

    let metrics = Arc::new(metrics::Metrics::new(&version.name));
    tracing::info!(
        step = "resilience",
        faults = cfg.faults.enabled,
        breaker = cfg.breaker.enabled,
        breaker_failures = cfg.breaker.failures,
        breaker_open_ms = cfg.breaker.open_for.as_millis() as u64,
        breaker_slow_ms = cfg.breaker.slow.as_millis() as u64,
        "fault injection and publish breaker"
    );
    let state = Arc::new(state::AppState {
        lc: lc.clone(),
        publisher,
        breaker: breaker::Breaker::new(cfg.breaker.clone(), metrics.breaker.clone()),
        faults: Arc::new(cfg.faults.clone()),
        capacity: Capacity::new(cfg.capacity),
        cache: WarmCache::new(cfg.warm_fill),
        metrics,
        max_work_ms: cfg.max_work_ms,
        request_timeout: cfg.request_timeout,
        body_read_timeout: cfg.body_read_timeout,
        version,
    });
    let backlog = cfg.behaviour.accept_backlog;
    let listener = conn_cost::bind(cfg.listen, backlog).with_context(|| format!("binding {}", cfg.listen))?;
    let timeout_ms = cfg.request_timeout.as_millis() as u64;
    let body_timeout_ms = cfg.body_read_timeout.as_millis() as u64;
    tracing::info!(
        step = "listening",
        addr = %cfg.listen,
        capacity = cfg.capacity,
        backlog,
        timeout_ms,
        body_timeout_ms,
        "listening"
    );
    let pod = conn_cost::pod_header_value();
    let router = routes::router(state.clone())
        .layer(axum::middleware::map_response(move |res| std::future::ready(conn_cost::tag(res, &pod))));
    let server = Server::start(listener, router, &lc);

    if cfg.behaviour.warm_before_ready {
        state.cache.fill_all().await;
        tracing::info!(step = "warmed", slots = state.cache.warm_slots().await, "cache warmed before ready");
    }
    lc.mark_ready();
    Ok(lc.run_shutdown(server, Vec::new(), teardown, telemetry).await)
}
