//! Each failure mode on real sockets must land in its own class.

mod common;

use common::{profile, run, run_with, status};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use zerodrop_load::{Class, Resolver};

fn classes(r: &zerodrop_load::RunResult) -> Vec<Class> {
    r.records.iter().map(|r| r.class).collect()
}

#[tokio::test]
async fn accept_then_rst_is_reset() {
    let addr = common::raw(|s| async move {
        s.set_zero_linger().unwrap();
        drop(s);
    })
    .await;
    let r = run(&profile(4), addr).await;
    assert_eq!(classes(&r), vec![Class::Reset; 4]);
    assert_eq!(r.connections_opened, 4, "the connect itself succeeded");
}

#[tokio::test]
async fn rst_after_reading_the_request_is_reset() {
    let addr = common::raw(|mut s| async move {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        s.set_zero_linger().unwrap();
    })
    .await;
    assert_eq!(classes(&run(&profile(3), addr).await), vec![Class::Reset; 3]);
}

#[tokio::test]
async fn close_without_answer_is_reset() {
    let addr = common::raw(|mut s| async move {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
    })
    .await;
    assert_eq!(classes(&run(&profile(3), addr).await), vec![Class::Reset; 3]);
}

#[tokio::test]
async fn closed_port_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let r = run(&profile(3), addr).await;
    assert_eq!(classes(&r), vec![Class::Refused; 3]);
    assert_eq!(r.connections_opened, 0);
}

#[tokio::test]
async fn silent_server_is_timeout() {
    let addr = common::raw(|mut s| async move {
        let mut buf = [0u8; 1024];
        // Read and hold the connection open without ever answering.
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    let p = zerodrop_load::Profile { request_timeout: Duration::from_millis(300), ..profile(2) };
    let r = run(&p, addr).await;
    assert_eq!(classes(&r), vec![Class::Timeout; 2]);
    assert!(r.records.iter().all(|x| x.latency_us >= 300_000));
}

#[tokio::test]
async fn statuses_map_to_their_classes() {
    // The server answers with the status the request asks for in `?ms=`.
    let addr = common::http(|req, _| {
        let code = req.uri().query().and_then(|q| q.strip_prefix("ms=")).and_then(|c| c.parse().ok());
        status(code.unwrap_or(599))
    })
    .await;
    let cases = [
        (200, Class::Ok),
        (503, Class::Http503),
        (502, Class::Http502),
        (500, Class::Http500),
        (504, Class::Http504),
        (404, Class::Http4xx),
        (501, Class::Other),
    ];
    for (code, class) in cases {
        let p = zerodrop_load::Profile { fast_ms: code, ..profile(2) };
        assert_eq!(classes(&run(&p, addr).await), vec![class; 2], "status {code}");
    }
}

struct Nowhere;
impl Resolver for Nowhere {
    fn pick(&self) -> Option<SocketAddr> {
        None
    }
}

#[tokio::test]
async fn no_endpoint_is_refused() {
    let r = run_with(&profile(3), Arc::new(Nowhere)).await;
    assert_eq!(classes(&r), vec![Class::Refused; 3]);
    assert_eq!(r.connections_opened, 0);
}
