//! The HTTP server both apps use, built on hyper's per-connection API rather than
//! `axum::serve`, because draining needs control over each keep-alive connection:
//! when it is told to close, and whether it closes idle (racing the client's next
//! request) or by answering `Connection: close`.
//!
//! What hyper answers by itself, before a request reaches the router, carries a
//! status and no body: 400 for a malformed request line or header (bad bytes, a
//! conflicting `Content-Length`), 431 for a head above [`MAX_HEAD_BYTES`] (a long URI
//! included) or with more than 100 header fields. hyper 1.x writes these from its
//! parser with no hook to give them a body, and only a hand-written HTTP layer could;
//! so this is a documented limit, not a bug to paper over. Each such connection is
//! closed after the answer, and its reason logged at debug level.

use crate::head_timeout::{HeadClock, Timed};
use crate::Lifecycle;
// The counters have a module of their own (the lifecycle's state owns them); this stays
// their public path.
pub use crate::conn_stats::ConnStats;
use axum::Router;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rand::Rng;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use zerodrop_stages::KeepAliveClose;

/// The largest request head (request line and headers) served; a larger one is
/// answered 431 by hyper. Set explicitly rather than left to hyper's read-buffer
/// ceiling (about 400 KiB) so the limit is a number we state, and so a connection's
/// head buffer stays small even with every connection slot taken.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Put into every request's extensions: how many requests this connection served
/// before it, so a handler can charge the first one on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRequest {
    pub index: u64,
}

/// What a new connection costs before it is served (`AppBehaviour.conn_setup`): at
/// most `slots` are set up at once, and while every slot is busy the accept loop
/// waits, so new connections queue in the kernel's bounded accept queue.
#[derive(Clone)]
struct ConnSetup {
    cost: Duration,
    slots: Arc<Semaphore>,
}

#[derive(Debug, Clone, Copy)]
struct DrainOrder {
    mode: KeepAliveClose,
    /// Jittered: each connection picks its close time in [0, spread).
    spread: Duration,
    /// Jittered: connections that stayed idle past this are closed anyway.
    force_after: Duration,
}

pub struct Server {
    stop_accepting: CancellationToken,
    drain: watch::Sender<Option<DrainOrder>>,
    stats: Arc<ConnStats>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts accepting on `listener`, serving `router`. Connections are counted in
    /// the lifecycle's [`ConnStats`].
    pub fn start(listener: TcpListener, router: Router, lc: &Lifecycle) -> Server {
        let stop_accepting = CancellationToken::new();
        let (drain, _) = watch::channel(None);
        let stats = lc.conn_stats().clone();
        let b = lc.behaviour();
        let setup = (!b.conn_setup.is_zero()).then(|| ConnSetup {
            cost: b.conn_setup,
            slots: Arc::new(Semaphore::new(usize::from(b.conn_setup_concurrency.max(1)))),
        });
        let limits = Limits {
            header_read_timeout: b.header_read_timeout,
            slots: Arc::new(Semaphore::new(b.max_connections.max(1) as usize)),
        };
        let accept = tokio::spawn(accept_loop(
            listener,
            router,
            stop_accepting.clone(),
            drain.clone(),
            stats.clone(),
            limits,
            setup,
        ));
        Server { stop_accepting, drain, stats, accept: Some(accept) }
    }

    /// Closes the listening socket: from now on new connections are refused by the
    /// kernel. Established connections keep being served.
    pub async fn stop_accepting(&mut self) {
        self.stop_accepting.cancel();
        if let Some(h) = self.accept.take() {
            let _ = h.await;
        }
    }

    /// Tells every connection to let go of keep-alive, at once or spread over the
    /// first half of `budget`.
    pub fn start_drain(&self, mode: KeepAliveClose, budget: Duration) {
        let order = DrainOrder { mode, spread: budget / 2, force_after: budget * 3 / 4 };
        self.drain.send_replace(Some(order));
    }

