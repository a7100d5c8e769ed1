//! The smallest HTTP/1.1 server: 200 "ok" to anything. It lets the generator be
//! measured on its own, with a server that costs as little as possible.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::ErrorKind;
use tokio::net::TcpListener;

/// Serves until accepting fails for a reason other than a client that gave up.
/// Each connection runs in its own task.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset) => continue,
            Err(e) => return Err(e),
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            // A client going away mid-connection is not the server's problem.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
