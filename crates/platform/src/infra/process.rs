//! Process plumbing for private servers: finding binaries, spawning in an own process group
//! (optionally as another user), stopping gracefully then by force, and the temp dir.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// An executable file named `name` in one of the directories of `path` (a PATH value).
pub(super) fn which(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

pub(super) fn is_executable(p: &Path) -> bool {
    fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

pub(super) use crate::uid::is_root as euid_is_root;

/// An unprivileged account to run a server as.
#[derive(Debug, Clone)]
pub(super) struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

pub(super) fn lookup_user(name: &str) -> Option<RunAs> {
    let (name, uid, gid) = crate::sys::user_by_name(name)?;
    Some(RunAs { name, uid, gid })
}

pub(super) fn chown(path: &Path, user: &RunAs) -> Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown {} to {}", path.display(), user.name))
}

/// Whether `user` (with only its primary group, which is what a spawn with `uid`/`gid`
/// gives it) can reach `path`: every ancestor directory must be searchable.
pub(super) fn reachable_by(path: &Path, user: &RunAs) -> bool {
    let mut cur = Some(path);
    while let Some(p) = cur {
        let Ok(m) = fs::metadata(p) else { return false };
        let mode = m.mode();
        let bit = if m.uid() == user.uid {
            0o100
        } else if m.gid() == user.gid {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return false;
        }
        cur = p.parent();
    }
    true
}

/// A directory this module created and will delete.
pub(super) struct TempDir {
    path: PathBuf,
    removed: bool,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl TempDir {
    /// A fresh `infra-<pid>-<seq>-<random>` directory under `parent` (created if needed).
    pub fn create_under(parent: &Path) -> Result<TempDir> {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let parent = parent.canonicalize().with_context(|| format!("resolving {}", parent.display()))?;
        for _ in 0..16 {
            let name = format!(
                "infra-{}-{}-{:08x}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed),
                rand::random::<u32>()
            );
            let path = parent.join(name);
            match fs::create_dir(&path) {
                Ok(()) => {
                    // Independent of the umask: servers running as another user must traverse it.
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .with_context(|| format!("chmod {}", path.display()))?;
                    return Ok(TempDir { path, removed: false });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        bail!("could not create a fresh directory under {}", parent.display())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        remove_dir_retrying(&self.path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.removed {
            self.removed = true;
            if let Err(e) = remove_dir_retrying(&self.path) {
                eprintln!("[infra] {e:#}");
            }
        }
    }
}

fn remove_dir_retrying(path: &Path) -> Result<()> {
    let mut last = None;
    for _ in 0..10 {
        match fs::remove_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // A server that just died may still be flushing a file; try again shortly.
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last.expect("set in the loop")).with_context(|| format!("removing {}", path.display()))
}

/// Opens (creating) a log file that a child writes its stdout+stderr to.
pub(super) fn log_file(path: &Path) -> Result<File> {
    fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("creating {}", path.display()))
}

/// The environment variable that marks every process of a private server (it is inherited
/// by descendants, even those that leave the process group, e.g. via `su` or `setsid`).
pub(super) const TAG_VAR: &str = "ZERODROP_INFRA_TAG";

/// Prepares `cmd` for a server child: no stdin, output to `log`, own process group, tagged
/// with `tag` (see [`TAG_VAR`]), optionally another user.
pub(super) fn prepare(cmd: &mut Command, log: &Path, run_as: Option<&RunAs>, tag: &str) -> Result<()> {
    let out = log_file(log)?;
    let err = out.try_clone().context("duplicating a log file handle")?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0).env(TAG_VAR, tag);
    if let Some(u) = run_as {
        // std drops supplementary groups (setgroups(0)) when switching uid as root.
        cmd.uid(u.uid).gid(u.gid);
    }
    Ok(())
}

/// Runs a short-lived preparation command (e.g. `initdb`) to completion, bounded.
pub(super) async fn run_bounded(mut cmd: Command, what: &str, log: &Path, bound: Duration) -> Result<()> {
    let mut child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            bail!("{what} failed ({status})\n{}", super::tail(log, 30));
        }
        if Instant::now() > deadline {
            // The group is the child's own (process_group(0)).
            let _ = crate::sys::kill_group(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
            bail!("{what} did not finish within {}\n{}", super::secs(bound), super::tail(log, 30));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running private server: the leader of its own process group.
pub(super) struct ServerProc {
    label: &'static str,
    child: Child,
    pgid: i32,
    /// The signal that asks the leader for a graceful shutdown.
    graceful: libc::c_int,
    logs: Vec<PathBuf>,
    tag: String,
    signalled: bool,
    /// The leader had already exited when we came to stop it (a crash, a failed start).
    died_early: bool,
    finished: bool,
}

impl ServerProc {
    /// Spawns `cmd`, which must have been [`prepare`]d with the same `tag`.
    pub fn spawn(
        label: &'static str,
        cmd: &mut Command,
        graceful: libc::c_int,
        logs: Vec<PathBuf>,
        tag: &str,
    ) -> Result<Self> {
        let child = cmd.spawn().with_context(|| format!("spawning {label} ({:?})", cmd.get_program()))?;
        let pgid = child.id() as i32;
        Ok(ServerProc {
            label,
            child,
            pgid,
            graceful,
            logs,
            tag: tag.to_string(),
            signalled: false,
            died_early: false,
            finished: false,
        })
    }

    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// The exit status if the leader has already exited (e.g. failed during startup).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The tails of this server's logs, for error messages.
    pub fn log_tails(&self, lines: usize) -> String {
        self.logs.iter().map(|p| super::tail(p, lines)).collect::<Vec<_>>().join("\n")
    }

    /// Sends the graceful-shutdown signal to the leader (once).
    pub fn begin_stop(&mut self) {
        if self.signalled || self.finished {
            return;
        }
        self.signalled = true;
        if self.exited().is_some() {
            self.died_early = true;
        } else {
            // Our own (unreaped) child, so the pid is still ours.
            let _ = crate::sys::kill(self.child.id() as i32, self.graceful);
        }
    }

    /// Waits up to `grace` for the leader to exit, then SIGKILLs the whole group; finally
    /// makes sure nothing is left: neither in the group nor carrying our tag (PostgreSQL
    /// backends and Erlang's erl_child_setup/inet_gethost call setsid, so they leave the
    /// group; they normally exit with their parent, and are killed if they do not).
    pub fn finish_stop(&mut self, grace: Duration) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.begin_stop();
        self.finished = true;
        let mut status = wait_child(&mut self.child, grace);
        if status.is_none() {
            eprintln!("[infra] {} did not stop within {}; sending SIGKILL", self.label, super::secs(grace));
            killpg(self.pgid, libc::SIGKILL);
            status = wait_child(&mut self.child, Duration::from_secs(5));
            if status.is_none() {
                bail!("{} (pid {}) survived SIGKILL", self.label, self.pgid);
            }
        } else if let Some(s) = status.filter(|s| !s.success() && s.signal() != Some(self.graceful) && !self.died_early)
        {
            // Dying of the graceful signal itself is a clean stop for a server without a
            // handler for it (epmd).
            eprintln!("[infra] {} exited with {s} on shutdown", self.label);
        }
        // Leftovers (in the group, or tagged but escaped from it): give them a moment to
        // follow their parent, then kill them.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left = self.leftovers();
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                killpg(self.pgid, libc::SIGKILL);
                for (pid, _) in &left {
                    // The pid was just read as one of ours.
                    let _ = crate::sys::kill(*pid, libc::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(500));
                let still = self.leftovers();
                if !still.is_empty() {
                    bail!("{}: processes left behind after SIGKILL: {still:?}", self.label);
                }
                let what: Vec<String> = left.iter().map(|(pid, comm)| format!("{comm} (pid {pid})")).collect();
                tracing::warn!(server = self.label, leftovers = ?left, "killed processes left behind");
                eprintln!(
                    "[infra] {}: killed {} with SIGKILL: still alive 3 s after the server's main process \
                     had exited (started by it, in its process group or carrying its tag)",
                    self.label,
                    what.join(", ")
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn leftovers(&self) -> Vec<(i32, String)> {
        let mut left = live_group_members(self.pgid);
        for p in tagged_processes(&self.tag) {
            if !left.contains(&p) {
                left.push(p);
            }
        }
        left
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if !self.finished {
            self.begin_stop();
            if let Err(e) = self.finish_stop(Duration::from_secs(5)) {
                eprintln!("[infra] {e:#}");
            }
        }
    }
}

fn wait_child(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn killpg(pgid: i32, sig: libc::c_int) {
    // pgid is a group we created; sys::kill_group refuses 0 and 1 (ours / all).
    let _ = crate::sys::kill_group(pgid, sig);
}

/// Non-zombie processes in process group `pgid`, as `(pid, comm)`.
pub(super) fn live_group_members(pgid: i32) -> Vec<(i32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        // No /proc: fall back to "does the group exist" (zombies count as alive here).
        let alive = crate::sys::group_exists(pgid);
        return if alive { vec![(pgid, "?".into())] } else { vec![] };
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().unwrap_or("");
        let _ppid = rest.next();
        let pgrp = rest.next().and_then(|s| s.parse::<i32>().ok());
        if pgrp == Some(pgid) && state != "Z" && state != "X" {
            out.push((pid, comm.to_string()));
        }
    }
    out
}

/// Live processes carrying `TAG_VAR=tag`. An `epmd` among them is ours too: RabbitMQ's
/// node runs its own epmd (rabbitmq.rs, tagged apart), so one carrying the node's tag is a
/// `-daemon` the node started against our settings, which nobody else uses and which would
/// otherwise outlive the run (and keep a lab's network namespace alive).
pub(super) fn tagged_processes(tag: &str) -> Vec<(i32, String)> {
    let needle = format!("{TAG_VAR}={tag}\0").into_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![];
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = fs::read(e.path().join("environ")) else {
            continue;
        };
        if !env.windows(needle.len()).any(|w| w == needle.as_slice()) {
            continue;
        }
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
        if state != "Z" && state != "X" {
            out.push((pid, comm));
        }
    }
    out
}
