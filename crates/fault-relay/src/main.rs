//! `zerodrop-fault-relay`: the chaos runs' broker-path relay as a pod. It relays
//! `ZD_RELAY_LISTEN` (default `0.0.0.0:5672`) to `ZD_RELAY_UPSTREAM` (`host:port`,
//! required) and serves the control API ([`zerodrop_fault_relay::control`]) on
//! `ZD_RELAY_CONTROL` (default `0.0.0.0:9091`). Logs are JSON lines on stdout, one per
//! fault change, as the apps' are.

use anyhow::{Context, Result};
use std::sync::Arc;
use zerodrop_fault_relay::{control, FaultRelay};

fn var(name: &str, default: Option<&str>) -> Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => default.map(str::to_string).with_context(|| format!("{name} is not set")),
    }
}

/// `host:port` -> (host, port); the host stays a name, resolved per connection.
fn host_port(s: &str) -> Result<(String, u16)> {
    let (host, port) = s.rsplit_once(':').with_context(|| format!("{s:?} is not host:port"))?;
    let port = port.parse().with_context(|| format!("{s:?}: bad port {port:?}"))?;
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let listen = var("ZD_RELAY_LISTEN", Some("0.0.0.0:5672"))?;
    let upstream = host_port(&var("ZD_RELAY_UPSTREAM", None)?)?;
    let control_addr = var("ZD_RELAY_CONTROL", Some("0.0.0.0:9091"))?;
    let relay = Arc::new(FaultRelay::start_on(&listen, upstream).await?);
    let control = tokio::net::TcpListener::bind(&control_addr)
        .await
        .with_context(|| format!("binding the control API on {control_addr}"))?;
    tracing::info!(step = "control_listening", addr = %control_addr, "control API: PUT /fault, GET /fault, GET /healthz");
    // PID 1 of its pod: without a handler the kernel drops SIGTERM and the pod would
    // wait out its whole grace period. The relay holds no state worth draining.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let stopped = async move {
        term.recv().await;
        tracing::info!(step = "sigterm", "stopping");
    };
    axum::serve(control, control::router(relay))
        .with_graceful_shutdown(stopped)
        .await
        .context("serving the control API")
}
