//! The kubelet's HTTP readiness probe: a fresh connection, `GET /readyz`, 2xx or 3xx
//! within the timeout means success.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn http_ok(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, attempt(addr, path)).await.unwrap_or(false)
}

async fn attempt(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else { return false };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kubelet-probe\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => n += k,
        }
    }
    // "HTTP/1.1 200"
    matches!(buf[9], b'2' | b'3')
}
