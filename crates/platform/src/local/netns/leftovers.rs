//! The lab's last check: when a run ends, nothing it started may still be running, and
//! nothing may be left in its network namespace. An anonymous namespace (`unshare --net`)
//! lives exactly as long as something holds it: a process in it, an open
//! `/proc/<pid>/ns/net`, a socket created in it. A process left in it (an `epmd -daemon`,
//! a pod that missed its signal, a tool someone ran there with `cargo xtask client`)
//! keeps the lab's addresses and nftables rules alive on the machine for good. So the
//! runner inside the lab sweeps it when the lab is released, and the parent outside
//! sweeps it again once that runner has exited (covering a runner that crashed, and
//! commands that end without `Lab::release`); each says what it had to kill and why.
//!
//! Processes are found by the namespace's identity (device and inode of its nsfs file)
//! and signalled through a pidfd, after checking through /proc that the pid is still
//! the same process in the same namespace, so a recycled pid is never hit.

use crate::sys::{kill, pidfd_open, pidfd_send_signal};
use std::fs;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A network namespace, by its nsfs file's device and inode (what `net:[inode]` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetNs {
    dev: u64,
    ino: u64,
}

impl NetNs {
    /// The namespace of `pid`, or None when it is gone (or a zombie: an exited process
    /// has left its namespaces).
    pub fn of_pid(pid: u32) -> Option<NetNs> {
        NetNs::at(Path::new(&format!("/proc/{pid}/ns/net")))
    }

    /// Our own namespace.
    pub fn own() -> Option<NetNs> {
        NetNs::at(Path::new("/proc/self/ns/net"))
    }

    fn at(path: &Path) -> Option<NetNs> {
        fs::metadata(path).ok().map(|m| NetNs { dev: m.dev(), ino: m.ino() })
    }

    /// The namespace of an open nsfs file (see [`Pin`]).
    fn of_file(f: &fs::File) -> io::Result<NetNs> {
        let m = f.metadata()?;
        Ok(NetNs { dev: m.dev(), ino: m.ino() })
    }

    pub fn inode(&self) -> u64 {
        self.ino
    }
}

/// An open handle on a namespace: while it is held the namespace exists, so its inode
/// cannot be handed to a new namespace (another run's lab) that a sweep would then hit.
pub struct Pin {
    _file: fs::File,
    pub ns: NetNs,
}

impl Pin {
    /// Pins the network namespace `pid` is in now.
    pub fn of_pid(pid: u32) -> io::Result<Pin> {
        let file = fs::File::open(format!("/proc/{pid}/ns/net"))?;
        let ns = NetNs::of_file(&file)?;
        Ok(Pin { _file: file, ns })
    }
}

/// A process found in the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    pub cmdline: String,
    /// Clock ticks after boot (field 22 of /proc/<pid>/stat): with the pid, names one
    /// process for good.
    starttime: u64,
}

/// What one process's /proc/<pid>/stat says: (ppid, comm, state, starttime).
fn parse_stat(stat: &str) -> Option<(i32, String, char, u64)> {
    // "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state), so field n is rest[n - 3].
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let starttime = rest.get(19)?.parse().ok()?;
    Some((ppid, comm, state, starttime))
}

fn read_proc(pid: i32) -> Option<Found> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (ppid, comm, state, starttime) = parse_stat(&stat)?;
    if state == 'Z' || state == 'X' {
        return None;
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
    Some(Found { pid, ppid, comm, cmdline, starttime })
}

