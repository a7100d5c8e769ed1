//! The runner's own connections, and the feed: jobs the runner publishes straight to
//! the work queue (with confirms) beside the load, with amounts it knows. The load's
//! jobs prove none is lost or applied twice; the feed's also prove each amount
//! landed, whole, in the column the reader trusts (the load generator keeps its
//! amounts to itself).

use anyhow::{Context, Result};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use zerodrop_jobs::{Job, Topology};

pub struct Feed {
    amqp: Connection,
    channel: Channel,
    db: tokio_postgres::Client,
}

/// A fed job's amount: spread over 1..=1000 so a value from the wrong row or column
/// would show.
pub fn amount_of(n: u64) -> i64 {
    (n * 7919 % 1000) as i64 + 1
}

impl Feed {
    pub async fn connect(amqp_url: &str, database_url: &str) -> Result<Feed> {
        let amqp = Connection::connect(amqp_url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to RabbitMQ at {amqp_url}"))?;
        let channel = amqp.create_channel().await.context("opening an AMQP channel")?;
        let db = zerodrop_ledger::connect(database_url).await.context("connecting to PostgreSQL")?;
        Ok(Feed { amqp, channel, db })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    pub fn db(&self) -> &tokio_postgres::Client {
        &self.db
    }

    /// Publishes `per_sec` jobs a second for `for_`; resolves to the confirmed ones'
    /// amounts by id.
    pub async fn start(
        &self,
        queue: &str,
        prefix: String,
        per_sec: u32,
        for_: Duration,
    ) -> Result<JoinHandle<Result<HashMap<String, i64>>>> {
        let ch = self.amqp.create_channel().await.context("opening the feed's channel")?;
        let queue = queue.to_string();
        Ok(tokio::spawn(async move {
            ch.confirm_select(ConfirmSelectOptions::default()).await.context("enabling publisher confirms")?;
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_sec.max(1));
            let end = Instant::now() + for_;
            let mut pending = Vec::new();
            let mut n = 0u64;
            while Instant::now() < end {
                tick.tick().await;
                let job = Job { id: format!("{prefix}-{n}"), amount: amount_of(n) };
                let props = BasicProperties::default().with_delivery_mode(2);
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &job.to_payload(),
                        props,
                    )
                    .await
                    .context("publishing a fed job")?;
                pending.push((job, confirm));
                n += 1;
            }
            let mut out = HashMap::new();
            for (job, c) in pending {
                if matches!(c.await.context("waiting for the broker's confirm")?, Confirmation::Ack(_)) {
                    out.insert(job.id, job.amount);
                }
            }
            let _ = ch.close(200, "fed".into()).await;
            Ok(out)
        }))
    }

    pub async fn close(self) {
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.amqp.close(200, "done".into()).await;
    }
}

/// Waits until the work queue is empty and the ledger has not moved for 5 s (longer
/// than the longest retry pause, during which a job is held but not in the queue),
/// at most 60 s. False when it never settled.
pub async fn settle(feed: &Feed, topology: &Topology, schema: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut since) = (-1i64, Instant::now());
    while Instant::now() < deadline {
        let ready = topology.depths(feed.channel()).await.map(|(q, _)| q).unwrap_or(u32::MAX);
        let rows = zerodrop_ledger::total_rows(feed.db(), schema).await.unwrap_or(-1);
        if rows != last {
            (last, since) = (rows, Instant::now());
        }
        if ready == 0 && since.elapsed() > Duration::from_secs(5) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn fed_amounts_are_valid_jobs_and_vary() {
        let amounts: Vec<i64> = (0..1000).map(super::amount_of).collect();
        assert!(amounts.iter().all(|a| (1..=1000).contains(a)));
        let distinct: std::collections::BTreeSet<i64> = amounts.iter().copied().collect();
        assert_eq!(distinct.len(), 1000);
    }
}
