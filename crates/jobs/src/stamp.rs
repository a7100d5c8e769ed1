//! When a message was published, for the time-in-queue histogram. The api stamps each
//! job with `x-zd-published-ms` (milliseconds since the Unix epoch) as well as AMQP's
//! `timestamp` property, which
//! counts whole seconds and so cannot tell a 5 ms wait from a 900 ms one. A retry's
//! copy is stamped anew when the worker re-publishes it (its `retry.rs`), so its wait is its own.

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const PUBLISHED_MS_HEADER: &str = "x-zd-published-ms";

/// How long the message waited between its publish and `now`; `None` when it carries
/// no stamp (published by another client). A redelivery (requeued, or its channel
/// lost) still carries the stamp of its publish, so its wait includes earlier tries.
pub fn queue_wait(props: &BasicProperties, now: SystemTime) -> Option<Duration> {
    let published_ms = match props.headers().as_ref()?.inner().get(PUBLISHED_MS_HEADER)? {
        AMQPValue::LongLongInt(ms) => u64::try_from(*ms).ok()?,
        _ => return None,
    };
    let now_ms = now.duration_since(UNIX_EPOCH).ok()?.as_millis();
    // A publisher whose clock runs ahead of ours would give a negative wait: it is
    // counted as no wait at all rather than dropped, so the count stays one per job.
    let waited = now_ms.saturating_sub(u128::from(published_ms));
    Some(Duration::from_millis(u64::try_from(waited).unwrap_or(u64::MAX)))
}

/// `headers` with the publish stamp set to `now`, and the matching `timestamp`.
pub fn restamp(props: BasicProperties, mut headers: FieldTable, now: SystemTime) -> BasicProperties {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ms = i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX);
    headers.insert(ShortString::from(PUBLISHED_MS_HEADER), AMQPValue::LongLongInt(ms));
    props.with_headers(headers).with_timestamp(since_epoch.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn the_wait_is_read_from_the_stamp_in_milliseconds() {
        let stamped = restamp(BasicProperties::default(), FieldTable::default(), at(1_700_000_000_000));
        assert_eq!(stamped.timestamp(), &Some(1_700_000_000));
        assert_eq!(queue_wait(&stamped, at(1_700_000_000_042)), Some(Duration::from_millis(42)));
        // The publisher's clock ahead of ours: no wait, not a negative one.
        assert_eq!(queue_wait(&stamped, at(1_699_999_999_000)), Some(Duration::ZERO));
    }

    #[test]
    fn an_unstamped_or_oddly_stamped_message_has_no_wait() {
        assert_eq!(queue_wait(&BasicProperties::default(), at(5)), None);
        let mut h = FieldTable::default();
        h.insert(PUBLISHED_MS_HEADER.into(), AMQPValue::LongString("soon".into()));
        assert_eq!(queue_wait(&BasicProperties::default().with_headers(h.clone()), at(5)), None);
        h.insert(PUBLISHED_MS_HEADER.into(), AMQPValue::LongLongInt(-1));
        assert_eq!(queue_wait(&BasicProperties::default().with_headers(h), at(5)), None);
    }
}