/// Live processes in `ns`, except the pids in `except`.
pub fn members(ns: NetNs, except: &[i32]) -> Vec<Found> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if except.contains(&pid) || NetNs::of_pid(pid as u32) != Some(ns) {
            continue;
        }
        if let Some(p) = read_proc(pid) {
            out.push(p);
        }
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// Whether `p` descends from `ancestor` (by the parent links as they are now).
fn descends_from(p: &Found, ancestor: i32) -> bool {
    let mut ppid = p.ppid;
    for _ in 0..64 {
        if ppid == ancestor {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        match fs::read_to_string(format!("/proc/{ppid}/stat")).ok().as_deref().and_then(parse_stat) {
            Some((next, ..)) => ppid = next,
            None => return false,
        }
    }
    false
}

/// One process the sweep had to kill.
#[derive(Debug, Clone)]
pub struct Killed {
    pub pid: i32,
    pub comm: String,
    pub cmdline: String,
    pub signal: &'static str,
    /// Whether the runner started it (a descendant of the runner when it was signalled);
    /// None once the runner has exited, when its orphans can no longer be told apart.
    pub ours: Option<bool>,
}

/// How long processes get after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Waits up to `grace` for every process in `ns` (but `except`) to exit on its own, then
/// SIGTERMs what is left, then SIGKILLs what is still there after a short while. Returns
/// what had to be signalled, and what survived even SIGKILL (which should never happen:
/// the caller reports it). `runner` is the process whose descendants count as "ours",
/// when it is still alive.
pub fn sweep(ns: NetNs, except: &[i32], runner: Option<i32>, grace: Duration) -> (Vec<Killed>, Vec<Found>) {
    let deadline = Instant::now() + grace;
    let mut left = members(ns, except);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = members(ns, except);
    }
    let mut killed: Vec<Killed> = Vec::new();
    for (sig, name, wait) in
        [(libc::SIGTERM, "SIGTERM", TERM_GRACE), (libc::SIGKILL, "SIGKILL", Duration::from_secs(2))]
    {
        if left.is_empty() {
            break;
        }
        for p in &left {
            let ours = runner.map(|r| descends_from(p, r));
            if signal_if_same(p, ns, sig) {
                match killed.iter_mut().find(|k| k.pid == p.pid) {
                    Some(k) => k.signal = name,
                    None => killed.push(Killed {
                        pid: p.pid,
                        comm: p.comm.clone(),
                        cmdline: p.cmdline.clone(),
                        signal: name,
                        ours,
                    }),
                }
            }
        }
        let until = Instant::now() + wait;
        loop {
            left = members(ns, except);
            if left.is_empty() || Instant::now() > until {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    (killed, left)
}

/// Prints (and logs) what a sweep did: nothing when it killed nothing, else one line per
/// process with the signal and why. `when` says at which point of the run it happened.
pub fn report(who: &str, when: &str, ns: NetNs, killed: &[Killed], survivors: &[Found]) {
    for k in killed {
        let why = match k.ours {
            Some(true) => format!("started by this run and still running {when}"),
            Some(false) => format!(
                "still in the lab {when}, outside this run's process tree (daemonised, or entered with nsenter / \
                 `cargo xtask client`)"
            ),
            None => format!(
                "left in the lab {when} (orphaned by the runner, or entered with nsenter / `cargo xtask client`)"
            ),
        };
        tracing::warn!(
            pid = k.pid,
            comm = %k.comm,
            signal = k.signal,
            ours = ?k.ours,
            netns = ns.ino,
            "killed a leftover in the lab"
        );
        eprintln!(
            "[{who}] killed {} (pid {}, `{}`) with {}: {why}; it would keep the lab's network namespace \
             (net:[{}]) with its addresses and nftables rules alive",
            k.comm,
            k.pid,
            shorten(&k.cmdline),
            k.signal,
            ns.ino
        );
    }
    for s in survivors {
        tracing::error!(pid = s.pid, comm = %s.comm, netns = ns.ino, "a leftover in the lab survived SIGKILL");
        eprintln!(
            "[{who}] warning: {} (pid {}, `{}`) is still in the lab's network namespace (net:[{}]) after SIGKILL",
            s.comm,
            s.pid,
            shorten(&s.cmdline),
            ns.ino
        );
    }
}

fn shorten(cmdline: &str) -> String {
    const MAX: usize = 120;
    match cmdline.char_indices().nth(MAX) {
        Some((i, _)) => format!("{} ...", &cmdline[..i]),
        None => cmdline.to_string(),
    }
}

/// Sends `sig` to `p` if the pid still names that very process, still in `ns`.
fn signal_if_same(p: &Found, ns: NetNs, sig: libc::c_int) -> bool {
    let same =
        || read_proc(p.pid).is_some_and(|now| now.starttime == p.starttime) && NetNs::of_pid(p.pid as u32) == Some(ns);
    match pidfd_open(p.pid) {
        // The pidfd pins the process that has the pid now; if that is still ours after
        // opening it, the signal cannot reach anyone else.
        Ok(fd) => same() && pidfd_send_signal(fd_ref(&fd), sig).is_ok(),
        // Kernels before 5.3: a plain kill right after the same check.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => same() && kill(p.pid, sig).is_ok(),
        Err(_) => false, // gone
    }
}

fn fd_ref(fd: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    #[test]
    fn stat_lines_parse_even_with_odd_names() {
        let line = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some((17, "a (b) c".to_string(), 'S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
        let own = fs::read_to_string("/proc/self/stat").unwrap();
        let (ppid, ..) = parse_stat(&own).unwrap();
        assert_eq!(ppid as u32, std::os::unix::process::parent_id());
    }

    #[test]
    fn a_pidfd_signals_the_process_it_was_opened_on_and_a_gone_pid_has_none() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let fd = pidfd_open(child.id() as i32).expect("pidfd_open (Linux 5.3+)");
        pidfd_send_signal(fd_ref(&fd), libc::SIGKILL).unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        // The reaped process: signals through the old pidfd fail instead of hitting a new one.
        let err = pidfd_send_signal(fd_ref(&fd), libc::SIGKILL).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "{err}");
        assert_eq!(pidfd_open(child.id() as i32).unwrap_err().raw_os_error(), Some(libc::ESRCH));
    }

    #[test]
    fn our_own_namespace_is_seen_and_holds_us() {
        let ns = NetNs::own().unwrap();
        assert_eq!(NetNs::of_pid(std::process::id()), Some(ns));
        assert_eq!(Pin::of_pid(std::process::id()).unwrap().ns, ns);
        let me = std::process::id() as i32;
        assert!(members(ns, &[]).iter().any(|p| p.pid == me));
        assert!(!members(ns, &[me]).iter().any(|p| p.pid == me));
    }

    /// A namespace of its own with a process that stays (a daemon, as `epmd -daemon` is:
    /// its parent has exited) and one that ignores SIGTERM: the sweep kills both, says
    /// which signal it took, and the namespace is left empty (so it is freed once the
    /// pin is dropped). Needs `unshare --net`, as the lab does: root here.
    #[test]
    fn a_sweep_empties_a_namespace_of_daemons_and_stubborn_processes() {
        if !crate::local::netns::is_root() {
            eprintln!("skipped: creating a network namespace needs root here");
            return;
        }
        // The subshell exits at once, so its `sleep` is orphaned (reparented away from
        // us) as a daemon is.
        let script = "( setsid sleep 300 </dev/null >/dev/null 2>&1 & ) ; \
                      sh -c 'trap \"\" TERM; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 & \
                      echo ready; exec sleep 300";
        let mut holder = Command::new("unshare")
            .args(["--net", "--", "/bin/sh", "-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = [0u8; 6];
        holder.stdout.as_mut().unwrap().read_exact(&mut line).unwrap();
        let pin = Pin::of_pid(holder.id()).unwrap();
        assert_ne!(Some(pin.ns), NetNs::own(), "unshare --net made no namespace");
        let mut inside = Vec::new();
        let t = Instant::now();
        while inside.len() < 3 && t.elapsed() < Duration::from_secs(5) {
            inside = members(pin.ns, &[]);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(inside.len() >= 3, "the daemon, the stubborn one and the holder: {inside:?}");

        let me = std::process::id() as i32;
        let (killed, survivors) = sweep(pin.ns, &[], Some(me), Duration::from_millis(300));
        let _ = holder.wait();
        assert!(survivors.is_empty(), "{survivors:?}");
        assert!(members(pin.ns, &[]).is_empty(), "left: {:?}", members(pin.ns, &[]));
        let holder_pid = holder.id() as i32;
        let by_pid = |pid: i32| killed.iter().find(|k| k.pid == pid);
        let holder_kill = by_pid(holder_pid).expect("the holder was killed");
        assert!(holder_kill.ours == Some(true) && holder_kill.signal == "SIGTERM", "{holder_kill:?}");
        let stubborn = killed.iter().find(|k| k.cmdline.contains("trap")).expect("the stubborn one was killed");
        assert_eq!(stubborn.signal, "SIGKILL", "{stubborn:?}");
        let daemon =
            killed.iter().find(|k| k.cmdline == "sleep 300" && k.pid != holder_pid).expect("the daemon was killed");
        assert!(daemon.ours == Some(false) && daemon.signal == "SIGTERM", "{daemon:?}");
        report("test", "at the end of the test", pin.ns, &killed, &survivors);
    }
}
