//! A pod is one OS process tree. On Linux it runs as PID 1 of its own PID namespace
//! (util-linux `unshare`), so what happens to SIGTERM is the kernel's own rule: PID 1
//! only receives the signals it installed a handler for.

use super::probe;
use super::recorder::Recorder;
use anyhow::{Context, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Command;
use zerodrop_evidence::PodEventKind;
use zerodrop_stages::{Entrypoint, Probe};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum App {
    Api,
    Worker,
}

impl App {
    pub fn name(self) -> &'static str {
        match self {
            App::Api => "api",
            App::Worker => "worker",
        }
    }
    /// The container port: the api's HTTP port, the worker's admin port.
    pub fn port(self) -> u16 {
        match self {
            App::Api => 8080,
            App::Worker => 9090,
        }
    }
    pub fn binary(self) -> &'static str {
        match self {
            App::Api => "zerodrop-api",
            App::Worker => "zerodrop-worker",
        }
    }
}

/// How pods are isolated on this machine, decided once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// `unshare --pid --fork`, plus `--user --map-root-user` when not root.
    PidNamespace { user_ns: bool },
    /// No namespaces available: a process group; PID 1 semantics are not reproduced.
    ProcessGroup,
}

impl Isolation {
    /// Probes what this machine allows.
    pub fn detect() -> Isolation {
        let root = crate::uid::is_root();
        let mut args = vec!["--pid", "--fork", "--kill-child"];
        if !root {
            args.extend(["--user", "--map-root-user"]);
        }
        args.push("true");
        let ok = std::process::Command::new("unshare")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            Isolation::PidNamespace { user_ns: !root }
        } else {
            Isolation::ProcessGroup
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Isolation::PidNamespace { user_ns: false } => "PID namespace per pod (unshare --pid)",
            Isolation::PidNamespace { user_ns: true } => {
                "PID namespace per pod, inside a user namespace (unshare --user --pid)"
            }
            Isolation::ProcessGroup => {
                "process group per pod (no PID namespace available: PID 1 semantics NOT reproduced)"
            }
        }
    }
}

pub struct PodTemplate {
    pub app: App,
    pub revision: u32,
    pub entrypoint: Entrypoint,
    pub readiness: Probe,
    pub bin_dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub isolation: Isolation,
}

pub struct Pod {
    pub name: String,
    pub app: App,
    pub revision: u32,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    /// Host PID of the process that is PID 1 inside the pod.
    pid1: i32,
    /// Process-group isolation: SIGKILL the group, not just the leader.
    group_kill: bool,
    pub ready: AtomicBool,
    pub terminating: AtomicBool,
    pub exited: AtomicBool,
    exit_code: AtomicI32,
    exit_notify: tokio::sync::Notify,
}

