//! `GET /stream`: server-sent events that outlive any one pod. Event `n` is the
//! `n`-th tick of the wall clock (`TICK_MS` wide), so every pod can produce every
//! event: a client that resumes on another pod with `Last-Event-ID: n` gets `n+1`
//! onwards and loses nothing. When the pod drains, each stream picks a moment in the
//! first half of the drain budget, sends `event: reconnect` and ends: the clients
//! come back one by one through the Service, to the pods that remain.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use zerodrop_lifecycle::Phase;

/// One event per tick of this many milliseconds of wall-clock time.
pub const TICK_MS: u64 = 100;
/// How far back a resume may reach (10 minutes of events).
pub const MAX_REPLAY: u64 = 10 * 60 * 1000 / TICK_MS;
/// The client's reconnect delay, sent with the reconnect event.
const RETRY_MS: u64 = 50;

fn now_id() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0) / TICK_MS
}

/// The first event id to send, from `Last-Event-ID` (absent: from now on).
pub fn first_id(last: Option<&str>, now: u64) -> Result<u64, ApiError> {
    let Some(v) = last else { return Ok(now) };
    let last: u64 = v
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("Last-Event-ID must be an event id (an integer), got `{v}`")))?;
    if last > now + 1 {
        return Err(ApiError::bad_request(format!("Last-Event-ID {last} is in the future (now {now})")));
    }
    if now.saturating_sub(last) > MAX_REPLAY {
        return Err(ApiError::new(
            StatusCode::GONE,
            format!("Last-Event-ID {last} is older than the {MAX_REPLAY} events kept; start a new stream"),
        ));
    }
    Ok(last + 1)
}

pub async fn stream(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let last = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().map_err(|_| ApiError::bad_request("Last-Event-ID is not visible ASCII"))?),
        None => None,
    };
    let next = first_id(last, now_id())?;
    if s.lc.phase() >= Phase::Deregistering {
        return Err(ApiError::unavailable("instance is shutting down; reconnect to another", 1));
    }
    let state = Streamer { s, next, close_at: None, done: false };
    let body = Body::from_stream(futures::stream::unfold(state, Streamer::step));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        // One stream per connection: when it ends, so does the connection.
        .header(header::CONNECTION, "close")
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("building the stream: {e}")))
}

struct Streamer {
    s: Arc<AppState>,
    next: u64,
    close_at: Option<Instant>,
    done: bool,
}

impl Streamer {
    async fn step(mut self) -> Option<(Result<Bytes, std::io::Error>, Streamer)> {
        if self.done {
            return None;
        }
        loop {
            if self.s.lc.phase() >= Phase::Draining {
                let spread = (self.s.lc.behaviour().drain_budget / 2).as_millis().max(1) as u64;
                let at = *self.close_at.get_or_insert_with(|| {
                    Instant::now() + Duration::from_millis(rand::thread_rng().gen_range(0..spread))
                });
                if Instant::now() >= at {
                    self.done = true;
                    let bye = format!("event: reconnect\nretry: {RETRY_MS}\ndata: {}\n\n", self.next.saturating_sub(1));
                    return Some((Ok(Bytes::from(bye)), self));
                }
            }
            let now = now_id();
            if self.next <= now {
                let mut out = String::new();
                for id in self.next..=now {
                    out.push_str(&format!("id: {id}\nevent: tick\ndata: {id}\n\n"));
                }
                self.next = now + 1;
                return Some((Ok(Bytes::from(out)), self));
            }
            // Until the next tick; the phase is looked at again then.
            let wait = (self.next * TICK_MS).saturating_sub(now * TICK_MS).min(TICK_MS);
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_picks_the_next_event_and_bad_ones_say_why() {
        assert_eq!(first_id(None, 500).unwrap(), 500);
        assert_eq!(first_id(Some("497"), 500).unwrap(), 498);
        assert_eq!(first_id(Some("abc"), 500).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(first_id(Some("900"), 500).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(first_id(Some("1"), 500 + MAX_REPLAY).unwrap_err().status, StatusCode::GONE);
    }
}
