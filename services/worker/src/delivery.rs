//! What happens to one delivery: applied to the ledger and acked, parked when it can
//! never succeed, retried or lost when the database fails.

use crate::metrics::Metrics;
use crate::retry::{self, Next};
use crate::session::BrokerLink;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicPublishOptions, BasicRejectOptions};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::Instrument;
use zerodrop_jobs::{Job, JobError};
use zerodrop_ledger::{Applied, Ledger, LedgerError};

/// What processing a delivery needs.
pub struct Worker {
    pub ledger: Ledger,
    pub link: Arc<BrokerLink>,
    pub metrics: Arc<Metrics>,
    /// Manual acks (after the commit) rather than `no_ack`.
    pub manual_ack: bool,
    pub idempotent: bool,
    pub pod: String,
    pub dead_letter_queue: String,
    pub job_work: Duration,
    pub post_commit: Duration,
    /// Tries of a job failing for a transient reason before it is parked.
    pub max_deliveries: u32,
}

impl Worker {
    /// Processes one delivery to its end. Never panics; every failure is logged and
    /// settled (acked, rejected, requeued, or, with auto-ack, lost and counted).
    pub async fn handle(&self, d: Delivery) {
        let taken = Instant::now();
        if let Some(waited) = zerodrop_jobs::stamp::queue_wait(&d.properties, SystemTime::now()) {
            self.metrics.waited(waited);
        }
        // The job's trace continues from the publisher's context in the headers.
        let span = tracing::info_span!("consume", otel.kind = "consumer", queue = %self.link.topology.queue, job_id = tracing::field::Empty);
        zerodrop_jobs::trace::continue_from(&span, d.properties.headers().as_ref());
        self.process(d).instrument(span).await;
        // Not reached when the drain budget drops this future: a job cut off was
        // never settled, and is counted as abandoned instead.
        self.metrics.processed(taken.elapsed());
    }

    async fn process(&self, d: Delivery) {
        let _in_flight = self.metrics.in_flight();
        let job = match Job::from_payload(&d.data) {
            Ok(job) => job,
            Err(e) => return self.dead_letter(d, e).await,
        };
        tracing::Span::current().record("job_id", job.id.as_str());
        tracing::debug!(job_id = %job.id, redelivered = d.redelivered, delivery_tag = d.delivery_tag, "applying job");
        let tx = tracing::info_span!("ledger.transaction", idempotent = self.idempotent);
        match self.ledger.apply(&job, &self.pod, self.idempotent, self.job_work).instrument(tx).await {
            Ok(Applied::Applied) => {
                self.metrics.applied.inc();
                tracing::debug!(job_id = %job.id, "job applied");
            }
            Ok(Applied::AlreadyApplied) => {
                self.metrics.already_applied.inc();
                tracing::debug!(job_id = %job.id, redelivered = d.redelivered, "job already applied; acknowledging the duplicate");
            }
            Err(e) => return self.database_failed(d, &job, e).await,
        }
        if !self.post_commit.is_zero() {
            tokio::time::sleep(self.post_commit).await;
        }
        if self.manual_ack {
            // `Ok(false)`: the channel died since the delivery, so the broker has
            // requeued it already; its tag means nothing on any other channel.
            match d.acker.ack(BasicAckOptions::default()).instrument(tracing::info_span!("ack")).await {
                Ok(true) => tracing::debug!(job_id = %job.id, "job acked"),
                Ok(false) => {
                    tracing::warn!(job_id = %job.id, "channel lost before the ack; the broker redelivers this job")
                }
                Err(e) => {
                    tracing::warn!(job_id = %job.id, error = %e, "ack failed after commit; the broker will redeliver this job")
                }
            }
        }
    }

    /// A payload that can never succeed: park it in the dead-letter queue, once.
    async fn dead_letter(&self, d: Delivery, reason: JobError) {
        self.metrics.dead_lettered.inc();
        let outcome = if self.manual_ack {
            // The queue's dead-letter exchange routes the rejected message to the DLQ.
            d.acker.reject(BasicRejectOptions { requeue: false }).await.map(|_| ()).map_err(|e| e.to_string())
        } else {
            // Already acked by the broker: the only copy is ours, so publish it there.
            match self.link.channel() {
                None => Err("no broker channel".to_string()),
                Some(ch) => match ch
                    .basic_publish(
                        "".into(),
                        self.dead_letter_queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &d.data,
                        d.properties.clone(),
                    )
                    .await
                {
                    Ok(confirm) => confirm.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
            }
        };
        match outcome {
            Ok(()) => tracing::warn!(
                delivery_tag = d.delivery_tag,
                redelivered = d.redelivered,
                bytes = d.data.len(),
                reason = %reason,
                dead_letter_queue = %self.dead_letter_queue,
                "poison message dead-lettered"
            ),
            Err(e) => tracing::error!(
                delivery_tag = d.delivery_tag,
                bytes = d.data.len(),
                reason = %reason,
                error = %e,
                "poison message could not be dead-lettered"
            ),
        }
    }

    /// A transient failure: with manual ack the job is retried a bounded number of
    /// times, then parked (see `retry`); with auto-ack it is gone, which is exactly
    /// what auto-ack costs.
    async fn database_failed(&self, d: Delivery, job: &Job, e: LedgerError) {
        if !self.manual_ack {
            self.metrics.failed.inc();
            tracing::error!(job_id = %job.id, error = %e, "database error with auto-ack: the job is lost");
            return;
        }
        let attempt = retry::attempts_so_far(&d.properties) + 1;
        let reason = format!("database error: {e}");
        let (queue, parking) = match retry::decide(attempt, self.max_deliveries) {
            Next::Retry => {
                let pause = retry::pause_before(attempt);
                tracing::warn!(job_id = %job.id, attempt, max = self.max_deliveries, error = %e, retry_in_ms = pause.as_millis() as u64, "database error; the job will be retried");
                tokio::time::sleep(pause).await;
                (self.link.topology.queue.clone(), None)
            }
            Next::Park => (self.dead_letter_queue.clone(), Some(reason.as_str())),
        };
        let copied = match self.link.channel() {
            None => Err("no broker channel".to_string()),
            Some(ch) => retry::publish_copy(&ch, &queue, &d.data, &d.properties, attempt, parking).await,
        };
        if let Err(err) = copied {
            tracing::warn!(job_id = %job.id, attempt, error = %err, "could not re-publish the job; handing the original back");
            self.metrics.requeued.inc();
            return retry::requeue_original(&d.acker).await;
        }
        if parking.is_some() {
            self.metrics.dead_lettered.inc();
            tracing::error!(job_id = %job.id, attempts = attempt, reason = %reason, dead_letter_queue = %self.dead_letter_queue, "job parked in the dead-letter queue after its last attempt");
        } else {
            self.metrics.requeued.inc();
        }
        if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
            // The copy is in the queue already; the original comes back too, and the
            // idempotent ledger absorbs the second application.
            tracing::warn!(job_id = %job.id, error = %e, "ack of the retried original failed");
        }
    }
}