impl Pod {
    /// Starts the pod's process and its exit watcher and readiness prober.
    pub async fn start(
        t: &PodTemplate,
        name: String,
        ip: Ipv4Addr,
        log_dir: &Path,
        rec: Arc<Recorder>,
    ) -> Result<Arc<Pod>> {
        let addr = SocketAddr::from((ip, t.app.port()));
        let log_path = log_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let bin = t.bin_dir.join(t.app.binary());
        let app_cmd = match t.entrypoint {
            // A typical entrypoint script: a list, so the shell cannot exec the app in
            // its own place; it stays PID 1 and forwards nothing.
            Entrypoint::Shell => vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                format!("{}; echo \"entrypoint: app exited with $?\"", bin.display()),
            ],
            // A real init as PID 1, the app its child (`docker run --init`, tini).
            Entrypoint::Init => {
                vec![t.bin_dir.join("zerodrop-init").display().to_string(), "--".to_string(), bin.display().to_string()]
            }
        };
        let mut cmd = match t.isolation {
            Isolation::PidNamespace { user_ns } => {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--kill-child"]);
                if user_ns {
                    c.args(["--user", "--map-root-user"]);
                }
                c.arg("--").args(&app_cmd);
                c
            }
            Isolation::ProcessGroup => {
                let mut c = Command::new(&app_cmd[0]);
                c.args(&app_cmd[1..]);
                c.process_group(0);
                c
            }
        };
        cmd.envs(t.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("ZD_LISTEN", addr.to_string())
            .env("ZD_POD", &name)
            .env("ZD_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // If the runner dies (Ctrl-C, a CI timeout, SIGKILL), its pods die with it.
        crate::sys::die_with_parent(cmd.as_std_mut());
        let mut child = cmd.spawn().with_context(|| format!("starting pod {name} ({})", bin.display()))?;
        let outer = child.id().map(|p| p as i32).context("pod exited at once")?;
        let pid1 = match t.isolation {
            Isolation::PidNamespace { .. } => {
                match find_ns_init(outer).await {
                    Some(pid) => pid,
                    None => {
                        // Most often the app exited at start and took its namespace with it:
                        // say how it ended and what it said, not how we looked for it.
                        let ended = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                            Ok(Ok(status)) => describe_exit(status),
                            _ => {
                                let _ = child.start_kill();
                                format!("still running, but no PID 1 was found in its namespace under unshare (pid {outer})")
                            }
                        };
                        anyhow::bail!(
                            "pod {name} did not start: {ended}; the last lines of its log ({}):\n{}",
                            log_path.display(),
                            log_tail(&log_path, LOG_TAIL_LINES)
                        );
                    }
                }
            }
            Isolation::ProcessGroup => outer,
        };
        let pod = Arc::new(Pod {
            name: name.clone(),
            app: t.app,
            revision: t.revision,
            addr,
            log_path,
            pid1,
            group_kill: t.isolation == Isolation::ProcessGroup,
            ready: AtomicBool::new(false),
            terminating: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            exit_code: AtomicI32::new(i32::MIN),
            exit_notify: tokio::sync::Notify::new(),
        });
        rec.event(&name, t.app.name(), PodEventKind::Created, format!("{addr}, host pid {pid1}"));

        let (p, r) = (pod.clone(), rec.clone());
        tokio::spawn(async move {
            let status = child.wait().await;
            let detail = match status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    p.exit_code.store(s.code().unwrap_or(128 + s.signal().unwrap_or(0)), Ordering::SeqCst);
                    describe_exit(s)
                }
                Err(e) => format!("wait failed: {e}"),
            };
            p.exited.store(true, Ordering::SeqCst);
            p.ready.store(false, Ordering::SeqCst);
            r.event(&p.name, p.app.name(), PodEventKind::Exited, detail);
            p.exit_notify.notify_waiters();
        });
        tokio::spawn(prober(pod.clone(), t.readiness, rec));
        Ok(pod)
    }

    /// A pod with no process behind it, for testing controller logic.
    #[cfg(test)]
    pub fn fake(name: &str, revision: u32, ready: bool) -> Arc<Pod> {
        Self::fake_at(name, revision, ready, "127.0.0.1:1")
    }

    /// [`Pod::fake`] listening (nominally) on `addr`.
    #[cfg(test)]
    pub fn fake_at(name: &str, revision: u32, ready: bool, addr: &str) -> Arc<Pod> {
        Arc::new(Pod {
            name: name.into(),
            app: App::Api,
            revision,
            addr: addr.parse().expect("a socket address"),
            log_path: PathBuf::new(),
            pid1: 0,
            group_kill: false,
            ready: AtomicBool::new(ready),
            terminating: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            exit_code: AtomicI32::new(i32::MIN),
            exit_notify: tokio::sync::Notify::new(),
        })
    }

    /// Signals the pod's PID 1 (in process-group mode, SIGKILL goes to the whole
    /// group so no orphan survives). An exited pod is never signalled: its PID may
    /// already belong to someone else.
    pub fn signal(&self, sig: i32) {
        if self.pid1 <= 0 || self.exited.load(Ordering::SeqCst) {
            return;
        }
        // A process we spawned and have not seen exit.
        let _ = if self.group_kill && sig == libc::SIGKILL {
            crate::sys::kill_group(self.pid1, sig)
        } else {
            crate::sys::kill(self.pid1, sig)
        };
    }

    pub fn exit_code(&self) -> Option<i32> {
        let c = self.exit_code.load(Ordering::SeqCst);
        (c != i32::MIN).then_some(c)
    }

    /// Waits for the process to exit, up to `limit`. True if it exited.
    pub async fn wait_exit(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.exit_notify.notified();
            if self.exited.load(Ordering::SeqCst) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }

    /// SIGKILL: in a PID namespace this ends every process in it.
    pub async fn kill_now(&self) {
        if !self.exited.load(Ordering::SeqCst) {
            self.signal(libc::SIGKILL);
            self.wait_exit(Duration::from_secs(5)).await;
        }
    }
}

