//! [`DependencyFaults`] on a cluster: the relay is a Deployment of its own
//! (`zerodrop-fault-relay`, rendered by `zerodrop_manifests::broker_relay`) that the api
//! pods reach the broker through, and the runner sets its fault with one `PUT /fault`
//! to the relay pod's control port through a port-forward. A fault counts as set only
//! when the relay answers 200 and echoes exactly that fault: anything else (a refusal,
//! another fault, no answer) fails the call, so a run never measures a fault it did
//! not get.

use super::two_versions::wire::response_complete;
use super::{forward, KindPlatform};
use crate::{Dependency, DependencyFaults, NetFault};
use anyhow::{bail, Context, Result};
use std::time::Duration;
use zerodrop_manifests::{APP_LABEL, RELAY_CONTROL_PORT, RELAY_NAME};

/// Bound on one fault change, the port-forward's setup included.
pub const FAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The label selector of the relay's pod.
pub fn relay_selector() -> String {
    format!("{APP_LABEL}={RELAY_NAME}")
}

/// The request that sets `fault` (`null` clears it), as sent through the port-forward:
/// HTTP/1.0, so the relay closes after its answer.
pub fn fault_request(fault: Option<NetFault>) -> String {
    let body = serde_json::to_string(&fault).unwrap_or_else(|_| "null".into());
    format!(
        "PUT /fault HTTP/1.0\r\nHost: {RELAY_NAME}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The relay's answer to [`fault_request`] for `sent`: Ok only for a 200 whose body is
/// exactly `sent`.
pub fn fault_answer(raw: &[u8], sent: Option<NetFault>) -> Result<()> {
    if raw.is_empty() {
        bail!("the relay closed without answering (the port-forward could not reach its control port?)");
    }
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no complete answer ({} bytes)", raw.len());
    };
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("the relay refused the fault, answering {status:?}: {}", body.trim());
    }
    let echo: Option<NetFault> = serde_json::from_str(body.trim())
        .with_context(|| format!("the relay's 200 does not carry a fault: {:?}", body.trim()))?;
    if echo != sent {
        bail!("the relay echoed {} where {} was sent", json(echo), json(sent));
    }
    Ok(())
}

fn json(f: Option<NetFault>) -> String {
    serde_json::to_string(&f).unwrap_or_default()
}

impl DependencyFaults for KindPlatform {
    async fn relay_dependency(&mut self, dep: Dependency) -> Result<()> {
        match dep {
            Dependency::Broker => {
                self.broker_relay = true;
                eprintln!(
                    "[kind] api pods reach the broker through deployment {RELAY_NAME} (applied with the next \
                     fleet); faults set through a port-forward to its :{RELAY_CONTROL_PORT}"
                );
                Ok(())
            }
        }
    }

    async fn set_fault(&mut self, fault: Option<NetFault>) -> Result<()> {
        if !self.broker_relay {
            bail!("no fault relay: call relay_dependency before deploy");
        }
        let pods = self.pods();
        let port = u16::try_from(RELAY_CONTROL_PORT).context("the relay's control port")?;
        let request = fault_request(fault);
        let work = async {
            let pod = forward::ready_pod(&pods, &relay_selector()).await?;
            let raw = forward::exchange(&pods, &pod, port, request.as_bytes(), response_complete)
                .await
                .with_context(|| format!("PUT /fault to {pod}:{port}"))?;
            fault_answer(&raw, fault).with_context(|| format!("PUT /fault {} to {pod}:{port}", json(fault)))
        };
        tokio::time::timeout(FAULT_TIMEOUT, work).await.with_context(|| {
            format!("the relay did not confirm the fault {} within {FAULT_TIMEOUT:?}", json(fault))
        })??;
        tracing::info!(step = "fault", fault = ?fault, "fault on the broker path");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn delay(ms: u64) -> Option<NetFault> {
        Some(NetFault::Delay { each_way: Duration::from_millis(ms) })
    }

    #[test]
    fn the_request_is_one_put_with_the_fault_as_json() {
        assert_eq!(
            fault_request(delay(800)),
            "PUT /fault HTTP/1.0\r\nHost: broker-relay\r\nContent-Type: application/json\r\nContent-Length: 25\r\n\r\n{\"kind\":\"delay\",\"ms\":800}"
        );
        assert!(fault_request(None).ends_with("Content-Length: 4\r\n\r\nnull"));
        assert_eq!(relay_selector(), "app=broker-relay");
    }

    /// Answers as hyper's server sends them to an HTTP/1.0 request.
    #[test]
    fn only_a_200_that_echoes_the_fault_sent_sets_it() {
        let ok = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: 25\r\ndate: Sat, 05 Dec 2026 12:00:00 GMT\r\n\r\n{\"kind\":\"delay\",\"ms\":800}";
        assert!(response_complete(ok));
        fault_answer(ok, delay(800)).unwrap();
        let cleared = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4\r\n\r\nnull";
        fault_answer(cleared, None).unwrap();

        let e = fault_answer(ok, delay(400)).unwrap_err().to_string();
        assert!(e.contains(r#"echoed {"kind":"delay","ms":800} where {"kind":"delay","ms":400} was sent"#), "{e}");
        let e = fault_answer(cleared, Some(NetFault::Cut)).unwrap_err().to_string();
        assert!(e.contains(r#"echoed null where {"kind":"cut"} was sent"#), "{e}");

        let refused = b"HTTP/1.0 422 Unprocessable Entity\r\ncontent-type: application/json\r\ncontent-length: 33\r\n\r\n{\"error\":\"not a fault (missing)\"}";
        let e = fault_answer(refused, delay(800)).unwrap_err().to_string();
        assert!(e.contains("422 Unprocessable Entity") && e.contains("not a fault (missing)"), "{e}");

        let e = fault_answer(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", delay(800)).unwrap_err().to_string();
        assert!(e.contains("does not carry a fault"), "{e}");
        let e = fault_answer(b"", delay(800)).unwrap_err().to_string();
        assert!(e.contains("closed without answering"), "{e}");
        let e = fault_answer(b"HTTP/1.0 200 OK\r\ncontent-le", None).unwrap_err().to_string();
        assert!(e.contains("no complete answer"), "{e}");
    }

    /// The request and the answer check against the relay binary's own control API
    /// (on loopback, where the port-forward would deliver the same bytes).
    #[tokio::test]
    async fn the_real_control_api_confirms_what_the_platform_sends() {
        let relay = Arc::new(zerodrop_fault_relay::FaultRelay::start(("127.0.0.1".into(), 9)).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, zerodrop_fault_relay::control::router(relay)).await });
        let send = |req: String| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).await.unwrap();
            assert!(response_complete(&raw), "{}", String::from_utf8_lossy(&raw));
            raw
        };
        for f in [delay(800), Some(NetFault::Cut), None] {
            fault_answer(&send(fault_request(f)).await, f).unwrap();
        }
        let bad = "PUT /fault HTTP/1.0\r\nContent-Length: 16\r\n\r\n{\"kind\":\"delay\"}".to_string();
        let e = fault_answer(&send(bad).await, delay(800)).unwrap_err().to_string();
        assert!(e.contains("422") && e.contains("not a fault"), "{e}");
    }
}
