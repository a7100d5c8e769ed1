//! The header-read timeout: a request head that has started to arrive (or a new
//! connection's first one) must be complete within the limit, else the connection is
//! dropped, so a client sending half a request line cannot hold a connection forever.
//!
//! Not hyper's `header_read_timeout`: hyper runs that timer whenever it waits for a
//! head, idle keep-alive included, so it would also close every keep-alive connection
//! that is idle for longer than the limit, racing its client's next request. Here the
//! clock starts at accept and again at the first byte after a response, and stops
//! when a head is complete; an idle keep-alive connection is left alone.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// `started` is milliseconds since `origin` plus one; 0 means no head is in progress.
pub(crate) struct HeadClock {
    origin: Instant,
    started: AtomicU64,
    busy: AtomicBool,
    pub(crate) changed: Notify,
}

impl HeadClock {
    /// A new connection: its first head is due from now.
    pub(crate) fn at_accept() -> Arc<Self> {
        Arc::new(HeadClock {
            origin: Instant::now(),
            started: AtomicU64::new(1),
            busy: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    fn on_bytes(&self) {
        if self.busy.load(Ordering::SeqCst) || self.started.load(Ordering::SeqCst) != 0 {
            return;
        }
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        if self.started.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.changed.notify_one();
        }
    }

    /// hyper handed a complete head to the service: bytes from now on are its body.
    pub(crate) fn head_complete(&self) {
        self.busy.store(true, Ordering::SeqCst);
        self.started.store(0, Ordering::SeqCst);
    }

    /// The response is out: the next bytes start the next head.
    pub(crate) fn response_done(&self) {
        self.busy.store(false, Ordering::SeqCst);
    }

    /// When the head in progress runs out of time, if one is in progress.
    pub(crate) fn deadline(&self, timeout: Duration) -> Option<Instant> {
        match self.started.load(Ordering::SeqCst) {
            0 => None,
            s => Some(self.origin + Duration::from_millis(s - 1) + timeout),
        }
    }
}

/// The connection's stream, telling the clock when bytes arrive.
pub(crate) struct Timed<S> {
    inner: S,
    clock: Arc<HeadClock>,
}

impl<S> Timed<S> {
    pub(crate) fn new(inner: S, clock: Arc<HeadClock>) -> Self {
        Timed { inner, clock }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.on_bytes();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_runs_from_accept_stops_at_a_head_and_restarts_at_the_next_byte() {
        let t = Duration::from_secs(5);
        let c = HeadClock::at_accept();
        let first = c.deadline(t).unwrap();
        assert_eq!(first.duration_since(c.origin), t);
        c.head_complete();
        assert_eq!(c.deadline(t), None);
        c.on_bytes(); // the body of the request in progress
        assert_eq!(c.deadline(t), None);
        c.response_done();
        tokio::time::advance(Duration::from_secs(60)).await; // idle keep-alive
        assert_eq!(c.deadline(t), None);
        c.on_bytes();
        let next = c.deadline(t).unwrap();
        assert!(next >= c.origin + Duration::from_secs(65), "{next:?}");
    }
}
