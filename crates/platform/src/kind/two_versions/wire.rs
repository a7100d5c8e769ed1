//! How the runner talks to the routing tier and to each pod on a cluster: HAProxy's
//! runtime API through a loopback port-forward ([`TcpTransport`]), and one
//! `GET /metrics` per pod over a port-forward of its own ([`fetch_metrics`]).
//!
//! Neither read waits for the far end to close: through a port-forward the close may
//! arrive late or not at all, so each answer's own framing ends the read (HAProxy's
//! closing empty line, HTTP's Content-Length).

use crate::router::runtime_api::Transport;
use crate::router::Counts;
use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Bound on one runtime-API command, connect included.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one pod's `/metrics`, the port-forward's setup included.
pub const METRICS_TIMEOUT: Duration = Duration::from_secs(5);

/// HAProxy's runtime API reached at a loopback address (a [`super::super::forward::Forward`]
/// to the HAProxy pod's stats port). Non-interactive mode: one command per connection.
pub struct TcpTransport(pub SocketAddr);

/// HAProxy ends every non-interactive answer with an empty line: a bare `\n` for a
/// command that succeeded silently (`set map`, `set server`), `...\n\n` otherwise
/// (seen on HAProxy 2.6: `show stat`, `show map`, `No such server.`). No answer has an
/// empty line inside it.
pub fn answer_complete(raw: &[u8]) -> bool {
    raw == b"\n" || raw.ends_with(b"\n\n")
}

/// Reads until `complete` says the answer is whole, or the far end closes.
async fn read_until(r: &mut (impl AsyncRead + Unpin), complete: impl Fn(&[u8]) -> bool) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if complete(&buf) {
            return Ok(buf);
        }
    }
}

impl Transport for TcpTransport {
    async fn command(&self, cmd: &str) -> Result<String> {
        let addr = self.0;
        let work = async {
            let mut s = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to the runtime API's port-forward {addr}"))?;
            s.write_all(format!("{cmd}\n").as_bytes()).await.context("sending a runtime-API command")?;
            read_until(&mut s, answer_complete).await.context("reading haproxy's answer")
        };
        let raw = tokio::time::timeout(COMMAND_TIMEOUT, work)
            .await
            .with_context(|| format!("haproxy's runtime API did not answer `{cmd}` within {COMMAND_TIMEOUT:?}"))??;
        // HAProxy always answers something; nothing at all is the port-forward
        // closing a connection it could not take to the pod.
        if raw.is_empty() {
            bail!(
                "haproxy's runtime API closed without answering `{cmd}` (the port-forward could not reach the \
                 haproxy pod?)"
            );
        }
        String::from_utf8(raw).context("haproxy's answer is not UTF-8")
    }
}

/// What the runner sends each pod: HTTP/1.0, so the app closes after its answer.
pub const METRICS_REQUEST: &[u8] = b"GET /metrics HTTP/1.0\r\nHost: pod\r\n\r\n";

fn head_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n")
}

fn content_length(head: &str) -> Option<usize> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// The response's head has ended and as many body bytes as its Content-Length are in.
/// Without a Content-Length only the close ends it.
pub fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = head_end(raw) else { return false };
    let head = String::from_utf8_lossy(&raw[..end]);
    content_length(&head).is_some_and(|n| raw.len() - (end + 4) >= n)
}

/// The app's counters out of a whole `/metrics` response.
pub fn metrics_of_response(raw: &[u8]) -> Result<Counts> {
    let end = head_end(raw).context("no HTTP body (the response ended inside its head)")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head.lines().next().unwrap_or("");
    if !(status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200")) {
        bail!("answered {status:?}");
    }
    let mut body = &raw[end + 4..];
    if let Some(n) = content_length(&head) {
        body = body.get(..n).with_context(|| format!("the body has {} of its {n} bytes", body.len()))?;
    }
    let text = std::str::from_utf8(body).context("the body is not UTF-8")?;
    Ok(zerodrop_evidence::routing::parse_metrics(text))
}

