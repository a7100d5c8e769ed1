//! A client that opens a new connection for every request (`Connection: close`), at a
//! fixed rate, beside the keep-alive load. Without it a terminating pod would see
//! new connections only when the keep-alive pool reconnects, and the pod-side
//! measurement (last accept after termination began) would have no resolution.

use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How one fresh-connection request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Refused,
    Reset,
    Http5xx,
    Other,
}

#[derive(Debug, Default)]
pub struct FreshLog {
    /// (unix ms at the start, outcome)
    pub results: Mutex<Vec<(i64, Outcome)>>,
}

impl FreshLog {
    /// Counts of requests started in [from_ms, to_ms) (unix ms).
    pub fn counts(&self, from_ms: i64, to_ms: i64) -> FreshCounts {
        let mut c = FreshCounts::default();
        let r = self.results.lock().map(|r| r.clone()).unwrap_or_default();
        for (_, o) in r.iter().filter(|(t, _)| *t >= from_ms && *t < to_ms) {
            c.total += 1;
            match o {
                Outcome::Ok => {}
                Outcome::Refused => c.refused += 1,
                Outcome::Reset => c.reset += 1,
                Outcome::Http5xx => c.http5xx += 1,
                Outcome::Other => c.other += 1,
            }
        }
        c
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FreshCounts {
    pub total: u64,
    pub refused: u64,
    pub reset: u64,
    pub http5xx: u64,
    pub other: u64,
}

impl FreshCounts {
    pub fn failed(&self) -> u64 {
        self.refused + self.reset + self.http5xx + self.other
    }
}

/// Sends `GET /work?ms=1` on a new connection to `addr` every `1/rate` s until
/// `stop`; at most 64 at once (a request that would exceed it is skipped, so a
/// hung Service cannot pile up sockets).
pub fn start(addr: SocketAddr, rate_per_sec: u32, stop: CancellationToken) -> Arc<FreshLog> {
    let log = Arc::new(FreshLog::default());
    let l = log.clone();
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(64));
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate_per_sec.max(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
            let l = l.clone();
            tokio::spawn(async move {
                let at = zerodrop_platform::now_ms();
                let o = tokio::time::timeout(Duration::from_secs(5), once(addr)).await.unwrap_or(Outcome::Other);
                if let Ok(mut r) = l.results.lock() {
                    r.push((at, o));
                }
                drop(permit);
            });
        }
    });
    log
}

async fn once(addr: SocketAddr) -> Outcome {
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return classify(&e),
    };
    let req = format!("GET /work?ms=1 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return classify(&e);
    }
    let mut buf = Vec::with_capacity(256);
    if let Err(e) = s.read_to_end(&mut buf).await {
        return classify(&e);
    }
    status_outcome(&buf)
}

fn classify(e: &std::io::Error) -> Outcome {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => Outcome::Reset,
        _ => Outcome::Other,
    }
}

/// "HTTP/1.1 200 OK ..." → the outcome of its status code.
fn status_outcome(resp: &[u8]) -> Outcome {
    match resp.get(9) {
        Some(b'2') => Outcome::Ok,
        Some(b'5') => Outcome::Http5xx,
        None if resp.is_empty() => Outcome::Reset,
        _ => Outcome::Other,
    }
}

/// `http://host[:port]` → its socket address (port 80 by default).
pub fn addr_of(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("http://")?.trim_end_matches('/');
    let with_port = if rest.contains(':') { rest.to_string() } else { format!("{rest}:80") };
    with_port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_statuses_and_urls() {
        assert_eq!(status_outcome(b"HTTP/1.1 200 OK\r\n\r\n"), Outcome::Ok);
        assert_eq!(status_outcome(b"HTTP/1.1 503 Service Unavailable\r\n"), Outcome::Http5xx);
        assert_eq!(status_outcome(b""), Outcome::Reset, "closed before any byte");
        assert_eq!(addr_of("http://127.96.0.1"), Some("127.96.0.1:80".parse().unwrap()));
        assert_eq!(addr_of("http://127.0.0.1:8080/"), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(addr_of("https://x"), None);
    }

    /// Against a real listener, then against the same port closed: ok, then refused.
    #[tokio::test]
    async fn counts_ok_and_refused_against_a_real_socket() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..3 {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await.unwrap();
            }
        });
        for _ in 0..3 {
            assert_eq!(once(addr).await, Outcome::Ok);
        }
        server.await.unwrap();
        assert_eq!(once(addr).await, Outcome::Refused, "nothing listens any more");
        let log = FreshLog::default();
        log.results.lock().unwrap().extend([(10, Outcome::Ok), (20, Outcome::Refused), (30, Outcome::Refused)]);
        let c = log.counts(15, 31);
        assert_eq!((c.total, c.refused, c.failed()), (2, 2, 2));
    }
}
