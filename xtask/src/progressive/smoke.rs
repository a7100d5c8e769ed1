//! Smoke tests against the green side before any user traffic reaches it: requests
//! through the routing tier pinned with `X-Canary: always`.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `n` pinned requests one after another; returns how many did not answer 200.
pub async fn run(router: SocketAddr, n: u32) -> u32 {
    let mut failed = 0;
    for _ in 0..n {
        if !one(router).await {
            failed += 1;
        }
    }
    failed
}

async fn one(router: SocketAddr) -> bool {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(router).await?;
        s.write_all(b"GET /work?ms=5 HTTP/1.1\r\nHost: zerodrop\r\nX-Canary: always\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(Duration::from_secs(5), work).await {
        Ok(Ok(buf)) => buf.starts_with(b"HTTP/1.1 200"),
        _ => false,
    }
}
