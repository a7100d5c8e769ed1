//! The zerodrop worker: consumes jobs from RabbitMQ and applies each one to the
//! PostgreSQL ledger, with the shutdown and delivery behaviour of the current stage.
//!
//! Resources are acquired in dependency order and registered with the lifecycle's
//! [`Teardown`], which disposes of them in reverse:
//!
//! ```text
//! db_pool -> amqp_connection -> amqp_channel -> consumer      (acquisition)
//! consumer -> amqp_channel -> amqp_connection -> db_pool      (disposal, after http_server)
//! ```

mod admin;
mod config;
mod consumer;
mod delivery;
mod metrics;
mod retry;
mod session;

use anyhow::Context as _;
use config::Config;
use consumer::ConsumerControl;
use delivery::Worker;
use metrics::Metrics;
use session::BrokerLink;
use std::sync::Arc;
use tokio::net::TcpListener;
use zerodrop_jobs::Topology;
use zerodrop_ledger::Ledger;
use zerodrop_lifecycle::{http, telemetry, Drain, Lifecycle, Teardown};
use zerodrop_stages::AckMode;

/// Connection attempts at startup (with backoff, about 30 s): the broker may still be
/// starting. After startup a lost broker is retried for as long as the process lives.
const AMQP_STARTUP_ATTEMPTS: u32 = 20;

#[tokio::main]
async fn main() {
    let telemetry = telemetry::init("worker");
    let code = match run(telemetry).await {
        Ok(code) => code,
        Err(e) => {
            let error = format!("{e:#}");
            tracing::error!(error = %error, "worker failed to start");
            eprintln!("zerodrop-worker: {error}");
            1
        }
    };
    std::process::exit(code);
}

async fn run(telemetry: telemetry::Telemetry) -> anyhow::Result<i32> {
    let cfg = Config::from_env().context("invalid configuration")?;
    let lc = Lifecycle::new(cfg.behaviour);
    lc.install_signal_handlers().context("installing the signal handlers")?;

    let metrics = Arc::new(Metrics::new());
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the admin HTTP listener ZD_LISTEN={}", cfg.listen))?;
    let admin_addr = listener.local_addr().context("reading the admin listener address")?;
    let server = http::Server::start(listener, admin::router(lc.clone(), metrics.clone()), &lc);
    tracing::info!(
        admin_addr = %admin_addr,
        pod = %cfg.pod,
        queue = %cfg.queue,
        schema = %cfg.db_schema,
        amqp_url = %cfg.amqp_url_redacted(),
        database_url = %cfg.database_url_redacted(),
        behaviour = ?cfg.behaviour,
        job_work_ms = cfg.job_work.as_millis() as u64,
        post_commit_ms = cfg.post_commit.as_millis() as u64,
        "admin http listening"
    );

    let mut teardown = Teardown::new();
    let mut drains = Vec::new();
    let shutdown = lc.shutdown_token();
    // A SIGTERM during startup skips the rest of it: what was acquired is still
    // disposed of in order.
    let started = tokio::select! {
        started = start(&cfg, &lc, &metrics, &mut teardown, &mut drains) => Some(started),
        _ = shutdown.cancelled() => None,
    };
    match started {
        Some(result) => {
            result?;
            lc.mark_ready();
        }
        None => tracing::warn!("shutdown requested during startup; not consuming"),
    }

    Ok(lc.run_shutdown(server, drains, teardown, telemetry).await)
}

/// Acquires every resource, in dependency order, registering each with the teardown
/// right after acquiring it; ends with the consumer running.
async fn start(
    cfg: &Config,
    lc: &Lifecycle,
    metrics: &Arc<Metrics>,
    teardown: &mut Teardown,
    drains: &mut Vec<Drain>,
) -> anyhow::Result<()> {
    let b = cfg.behaviour;
    let manual_ack = b.ack == AckMode::AfterCommit;

    // db_pool
    let ledger = Ledger::connect(&cfg.database_url, &cfg.db_schema, cfg.db_pool_size)
        .context("DATABASE_URL / ZD_DB_SCHEMA")?
        .with_writes(cfg.ledger_writes);
    tracing::info!(ledger_writes = cfg.ledger_writes.as_str(), "ledger amount columns written");
    {
        let ledger = ledger.clone();
        teardown.acquired("db_pool", move || async move { ledger.close() });
    }
    ledger.create_schema().await.with_context(|| {
        format!(
            "creating the ledger schema {:?} at {} (DATABASE_URL, ZD_DB_SCHEMA)",
            cfg.db_schema,
            cfg.database_url_redacted()
        )
    })?;
    if b.warm_before_ready {
        let open = ledger.warm().await.context("warming the database pool")?;
        tracing::info!(connections = open, "database pool warmed");
    }

    // amqp_connection, amqp_channel, consumer: one session, replaced whole when lost.
    let topology = Topology::new(cfg.queue.clone());
    let link = Arc::new(BrokerLink::new(
        cfg.amqp_url.clone(),
        format!("zerodrop-worker {}", cfg.pod),
        topology.clone(),
        b.prefetch,
        manual_ack,
    ));
    let control = ConsumerControl::new(link.clone());
    let consumer = link
        .open(Some(AMQP_STARTUP_ATTEMPTS), &control.stop)
        .await
        .with_context(|| format!("starting the consumer at {}", cfg.amqp_url_redacted()))?
        .context("startup interrupted")?;
    {
        let l = link.clone();
        teardown.acquired("amqp_connection", move || async move { l.close_connection().await });
        let l = link.clone();
        teardown.acquired("amqp_channel", move || async move { l.close_channel().await });
        let control = control.clone();
        teardown.acquired("consumer", move || async move {
            // A no-op when the drain already cancelled it.
            control.cancel().await;
        });
    }
    let worker = Arc::new(Worker {
        ledger,
        link,
        metrics: metrics.clone(),
        manual_ack,
        idempotent: b.idempotent,
        pod: cfg.pod.clone(),
        dead_letter_queue: topology.dead_letter_queue(),
        job_work: cfg.job_work,
        post_commit: cfg.post_commit,
        max_deliveries: b.max_deliveries,
    });
    let tag = consumer.tag().to_string();
    let running = tokio::spawn(consumer::consume(worker.clone(), consumer, control.stop.clone(), lc.clone()));
    let budget = b.drain_budget;
    drains.push(Drain::new("consumer", move || consumer::drain(worker, control, running, budget)));
    tracing::info!(
        consumer_tag = %tag,
        queue = %topology.queue,
        ack = ?b.ack,
        prefetch = b.prefetch,
        idempotent = b.idempotent,
        "consuming"
    );
    Ok(())
}
