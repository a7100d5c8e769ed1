//! The worker's link to the broker: one connection, one channel and one consumer at a
//! time, replaced whole when any of them is lost. Delivery tags belong to the channel
//! that carried them; lapin poisons the ackers of a dead channel, so a job taken on an
//! old channel can never be acked on the new one (the broker requeued it already).

use anyhow::{Context as _, Result};
use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, Consumer};
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;
use zerodrop_jobs::broker::{self, Backoff};
use zerodrop_jobs::Topology;

#[derive(Clone)]
struct Current {
    connection: Arc<Connection>,
    channel: Channel,
    tag: ShortString,
}

pub struct BrokerLink {
    pub url: String,
    pub name: String,
    pub topology: Topology,
    pub prefetch: u16,
    pub manual_ack: bool,
    current: Mutex<Option<Current>>,
}

impl BrokerLink {
    pub fn new(url: String, name: String, topology: Topology, prefetch: u16, manual_ack: bool) -> Self {
        BrokerLink { url, name, topology, prefetch, manual_ack, current: Mutex::new(None) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects (retrying with backoff; `attempts: None` is forever), declares the
    /// queues, sets the prefetch and starts consuming. `Ok(None)` when `stop` fired.
    pub async fn open(&self, attempts: Option<u32>, stop: &CancellationToken) -> Result<Option<Consumer>> {
        let mut backoff = Backoff::default();
        loop {
            let Some(conn) = broker::connect(&self.url, &self.name, &mut backoff, attempts, stop)
                .await
                .context("connecting to RabbitMQ (AMQP_URL)")?
            else {
                return Ok(None);
            };
            let conn = Arc::new(conn);
            match self.consume_on(&conn).await {
                Ok((channel, consumer)) => {
                    *self.lock() = Some(Current { connection: conn, channel, tag: consumer.tag() });
                    return Ok(Some(consumer));
                }
                Err(e) if attempts.is_none() && !stop.is_cancelled() => {
                    tracing::warn!(error = format!("{e:#}"), "starting the consumer failed; retrying");
                    let _ = conn.close(200, "retrying".into()).await;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn consume_on(&self, conn: &Connection) -> Result<(Channel, Consumer)> {
        let channel = conn.create_channel().await.context("opening an AMQP channel")?;
        self.topology.declare(&channel).await.with_context(|| {
            format!("declaring the queues {} and {} (ZD_QUEUE)", self.topology.queue, self.topology.dead_letter_queue())
        })?;
        if self.prefetch > 0 {
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await
                .context("setting the prefetch (ZD_PREFETCH)")?;
        }
        if self.manual_ack {
            // A retried or parked job is acked only after the broker confirmed its copy.
            channel.confirm_select(ConfirmSelectOptions::default()).await.context("enabling publisher confirms")?;
        }
        let options = BasicConsumeOptions { no_ack: !self.manual_ack, ..Default::default() };
        let consumer = channel
            .basic_consume(self.topology.queue.as_str().into(), "".into(), options, FieldTable::default())
            .await
            .with_context(|| format!("consuming from {}", self.topology.queue))?;
        Ok((channel, consumer))
    }

    pub fn channel(&self) -> Option<Channel> {
        self.lock().as_ref().map(|c| c.channel.clone())
    }

    pub fn consumer_tag(&self) -> Option<ShortString> {
        self.lock().as_ref().map(|c| c.tag.clone())
    }

    /// Forgets a lost session, closing what may still be open of it.
    pub async fn discard(&self) {
        let old = self.lock().take();
        if let Some(old) = old {
            let _ = old.connection.close(200, "replacing a lost session".into()).await;
        }
    }

    pub async fn close_channel(&self) {
        if let Some(channel) = self.channel() {
            if let Err(e) = channel.close(200, "bye".into()).await {
                tracing::warn!(error = %e, "closing the AMQP channel failed");
            }
        }
    }

    pub async fn close_connection(&self) {
        let current = self.lock().take();
        if let Some(c) = current {
            if let Err(e) = c.connection.close(200, "bye".into()).await {
                tracing::warn!(error = %e, "closing the AMQP connection failed");
            }
        }
    }
}
