//! Bounded redelivery. A job whose processing failed for a transient reason (the
//! database) goes back to the work queue as a copy carrying its attempt count in the
//! `x-zd-attempts` header, after a growing pause; at the limit it is parked in the
//! dead-letter queue with the reason in `x-zd-reason`. The original is acked only after
//! the broker confirmed the copy, so a job is never lost silently and never loops
//! forever. Only with manual ack: with auto-ack the failed job is already gone, which
//! is exactly what that stage costs.

use lapin::options::{BasicNackOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use std::time::Duration;

pub const ATTEMPTS_HEADER: &str = "x-zd-attempts";
pub const REASON_HEADER: &str = "x-zd-reason";

/// Attempts already made on this message, from its header (0 on a first delivery).
pub fn attempts_so_far(props: &BasicProperties) -> u32 {
    let Some(headers) = props.headers() else { return 0 };
    match headers.inner().get(ATTEMPTS_HEADER) {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongUInt(n)) => *n,
        _ => 0,
    }
}

/// The pause before retry number `attempt` (1-based): doubling from 250 ms, at most
/// 4 s, so with the default limit a job outlasts a database restart of about 20 s.
pub fn pause_before(attempt: u32) -> Duration {
    let ms = 250u64.saturating_mul(1 << attempt.saturating_sub(1).min(4));
    Duration::from_millis(ms.min(4_000))
}

/// What to do with a job that failed on its `attempt`-th try.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Retry,
    Park,
}

pub fn decide(attempt: u32, max_deliveries: u32) -> Next {
    if attempt >= max_deliveries.max(1) {
        Next::Park
    } else {
        Next::Retry
    }
}

/// Publishes `data` to `queue` with the attempt count (and the reason, when parking),
/// stamped as published now, and waits for the broker's confirm.
pub async fn publish_copy(
    channel: &Channel,
    queue: &str,
    data: &[u8],
    props: &BasicProperties,
    attempt: u32,
    reason: Option<&str>,
) -> Result<(), String> {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(ShortString::from(ATTEMPTS_HEADER), AMQPValue::LongLongInt(i64::from(attempt)));
    if let Some(reason) = reason {
        headers.insert(ShortString::from(REASON_HEADER), AMQPValue::LongString(reason.into()));
    }
    // The copy's time in queue starts now, not at the original's publish.
    let props =
        zerodrop_jobs::stamp::restamp(props.clone(), headers, std::time::SystemTime::now()).with_delivery_mode(2);
    let confirm = channel
        .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), data, props)
        .await
        .map_err(|e| e.to_string())?;
    match confirm.await.map_err(|e| e.to_string())? {
        Confirmation::Nack(_) => Err("the broker nacked the copy".into()),
        _ => Ok(()),
    }
}

/// When the copy could not be published the original goes back as it is (its count
/// not advanced): the broker is failing too, and the channel usually dies with it.
pub async fn requeue_original(acker: &lapin::Acker) {
    if let Err(e) = acker.nack(BasicNackOptions { requeue: true, multiple: false }).await {
        tracing::warn!(error = %e, "nack failed; the broker will redeliver when the channel closes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldTable;

    #[test]
    fn attempts_are_read_from_the_header() {
        assert_eq!(attempts_so_far(&BasicProperties::default()), 0);
        let mut h = FieldTable::default();
        h.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongLongInt(3));
        assert_eq!(attempts_so_far(&BasicProperties::default().with_headers(h)), 3);
    }

    #[test]
    fn retries_until_the_limit_then_parks() {
        assert_eq!(decide(1, 3), Next::Retry);
        assert_eq!(decide(2, 3), Next::Retry);
        assert_eq!(decide(3, 3), Next::Park);
        assert_eq!(decide(1, 0), Next::Park);
    }

    #[test]
    fn pauses_grow_and_are_capped() {
        assert_eq!(pause_before(1), Duration::from_millis(250));
        assert_eq!(pause_before(2), Duration::from_millis(500));
        assert_eq!(pause_before(5), Duration::from_millis(4_000));
        assert_eq!(pause_before(40), Duration::from_millis(4_000));
    }
}