    /// Resolves when no connection is open.
    pub async fn wait_closed(&self) {
        loop {
            let notified = self.stats.all_closed.notified();
            if self.stats.open() == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn stats(&self) -> &Arc<ConnStats> {
        &self.stats
    }
}

/// Per-listener protection: the header-read timeout, and a bound on connections
/// served at once (beyond it, new ones wait in the kernel's accept backlog).
#[derive(Clone)]
struct Limits {
    header_read_timeout: Duration,
    slots: Arc<Semaphore>,
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    drain: watch::Sender<Option<DrainOrder>>,
    stats: Arc<ConnStats>,
    limits: Limits,
    setup: Option<ConnSetup>,
) {
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            s = limits.slots.clone().acquire_owned() => s,
        };
        let Ok(slot) = slot else { break };
        let permit = match &setup {
            Some(s) => tokio::select! {
                _ = stop.cancelled() => break,
                p = s.slots.clone().acquire_owned() => p.ok(),
            },
            None => None,
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            router: router.clone(),
            drain: drain.subscribe(),
            stats: stats.clone(),
            head_timeout: limits.header_read_timeout,
            _slot: slot,
        };
        let cost = setup.as_ref().map(|s| s.cost);
        tokio::spawn(async move {
            set_up(cost, permit).await;
            conn.serve(stream).await
        });
    }
    // Dropping the listener here closes the socket.
    drop(listener);
}

/// Pays a connection's set-up cost holding its slot; the accept loop takes the next
/// connection only once a slot is free.
async fn set_up(cost: Option<Duration>, permit: Option<OwnedSemaphorePermit>) {
    if let Some(cost) = cost {
        tokio::time::sleep(cost).await;
    }
    drop(permit);
}

/// The per-connection HTTP/1 settings.
fn builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.keep_alive(true)
        // A client may send a whole request and then shut down its write side (as
        // `nc -N` and some proxies do) while it waits for the answer. Without this,
        // hyper reads that EOF while the handler runs, takes it for a client that is
        // gone and drops the request unanswered. The price: a client that really is
        // gone (TCP cannot tell the two apart) no longer cancels its handler, which
        // runs to its end; the api bounds that (its request timeout, a long
        // operation's own length, a stream's next write failing).
        .half_close(true)
        .max_header_size(MAX_HEAD_BYTES);
    b
}

/// Why a connection ended with an error. hyper has already answered a malformed
/// head (400/431, see the module docs); this is the only place its reason is kept.
fn log_ended(e: &hyper::Error) {
    let kind = if e.is_parse_too_large() {
        "head_too_large"
    } else if e.is_parse() {
        "malformed_head"
    } else if e.is_incomplete_message() {
        "incomplete_message"
    } else {
        "other"
    };
    tracing::debug!(kind, error = %e, "connection ended with an error");
}

struct Connection {
    router: Router,
    drain: watch::Receiver<Option<DrainOrder>>,
    stats: Arc<ConnStats>,
    head_timeout: Duration,
    /// Returned to the listener's limit when the connection ends.
    _slot: OwnedSemaphorePermit,
}

/// Marks the response as out (or the request abandoned) when dropped.
struct ResponseDone(Arc<HeadClock>);

impl Drop for ResponseDone {
    fn drop(&mut self) {
        self.0.response_done();
    }
}

/// Counts something for as long as it lives, so a panicking handler or a future
/// dropped by hyper (client gone mid-request) cannot leave a counter stuck.
struct Counted<'a> {
    counter: &'a AtomicUsize,
    on_zero: Option<&'a Notify>,
}

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize, on_zero: Option<&'a Notify>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Counted { counter, on_zero }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if self.counter.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(n) = self.on_zero {
                n.notify_waiters();
            }
        }
    }
}

