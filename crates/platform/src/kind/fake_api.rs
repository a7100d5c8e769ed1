//! A fake Kubernetes API server for tests: a [`kube::Client`] whose requests are
//! answered by a function of the request line, with bodies in the API's exact shape,
//! delivered in timed chunks (a followed log or a watch is a body that keeps coming).

use bytes::Bytes;
use futures::StreamExt;
use http_body::Frame;
use http_body_util::StreamBody;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One answer: a status and body chunks, each sent after its delay.
pub struct Reply {
    pub status: u16,
    pub chunks: Vec<(Duration, String)>,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply { status: 200, chunks: vec![(Duration::ZERO, body.into())] }
    }

    /// A 200 whose body comes in pieces: `(delay before it, text)`.
    pub fn chunked(chunks: Vec<(Duration, String)>) -> Reply {
        Reply { status: 200, chunks }
    }

    pub fn not_found() -> Reply {
        Reply::status(404, serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "not found", "reason": "NotFound", "code": 404}).to_string())
    }

    fn status(status: u16, body: String) -> Reply {
        Reply { status, chunks: vec![(Duration::ZERO, body)] }
    }
}

type Body = StreamBody<futures::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// A client for namespace `zerodrop` whose every request (`"GET /api/v1/...?query"`)
/// goes to `answer`; the requests are recorded in the returned log.
pub fn client(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    client_with_body(move |req, _| answer(req))
}

/// [`client`] for answers that depend on the request's body (a create's object).
pub fn client_with_body(
    answer: impl Fn(&str, &str) -> Reply + Send + Sync + 'static,
) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    use http_body_util::BodyExt;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let answer = Arc::new(answer);
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let line = format!("{} {}", req.method(), req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
        log.lock().unwrap().push(line.clone());
        let answer = answer.clone();
        async move {
            let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let reply = answer(&line, &String::from_utf8_lossy(&bytes));
            let body: Body = StreamBody::new(
                futures::stream::iter(reply.chunks)
                    .then(|(delay, text)| async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Frame::data(Bytes::from(text)))
                    })
                    .boxed(),
            );
            Ok::<_, Infallible>(
                http::Response::builder()
                    .status(reply.status)
                    .header("content-type", "application/json")
                    .body(body)
                    .unwrap(),
            )
        }
    });
    (kube::Client::new(svc, "zerodrop"), seen)
}
