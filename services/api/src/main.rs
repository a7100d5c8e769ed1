//! zerodrop-api: the HTTP half of the lossy pair. How it shuts down is decided by the
//! stage's ZD_* environment (see zerodrop-stages); the code path is the same for all.

mod capacity;
mod config;
mod error;
mod metrics;
mod publisher;
mod routes;
mod version;

use anyhow::Context;
use capacity::{Capacity, WarmCache};
use std::sync::Arc;
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
    let conn = Arc::new(publisher::connect(&cfg.amqp_url).await?);
    let conn_close = conn.clone();
    teardown.acquired("amqp_connection", move || async move {
        let _ = conn_close.close(200, "api shutting down").await;
    });
    let publisher =
        Arc::new(publisher::Publisher::open(&conn, Topology::new(&cfg.queue), cfg.behaviour.publisher_confirms).await?);
    let channel = publisher.channel();
    teardown.acquired("amqp_channel", move || async move {
        let _ = channel.close(200, "api shutting down").await;
    });
    let settle = publisher.clone();
    teardown.acquired("publisher", move || async move { settle.settle().await });

    let state = Arc::new(routes::AppState {
        lc: lc.clone(),
        publisher,
        capacity: Capacity::new(cfg.capacity),
        cache: WarmCache::new(cfg.warm_fill),
        metrics: metrics::Metrics::new(&version.name),
        max_work_ms: cfg.max_work_ms,
        version,
    });
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    tracing::info!(step = "listening", addr = %cfg.listen, capacity = cfg.capacity, "listening");
    let server = Server::start(listener, routes::router(state.clone()), &lc);

    if cfg.behaviour.warm_before_ready {
        state.cache.fill_all().await;
        tracing::info!(step = "warmed", slots = state.cache.warm_slots().await, "cache warmed before ready");
    }
    lc.mark_ready();
    Ok(lc.run_shutdown(server, Vec::new(), teardown, telemetry).await)
}
