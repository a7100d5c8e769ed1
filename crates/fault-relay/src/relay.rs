//! The relay itself. Each direction of each connection is a reader that stamps every
//! chunk with when it may go on (read time + the delay in force) and a writer that
//! holds it until then, so a delay adds latency without capping throughput; a cut
//! holds everything until it is cleared.

use crate::NetFault;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("binding the fault relay on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

pub struct FaultRelay {
    listen: SocketAddr,
    fault: watch::Sender<Option<NetFault>>,
    stop: CancellationToken,
}

impl FaultRelay {
    /// Listens on 127.0.0.1 (a free port) and relays every connection to `upstream`:
    /// the local platform's relay, reachable from the lab's pods only.
    pub async fn start(upstream: (String, u16)) -> Result<FaultRelay, RelayError> {
        FaultRelay::start_on("127.0.0.1:0", upstream).await
    }

    /// Listens on `listen` (`0.0.0.0:5672` in a relay pod) and relays every connection
    /// to `upstream`, resolved anew for each connection (a restarted broker's Service
    /// keeps its name, not necessarily its pod).
    pub async fn start_on(listen: &str, upstream: (String, u16)) -> Result<FaultRelay, RelayError> {
        let bind_err = |source| RelayError::Bind { addr: listen.to_string(), source };
        let listener = TcpListener::bind(listen).await.map_err(bind_err)?;
        let listen = listener.local_addr().map_err(bind_err)?;
        let (fault, _) = watch::channel(None);
        let stop = CancellationToken::new();
        tracing::info!(step = "fault_relay", %listen, upstream = %format!("{}:{}", upstream.0, upstream.1), "fault relay listening");
        tokio::spawn(accept_loop(listener, upstream, fault.clone(), stop.clone()));
        Ok(FaultRelay { listen, fault, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// The fault in force now.
    pub fn get(&self) -> Option<NetFault> {
        *self.fault.borrow()
    }

    /// Sets (or with `None` clears) the fault for the open connections and new ones.
    pub fn set(&self, f: Option<NetFault>) {
        self.fault.send_replace(f);
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        // Ends the accept loop and every open connection's pumps.
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: (String, u16),
    fault: watch::Sender<Option<NetFault>>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((inside, _)) = accepted else { continue };
        let (upstream, rx, stop) = (upstream.clone(), fault.subscribe(), stop.clone());
        tokio::spawn(async move {
            match TcpStream::connect((upstream.0.as_str(), upstream.1)).await {
                Ok(outside) => relay(inside, outside, rx, stop).await,
                Err(e) => tracing::warn!(error = %e, "fault relay: connecting upstream failed"),
            }
        });
    }
}

async fn relay(a: TcpStream, b: TcpStream, fault: watch::Receiver<Option<NetFault>>, stop: CancellationToken) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = pump(ar, bw, fault.clone()) => {}
        _ = pump(br, aw, fault) => {}
    }
}

/// One direction until either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Option<NetFault>>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader_fault = fault.clone();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let delay = match *reader_fault.borrow() {
                        Some(NetFault::Delay { each_way }) => each_way,
                        _ => Duration::ZERO,
                    };
                    // The parser caps delays, but a caller of `set` could pass any;
                    // an unrepresentable deadline holds the chunk as long as it can.
                    let now = Instant::now();
                    let due = now.checked_add(delay).unwrap_or(now + crate::MAX_DELAY);
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            // A cut holds the chunk until the fault changes to something else.
            if fault.wait_for(|f| !matches!(f, Some(NetFault::Cut))).await.is_err() {
                return;
            }
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(c: &mut TcpStream, b: u8) -> Duration {
        let mut got = [0u8; 1];
        let t = std::time::Instant::now();
        c.write_all(&[b]).await.unwrap();
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(got[0], b);
        t.elapsed()
    }

    /// An echo server behind the relay: a delay adds to each round trip, a cut holds
    /// the bytes until it is cleared, and nothing is lost or reordered.
    #[tokio::test]
    async fn delay_and_cut_hold_bytes_and_lose_none() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let relay = FaultRelay::start(("127.0.0.1".into(), port)).await.unwrap();
        let mut c = TcpStream::connect(relay.addr()).await.unwrap();
        assert!(round_trip(&mut c, 1).await < Duration::from_millis(100));
        relay.set(Some(NetFault::Delay { each_way: Duration::from_millis(150) }));
        assert_eq!(relay.get(), Some(NetFault::Delay { each_way: Duration::from_millis(150) }));
        let slow = round_trip(&mut c, 2).await;
        assert!(slow >= Duration::from_millis(300), "{slow:?}");
        relay.set(Some(NetFault::Cut));
        c.write_all(&[3, 4]).await.unwrap();
        let mut got = [0u8; 2];
        assert!(tokio::time::timeout(Duration::from_millis(200), c.read_exact(&mut got)).await.is_err());
        relay.set(None);
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [3, 4]);
    }

    #[tokio::test]
    async fn a_taken_address_is_a_bind_error_that_names_it() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let Err(e) = FaultRelay::start_on(&addr, ("127.0.0.1".into(), 1)).await else { panic!("bound twice") };
        assert!(e.to_string().contains(&addr), "{e}");
    }
}