impl Connection {
    async fn serve(mut self, stream: tokio::net::TcpStream) {
        let stats = self.stats.clone();
        let _open = Counted::new(&stats.open, Some(&stats.all_closed));
        let close_next = Arc::new(AtomicBool::new(false));
        let (accepted_at, traffic_seen) = (Instant::now(), Arc::new(AtomicBool::new(false)));
        let served = Arc::new(AtomicU64::new(0));
        let clock = HeadClock::at_accept();
        let svc = {
            let close_next = close_next.clone();
            let stats = self.stats.clone();
            let router = self.router.clone();
            let clock = clock.clone();
            service_fn(move |mut req: Request<Incoming>| {
                let router = router.clone();
                let close_next = close_next.clone();
                let stats = stats.clone();
                if !crate::accepts::is_probe(req.uri().path()) && !traffic_seen.swap(true, Ordering::SeqCst) {
                    stats.accepts.record(accepted_at.into_std());
                }
                req.extensions_mut().insert(ConnRequest { index: served.fetch_add(1, Ordering::Relaxed) });
                let clock = clock.clone();
                clock.head_complete();
                async move {
                    let _done = ResponseDone(clock);
                    let in_flight = Counted::new(&stats.in_flight, None);
                    let mut res = match router.oneshot(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                    drop(in_flight);
                    if close_next.load(Ordering::SeqCst) {
                        // The client learns from this response not to reuse the
                        // connection: no race with its next request.
                        res.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(res)
                }
            })
        };
        let io = TokioIo::new(Timed::new(stream, clock.clone()));
        let conn = builder().serve_connection(io, svc);
        tokio::pin!(conn);

        let far = || Instant::now() + Duration::from_secs(86_400);
        let mut mark_at = far();
        let mut force_at = far();
        let mut draining = self.drain.borrow().is_some();
        if draining {
            // Accepted just before the listener closed: drain it like the others.
            self.schedule(&mut mark_at, &mut force_at, &mut conn);
        }
        loop {
            let head_due = clock.deadline(self.head_timeout).unwrap_or_else(far);
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        log_ended(&e);
                    }
                    break;
                }
                // A head started (or finished): recompute when it is due.
                _ = clock.changed.notified() => {}
                _ = tokio::time::sleep_until(head_due) => {
                    if clock.deadline(self.head_timeout).is_some_and(|d| d <= Instant::now()) {
                        tracing::debug!(timeout_ms = self.head_timeout.as_millis() as u64, "request head not complete in time; closing the connection");
                        break;
                    }
                }
                changed = self.drain.changed(), if !draining => {
                    // The server is gone (the process is exiting): stop watching.
                    draining = true;
                    if changed.is_err() { continue; }
                    self.schedule(&mut mark_at, &mut force_at, &mut conn);
                }
                _ = tokio::time::sleep_until(mark_at) => {
                    close_next.store(true, Ordering::SeqCst);
                    mark_at = far();
                }
                _ = tokio::time::sleep_until(force_at) => {
                    conn.as_mut().graceful_shutdown();
                    force_at = far();
                }
            }
        }
    }

    fn schedule<S>(
        &self,
        mark_at: &mut Instant,
        force_at: &mut Instant,
        conn: &mut std::pin::Pin<&mut hyper::server::conn::http1::Connection<TokioIo<Timed<tokio::net::TcpStream>>, S>>,
    ) where
        S: hyper::service::HttpService<Incoming>,
        S::ResBody: 'static,
        <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(order) = *self.drain.borrow() else { return };
        match order.mode {
            // hyper closes an idle connection on the spot and a busy one after its
            // response; every client of this instance reconnects at the same moment.
            KeepAliveClose::AtOnce => conn.as_mut().graceful_shutdown(),
            KeepAliveClose::Jittered => {
                let spread_ms = order.spread.as_millis().max(1) as u64;
                let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..spread_ms));
                *mark_at = Instant::now() + jitter;
                // Connections that stay idle are closed later, still one at a time.
                *force_at = (*mark_at + order.spread / 2).min(Instant::now() + order.force_after);
            }
        }
    }
}
