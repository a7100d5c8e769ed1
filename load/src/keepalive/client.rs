//! One task per client: connect, resubscribe, send on schedule, and reconnect at once
//! when the connection closes.

use super::{KaConnect, KaRequest, KeepAliveProfile, KeepAliveResult, Trigger};
use crate::engine::classify;
use crate::{Class, Live};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{sleep_until, timeout_at, Instant};

const MAX_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<KaRequest>>,
    connects: Mutex<Vec<KaConnect>>,
    closes: Mutex<Vec<u64>>,
    open: AtomicU64,
    peak_open: AtomicU64,
}

struct Ctx {
    p: KeepAliveProfile,
    addr: SocketAddr,
    start: Instant,
    end: Instant,
    live: Arc<Live>,
    shared: Shared,
}

impl Ctx {
    fn us(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_micros() as u64
    }
}

pub(super) async fn run_all(p: &KeepAliveProfile, addr: SocketAddr, live: Arc<Live>) -> KeepAliveResult {
    let started_unix_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
    let start = Instant::now();
    let ctx = Arc::new(Ctx { p: p.clone(), addr, start, end: start + p.duration, live, shared: Shared::default() });
    let n = p.clients.max(1);
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(client(ctx.clone(), i))).collect();
    for t in tasks {
        let _ = t.await;
    }
    let mut requests: Vec<KaRequest> = take(&ctx.shared.requests);
    requests.sort_by_key(|r| r.at_us);
    let mut connects: Vec<KaConnect> = take(&ctx.shared.connects);
    connects.sort_by_key(|c| c.at_us);
    let mut closes_us: Vec<u64> = take(&ctx.shared.closes);
    closes_us.sort_unstable();
    KeepAliveResult {
        started_unix_ms,
        profile: p.clone(),
        requests,
        connects,
        closes_us,
        peak_open: ctx.shared.peak_open.load(Ordering::Relaxed),
    }
}

struct Open {
    sender: SendRequest<Empty<Bytes>>,
    closed: oneshot::Receiver<()>,
}

fn take<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    m.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
}

async fn client(ctx: Arc<Ctx>, i: u32) {
    let n = u64::from(ctx.p.clients.max(1));
    let frac = |d: Duration| Duration::from_nanos((d.as_nanos() as u64).saturating_mul(u64::from(i)) / n);
    let first_connect = ctx.start + frac(ctx.p.ramp);
    // Phases spread evenly over one period, after the ramp.
    let mut next = ctx.start + ctx.p.ramp + frac(ctx.p.period);
    sleep_until(first_connect).await;
    let mut conn: Option<Open> = None;
    let mut connected_before = false;
    let mut backoff = ctx.p.retry_backoff;
    while Instant::now() < ctx.end {
        let Some(open) = conn.as_mut() else {
            match connect(&ctx, i, connected_before).await {
                Some(mut open) => {
                    connected_before = true;
                    backoff = ctx.p.retry_backoff;
                    if request(&ctx, i, &mut open.sender, Instant::now(), Trigger::Reconnect).await {
                        conn = Some(open);
                    } else {
                        closed(&ctx);
                    }
                }
                None => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        tokio::select! {
            _ = &mut open.closed => {
                closed(&ctx);
                conn = None;
            }
            _ = sleep_until(next) => {
                let intended = next;
                next += ctx.p.period;
                if intended >= ctx.end {
                    break;
                }
                if !request(&ctx, i, &mut open.sender, intended, Trigger::Scheduled).await {
                    closed(&ctx);
                    conn = None;
                }
            }
        }
    }
    if conn.is_some() {
        ctx.shared.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn closed(ctx: &Ctx) {
    ctx.shared.open.fetch_sub(1, Ordering::Relaxed);
    if let Ok(mut c) = ctx.shared.closes.lock() {
        c.push(ctx.us(Instant::now()));
    }
}

async fn connect(ctx: &Ctx, i: u32, reconnect: bool) -> Option<Open> {
    let t0 = Instant::now();
    let deadline = t0 + ctx.p.connect_timeout;
    let result = async {
        let stream = match timeout_at(deadline, TcpStream::connect(ctx.addr)).await {
            Err(_) => return Err(Class::Timeout),
            Ok(Err(e)) => return Err(classify::connect(&e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|e| classify::established(&e))?;
        let (tx, closed) = oneshot::channel();
        tokio::spawn(async move {
            let _ = connection.await;
            let _ = tx.send(());
        });
        Ok(Open { sender, closed })
    }
    .await;
    let class = result.as_ref().err().copied().unwrap_or(Class::Ok);
    if let Ok(mut c) = ctx.shared.connects.lock() {
        c.push(KaConnect { client: i, at_us: ctx.us(t0), took_us: t0.elapsed().as_micros() as u64, class, reconnect });
    }
    if result.is_ok() {
        let open = ctx.shared.open.fetch_add(1, Ordering::Relaxed) + 1;
        ctx.shared.peak_open.fetch_max(open, Ordering::Relaxed);
    }
    result.ok()
}

/// Sends one request; false when the connection is no longer usable.
async fn request(ctx: &Ctx, i: u32, sender: &mut SendRequest<Empty<Bytes>>, intended: Instant, t: Trigger) -> bool {
    ctx.live.count_sent();
    let work = async {
        sender.ready().await.map_err(|e| classify::established(&e))?;
        let req = hyper::Request::get(format!("/work?ms={}", ctx.p.work_ms))
            .header(hyper::header::HOST, ctx.addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|_| Class::Other)?;
        let res = sender.send_request(req).await.map_err(|e| classify::established(&e))?;
        let pod = res.headers().get("x-zd-pod").and_then(|v| v.to_str().ok()).map(str::to_string);
        let class = classify::status(res.status());
        // The body must be read for the connection to be reused.
        res.into_body().collect().await.map_err(|e| classify::established(&e))?;
        Ok::<_, Class>((class, pod))
    };
    let (class, pod) = match timeout_at(intended + ctx.p.request_timeout, work).await {
        Ok(Ok((c, pod))) => (c, pod),
        Ok(Err(c)) => (c, None),
        Err(_) => (Class::Timeout, None),
    };
    ctx.live.count(class);
    let rec = KaRequest {
        client: i,
        at_us: ctx.us(intended),
        latency_us: Instant::now().saturating_duration_since(intended).as_micros() as u64,
        class,
        trigger: t,
        pod,
    };
    if let Ok(mut r) = ctx.shared.requests.lock() {
        r.push(rec);
    }
    matches!(class, Class::Ok | Class::Http4xx | Class::Http503 | Class::Http500 | Class::Http502 | Class::Http504)
        && !sender.is_closed()
}
