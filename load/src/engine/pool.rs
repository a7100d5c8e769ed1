//! HTTP/1.1 keep-alive connections, each pinned to the endpoint it was opened to.

use super::classify;
use crate::{Class, Resolver};
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) struct Conn {
    pub sender: SendRequest<Full<Bytes>>,
    /// `host` header: the endpoint this connection went to.
    pub host: HeaderValue,
}

/// A connection lent to one request. Holding it holds one of the pool's slots.
pub(crate) struct Lease {
    pub conn: Conn,
    _slot: OwnedSemaphorePermit,
}

pub(crate) struct Pool {
    resolver: Arc<dyn Resolver>,
    /// One permit per request that holds (or is opening) a connection. With HTTP/1.1
    /// that is at most one request per connection, so a permit holder finding no idle
    /// connection knows fewer than `max` are open and may open one.
    slots: Arc<Semaphore>,
    /// Oldest idle at the front.
    idle: Mutex<VecDeque<Conn>>,
    connect_timeout: Duration,
    opened: AtomicU64,
}

impl Pool {
    pub fn new(resolver: Arc<dyn Resolver>, max_connections: usize, connect_timeout: Duration) -> Self {
        Pool {
            resolver,
            slots: Arc::new(Semaphore::new(max_connections.clamp(1, Semaphore::MAX_PERMITS))),
            idle: Mutex::new(VecDeque::new()),
            connect_timeout,
            opened: AtomicU64::new(0),
        }
    }

    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Waits for a slot (the semaphore is FIFO), then reuses the oldest usable idle
    /// connection or opens a new one.
    pub async fn checkout(&self) -> Result<Lease, Class> {
        let slot = self.slots.clone().acquire_owned().await.map_err(|_| Class::Other)?;
        while let Some(mut conn) = self.pop_idle() {
            // A failure here means the connection closed while idle and nothing was
            // sent on it: trying the next one is what any client would do.
            if conn.sender.ready().await.is_ok() {
                return Ok(Lease { conn, _slot: slot });
            }
        }
        let conn = self.connect().await?;
        Ok(Lease { conn, _slot: slot })
    }

    /// Returns a connection that finished a response and may be reused. The slot is
    /// released after the connection is back, so the next waiter finds it idle.
    pub fn give_back(&self, lease: Lease) {
        if !lease.conn.sender.is_closed() {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push_back(lease.conn);
            }
        }
    }

    fn pop_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(conn) = idle.pop_front() {
            if !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, Class> {
        let addr = self.resolver.pick().ok_or(Class::Refused)?;
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(Class::Timeout),
            Ok(Err(e)) => return Err(classify::connect(&e)),
            Ok(Ok(s)) => s,
        };
        self.opened.fetch_add(1, Ordering::Relaxed);
        // Best effort: without it only latency suffers.
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|e| classify::established(&e))?;
        tokio::spawn(async move {
            // Its error reaches the request through `sender`; nothing to do here.
            let _ = connection.await;
        });
        // A peer that accepted and reset already shows up here, before any request.
        sender.ready().await.map_err(|e| classify::established(&e))?;
        let host = HeaderValue::from_str(&addr.to_string()).unwrap_or(HeaderValue::from_static("localhost"));
        Ok(Conn { sender, host })
    }
}
