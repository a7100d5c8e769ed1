//! The listener's protections and edges against real sockets: a half-sent request
//! line is closed within the header-read timeout, an idle keep-alive connection is
//! not, connections beyond the limit wait until a slot frees, a client that
//! half-closes after a complete request still gets its answer, and the heads hyper
//! refuses by itself get the documented status (and, hyper's limit, no body).

use axum::routing::get;
use axum::Router;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zerodrop_lifecycle::http::{Server, MAX_HEAD_BYTES};
use zerodrop_lifecycle::Lifecycle;
use zerodrop_stages::AppBehaviour;

const HEAD_TIMEOUT: Duration = Duration::from_millis(400);

async fn server(max_connections: u32) -> (Server, std::net::SocketAddr) {
    let b = AppBehaviour { header_read_timeout: HEAD_TIMEOUT, max_connections, ..AppBehaviour::naive() };
    let lc = Lifecycle::new(b);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            "slow ok"
        }),
    );
    (Server::start(listener, router, &lc), addr)
}

/// Reads until EOF or `limit`; returns what came and whether the peer closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

async fn get_ok(s: &mut TcpStream) {
    s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("a response").unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn a_half_sent_request_line_is_closed_within_the_header_read_timeout() {
    let (_server, addr) = server(16).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    s.write_all(b"GET /wo").await.unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    let took = t0.elapsed();
    assert!(closed, "still open after 10 s");
    assert!(got.is_empty(), "no response is owed to half a request line: {got:?}");
    assert!(took >= HEAD_TIMEOUT - Duration::from_millis(20), "closed too early: {took:?}");
    assert!(took < HEAD_TIMEOUT + Duration::from_millis(500), "closed {took:?} after the first byte");
}

#[tokio::test]
async fn a_head_started_after_an_idle_keep_alive_gap_is_timed_from_its_first_byte() {
    let (_server, addr) = server(16).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    get_ok(&mut s).await;
    // Idle keep-alive well past the timeout: not a slow head, so left open.
    let (_, closed) = read_until_closed(&mut s, HEAD_TIMEOUT * 3).await;
    assert!(!closed, "an idle keep-alive connection was closed by the header-read timeout");
    get_ok(&mut s).await;
    let t0 = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(closed, "a slow second head was never closed");
    assert!(t0.elapsed() < HEAD_TIMEOUT + Duration::from_millis(500), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let (_server, addr) = server(2).await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    get_ok(&mut a).await;
    get_ok(&mut b).await;
    // The third is queued by the kernel, not served.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await.is_err(),
        "a third connection was served with a limit of 2"
    );
    drop(a);
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(b);
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let (_server, addr) = server(16).await;
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
        // shutdown(SHUT_WR), as `nc -N` does: the request is complete, nothing follows.
        s.shutdown().await.unwrap();
        let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
        assert!(got.ends_with("slow ok"), "{got:?}");
        assert!(closed, "the connection stayed open after answering a half-closed client");
    }
}

/// Sends `head` (ignoring a reset once the server has refused it) and reads the answer.
async fn answer_to(addr: std::net::SocketAddr, head: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(head).await;
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "not closed after {got:?}");
    got
}

fn head_of(len: usize) -> Vec<u8> {
    let start = b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\nx-pad: ";
    let mut head = start.to_vec();
    head.resize(len - 4, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    head
}

#[tokio::test]
async fn heads_hyper_refuses_get_their_status_and_an_empty_body() {
    let (_server, addr) = server(16).await;
    let near = answer_to(addr, &head_of(MAX_HEAD_BYTES - 1024)).await;
    assert!(near.starts_with("HTTP/1.1 200") && near.ends_with("ok"), "{near:?}");

    let over = answer_to(addr, &head_of(MAX_HEAD_BYTES + 1024)).await;
    assert!(over.starts_with("HTTP/1.1 431"), "{over:?}");
    // The documented limit: hyper writes these itself, with no body.
    assert!(over.to_ascii_lowercase().contains("content-length: 0"), "{over:?}");

    for bad in [&b"GET / HTTP/1.1\r\nhost: t\r\nno colon here\r\n\r\n"[..], b"GET /\x7f HTTP/1.1\r\n\r\n"] {
        let got = answer_to(addr, bad).await;
        assert!(got.starts_with("HTTP/1.1 400"), "{:?} -> {got:?}", String::from_utf8_lossy(bad));
        assert!(got.to_ascii_lowercase().contains("content-length: 0"), "{got:?}");
    }
}