/// The child of `unshare` that is PID 1 of the new namespace (its `NSpid` line ends
/// in 1): the process the kubelet's signals must reach.
/// How many lines of a failed pod's log an error quotes.
pub const LOG_TAIL_LINES: usize = 10;

/// `exit code N` or `killed by signal N`.
fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match s.code() {
        Some(code) => format!("exit code {code}"),
        None => format!("killed by signal {}", s.signal().unwrap_or(0)),
    }
}

/// The last `n` lines of a pod's log, for an error that says why the pod failed (the
/// app's own message is there, e.g. `ZD_CAPACITY must be a positive integer`).
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(n)..].join("\n");
            if tail.is_empty() {
                "(the log is empty)".to_string()
            } else {
                tail
            }
        }
        Err(e) => format!("(could not read it: {e})"),
    }
}

async fn find_ns_init(pid: i32) -> Option<i32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    for _ in 0..400 {
        if let Ok(s) = std::fs::read_to_string(&path) {
            for c in s.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                let status = std::fs::read_to_string(format!("/proc/{c}/status")).unwrap_or_default();
                let ns_init =
                    status.lines().find_map(|l| l.strip_prefix("NSpid:")).and_then(|ids| ids.split_whitespace().last())
                        == Some("1");
                if ns_init {
                    return Some(c);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Runs the readiness probe until the pod exits; flips `ready` after
/// `success_threshold` successes or `failure_threshold` failures in a row.
async fn prober(pod: Arc<Pod>, probe: Probe, rec: Arc<Recorder>) {
    let (mut ok_run, mut fail_run) = (0u32, 0u32);
    let mut tick = tokio::time::interval(probe.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !pod.exited.load(Ordering::SeqCst) {
        tick.tick().await;
        let ok = probe::http_ok(pod.addr, "/readyz", probe.timeout).await;
        if pod.exited.load(Ordering::SeqCst) {
            break;
        }
        if ok {
            ok_run += 1;
            fail_run = 0;
        } else {
            fail_run += 1;
            ok_run = 0;
        }
        let ready = pod.ready.load(Ordering::SeqCst);
        if !ready && ok_run >= probe.success_threshold {
            pod.ready.store(true, Ordering::SeqCst);
            rec.event(&pod.name, pod.app.name(), PodEventKind::Ready, "readiness probe passed");
        } else if ready && fail_run >= probe.failure_threshold {
            pod.ready.store(false, Ordering::SeqCst);
            rec.event(&pod.name, pod.app.name(), PodEventKind::Unready, "readiness probe failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel rule the first stage rests on: PID 1 of a namespace that installed
    /// no handler does not die of SIGTERM from outside; SIGKILL still ends it.
    #[tokio::test]
    async fn pid1_without_a_handler_ignores_sigterm_but_not_sigkill() {
        let Isolation::PidNamespace { .. } = Isolation::detect() else {
            eprintln!("no PID namespaces here; nothing to check");
            return;
        };
        let mut child = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--", "/bin/sh", "-c", "sleep 30; echo done"])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid1 = find_ns_init(child.id().unwrap() as i32).await.expect("namespace init");
        crate::sys::kill(pid1, libc::SIGTERM).unwrap();
        let still_running = tokio::time::timeout(Duration::from_millis(700), child.wait()).await.is_err();
        assert!(still_running, "SIGTERM killed a handler-less PID 1");
        crate::sys::kill(pid1, libc::SIGKILL).unwrap();
        let status =
            tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("SIGKILL must end it").unwrap();
        assert!(!status.success());
    }
}
