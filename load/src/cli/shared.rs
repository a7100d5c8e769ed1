//! What every load subcommand that aims at a Service shares: the target and its
//! loopback guard, the data-plane gate before the load, the `load begins:` line and
//! the per-second progress lines a log reader (the kind runner) follows, and the
//! result handed back as JSON or as checksummed lines on stdout.

use anyhow::{bail, Context};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zerodrop_load::gate::{self, GateConfig, GateState};
use zerodrop_load::{FixedResolver, Live, Resolver};

/// Where the load goes, and which pods must answer through it before it starts.
#[derive(clap::Args)]
pub struct TargetArgs {
    /// host:port. Must be on loopback unless --allow-non-loopback.
    #[arg(long)]
    pub target: String,
    /// Permit a target outside loopback (e.g. a ClusterIP from inside a cluster).
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Before the load, wait until these pods (comma-separated) have each answered a
    /// `GET /healthz` sent through --target on a new connection (their `x-zd-pod`
    /// header): the data plane carries them, not just the control plane's list.
    #[arg(long, value_delimiter = ',', value_name = "POD,POD,...")]
    pub await_pods: Vec<String>,
    /// Give up on --await-pods after this long (exit non-zero, no load sent).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub await_timeout: Duration,
    /// Give up on --await-pods after this many probes.
    #[arg(long, default_value_t = 2000)]
    pub await_max_probes: u32,
}

/// Where the result goes.
#[derive(clap::Args)]
pub struct OutArgs {
    /// Write the full result here as JSON. `-` prints it to stdout instead, as
    /// checksummed chunk lines between `--- zerodrop-load result: ...` and
    /// `--- end ---` (how a run inside a cluster hands its result back through the
    /// pod's log; `zerodrop_load::wire::decode` reads it back).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl TargetArgs {
    /// The target's address once it has passed the loopback guard and, with
    /// --await-pods, the data-plane gate (each probe bounded by the two timeouts).
    pub async fn reach(&self, connect_timeout: Duration, probe_timeout: Duration) -> anyhow::Result<SocketAddr> {
        let addr = resolve(&self.target, self.allow_non_loopback).await?;
        if !self.await_pods.is_empty() {
            let cfg = GateConfig {
                deadline: self.await_timeout,
                max_probes: self.await_max_probes,
                pause: gate::DEFAULT_PAUSE,
                connect_timeout,
                probe_timeout,
            };
            await_data_plane(&FixedResolver(addr), addr, &self.await_pods, &cfg).await?;
        }
        Ok(addr)
    }
}

impl OutArgs {
    pub fn write<T: Serialize>(&self, result: &T) -> anyhow::Result<()> {
        match self.out.as_deref() {
            Some(p) if p == Path::new("-") => write_result(&mut std::io::stdout().lock(), result),
            Some(path) => {
                let json = serde_json::to_vec_pretty(result)?;
                std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// `--out -`: the result as checksummed chunk lines (see [`zerodrop_load::wire`]).
pub fn write_result<T: Serialize>(out: &mut impl std::io::Write, result: &T) -> anyhow::Result<()> {
    out.write_all(zerodrop_load::wire::encode(result)?.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The line that ends the gate and starts the load's clock, as the kind runner waits
/// for it.
pub fn load_begins(what: impl std::fmt::Display) {
    eprintln!("{}{what}", gate::LOAD_BEGINS);
}

/// Runs the gate, one line per newly seen pod and one at the end (all prefixed
/// [`gate::LINE_PREFIX`], so a log reader knows no load was sent yet).
async fn await_data_plane(
    resolver: &dyn Resolver,
    addr: SocketAddr,
    pods: &[String],
    cfg: &GateConfig,
) -> anyhow::Result<()> {
    let p = gate::LINE_PREFIX;
    // Deduplicated and sorted, as the gate counts them.
    let names = GateState::new(pods).missing();
    let n = names.len();
    eprintln!(
        "{p}awaiting {n} pods through {addr} (GET {} on a new connection each): {}",
        gate::PROBE_PATH,
        names.join(", ")
    );
    let passed = gate::await_pods(resolver, pods, cfg, |pod, s, t| {
        eprintln!(
            "{p}{pod} answered ({}/{}) after {} probes, {} ms",
            s.seen(),
            s.expected(),
            s.probes(),
            t.as_millis()
        );
    })
    .await
    .context("no load sent: the api Service's data plane does not reach every awaited pod")?;
    eprintln!(
        "{p}data plane carries {}/{n} endpoints after {} probes, {} ms",
        passed.pods,
        passed.probes,
        passed.elapsed.as_millis()
    );
    Ok(())
}

/// The lab aims load at its own servers; a typo must not send it to someone else's.
async fn resolve(target: &str, allow_non_loopback: bool) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host(target).await.with_context(|| format!("resolve {target}"))?.collect();
    let Some(&first) = addrs.first() else { bail!("{target} resolves to no address") };
    if !allow_non_loopback && addrs.iter().any(|a| !a.ip().is_loopback()) {
        bail!("{target} resolves to {first}, outside loopback; pass --allow-non-loopback if that is intended");
    }
    Ok(first)
}

/// One progress line per second on stderr until aborted.
pub async fn progress(live: Arc<Live>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for t in 1.. {
        tick.tick().await;
        // The kind platform reads these lines back for its live counters.
        eprintln!("{}", live.snapshot().progress_line(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_target_outside_loopback_is_refused_unless_allowed() {
        let e = resolve("10.1.2.3:80", false).await.unwrap_err().to_string();
        assert!(e.contains("outside loopback") && e.contains("--allow-non-loopback"), "{e}");
        assert_eq!(resolve("10.1.2.3:80", true).await.unwrap(), "10.1.2.3:80".parse().unwrap());
        assert!(resolve("127.0.0.1:9", false).await.is_ok());
    }
}
