//! The broker as a fallible dependency: connecting with capped exponential backoff and
//! full jitter, and noticing when an established connection is gone. Both services
//! reconnect through here, so a broker restart costs each of them a short outage
//! instead of a restart of the process.

use futures::StreamExt;
use lapin::{Connection, ConnectionProperties, Event};
use rand::Rng;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Delays between connection attempts: doubling from `first` up to `max`, each one
/// drawn uniformly from its upper half so a fleet that lost the broker together does
/// not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(3))
    }
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max, next: first }
    }

    /// The next delay, jittered.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let ms = ceiling.as_millis().max(2) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// One connection attempt may take this long (a black-holed broker).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Refused(#[from] lapin::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Connects, retrying with `backoff` until it succeeds, `attempts` are used up
/// (`None`: forever) or `stop` is cancelled (then `Ok(None)`).
pub async fn connect(
    url: &str,
    name: &str,
    backoff: &mut Backoff,
    attempts: Option<u32>,
    stop: &CancellationToken,
) -> Result<Option<Connection>, ConnectError> {
    let mut tried = 0u32;
    loop {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let attempt = tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            r = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, props)) => r,
        };
        tried += 1;
        let err = match attempt {
            Ok(Ok(conn)) => {
                backoff.reset();
                return Ok(Some(conn));
            }
            Ok(Err(e)) => ConnectError::Refused(e),
            Err(_) => ConnectError::Timeout(CONNECT_TIMEOUT),
        };
        if attempts.is_some_and(|n| tried >= n) {
            return Err(err);
        }
        let delay = backoff.next_delay();
        tracing::debug!(error = %err, attempt = tried, retry_in_ms = delay.as_millis() as u64, "broker connection attempt failed");
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Resolves once `conn` is no longer usable: an error event, or its status left
/// "connected" (a close we did not see as an event). The status poll is the backstop.
pub async fn lost(conn: &Connection) -> String {
    let mut events = Box::pin(conn.events_listener());
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Event::Error(e)) => return e.to_string(),
                Some(_) => {}
                None => return "connection event stream ended".to_string(),
            },
            _ = poll.tick() => {
                if !conn.status().connected() {
                    return "connection no longer connected".to_string();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let ceilings = [100u64, 200, 400, 800, 800, 800];
        for c in ceilings {
            let d = b.next_delay().as_millis() as u64;
            assert!((c / 2..=c).contains(&d), "delay {d} outside [{}, {c}]", c / 2);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

/// `scheme://user:password@host...` with the password replaced by `***`, for errors
/// and logs (broker and database URLs alike).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_string() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("amqp://guest:guest@h:5672/%2f"), "amqp://guest:***@h:5672/%2f");
        assert_eq!(redact_url("postgres://postgres@h/db"), "postgres://postgres@h/db");
        assert_eq!(redact_url("nonsense"), "nonsense");
    }
}
