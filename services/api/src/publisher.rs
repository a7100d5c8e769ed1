use anyhow::{Context, Result};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::Duration;
use zerodrop_jobs::{Job, Topology};

/// Publishes jobs to the work queue, with or without publisher confirms.
pub struct Publisher {
    channel: Channel,
    topology: Topology,
    confirms: bool,
}

/// How long a publish may wait for the broker's confirm before giving up.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker refused the job (nack)")]
    Nacked,
    #[error("no confirm from the broker within {CONFIRM_TIMEOUT:?}")]
    ConfirmTimeout,
    #[error("publish failed: {0}")]
    Broker(#[from] lapin::Error),
}

/// Connects, retrying for a while: the broker may still be starting.
pub async fn connect(url: &str) -> Result<Connection> {
    let mut last = None;
    for _ in 0..60 {
        match Connection::connect(url, ConnectionProperties::default()).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last.map(anyhow::Error::from).unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
        .with_context(|| format!("connecting to RabbitMQ at {url}"))
}

impl Publisher {
    pub async fn open(conn: &Connection, topology: Topology, confirms: bool) -> Result<Publisher> {
        let channel = conn.create_channel().await.context("opening an AMQP channel")?;
        topology.declare(&channel).await.context("declaring the job queues")?;
        if confirms {
            channel.confirm_select(ConfirmSelectOptions::default()).await.context("enabling publisher confirms")?;
        }
        Ok(Publisher { channel, topology, confirms })
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// With confirms, returns only once the broker has taken responsibility for the
    /// message; without, as soon as it is handed to the client library.
    pub async fn publish(&self, job: &Job) -> Result<(), PublishError> {
        let props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        let pending = self
            .channel
            .basic_publish("", &self.topology.queue, BasicPublishOptions::default(), &job.to_payload(), props)
            .await?;
        if !self.confirms {
            return Ok(());
        }
        match tokio::time::timeout(CONFIRM_TIMEOUT, pending).await {
            Err(_) => Err(PublishError::ConfirmTimeout),
            Ok(confirm) => match confirm? {
                Confirmation::Nack(_) => Err(PublishError::Nacked),
                _ => Ok(()),
            },
        }
    }

    pub fn is_connected(&self) -> bool {
        self.channel.status().connected()
    }

    /// Waits for outstanding confirms: the publisher's disposal step.
    pub async fn settle(&self) {
        if self.confirms {
            if let Err(e) = self.channel.wait_for_confirms().await {
                tracing::warn!(error = %e, "waiting for publisher confirms failed");
            }
        }
    }
}
