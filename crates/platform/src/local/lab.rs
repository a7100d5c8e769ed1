//! One lab session, the same for every command that runs on the local platform
//! (`experiment`, `tune`, `reconnect`, `long-lived`, `canary`, `blue-green`): enter the
//! lab's network namespace, join it under the run's id, detect the pods' isolation,
//! acquire the private servers, and release them at the end, checking that nothing of
//! the run is left in the lab (and the parent outside checks again once the runner has
//! exited: `netns::run_in_lab`).

use super::netns;
use super::platform::LocalPlatform;
use super::pod::Isolation;
use super::propagation::PropagationModel;
use crate::infra::Backends;
use crate::workspace;
use anyhow::{bail, Context, Result};
use std::future::Future;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

/// Outside the lab: builds the services and re-runs this command inside a new lab
/// network namespace, then exits with its code. Inside: returns. `needs_linux` is the
/// command's own refusal elsewhere.
pub async fn ensure_inside(needs_linux: &str) -> Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("{needs_linux}");
    }
    if !netns::inside() {
        // Built here, where the network is: the lab has none, and cargo may need it.
        let bin_dir = workspace::build_services()?;
        let status = netns::run_in_lab(&bin_dir).await?;
        std::process::exit(netns::exit_code(status));
    }
    Ok(())
}

/// A run's own directory under `--out` (relative to the workspace root unless
/// absolute), on either platform.
pub fn out_dir(out: &Path, run_id: &str) -> PathBuf {
    if out.is_absolute() {
        out.join(run_id)
    } else {
        workspace::root().join(out).join(run_id)
    }
}

pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Runs `work` unless Ctrl-C comes first. Then `work` is dropped where it stands (the
/// pods die with this process, PR_SET_PDEATHSIG on every one) and the error reads
/// `interrupted; {what}`; releasing the private servers stays the caller's.
pub async fn until_interrupted<T>(work: impl Future<Output = Result<T>>, what: String) -> Result<T> {
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; {what}")),
    }
}

/// The lab node this run joined, how its pods are isolated, and its private servers.
pub struct Lab {
    pub node: netns::LabNode,
    pub isolation: Isolation,
    pub backends: Backends,
}

impl Lab {
    /// Joins the lab under `run_id` with `addr` as the address clients aim at (the
    /// Service's VIP, or the routing tier), then acquires the private servers with
    /// their files in `out_dir`.
    pub async fn join(run_id: &str, addr: SocketAddrV4, out_dir: &Path) -> Result<Lab> {
        Lab::enter(run_id, addr, out_dir, false).await
    }

    /// As [`Lab::join`], with experiment's `[platform] local: ...` line before the
    /// servers start (CI and the docs quote it).
    pub async fn join_announced(run_id: &str, addr: SocketAddrV4, out_dir: &Path) -> Result<Lab> {
        Lab::enter(run_id, addr, out_dir, true).await
    }

    async fn enter(run_id: &str, addr: SocketAddrV4, out_dir: &Path, announce: bool) -> Result<Lab> {
        let node = netns::join(run_id, addr).await?;
        let isolation = Isolation::detect();
        if announce {
            eprintln!("[platform] local: {}; lab network namespace (pid {})", isolation.describe(), std::process::id());
        }
        let backends = Backends::acquire(out_dir).await?;
        eprintln!("[infra] {}", backends.describe());
        Ok(Lab { node, isolation, backends })
    }

    /// The local platform on this lab's servers and binaries.
    pub fn platform(&self, propagation: PropagationModel) -> LocalPlatform {
        LocalPlatform::new(
            self.backends.amqp_url.clone(),
            self.backends.database_url.clone(),
            self.node.bin_dir.clone(),
            self.isolation,
            propagation,
            self.node.run().to_string(),
        )
    }

    /// Stops the private servers, then checks that nothing else of the run is left in
    /// the lab (killing what is, and saying why: netns/leftovers.rs). A failure to stop
    /// is a warning, not the run's result.
    pub async fn release(self) {
        if let Err(e) = self.backends.release().await {
            eprintln!("warning: stopping the private servers: {e:#}");
        }
        // The sweep polls and sleeps: off the async threads.
        if let Err(e) = tokio::task::spawn_blocking(netns::sweep_own_lab).await {
            eprintln!("warning: checking the lab for leftovers: {e}");
        }
    }
}
