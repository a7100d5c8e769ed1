//! The consume loop (one delivery at a time, the session replaced when lost) and the
//! consumer's part of the drain; each delivery itself is handled in `delivery.rs`.

use crate::delivery::Worker;
use crate::session::BrokerLink;
use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicNackOptions};
use lapin::Consumer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zerodrop_lifecycle::Lifecycle;

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
