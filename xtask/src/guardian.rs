//! The platform-independent half of the guardian exercise: the long request's client
//! and the clean-up of the queues the exercise's api declared.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zerodrop_jobs::Topology;

/// What the client of the long request saw, as a class key.
pub async fn long_request(addr: SocketAddr, ms: u64) -> String {
    let Ok(mut s) = TcpStream::connect(addr).await else { return "refused".into() };
    let req = format!("GET /work?ms={ms} HTTP/1.1\r\nHost: api\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return "reset".into();
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(ms + 5000), s.read_to_end(&mut buf)).await;
    match read {
        Err(_) => "timeout".into(),
        Ok(Err(_)) => "reset".into(),
        Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 2") => "ok".into(),
        Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 ") && buf.len() >= 12 => {
            format!("http_{}", String::from_utf8_lossy(&buf[9..12]))
        }
        Ok(Ok(_)) => "reset".into(),
    }
}

/// The exercise's api declared its queues; they are ours to remove.
pub async fn delete_queues(amqp_url: &str, topology: &Topology) {
    if let Ok(conn) = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await {
        if let Ok(ch) = conn.create_channel().await {
            let _ = topology.delete(&ch).await;
        }
        let _ = conn.close(200, "done".into()).await;
    }
}
