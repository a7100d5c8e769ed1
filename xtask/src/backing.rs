//! The runner's own connections to the broker and the ledger a command's fleet uses:
//! to declare a run's queues, create its ledger schema, wait for the queue to drain,
//! and reconcile accepted jobs against the ledger.

use anyhow::{Context, Result};
use lapin::{Channel, Connection, ConnectionProperties};
use std::time::{Duration, Instant};
use zerodrop_jobs::Topology;
use zerodrop_platform::Platform;

pub struct Backing {
    pub amqp: Connection,
    pub channel: Channel,
    pub db: tokio_postgres::Client,
}

impl Backing {
    pub async fn connect<P: Platform>(platform: &P) -> Result<Backing> {
        let url = platform.amqp_url().to_string();
        let amqp = Connection::connect(&url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to RabbitMQ at {url}"))?;
        let channel = amqp.create_channel().await.context("opening an AMQP channel")?;
        let db = zerodrop_ledger::connect(platform.database_url()).await.context("connecting to PostgreSQL")?;
        Ok(Backing { amqp, channel, db })
    }

    pub async fn close(self) {
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.amqp.close(200, "done".into()).await;
    }

    /// Waits until the work queue is empty and the ledger stopped growing, for at most
    /// 45 s; false if it never did.
    pub async fn wait_settled(&self, topology: &Topology, schema: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(45);
        let mut last = -1i64;
        let mut stable_since = Instant::now();
        while Instant::now() < deadline {
            let ready = topology.depths(&self.channel).await.map(|(q, _)| q).unwrap_or(u32::MAX);
            let rows = zerodrop_ledger::total_rows(&self.db, schema).await.unwrap_or(-1);
            if rows != last {
                last = rows;
                stable_since = Instant::now();
            }
            // Unacked deliveries are not in `ready`: a ledger that has not moved for
            // 3 s while the queue is empty means no worker holds a job any more.
            if ready == 0 && stable_since.elapsed() > Duration::from_secs(3) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }
}
