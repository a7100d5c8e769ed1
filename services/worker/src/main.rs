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

use admin::Metrics;
use anyhow::Context as _;
use config::Config;
use consumer::{ConsumerControl, Worker};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use zerodrop_jobs::Topology;
use zerodrop_ledger::Ledger;
use zerodrop_lifecycle::{http, telemetry, Drain, Lifecycle, Teardown};
use zerodrop_stages::AckMode;

/// Bound on connecting to the broker at startup.
const AMQP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

    let metrics = Arc::new(Metrics::default());
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
    let (lost_tx, lost_rx) = oneshot::channel();
    let shutdown = lc.shutdown_token();
    // A SIGTERM during startup skips the rest of it: what was acquired is still
    // disposed of in order.
    let started = tokio::select! {
        started = start(&cfg, &metrics, &mut teardown, &mut drains, lost_tx) => Some(started),
        _ = shutdown.cancelled() => None,
    };
    match started {
        Some(result) => {
            result?;
            lc.mark_ready();
        }
        None => tracing::warn!("shutdown requested during startup; not consuming"),
    }

    let sequence = lc.run_shutdown(server, drains, teardown, telemetry);
    tokio::pin!(sequence);
    let code = tokio::select! {
        code = &mut sequence => code,
        Ok(reason) = lost_rx => {
            if lc.shutdown_token().is_cancelled() {
                // Shutting down anyway: let the sequence finish what it can.
                tracing::warn!(reason = %reason, "consumer lost during shutdown");
                sequence.await
            } else {
                // Without a consumer the worker is useless; let the platform restart it.
                tracing::error!(reason = %reason, code = 1, "consumer lost; exiting");
                1
            }
        }
    };
    Ok(code)
}

/// Acquires every resource, in dependency order, registering each with the teardown
/// right after acquiring it; ends with the consumer running.
async fn start(
    cfg: &Config,
    metrics: &Arc<Metrics>,
    teardown: &mut Teardown,
    drains: &mut Vec<Drain>,
    lost: oneshot::Sender<String>,
) -> anyhow::Result<()> {
    let b = cfg.behaviour;
    let manual_ack = b.ack == AckMode::AfterCommit;

    // db_pool
    let ledger =
        Ledger::connect(&cfg.database_url, &cfg.db_schema, cfg.db_pool_size).context("DATABASE_URL / ZD_DB_SCHEMA")?;
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

    // amqp_connection
    let props = ConnectionProperties::default().with_connection_name(format!("zerodrop-worker {}", cfg.pod).into());
    let connection = tokio::time::timeout(AMQP_CONNECT_TIMEOUT, Connection::connect(&cfg.amqp_url, props))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {AMQP_CONNECT_TIMEOUT:?}"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("connecting to RabbitMQ at {} (AMQP_URL)", cfg.amqp_url_redacted()))?;
    connection.on_error(|e| tracing::error!(error = %e, "AMQP connection error"));
    let connection = Arc::new(connection);
    {
        let connection = connection.clone();
        teardown.acquired("amqp_connection", move || async move {
            if let Err(e) = connection.close(200, "bye").await {
                tracing::warn!(error = %e, "closing the AMQP connection failed");
            }
        });
    }

    // amqp_channel
    let channel = connection.create_channel().await.context("opening an AMQP channel")?;
    {
        let channel = channel.clone();
        teardown.acquired("amqp_channel", move || async move {
            if let Err(e) = channel.close(200, "bye").await {
                tracing::warn!(error = %e, "closing the AMQP channel failed");
            }
        });
    }
    let topology = Topology::new(cfg.queue.clone());
    topology.declare(&channel).await.with_context(|| {
        format!("declaring the queues {} and {} (ZD_QUEUE)", topology.queue, topology.dead_letter_queue())
    })?;
    if b.prefetch > 0 {
        channel
            .basic_qos(b.prefetch, BasicQosOptions::default())
            .await
            .context("setting the prefetch (ZD_PREFETCH)")?;
    }

    // consumer
    let options = BasicConsumeOptions { no_ack: !manual_ack, ..Default::default() };
    let consumer = channel
        .basic_consume(&topology.queue, "", options, FieldTable::default())
        .await
        .with_context(|| format!("consuming from {}", topology.queue))?;
    let control = ConsumerControl::new(channel.clone(), consumer.tag().to_string());
    {
        let control = control.clone();
        teardown.acquired("consumer", move || async move {
            // A no-op when the drain already cancelled it.
            control.cancel().await;
        });
    }
    let worker = Arc::new(Worker {
        ledger,
        channel,
        metrics: metrics.clone(),
        manual_ack,
        idempotent: b.idempotent,
        pod: cfg.pod.clone(),
        dead_letter_queue: topology.dead_letter_queue(),
        job_work: cfg.job_work,
        post_commit: cfg.post_commit,
    });
    let tag = control.tag.clone();
    let running = tokio::spawn(consumer::consume(worker.clone(), consumer, control.stop.clone(), lost));
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
