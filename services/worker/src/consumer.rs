//! One job at a time from the consumer stream, and the consumer's part of the drain.

use crate::metrics::Metrics;
use crate::retry::{self, Next};
use crate::session::BrokerLink;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions};
use lapin::Consumer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use zerodrop_jobs::{Job, JobError};
use zerodrop_ledger::{Applied, Ledger, LedgerError};
use zerodrop_lifecycle::Lifecycle;

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
        // The job's trace continues from the publisher's context in the headers.
        let span = tracing::info_span!("consume", otel.kind = "consumer", queue = %self.link.topology.queue, job_id = tracing::field::Empty);
        zerodrop_jobs::trace::continue_from(&span, d.properties.headers().as_ref());
        self.process(d).instrument(span).await
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

/// Pulls deliveries one at a time until told to stop (after the job in progress),
/// replacing the broker session whenever the consumer is lost: readiness fails until
/// it is back. Returns the live consumer so the drain can empty its buffer (`None`
/// when stopped while reconnecting).
pub async fn consume(
    worker: Arc<Worker>,
    mut consumer: Consumer,
    stop: CancellationToken,
    lc: Lifecycle,
) -> Option<Consumer> {
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => return Some(consumer),
            next = consumer.next() => next,
        };
        let reason = match next {
            Some(Ok(delivery)) => {
                worker.handle(delivery).await;
                continue;
            }
            Some(Err(e)) => format!("consumer failed: {e}"),
            None => "consumer cancelled by the broker".to_string(),
        };
        if stop.is_cancelled() {
            return Some(consumer);
        }
        lc.set_dependencies_up(false, &reason);
        tracing::warn!(step = "consumer_lost", reason = %reason, "consumer lost; reconnecting");
        // Unacked deliveries of the old channel return to the queue when it closes.
        drop(consumer);
        worker.link.discard().await;
        consumer = match worker.link.open(None, &stop).await {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "reconnecting the consumer failed");
                return None;
            }
        };
        lc.set_dependencies_up(true, "consumer restarted");
        tracing::info!(step = "consumer_restarted", "consuming again on a new session");
    }
}

/// The consumer's handle for the drain and the teardown.
#[derive(Clone)]
pub struct ConsumerControl {
    pub link: Arc<BrokerLink>,
    pub stop: CancellationToken,
    cancelled: Arc<AtomicBool>,
}

impl ConsumerControl {
    pub fn new(link: Arc<BrokerLink>) -> Self {
        ConsumerControl { link, stop: CancellationToken::new(), cancelled: Arc::new(AtomicBool::new(false)) }
    }

    /// Stops taking new jobs and sends `basic.cancel` on the current session, once.
    /// Returns whether this call did it and the broker confirmed.
    pub async fn cancel(&self) -> bool {
        self.stop.cancel();
        if self.cancelled.swap(true, Ordering::SeqCst) {
            return false;
        }
        let (Some(channel), Some(tag)) = (self.link.channel(), self.link.consumer_tag()) else { return false };
        match channel.basic_cancel(tag.clone(), BasicCancelOptions::default()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(consumer_tag = %tag, error = %e, "basic.cancel failed");
                false
            }
        }
    }
}

/// Stop the drain's own work this long before the budget ends, so the abandonment is
/// logged and the teardown starts before the lifecycle's timeout or the guardian.
const DRAIN_MARGIN: Duration = Duration::from_millis(100);

/// The graceful drain of the consumer, within `budget`. Order matters: `basic.cancel`
/// first (the broker stops sending; the channel, and with it every delivery tag, stays
/// alive), then the job in progress finishes, then what was already delivered but not
/// started is handed back (manual ack) or processed (auto-ack: it is acked already, so
/// handing it back is impossible).
///
/// Whatever is still running when the budget ends is abandoned: its transaction rolls
/// back; with manual ack the broker redelivers it once the channel closes, with
/// auto-ack it is lost. Either way the teardown then runs in order.
pub async fn drain(
    worker: Arc<Worker>,
    control: ConsumerControl,
    mut running: JoinHandle<Option<Consumer>>,
    budget: Duration,
) {
    let deadline = Instant::now() + budget.saturating_sub(DRAIN_MARGIN);
    if tokio::time::timeout_at(deadline, control.cancel()).await == Ok(true) {
        let tag = control.link.consumer_tag().map(|t| t.to_string()).unwrap_or_default();
        tracing::info!(step = "consumer_cancelled", consumer_tag = %tag, "consumer cancelled; the broker sends no more deliveries");
    }
    let mut consumer = match tokio::time::timeout_at(deadline, &mut running).await {
        Ok(Ok(Some(c))) => c,
        Ok(Ok(None)) => {
            tracing::info!(step = "inflight_finished", "no consumer at shutdown (the broker was being reconnected)");
            return;
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the consumer task failed");
            return;
        }
        Err(_) => {
            // Dropping the job's future rolls its transaction back.
            running.abort();
            let _ = running.await;
            worker.abandoned(true, None);
            return;
        }
    };

    let mut settled = 0u64;
    if worker.manual_ack {
        // Everything already delivered, then the end of the stream (the cancel-ok).
        // Deliveries not nacked in time are requeued by the channel close anyway.
        while let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, consumer.next()).await {
            settled += 1;
            worker.metrics.requeued.inc();
            if let Err(e) = d.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await {
                tracing::warn!(delivery_tag = d.delivery_tag, error = %e, "requeue failed; the broker will redeliver when the channel closes");
            }
        }
        tracing::info!(step = "requeued", count = settled, "buffered deliveries handed back to the broker");
        tracing::info!(step = "inflight_finished", "in-flight work finished");
        return;
    }

    loop {
        let d = match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(_)) | None) => break,
            Err(_) => return worker.abandoned(false, Some(count_buffered(&mut consumer).await)),
        };
        if tokio::time::timeout_at(deadline, worker.handle(d)).await.is_err() {
            return worker.abandoned(true, Some(count_buffered(&mut consumer).await));
        }
        settled += 1;
    }
    tracing::info!(
        step = "inflight_finished",
        processed_after_cancel = settled,
        "in-flight work finished (auto-ack: buffered jobs processed)"
    );
}

/// Deliveries left in an already-cancelled consumer's buffer.
async fn count_buffered(consumer: &mut Consumer) -> u64 {
    let mut n = 0;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await {
        n += 1;
    }
    n
}

impl Worker {
    /// Logs what the drain budget cut off. `buffered` is `None` when unknown.
    fn abandoned(&self, job_in_progress: bool, buffered: Option<u64>) {
        if self.manual_ack {
            tracing::warn!(
                step = "inflight_abandoned",
                job_in_progress,
                "drain budget reached: the job in progress was rolled back; unacked deliveries return to the queue when the channel closes"
            );
        } else {
            let lost = u64::from(job_in_progress) + buffered.unwrap_or(0);
            self.metrics.abandoned.inc_by(lost);
            tracing::warn!(
                step = "inflight_abandoned",
                job_in_progress,
                buffered_lost = buffered,
                "drain budget reached with auto-ack: the job in progress and the buffered ones are lost"
            );
        }
    }
}
