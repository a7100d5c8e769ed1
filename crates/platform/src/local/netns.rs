//! The lab node: `experiment --platform local` and `up` re-exec themselves inside a
//! network namespace of their own, so the Service can be real kernel DNAT (nft.rs)
//! without touching this machine's firewall, and everything a run starts (private
//! RabbitMQ/PostgreSQL, pods, the load generator) lives on that node's loopback.
//!
//! The parent stays in the host namespace only to relay env-provided servers into the
//! lab (relay.rs), forward Ctrl-C/SIGTERM, and pass the child's exit code through.

pub mod lab;
pub mod leftovers;
mod relay;
pub(crate) use relay::rewrite_authority;

use anyhow::{bail, Context, Result};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use tokio::signal::unix::{signal, SignalKind};

/// Set for the re-executed runner: it is inside the lab.
pub const LAB_ENV: &str = "ZERODROP_LAB_NETNS";
/// The read end of a pipe on which the parent says "relays are up, go on".
const READY_FD_ENV: &str = "ZERODROP_LAB_READY_FD";
/// Where the parent built the service binaries: the lab has no network, so cargo
/// must not have to fetch anything in there.
const BIN_DIR_ENV: &str = "ZERODROP_LAB_BIN_DIR";

pub fn inside() -> bool {
    std::env::var(LAB_ENV).as_deref() == Ok("1")
}

pub use crate::uid::is_root;

/// The `unshare` options that create the lab. Root needs only a network namespace.
/// Anyone else also needs a user namespace to own it; the user keeps their own uid
/// inside (PostgreSQL refuses to run as root) and the capabilities come along as
/// ambient ones, so `nft` and `ip` work in there.
pub fn unshare_args(root: bool) -> Vec<&'static str> {
    if root {
        vec!["--net"]
    } else {
        vec!["--user", "--map-current-user", "--keep-caps", "--net"]
    }
}

/// Exit code of the parent for the child's status (a signal `n` becomes 128 + n, as
/// in a shell).
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Runs this very command again inside a new lab namespace and waits for it. The
/// service binaries in `bin_dir` were built here, where the network is.
pub async fn run_in_lab(bin_dir: &Path) -> Result<ExitStatus> {
    let relays = relay::plan(env_var("AMQP_URL")?.as_deref(), env_var("DATABASE_URL")?.as_deref())?;
    let root = is_root();
    relays_allowed(root, &relays)?;
    let exe = std::env::current_exe().context("locating the running xtask binary")?;
    let (ready_r, ready_w) = pipe()?;
    let mut cmd = tokio::process::Command::new("unshare");
    // The child inherits the pipe's read end (`cmd` holds ours); everything else stays
    // CLOEXEC. It dies of SIGKILL if we do.
    let ready_fd = crate::sys::pass_fd_and_die_with_parent(cmd.as_std_mut(), ready_r);
    cmd.args(unshare_args(root)).arg("--").arg(&exe).args(std::env::args_os().skip(1));
    cmd.env(LAB_ENV, "1").env(READY_FD_ENV, ready_fd.to_string()).env(BIN_DIR_ENV, bin_dir);
    for r in &relays {
        cmd.env(r.var, &r.url);
    }
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("`unshare` not found: install util-linux"),
        _ => anyhow::Error::new(e).context("starting `unshare`"),
    })?;
    drop(cmd); // our copy of the read end
    let pid = child.id().context("the lab process exited at once")?;
    // Held until the lab's last check below: the namespace cannot go away (and its
    // identity be reused by another run's lab) before we have looked into it.
    let pin = pin_lab(pid).await;
    if let Err(e) = relay::start(pid, &relays).await {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Err(e.context("relaying AMQP_URL / DATABASE_URL into the lab"));
    }
    // A closed pipe without this byte tells the child we are gone.
    let _ = write_all(&ready_w, b"1");
    drop(ready_w);

    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let status = loop {
        // The terminal sends Ctrl-C to the child as well; forwarding covers a `kill`
        // aimed at this process only. The child cleans up and its code comes back.
        let sig = tokio::select! {
            s = child.wait() => break s.context("waiting for the lab process")?,
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        };
        // Our own child, which has not been reaped yet.
        let _ = crate::sys::kill(pid as i32, sig);
    };
    if let Some(pin) = pin {
        // Every command that enters a lab ends here, whatever the runner inside did
        // (Lab::release sweeps too, but `up` does not use it, and a runner may crash).
        let _ = tokio::task::spawn_blocking(move || after_the_runner(pin)).await;
    }
    Ok(status)
}