/// `GET /metrics` of one pod, through a port-forward to `port` of that very pod (not
/// a Service: the counts are per pod).
pub async fn fetch_metrics(pods: &Api<Pod>, pod: &str, port: u16) -> Result<Counts> {
    let mut pf = tokio::time::timeout(METRICS_TIMEOUT, pods.portforward(pod, &[port]))
        .await
        .with_context(|| format!("no port-forward to {pod}:{port} within {METRICS_TIMEOUT:?}"))?
        .with_context(|| format!("opening a port-forward to {pod}:{port}"))?;
    let refused = pf.take_error(port);
    let read = async {
        let mut s = pf.take_stream(port).context("the port-forward has no stream")?;
        s.write_all(METRICS_REQUEST).await.context("sending GET /metrics")?;
        read_until(&mut s, response_complete).await.context("reading /metrics")
    };
    // The kubelet reports a port it cannot connect to on the error channel, and the
    // data stream then never ends: whichever comes first decides.
    let refused = async {
        match refused {
            Some(e) => match e.await {
                Some(msg) => msg,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    let raw = tokio::time::timeout(METRICS_TIMEOUT, async {
        tokio::select! {
            r = read => r,
            msg = refused => Err(anyhow::anyhow!("the kubelet: {msg}")),
        }
    })
    .await;
    // What was needed is read (or not coming): the forward's task must not outlive it.
    pf.abort();
    let raw = raw.with_context(|| format!("{pod}:{port}/metrics did not answer within {METRICS_TIMEOUT:?}"))??;
    metrics_of_response(&raw).with_context(|| format!("{pod}:{port}/metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::runtime_api::RuntimeApi;
    use tokio::io::AsyncBufReadExt;

    /// `show stat` of HAProxy 2.6.12 running the kind config's frontend and backends
    /// (servers on loopback instead of the Services), byte for byte, its closing empty
    /// line included: after 51 requests at weight 300 (one pinned with `x-canary:
    /// always`; the canary answering 500 on `/work`), and at start with nothing behind
    /// either server.
    const SHOW_STAT: &str = include_str!("testdata/haproxy-2.6-show-stat-up.csv");
    const SHOW_STAT_DOWN: &str = include_str!("testdata/haproxy-2.6-show-stat-down.csv");

    /// A stand-in for HAProxy behind a port-forward: reads one command line, answers
    /// from `answer`, and (like a forward whose close never arrives) keeps the
    /// connection open unless `close`.
    async fn fake_haproxy(
        answer: fn(&str) -> String,
        close: bool,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut held = Vec::new();
            while let Ok(Ok((s, _))) = tokio::time::timeout(Duration::from_millis(500), l.accept()).await {
                let mut s = tokio::io::BufReader::new(s);
                let mut line = String::new();
                s.read_line(&mut line).await.unwrap();
                let cmd = line.trim_end().to_string();
                s.get_mut().write_all(answer(&cmd).as_bytes()).await.unwrap();
                seen.push(cmd);
                if !close {
                    held.push(s);
                }
            }
            seen
        });
        (addr, task)
    }

    fn haproxy_2_6(cmd: &str) -> String {
        match cmd {
            c if c.starts_with("set map ") => "\n".into(),
            c if c.starts_with("show map ") => "0x55928eef1370 weight 50\n\n".into(),
            "set server stable/api-v1 state drain" => "\n".into(),
            "show stat" => SHOW_STAT.into(),
            _ => "Unknown command: 'x'\n\n".into(),
        }
    }

    #[tokio::test]
    async fn the_runtime_api_works_through_a_forward_that_never_closes() {
        let (addr, seen) = fake_haproxy(haproxy_2_6, false).await;
        let api = RuntimeApi { transport: TcpTransport(addr), map: "/usr/local/etc/haproxy/canary.map".into() };
        api.set_permille(50).await.unwrap();
        api.drain("stable", "api-v1").await.unwrap();
        let (stable, canary) = api.stats().await.unwrap();
        assert_eq!((stable.requests, stable.http_5xx), (39, 0));
        assert_eq!((canary.requests, canary.http_5xx, canary.http_4xx), (12, 11, 0));
        api.wait_all_up(Duration::from_secs(1)).await.unwrap();
        assert!(!crate::router::runtime_api::servers_up(SHOW_STAT_DOWN), "both servers DOWN at start");
        assert_eq!(crate::router::runtime_api::parse_stat(SHOW_STAT_DOWN).unwrap().0.requests, 0);
        let seen = seen.await.unwrap();
        assert_eq!(
            seen,
            [
                "set map /usr/local/etc/haproxy/canary.map weight 50",
                "show map /usr/local/etc/haproxy/canary.map",
                "set server stable/api-v1 state drain",
                "show stat",
                "show stat"
            ]
        );
    }

    #[tokio::test]
    async fn haproxy_s_refusals_and_a_silent_close_are_errors() {
        let (addr, _) = fake_haproxy(|_| "No such server.\n\n".into(), true).await;
        let api = RuntimeApi { transport: TcpTransport(addr), map: "/m".into() };
        let err = api.drain("stable", "api-v9").await.unwrap_err().to_string();
        assert!(err.contains("No such server."), "{err}");
        // The forward accepted the connection but could not reach the pod.
        let (addr, _) = fake_haproxy(|_| String::new(), true).await;
        let api = RuntimeApi { transport: TcpTransport(addr), map: "/m".into() };
        let err = api.drain("stable", "api-v1").await.unwrap_err().to_string();
        assert!(err.contains("closed without answering"), "{err}");
        let err = api.set_permille(10).await.unwrap_err().to_string();
        assert!(err.contains("closed without answering"), "{err}");
    }

    #[test]
    fn answers_end_with_an_empty_line() {
        assert!(answer_complete(b"\n"));
        assert!(answer_complete(SHOW_STAT.as_bytes()) && answer_complete(SHOW_STAT_DOWN.as_bytes()));
        assert!(answer_complete(b"0x55928eef1370 weight 50\n\n"));
        assert!(!answer_complete(b""));
        assert!(!answer_complete(b"# pxname,svname\nfe,FRONTEND,\n"), "a show stat cut between two chunks");
    }

    const METRICS: &str = "# TYPE zerodrop_http_requests_total counter\n\
        zerodrop_http_requests_total{route=\"/work\",status=\"200\"} 95\n\
        zerodrop_http_requests_total{route=\"/work\",status=\"500\"} 5\n\
        zerodrop_http_requests_total{route=\"/readyz\",status=\"200\"} 40\n";

    #[test]
    fn a_metrics_response_is_whole_by_its_content_length() {
        let whole = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n{METRICS}",
            METRICS.len()
        );
        let raw = whole.as_bytes();
        assert!(response_complete(raw));
        assert!(!response_complete(&raw[..raw.len() - 1]));
        assert!(!response_complete(b"HTTP/1.1 200 OK\r\ncontent-len"));
        let c = metrics_of_response(raw).unwrap();
        assert_eq!((c.requests, c.errors_5xx), (100, 5), "probes left out");
        // Bytes after the body (a keep-alive peer) are not read as metrics.
        let mut extra = raw.to_vec();
        extra.extend_from_slice(b"zerodrop_http_requests_total{route=\"/work\",status=\"500\"} 9\n");
        assert_eq!(metrics_of_response(&extra).unwrap().errors_5xx, 5);
        // No Content-Length: only the close ends it, and all of it is the body.
        let closed = format!("HTTP/1.0 200 OK\r\n\r\n{METRICS}");
        assert!(!response_complete(closed.as_bytes()));
        assert_eq!(metrics_of_response(closed.as_bytes()).unwrap().requests, 100);

        let err = metrics_of_response(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        assert!(metrics_of_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").is_err(), "cut short");
        assert!(metrics_of_response(b"").is_err());
    }
}
