//! Real servers on 127.0.0.1 for the engine tests.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use zerodrop_load::{FixedResolver, Live, Mix, Profile, Resolver, RunResult};

pub type Handler = dyn Fn(&Request<()>, &[u8]) -> Response<Full<Bytes>> + Send + Sync;

/// An HTTP/1.1 server answering every request with `handler(head, body)`.
pub async fn http(
    handler: impl Fn(&Request<()>, &[u8]) -> Response<Full<Bytes>> + Send + Sync + 'static,
) -> SocketAddr {
    let handler: Arc<Handler> = Arc::new(handler);
    raw(move |stream| {
        let handler = handler.clone();
        async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    Ok::<_, Infallible>(handler(&Request::from_parts(parts, ()), &body))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        }
    })
    .await
}

/// A server that hands every accepted socket to `on_accept`.
pub async fn raw<F, Fut>(on_accept: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(on_accept(stream));
        }
    });
    addr
}

pub fn status(code: u16) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(b"x")));
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
    r
}

/// `n` fast requests, 50 ms apart.
pub fn profile(n: u32) -> Profile {
    Profile {
        rate_per_sec: 20,
        duration: Duration::from_millis(50 * u64::from(n)),
        seed: 1,
        mix: Mix { fast: 1, slow: 0, job: 0 },
        fast_ms: 5,
        slow_ms: 250,
        max_connections: 4,
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        mark: None,
        clients: None,
        mirror: None,
    }
}

pub async fn run(profile: &Profile, addr: SocketAddr) -> RunResult {
    run_with(profile, Arc::new(FixedResolver(addr))).await
}

pub async fn run_with(profile: &Profile, resolver: Arc<dyn Resolver>) -> RunResult {
    zerodrop_load::run(profile, resolver, "t", Arc::new(Live::new())).await
}
