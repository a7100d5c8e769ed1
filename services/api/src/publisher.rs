//! Publishes jobs to the work queue over a broker connection that may go away: a
//! supervisor task reconnects with backoff and jitter, and readiness fails meanwhile.

use anyhow::{Context, Result};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zerodrop_jobs::broker::{self, Backoff};
use zerodrop_jobs::{Job, Topology};
use zerodrop_lifecycle::Lifecycle;

/// How long a publish may wait for the broker's confirm before giving up.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at startup: the broker may still be starting (about 30 s in all).
const STARTUP_ATTEMPTS: u32 = 20;

/// Where a job is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The work queue: its worker applies the job to the ledger.
    Work,
    /// The shadow sink: a copy made by a mirroring layer, applied to a ledger of its own.
    Shadow,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("a shadow copy, and this pod has no shadow sink (ZD_SHADOW_QUEUE)")]
    NoShadowSink,
    #[error("broker refused the job (nack)")]
    Nacked,
    #[error("no confirm from the broker within {CONFIRM_TIMEOUT:?}")]
    ConfirmTimeout,
    #[error("not connected to the broker (reconnecting)")]
    Disconnected,
    #[error("the channel was not in confirm mode: the broker never took responsibility")]
    Unconfirmed,
    #[error("publish failed: {0}")]
    Broker(#[from] lapin::Error),
}

/// One connection and its publishing channel. Replaced whole on reconnect: a confirm
/// pending on the old channel fails with it, so the job is answered 503, never 202.
struct Session {
    connection: Arc<Connection>,
    channel: Channel,
}

pub struct Publisher {
    url: String,
    topology: Topology,
    /// Where shadow copies go, when this pod has a shadow sink.
    shadow: Option<Topology>,
    confirms: bool,
    current: Mutex<Option<Session>>,
}

impl Publisher {
    /// Connects (retrying while the broker starts), declares the queues and, with
    /// confirms, puts the channel in confirm mode.
    pub async fn connect(
        url: &str,
        topology: Topology,
        shadow: Option<Topology>,
        confirms: bool,
    ) -> Result<Arc<Publisher>> {
        let p = Arc::new(Publisher { url: url.to_string(), topology, shadow, confirms, current: Mutex::new(None) });
        let session = p
            .open(Some(STARTUP_ATTEMPTS), &CancellationToken::new())
            .await?
            .context("connecting to RabbitMQ was abandoned")?;
        p.replace(Some(session));
        Ok(p)
    }

    async fn open(&self, attempts: Option<u32>, stop: &CancellationToken) -> Result<Option<Session>> {
        let mut backoff = Backoff::default();
        loop {
            let Some(conn) =
                broker::connect(&self.url, "zerodrop-api", &mut backoff, attempts, stop).await.with_context(|| {
                    format!("connecting to RabbitMQ at {}", zerodrop_jobs::broker::redact_url(&self.url))
                })?
            else {
                return Ok(None);
            };
            match self.open_channel(&conn).await {
                Ok(channel) => return Ok(Some(Session { connection: Arc::new(conn), channel })),
                // The broker may accept connections before it is ready for channels.
                Err(e) if attempts.is_none() => {
                    tracing::warn!(error = format!("{e:#}"), "opening the publishing channel failed; retrying");
                    let _ = conn.close(200, "retrying".into()).await;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn open_channel(&self, conn: &Connection) -> Result<Channel> {
        let channel = conn.create_channel().await.context("opening an AMQP channel")?;
        self.topology.declare(&channel).await.context("declaring the job queues")?;
        if let Some(shadow) = &self.shadow {
            shadow.declare(&channel).await.context("declaring the shadow job queues")?;
        }
        if self.confirms {
            channel.confirm_select(ConfirmSelectOptions::default()).await.context("enabling publisher confirms")?;
        }
        Ok(channel)
    }

    fn replace(&self, session: Option<Session>) -> Option<Session> {
        std::mem::replace(&mut *self.current.lock().unwrap_or_else(PoisonError::into_inner), session)
    }

    fn channel(&self) -> Option<Channel> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|s| s.channel.clone())
    }

    fn connection(&self) -> Option<Arc<Connection>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|s| s.connection.clone())
    }

    /// Watches the connection and replaces it when it is lost, until `stop`.
    pub fn supervise(self: &Arc<Self>, lc: Lifecycle, stop: CancellationToken) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let Some(conn) = me.connection() else { return };
                let reason = tokio::select! {
                    _ = stop.cancelled() => return,
                    reason = broker::lost(&conn) => reason,
                };
                lc.set_dependencies_up(false, &format!("broker connection lost: {reason}"));
                me.replace(None);
                match me.open(None, &stop).await {
                    Ok(Some(session)) => {
                        me.replace(Some(session));
                        lc.set_dependencies_up(true, "broker reconnected");
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "giving up reconnecting to the broker");
                        return;
                    }
                }
            }
        })
    }

    /// With confirms, returns only once the broker has taken responsibility for the
    /// message; without, as soon as it is handed to the client library. The span's
    /// context travels in the message headers, so the worker continues this trace.
    ///
    /// `to` picks the queue: the work queue, or the shadow sink for a shadow copy.
    #[tracing::instrument(name = "publish", skip_all, fields(job_id = %job.id, queue = %self.queue(to).unwrap_or("-"), otel.kind = "producer"))]
    pub async fn publish(&self, job: &Job, to: Sink) -> Result<(), PublishError> {
        let queue = self.queue(to).ok_or(PublishError::NoShadowSink)?;
        let channel = self.channel().ok_or(PublishError::Disconnected)?;
        let mut headers = FieldTable::default();
        zerodrop_jobs::trace::inject_current(&mut headers);
        let props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        // Stamped in milliseconds for the worker's time-in-queue histogram.
        let props = zerodrop_jobs::stamp::restamp(props, headers, SystemTime::now());
        let pending = channel
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &job.to_payload(), props)
            .await?;
        if !self.confirms {
            return Ok(());
        }
        match tokio::time::timeout(CONFIRM_TIMEOUT, pending).await {
            Err(_) => Err(PublishError::ConfirmTimeout),
            Ok(confirm) => match confirm? {
                Confirmation::Nack(_) => Err(PublishError::Nacked),
                // A 202 promises the broker's confirm; a channel that lost confirm mode
                // cannot give one, so the job is refused rather than risked.
                Confirmation::NotRequested => Err(PublishError::Unconfirmed),
                Confirmation::Ack(_) => Ok(()),
            },
        }
    }

    /// The queue `to` names here, if this pod has it.
    pub fn queue(&self, to: Sink) -> Option<&str> {
        match to {
            Sink::Work => Some(self.topology.queue.as_str()),
            Sink::Shadow => self.shadow.as_ref().map(|t| t.queue.as_str()),
        }
    }

    /// Waits for outstanding confirms: the publisher's disposal step.
    pub async fn settle(&self) {
        let Some(channel) = self.channel() else { return };
        if self.confirms {
            if let Err(e) = channel.wait_for_confirms().await {
                tracing::warn!(error = %e, "waiting for publisher confirms failed");
            }
        }
    }

    pub async fn close_channel(&self) {
        if let Some(channel) = self.channel() {
            let _ = channel.close(200, "api shutting down".into()).await;
        }
    }

    pub async fn close_connection(&self) {
        if let Some(session) = self.replace(None) {
            let _ = session.connection.close(200, "api shutting down".into()).await;
        }
    }
}