/// How long what is left in the lab gets to exit by itself once the runner has exited:
/// pods die of PR_SET_PDEATHSIG then, which is not instant.
const AFTER_RUNNER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// The same inside, at `Lab::release`: pods are killed when their owners are dropped.
const AT_RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Pins the namespace the lab process `pid` creates (`unshare` makes it, then execs the
/// runner), once it differs from ours; None if that does not happen (the lab failed to
/// start: there is nothing to check then).
async fn pin_lab(pid: u32) -> Option<leftovers::Pin> {
    let own = leftovers::NetNs::own()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match leftovers::NetNs::of_pid(pid) {
            Some(ns) if ns != own => {
                let pin = leftovers::Pin::of_pid(pid).ok().filter(|p| p.ns == ns);
                if pin.is_none() {
                    eprintln!(
                        "[lab] warning: could not hold the lab's network namespace; it is not checked at the end"
                    );
                }
                return pin;
            }
            Some(_) => {}
            None => return None,
        }
        if std::time::Instant::now() > deadline {
            eprintln!("[lab] warning: the lab process did not enter its own network namespace within 10 s");
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The outer half of the lab's last check: the runner has exited, so anything still in
/// its namespace is a leftover. Killed, and said so.
fn after_the_runner(pin: leftovers::Pin) {
    let (killed, survivors) = leftovers::sweep(pin.ns, &[], None, AFTER_RUNNER_GRACE);
    leftovers::report("lab", "after its runner exited", pin.ns, &killed, &survivors);
    if killed.is_empty() && survivors.is_empty() {
        tracing::debug!(netns = pin.ns.inode(), "lab network namespace empty after the run");
    }
}

/// The inner half, from `Lab::release` once the private servers are stopped: nothing but
/// this runner may be left in the lab. Refuses to look anywhere but in a lab of its own
/// (a namespace other than the parent's), so it can never sweep the host's.
pub fn sweep_own_lab() {
    let (Some(own), Some(parent)) =
        (leftovers::NetNs::own(), leftovers::NetNs::of_pid(std::os::unix::process::parent_id()))
    else {
        eprintln!("[lab] warning: could not read the network namespaces; the lab is not checked for leftovers");
        return;
    };
    if !inside() || own == parent {
        return;
    }
    let me = std::process::id() as i32;
    let (killed, survivors) = leftovers::sweep(own, &[me], Some(me), AT_RELEASE_GRACE);
    leftovers::report("lab", "when the lab was released", own, &killed, &survivors);
    if killed.is_empty() && survivors.is_empty() {
        eprintln!("[lab] checked: no process of this run is left in the lab (net:[{}])", own.inode());
    }
}

/// What the runner inside the lab gets: the binaries, and the lab's state file for
/// `cargo xtask client` (removed when this is dropped).
pub struct LabNode {
    pub bin_dir: PathBuf,
    state: lab::StateFile,
}

impl LabNode {
    pub fn run(&self) -> &str {
        &self.state.lab.run
    }
}

/// The runner's first steps inside the lab: `lo` up, wait for the parent's relays,
/// announce the lab under `run`.
pub async fn join(run: &str, vip: std::net::SocketAddrV4) -> Result<LabNode> {
    if !inside() {
        bail!("internal: joining the lab from outside it");
    }
    let out =
        std::process::Command::new("ip").args(["link", "set", "lo", "up"]).output().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::anyhow!("`ip` not found: install iproute2 (Debian: apt-get install iproute2)")
            }
            _ => anyhow::Error::new(e).context("running `ip link set lo up`"),
        })?;
    if !out.status.success() {
        bail!("`ip link set lo up` in the lab failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let fd: i32 = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{READY_FD_ENV} is not set: the lab is entered only by re-exec"))?;
    let ready = crate::sys::inherited_pipe(fd)
        .with_context(|| format!("{READY_FD_ENV}={fd} names no pipe passed on by the parent runner"))?;
    let got = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            let mut b = [0u8; 1];
            std::io::Read::read(&mut std::fs::File::from(ready), &mut b).map(|n| n == 1)
        }),
    )
    .await;
    match got {
        Ok(Ok(Ok(true))) => {}
        _ => bail!("the parent runner did not finish setting up the lab (it exited or timed out)"),
    }
    let bin_dir = std::env::var_os(BIN_DIR_ENV).map(PathBuf::from).context("the parent did not pass the binaries")?;
    let state = lab::StateFile::write(lab::Lab {
        run: run.to_string(),
        pid: std::process::id(),
        vip: vip.to_string(),
        user_ns: !is_root(),
        started_unix_ms: crate::now_ms(),
    })?;
    Ok(LabNode { bin_dir, state })
}

