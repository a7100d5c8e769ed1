//! zerodrop-api: the HTTP half of the lossy pair. How it shuts down is decided by the
//! stage's ZD_* environment (see zerodrop-stages); the code path is the same for all.

mod capacity;
mod config;
mod conn_cost;
mod error;
mod long_op;
mod metrics;
mod publisher;
mod routes;
mod stream;

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
        metrics: Default::default(),
        max_work_ms: cfg.max_work_ms,
    });
    let backlog = cfg.behaviour.accept_backlog;
    let listener = conn_cost::bind(cfg.listen, backlog).with_context(|| format!("binding {}", cfg.listen))?;
    tracing::info!(step = "listening", addr = %cfg.listen, capacity = cfg.capacity, backlog, "listening");
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
