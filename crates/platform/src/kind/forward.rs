//! Port-forwards through the API server (kube-rs, WebSocket), bound to local
//! loopback ports: how the runner reaches the in-cluster broker and database for
//! reconciliation, and the guardian exercise's pod. Each accepted connection gets its
//! own forward to a ready pod behind the selector, chosen at connect time, so a
//! restarted pod is picked up without restarting anything here.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Forward {
    pub local: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Forward {
    /// Listens on `127.0.0.1:<free port>` and forwards every connection to
    /// `container_port` of a ready pod matching `selector`.
    pub async fn start(pods: Api<Pod>, selector: String, container_port: u16) -> Result<Forward> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port for a port-forward")?;
        let local = listener.local_addr()?;
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = s.cancelled() => break,
                    c = listener.accept() => c,
                };
                let Ok((tcp, _)) = conn else { continue };
                let (pods, selector) = (pods.clone(), selector.clone());
                tokio::spawn(async move {
                    if let Err(e) = forward_one(pods, &selector, container_port, tcp).await {
                        eprintln!("warning: port-forward to {selector}:{container_port}: {e:#}");
                    }
                });
            }
        });
        Ok(Forward { local, stop, task })
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

async fn forward_one(pods: Api<Pod>, selector: &str, port: u16, mut tcp: TcpStream) -> Result<()> {
    let pod = ready_pod(&pods, selector).await?;
    let mut pf =
        pods.portforward(&pod, &[port]).await.with_context(|| format!("opening a port-forward to {pod}:{port}"))?;
    let mut upstream = pf.take_stream(port).context("the port-forward has no stream")?;
    // Either side closing ends the connection; errors here are the peers' own resets.
    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
    drop(upstream);
    let _ = pf.join().await;
    Ok(())
}

/// A running pod whose Ready condition is true.
pub async fn ready_pod(pods: &Api<Pod>, selector: &str) -> Result<String> {
    let list =
        pods.list(&ListParams::default().labels(selector)).await.with_context(|| format!("listing pods {selector}"))?;
    list.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .find(|p| super::pods::facts(p).ready)
        .and_then(|p| p.metadata.name.clone())
        .with_context(|| format!("no ready pod matches {selector}"))
}

/// One request and its answer through a port-forward of its own to `port` of `pod`
/// (that very pod, not a Service): `request` is written whole, and the answer read
/// until `complete` says it is whole or the far end closes (through a port-forward the
/// close may come late or never, so the answer's own framing ends the read). Unbounded
/// in time: callers put their own timeout around it.
pub async fn exchange(
    pods: &Api<Pod>,
    pod: &str,
    port: u16,
    request: &[u8],
    complete: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>> {
    let mut pf =
        pods.portforward(pod, &[port]).await.with_context(|| format!("opening a port-forward to {pod}:{port}"))?;
    let refused = pf.take_error(port);
    let read = async {
        let mut s = pf.take_stream(port).context("the port-forward has no stream")?;
        s.write_all(request).await.context("sending the request")?;
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        while !complete(&raw) {
            let n = s.read(&mut chunk).await.context("reading the answer")?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, anyhow::Error>(raw)
    };
    // The kubelet reports a port nobody listens on over the error channel, and the
    // data stream then never ends: whichever comes first decides.
    let refused = async move {
        match refused {
            Some(e) => match e.await {
                Some(msg) => msg,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    let raw = tokio::select! {
        r = read => r,
        msg = refused => Err(anyhow::anyhow!("the kubelet: {msg}")),
    };
    // What was needed is read (or not coming): the forward's task must not outlive it.
    pf.abort();
    raw
}