/// The line `experiment` and `up` print so a human can aim curl/wrk/hey at the Service.
pub fn client_hint(run: &str, vip: std::net::SocketAddrV4) -> String {
    let target = match std::env::var("CARGO_TARGET_DIR") {
        Ok(t) if !t.is_empty() => format!("CARGO_TARGET_DIR={t} "),
        _ => String::new(),
    };
    let url = if vip.port() == 80 { format!("http://{}", vip.ip()) } else { format!("http://{vip}") };
    format!("Service {url} (kernel DNAT in the lab netns); from another shell: {target}cargo xtask client --run {run} -- hey -z 10s -c 20 '{url}/work?ms=5'")
}

/// Relaying needs setns() into the lab, which the kernel allows only with
/// CAP_SYS_ADMIN in our own user namespace: root. Anyone else gets told what to do.
fn relays_allowed(root: bool, relays: &[relay::Relay]) -> Result<()> {
    if root || relays.is_empty() {
        return Ok(());
    }
    let vars: Vec<&str> = relays.iter().map(|r| r.var).collect();
    bail!(
        "{} {} outside the lab's network namespace, and relaying into it needs root \
         (setns into the namespace). Run as root, or unset {} so the runner starts private servers \
         inside the lab, or for PostgreSQL use a Unix-socket URL (postgres:///postgres?host=/var/run/postgresql)",
        vars.join(" and "),
        if vars.len() == 1 { "points at a TCP server" } else { "point at TCP servers" },
        vars.join(" / ")
    )
}

fn env_var(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{name} is set but is not valid UTF-8"),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    crate::sys::pipe().context("creating the lab's ready pipe")
}

fn write_all(fd: &OwnedFd, b: &[u8]) -> std::io::Result<()> {
    std::io::Write::write_all(&mut std::fs::File::from(fd.try_clone()?), b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_gets_a_bare_netns_and_others_keep_their_uid() {
        assert_eq!(unshare_args(true), ["--net"]);
        let user = unshare_args(false);
        assert!(user.contains(&"--map-current-user") && !user.contains(&"--map-root-user"), "{user:?}");
        assert!(user.contains(&"--keep-caps") && user.contains(&"--net"), "{user:?}");
    }

    #[test]
    fn only_root_can_relay_and_anyone_else_is_told_what_to_do() {
        let relays = relay::plan(Some("amqp://127.0.0.1:5672"), Some("postgres://u@127.0.0.1/db")).unwrap();
        assert!(relays_allowed(true, &relays).is_ok());
        assert!(relays_allowed(false, &[]).is_ok(), "private servers need no relay");
        let err = relays_allowed(false, &relays).unwrap_err().to_string();
        assert!(err.starts_with("AMQP_URL and DATABASE_URL point at TCP servers outside"), "{err}");
        assert!(err.contains("Run as root, or unset AMQP_URL / DATABASE_URL"), "{err}");
        assert!(err.contains("Unix-socket URL"), "{err}");
    }

    #[test]
    fn the_hint_is_a_command_to_paste() {
        let h = client_hint("20260101-120000", crate::local::nft::VIP);
        assert!(
            h.contains("cargo xtask client --run 20260101-120000 -- hey -z 10s -c 20 'http://127.96.0.1/work?ms=5'"),
            "{h}"
        );
    }
}
