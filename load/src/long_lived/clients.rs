//! The clients of the long-lived run, all through the Service address: SSE streams
//! that resume with Last-Event-ID wherever the Service sends them, and long-operation
//! clients on keep-alive connections that honour 503 + Retry-After. Everything they
//! see is counted; nothing is retried silently.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamTally {
    pub events: u64,
    /// Event ids skipped between two received events (lost events).
    pub gaps: u64,
    /// Events received twice or out of order.
    pub duplicates: u64,
    /// Streams ended by the server with `event: reconnect`.
    pub told_to_reconnect: u64,
    /// Streams that ended without being told (a cut).
    pub cut: u64,
    /// Streams reopened with Last-Event-ID, and of those on another pod.
    pub resumes: u64,
    pub resumed_on_another_pod: u64,
    /// Opens answered with anything but 200, or connects that failed (retried).
    pub open_failures: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpTally {
    pub completed: u64,
    pub refused_503: u64,
    /// Retry-After of each refusal, in seconds.
    pub retry_after_s: Vec<u64>,
    pub refused_without_retry_after: u64,
    /// Refusals whose retry, sent after Retry-After, was admitted and completed.
    pub retry_admitted: u64,
    pub retry_refused_again: u64,
    /// Operations that ended without a response (a cut).
    pub cut: u64,
    pub other_errors: u64,
    /// In flight when the run ended (after every old pod had exited): not counted.
    pub abandoned_at_end: u64,
}

type Conn = SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Option<Conn> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await.ok()?.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(sender)
}

fn get(path: &str, method: &str, addr: SocketAddr, last: Option<u64>) -> Option<hyper::Request<Empty<Bytes>>> {
    let mut b = hyper::Request::builder().method(method).uri(path).header(hyper::header::HOST, addr.to_string());
    if let Some(l) = last {
        b = b.header("last-event-id", l.to_string());
    }
    b.body(Empty::new()).ok()
}

pub async fn stream_client(addr: SocketAddr, tally: Arc<Mutex<StreamTally>>, stop: CancellationToken) {
    let (mut last, mut prev_pod): (Option<u64>, Option<String>) = (None, None);
    let add = |f: &dyn Fn(&mut StreamTally)| {
        if let Ok(mut t) = tally.lock() {
            f(&mut t)
        }
    };
    while !stop.is_cancelled() {
        let Some(mut c) = connect(addr).await else {
            add(&|t| t.open_failures += 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(req) = get("/stream", "GET", addr, last) else { return };
        let res = match c.send_request(req).await {
            Ok(r) if r.status() == 200 => r,
            _ => {
                add(&|t| t.open_failures += 1);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let pod = res.headers().get("x-zd-pod").and_then(|v| v.to_str().ok()).map(str::to_string);
        if last.is_some() {
            let elsewhere = pod.is_some() && pod != prev_pod;
            add(&|t| {
                t.resumes += 1;
                t.resumed_on_another_pod += u64::from(elsewhere);
            });
        }
        prev_pod = pod;
        let mut body = res.into_body();
        let mut buf = String::new();
        let told = loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return,
                f = body.frame() => f,
            };
            let Some(Ok(frame)) = frame else { break false };
            let Ok(data) = frame.into_data() else { continue };
            buf.push_str(&String::from_utf8_lossy(&data));
            let mut told = false;
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                if event.lines().any(|l| l == "event: reconnect") {
                    told = true;
                    break;
                }
                let Some(id) = event.lines().find_map(|l| l.strip_prefix("id: ")?.parse::<u64>().ok()) else {
                    continue;
                };
                add(&|t| {
                    t.events += 1;
                    match last {
                        Some(l) if id == l + 1 => {}
                        Some(l) if id > l + 1 => t.gaps += id - l - 1,
                        Some(_) => t.duplicates += 1,
                        None => {}
                    }
                });
                last = Some(last.map_or(id, |l| l.max(id)));
            }
            if told {
                break true;
            }
        };
        if told {
            add(&|t| t.told_to_reconnect += 1);
            tokio::time::sleep(Duration::from_millis(50)).await;
        } else if !stop.is_cancelled() {
            add(&|t| t.cut += 1);
        }
    }
}

/// Starts operations until `no_new`; one in flight then runs to its end unless `stop`
/// comes first (it is then counted as abandoned, not cut).
pub async fn op_client(
    addr: SocketAddr,
    lengths: Vec<Duration>,
    tally: Arc<Mutex<OpTally>>,
    no_new: CancellationToken,
    stop: CancellationToken,
) {
    let add = |f: &dyn Fn(&mut OpTally)| {
        if let Ok(mut t) = tally.lock() {
            f(&mut t)
        }
    };
    let (mut conn, mut k, mut retrying): (Option<Conn>, usize, bool) = (None, 0, false);
    while !no_new.is_cancelled() {
        let Some(c) = conn.as_mut() else {
            conn = connect(addr).await;
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        // No lengths, no operations: the client has nothing to ask for.
        let Some(&len) = lengths.get(k % lengths.len().max(1)) else { return };
        let Some(req) = get(&format!("/long-op?ms={}", len.as_millis()), "POST", addr, None) else { return };
        if c.ready().await.is_err() {
            conn = None;
            continue;
        }
        let sent = async {
            let res = c.send_request(req).await?;
            let status = res.status().as_u16();
            let ra = res.headers().get(hyper::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            res.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, ra))
        };
        let outcome = tokio::select! {
            _ = stop.cancelled() => {
                add(&|t| t.abandoned_at_end += 1);
                return;
            }
            o = sent => o,
        };
        match outcome {
            Ok((200, _)) => {
                add(&|t| {
                    t.completed += 1;
                    t.retry_admitted += u64::from(retrying);
                });
                retrying = false;
                k += 1;
            }
            Ok((503, ra)) => {
                let again = retrying;
                add(&|t| {
                    t.refused_503 += 1;
                    t.retry_refused_again += u64::from(again);
                    match ra {
                        Some(s) => t.retry_after_s.push(s),
                        None => t.refused_without_retry_after += 1,
                    }
                });
                retrying = true;
                conn = None;
                tokio::time::sleep(Duration::from_secs(ra.unwrap_or(1))).await;
            }
            Ok(_) => {
                add(&|t| t.other_errors += 1);
                k += 1;
            }
            Err(_) => {
                add(&|t| t.cut += 1);
                conn = None;
            }
        }
        if conn.as_ref().is_some_and(|c| c.is_closed()) {
            conn = None;
        }
    }
}
