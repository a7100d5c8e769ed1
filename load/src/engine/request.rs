//! One request: build it, send it on a pooled connection, read the whole response.

use super::pool::Pool;
use super::{classify, schedule::Planned};
use crate::{Class, Kind};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};

pub(crate) struct Spec {
    pub fast_ms: u32,
    pub slow_ms: u32,
    /// The marker header of marked requests (a malformed one fails them as `Other`).
    pub mark: Option<crate::Mark>,
    pub clients: Option<crate::Clients>,
    /// The header a shadow copy carries.
    pub mirror: Option<crate::Mirror>,
}

use crate::gate::POD_HEADER;

/// What one request came to.
pub(crate) struct Answer {
    pub class: Class,
    /// A job answered 202.
    pub accepted: bool,
    /// The pod that answered, once a response head arrived.
    pub pod: Option<String>,
}

/// Has no timeout of its own: the caller bounds the whole of it. `copy` sends the
/// shadow's copy: the same request plus the mirror's header.
pub(crate) async fn execute(pool: &Pool, spec: &Spec, p: &Planned, job_id: Option<&str>, copy: bool) -> Answer {
    let mut pod = None;
    match attempt(pool, spec, p, job_id, copy, &mut pod).await {
        Ok(status) => Answer {
            class: classify::status(status),
            accepted: p.kind == Kind::Job && status == StatusCode::ACCEPTED,
            pod,
        },
        // A body cut after the head still names the pod that cut it.
        Err(class) => Answer { class, accepted: false, pod },
    }
}

async fn attempt(
    pool: &Pool,
    spec: &Spec,
    p: &Planned,
    job_id: Option<&str>,
    copy: bool,
    pod: &mut Option<String>,
) -> Result<StatusCode, Class> {
    let mut lease = pool.checkout().await?;
    let req = build(spec, p, job_id, copy, lease.conn.host.clone()).map_err(|_| Class::Other)?;
    let resp = lease.conn.sender.send_request(req).await.map_err(|e| classify::established(&e))?;
    let status = resp.status();
    *pod = resp.headers().get(POD_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let close = wants_close(resp.headers());
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        // The head arrived, so whatever broke the body broke the connection.
        frame.map_err(|_| Class::Reset)?;
    }
    if !close {
        pool.give_back(lease);
    }
    Ok(status)
}

fn build(
    spec: &Spec,
    p: &Planned,
    job_id: Option<&str>,
    copy: bool,
    host: hyper::header::HeaderValue,
) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    let mirror = spec.mirror.as_ref().filter(|_| copy);
    let host = if mirror.is_some() { shadow_host(&host) } else { host };
    let mut builder = Request::builder().header(HOST, host);
    if let Some(m) = mirror {
        builder = builder.header(m.header.as_str(), m.value.as_str());
    }
    if let Some(m) = spec.mark.as_ref().filter(|_| p.marked) {
        builder = builder.header(m.header.as_str(), m.value.as_str());
    }
    if let (Some(c), Some(id)) = (&spec.clients, p.client) {
        builder = builder.header(c.header.as_str(), crate::Clients::id(id));
    }
    match p.kind {
        Kind::Fast => builder.uri(format!("/work?ms={}", spec.fast_ms)).body(Full::default()),
        Kind::Slow => builder.uri(format!("/work?ms={}", spec.slow_ms)).body(Full::default()),
        Kind::Job => {
            let body = serde_json::json!({ "id": job_id.unwrap_or_default(), "amount": p.amount });
            builder
                .method(Method::POST)
                .uri("/jobs")
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
        }
    }
}

/// The Host a shadow copy carries: the name suffixed `-shadow`, the port kept, as
/// Envoy's and Istio's mirroring mark their copies. The api sends a copied job to its
/// shadow sink by this mark (services/api/src/shadow.rs).
pub(crate) fn shadow_host(host: &hyper::header::HeaderValue) -> hyper::header::HeaderValue {
    let Ok(h) = host.to_str() else { return host.clone() };
    let marked = match h.rsplit_once(':') {
        Some((name, port)) if !h.starts_with('[') => format!("{name}-shadow:{port}"),
        _ => format!("{h}-shadow"),
    };
    hyper::header::HeaderValue::from_str(&marked).unwrap_or_else(|_| host.clone())
}

fn wants_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))))
}

#[cfg(test)]
mod tests {
    use super::shadow_host;
    use hyper::header::HeaderValue;

    #[test]
    fn a_copy_suffixes_the_host_name_and_keeps_the_port() {
        let marked = |h: &'static str| shadow_host(&HeaderValue::from_static(h)).to_str().unwrap_or("").to_string();
        assert_eq!(marked("127.96.1.1:8000"), "127.96.1.1-shadow:8000");
        assert_eq!(marked("haproxy"), "haproxy-shadow");
    }
}
