//! A bound on a stalled request body (`ZD_BODY_READ_TIMEOUT_MS`, default 5000 ms, as
//! the header-read timeout). That timeout stops once a head is complete, so without
//! this a `POST /jobs` whose body stopped arriving held its connection until the
//! request timeout answered 503, 65 s later.
//!
//! tower-http's `RequestBodyTimeoutLayer` times each wait for the next piece of the
//! body, not the whole body: a slow client that keeps sending is not cut (the request
//! timeout still bounds its total), one that stops is. The handler reading the body
//! then gets an error and answers 408, the client's fault, unlike the request
//! timeout's 503 (see `timeout.rs`), with a reason and `Connection: close`: the rest of
//! the body may still be on its way, so the connection cannot carry another request.

use crate::error::ApiError;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use std::error::Error;
use std::time::Duration;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutError};

/// Wraps every request body; only routes that read a body can trip it.
pub fn layer(limit: Duration) -> RequestBodyTimeoutLayer {
    RequestBodyTimeoutLayer::new(limit)
}

/// Whether reading the body failed because it stalled. The timeout's error arrives
/// boxed inside axum's rejection, so it is looked for along the source chain.
pub fn stalled(rejection: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn Error + 'static)> = Some(rejection);
    while let Some(e) = cause {
        if e.is::<TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The answer to a stalled body.
pub fn answer(limit: Duration, what: &str) -> ApiError {
    let ms = limit.as_millis() as u64;
    tracing::info!(limit_ms = ms, request = what, "request body stalled; answering 408");
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!("the request body stopped arriving: nothing for {ms} ms; send the whole body without pausing"),
    )
    .closing()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, Bytes};
    use axum::extract::FromRequest;
    use axum::http::Request;
    use axum::response::IntoResponse;
    use tower_http::timeout::TimeoutBody;

    const LIMIT: Duration = Duration::from_millis(50);

    /// What `submit_job` sees of `body` behind the layer.
    async fn read(body: Body) -> Result<Bytes, BytesRejection> {
        let body = Body::new(TimeoutBody::new(LIMIT, body));
        Bytes::from_request(Request::new(body), &()).await
    }

    #[tokio::test]
    async fn only_a_stalled_body_is_answered_408() {
        let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let e = read(Body::from_stream(rx)).await.unwrap_err();
        drop(tx);
        assert!(stalled(&e), "{e:?}");
        let res = answer(LIMIT, "POST /jobs").into_response();
        assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(res.headers()["connection"], "close");

        let broken = futures::stream::iter([Err::<Bytes, _>(std::io::Error::other("reset"))]);
        let e = read(Body::from_stream(broken)).await.unwrap_err();
        assert!(!stalled(&e), "a broken body is not a stalled one: {e:?}");

        assert_eq!(&read(Body::from("{}")).await.unwrap()[..], b"{}");
    }
}
