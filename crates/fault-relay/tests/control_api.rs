//! The control API the `zerodrop-fault-relay` binary serves, on loopback with a real
//! relay in front of a real TCP echo server: each request as the kind platform sends it
//! (HTTP/1.0, one per connection), each answer's exact status and body, and the fault
//! it set taking effect on bytes through the relay.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zerodrop_fault_relay::{control, FaultRelay};

struct Rig {
    control: std::net::SocketAddr,
    relay: std::net::SocketAddr,
}

async fn rig() -> Rig {
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
    let relay = Arc::new(FaultRelay::start(("127.0.0.1".into(), port)).await.unwrap());
    let relay_addr = relay.addr();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, control::router(relay)).await });
    Rig { control, relay: relay_addr }
}

/// One request, the whole answer as (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

async fn round_trip(c: &mut TcpStream, b: u8) -> Duration {
    let mut got = [0u8; 1];
    let t = Instant::now();
    c.write_all(&[b]).await.unwrap();
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got[0], b);
    t.elapsed()
}

#[tokio::test]
async fn a_fault_set_over_http_is_echoed_and_acts_on_the_relayed_bytes() {
    let rig = rig().await;
    assert_eq!(http(rig.control, "GET", "/healthz", "").await, (200, "ok\n".into()));
    assert_eq!(http(rig.control, "GET", "/fault", "").await, (200, "null".into()));
    let mut c = TcpStream::connect(rig.relay).await.unwrap();
    assert!(round_trip(&mut c, 1).await < Duration::from_millis(100));

    let set = http(rig.control, "PUT", "/fault", r#"{"kind":"delay","ms":150}"#).await;
    assert_eq!(set, (200, r#"{"kind":"delay","ms":150}"#.into()));
    let slow = round_trip(&mut c, 2).await;
    assert!(slow >= Duration::from_millis(300), "a 150 ms delay each way gave a {slow:?} round trip");
    assert_eq!(http(rig.control, "GET", "/fault", "").await, (200, r#"{"kind":"delay","ms":150}"#.into()));

    assert_eq!(http(rig.control, "PUT", "/fault", r#"{"kind":"cut"}"#).await, (200, r#"{"kind":"cut"}"#.into()));
    c.write_all(&[3, 4]).await.unwrap();
    let mut got = [0u8; 2];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut got)).await.is_err(),
        "a cut let bytes through"
    );

    assert_eq!(http(rig.control, "PUT", "/fault", "null").await, (200, "null".into()));
    tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, [3, 4], "what the cut held arrives after the heal, in order");
    assert!(round_trip(&mut c, 5).await < Duration::from_millis(100));
}

#[tokio::test]
async fn a_bad_body_is_refused_with_a_reason_and_leaves_the_fault_alone() {
    let rig = rig().await;
    assert_eq!(http(rig.control, "PUT", "/fault", r#"{"kind":"cut"}"#).await.0, 200);
    for (body, status) in [
        ("", 400),
        ("{\"kind\":", 400),
        ("delay please", 400),
        (r#"{"kind":"partition"}"#, 422),
        (r#"{"kind":"delay"}"#, 422),
        (r#"{"kind":"delay","ms":-5}"#, 422),
        (r#"{"kind":"delay","ms":3600000}"#, 422),
    ] {
        let (got, answer) = http(rig.control, "PUT", "/fault", body).await;
        assert_eq!(got, status, "{body:?}: {answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{body:?}: {answer}");
    }
    assert_eq!(http(rig.control, "GET", "/fault", "").await, (200, r#"{"kind":"cut"}"#.into()));
    assert_eq!(http(rig.control, "POST", "/fault", "null").await.0, 405);
}
