//! The system calls the platform makes that std does not wrap, each behind a small safe
//! function over rustix (the user database over nix), and each tested on a real process
//! below. Signal numbers and pids arrive as the `i32`s callers hold (`libc::SIGTERM`,
//! `Child::id() as i32`) and are converted with a check: a number that names no signal,
//! or a pid that names no single process or group of ours, is EINVAL, never a panic and
//! never a wider target (`kill(0)`, `kill(-1)`).
//!
//! `unsafe` is left in two places, each with its SAFETY note: `Command::pre_exec`, unsafe
//! by design (its closure runs in the forked child before exec), one function per use;
//! and taking ownership of the descriptor a parent passed across exec by number, which
//! no safe API can do ([`inherited_pipe`] checks it first).

use rustix::process::{Pid, Signal};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

fn invalid() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// The signal numbered `sig`; EINVAL (what kill(2) answers) for a number that names none.
pub(crate) fn signal(sig: i32) -> io::Result<Signal> {
    Signal::from_named_raw(sig).ok_or_else(invalid)
}

/// `pid` as one process: positive (0 and negative numbers name groups to kill(2)).
fn process(pid: i32) -> io::Result<Pid> {
    if pid > 0 {
        Pid::from_raw(pid).ok_or_else(invalid)
    } else {
        Err(invalid())
    }
}

/// `pgid` as a process group of a child: above 1 (killpg(0) is our own group, killpg(1)
/// every process we may signal).
fn group(pgid: i32) -> io::Result<Pid> {
    if pgid > 1 {
        process(pgid)
    } else {
        Err(invalid())
    }
}

/// kill(2): sends `sig` to process `pid`. ESRCH when it is gone.
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    Ok(rustix::process::kill_process(process(pid)?, signal(sig)?)?)
}

/// killpg(2): sends `sig` to every process in group `pgid`. ESRCH when it is empty.
pub(crate) fn kill_group(pgid: i32, sig: i32) -> io::Result<()> {
    Ok(rustix::process::kill_process_group(group(pgid)?, signal(sig)?)?)
}

/// killpg(pgid, 0) succeeds: the group has a member (a zombie counts).
pub(crate) fn group_exists(pgid: i32) -> bool {
    group(pgid).is_ok_and(|g| rustix::process::test_kill_process_group(g).is_ok())
}

/// pidfd_open(2): a descriptor that refers to process `pid` for as long as it is open.
/// ENOSYS before Linux 5.3, ESRCH when the process is gone.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    Ok(rustix::process::pidfd_open(process(pid)?, rustix::process::PidfdFlags::empty())?)
}

/// pidfd_send_signal(2) with no siginfo (as kill(2) would send it) and no flags.
pub(crate) fn pidfd_send_signal(fd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    Ok(rustix::process::pidfd_send_signal(fd, signal(sig)?)?)
}

/// pipe2(O_CLOEXEC): (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// setns(fd, CLONE_NEWNET): moves the calling thread (only it) into the network
/// namespace `ns` (an open `/proc/<pid>/ns/net`). EPERM without CAP_SYS_ADMIN, EINVAL for
/// a file that is no network namespace.
pub(crate) fn enter_net_ns(ns: &std::fs::File) -> io::Result<()> {
    Ok(rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))?)
}

/// An account in the user database (getpwnam_r): (name, uid, primary gid). None when
/// there is none by that name, or the lookup failed.
pub(crate) fn user_by_name(name: &str) -> Option<(String, u32, u32)> {
    let u = nix::unistd::User::from_name(name).ok().flatten()?;
    Some((u.name, u.uid.as_raw(), u.gid.as_raw()))
}

/// The child started by `cmd` gets SIGKILL when the thread that spawned it exits
/// (prctl(PR_SET_PDEATHSIG)): if the runner dies, its children die with it.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec. It makes one raw
    // system call (rustix, no libc state, no allocation: an error becomes an
    // `io::Error` from its number) and touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| Ok(rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?));
    }
}

/// [`die_with_parent`], and the child inherits `fd` (open across exec, under the same
/// number; it is `O_CLOEXEC` here like every descriptor we open, so no other child gets
/// it). `cmd` holds `fd` from now on: it is closed in this process when `cmd` is
/// dropped. Returns its number, to tell the child.
pub(crate) fn pass_fd_and_die_with_parent(cmd: &mut Command, fd: OwnedFd) -> RawFd {
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: as in `die_with_parent`: two raw system calls in the forked child, fcntl on
    // a descriptor the closure owns (so it is open at fork, under that number) and prctl.
    unsafe {
        cmd.pre_exec(move || {
            rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty())?;
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            Ok(())
        });
    }
    raw
}

/// Takes ownership of descriptor `fd`, a pipe end our parent passed us across exec
/// ([`pass_fd_and_die_with_parent`]) and named to us (in an environment variable).
/// Checked first, so it cannot take over a descriptor something in this process owns:
/// it must be open, a pipe, and not close-on-exec (every descriptor Rust's std, tokio and
/// rustix open is close-on-exec: one without the flag was inherited); and each number is
/// taken at most once per process. EBADF otherwise.
pub(crate) fn inherited_pipe(fd: RawFd) -> io::Result<OwnedFd> {
    use std::os::unix::fs::FileTypeExt;
    static TAKEN: std::sync::Mutex<Vec<RawFd>> = std::sync::Mutex::new(Vec::new());
    let bad = || io::Error::from_raw_os_error(libc::EBADF);
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    if fd < 0 || taken.contains(&fd) {
        return Err(bad());
    }
    // Both follow the descriptor, not a path: /proc/self/fd/N is the open file itself.
    let is_pipe = std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok_and(|m| m.file_type().is_fifo());
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
    let inherited = flags.is_some_and(|f| f & libc::O_CLOEXEC as u32 == 0);
    if !is_pipe || !inherited {
        return Err(bad());
    }
    taken.push(fd);
    // SAFETY: `fd` is open (checked just now) and owned by no one in this process: it is
    // not close-on-exec, which nothing here opens without (so it came across exec), and
    // this function hands each number out only once.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Stdio};
    use std::time::{Duration, Instant};

    fn sleeper() -> Child {
        Command::new("sleep").arg("30").spawn().expect("spawning sleep")
    }

    fn exited_within(child: &mut Child, bound: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    #[test]
    fn signal_numbers_are_checked_not_trusted() {
        assert_eq!(signal(libc::SIGTERM).unwrap().as_raw(), libc::SIGTERM);
        assert_eq!(signal(libc::SIGKILL).unwrap(), Signal::KILL);
        assert_eq!(signal(libc::SIGINT).unwrap(), Signal::INT);
        for bad in [0, -1, 1000, i32::MIN, i32::MAX] {
            assert_eq!(signal(bad).unwrap_err().raw_os_error(), Some(libc::EINVAL), "{bad}");
        }
        // Never our own group (0) nor every process (-1 / group 1).
        for pid in [0, -1, i32::MIN] {
            assert_eq!(kill(pid, libc::SIGTERM).unwrap_err().raw_os_error(), Some(libc::EINVAL), "{pid}");
        }
        for pgid in [0, 1, -5] {
            assert_eq!(kill_group(pgid, libc::SIGTERM).unwrap_err().raw_os_error(), Some(libc::EINVAL), "{pgid}");
            assert!(!group_exists(pgid), "{pgid}");
        }
    }

    #[test]
    fn kill_delivers_the_signal_to_a_real_child() {
        let mut child = sleeper();
        kill(child.id() as i32, libc::SIGTERM).unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
        // Not a signal: the child is left alone.
        let mut child = sleeper();
        assert!(kill(child.id() as i32, 0).is_err());
        assert!(exited_within(&mut child, Duration::from_millis(200)).is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn kill_group_reaches_every_member_of_a_real_group() {
        let mut leader = Command::new("/bin/sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = leader.stdout.take().unwrap();
        let mut b = [0u8; 1];
        while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
            line.push(b[0] as char);
        }
        let member: i32 = line.trim().parse().expect("the member's pid");
        let pgid = leader.id() as i32;
        assert!(group_exists(pgid));
        kill_group(pgid, libc::SIGKILL).unwrap();
        assert_eq!(leader.wait().unwrap().signal(), Some(libc::SIGKILL));
        // The member (not our child: we cannot wait for it) is gone or a zombie.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{member}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next().map(str::to_string)));
            if matches!(state.as_deref(), None | Some("Z") | Some("X")) {
                break;
            }
            assert!(Instant::now() < deadline, "the group's member survived SIGKILL: {state:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_pidfd_of_a_real_child_signals_it_and_outlives_it_harmlessly() {
        let mut child = sleeper();
        let fd = pidfd_open(child.id() as i32).expect("pidfd_open (Linux 5.3+)");
        pidfd_send_signal(fd.as_fd(), libc::SIGTERM).unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
        let err = pidfd_send_signal(fd.as_fd(), libc::SIGKILL).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "{err}");
        assert_eq!(pidfd_open(child.id() as i32).unwrap_err().raw_os_error(), Some(libc::ESRCH));
        assert_eq!(pidfd_open(0).unwrap_err().raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn only_an_inherited_pipe_is_taken_and_only_once() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        // Close-on-exec: opened here, so owned here.
        let (r, w) = pipe().unwrap();
        assert_eq!(inherited_pipe(r.as_raw_fd()).unwrap_err().raw_os_error(), Some(libc::EBADF));
        // Not a pipe, even without close-on-exec.
        let null = std::fs::File::open("/dev/null").unwrap();
        rustix::io::fcntl_setfd(&null, rustix::io::FdFlags::empty()).unwrap();
        assert!(inherited_pipe(null.as_raw_fd()).is_err());
        assert!(inherited_pipe(-1).is_err());
        // What an inherited end looks like: a pipe without close-on-exec, owned by no one
        // once its OwnedFd is given up.
        rustix::io::fcntl_setfd(&r, rustix::io::FdFlags::empty()).unwrap();
        let raw = r.into_raw_fd();
        let taken = inherited_pipe(raw).unwrap();
        assert!(inherited_pipe(raw).is_err(), "taken twice");
        std::fs::File::from(w).write_all(b"1").unwrap();
        let mut got = String::new();
        std::fs::File::from(taken).read_to_string(&mut got).unwrap();
        assert_eq!(got, "1");
        // Closed now: the number is free again, but never taken again.
        assert!(inherited_pipe(raw).is_err());
    }

    /// The lab's ready pipe end to end: this test binary, re-executed with the read end
    /// passed across exec, takes it and reads what we write.
    #[test]
    fn a_pipe_end_passed_across_exec_is_taken_by_the_new_program() {
        const VAR: &str = "ZERODROP_SYS_TEST_INHERITED_FD";
        const NAME: &str = "sys::tests::a_pipe_end_passed_across_exec_is_taken_by_the_new_program";
        if let Ok(fd) = std::env::var(VAR) {
            let mut got = String::new();
            std::fs::File::from(inherited_pipe(fd.parse().unwrap()).unwrap()).read_to_string(&mut got).unwrap();
            println!("child read {got:?}");
            return;
        }
        let (r, w) = pipe().unwrap();
        let mut c = Command::new(std::env::current_exe().unwrap());
        let fd = pass_fd_and_die_with_parent(&mut c, r);
        c.args(["--exact", NAME, "--nocapture", "--test-threads=1"]).env(VAR, fd.to_string());
        let child = c.stdout(Stdio::piped()).spawn().unwrap();
        drop(c);
        std::fs::File::from(w).write_all(b"1").unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("child read \"1\""), "{out:?}");
    }

    #[test]
    fn a_pipe_round_trips_and_is_close_on_exec() {
        let (r, w) = pipe().unwrap();
        for fd in [&r, &w] {
            assert!(rustix::io::fcntl_getfd(fd).unwrap().contains(rustix::io::FdFlags::CLOEXEC));
        }
        std::fs::File::from(w).write_all(b"ping").unwrap();
        let mut got = String::new();
        std::fs::File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "ping");
    }

    #[test]
    fn entering_our_own_network_namespace_works_for_root_only() {
        let root = crate::uid::is_root();
        std::thread::spawn(move || {
            let own = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
            match enter_net_ns(&own) {
                Ok(()) => assert!(root, "setns without CAP_SYS_ADMIN"),
                Err(e) => assert_eq!((root, e.raw_os_error()), (false, Some(libc::EPERM)), "{e}"),
            }
            // Another kind of namespace is refused, whoever we are.
            let uts = std::fs::File::open("/proc/thread-self/ns/uts").unwrap();
            let err = enter_net_ns(&uts).unwrap_err().raw_os_error();
            assert!(err == Some(libc::EINVAL) || (!root && err == Some(libc::EPERM)), "{err:?}");
            let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).unwrap();
            assert_eq!(ns("/proc/thread-self/ns/net"), ns("/proc/self/ns/net"));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_user_database_knows_root_and_not_a_made_up_name() {
        assert_eq!(user_by_name("root"), Some(("root".to_string(), 0, 0)));
        assert_eq!(user_by_name("zerodrop-no-such-user"), None);
        assert_eq!(user_by_name("ro\0ot"), None);
    }

    /// Spawns `cmd` from a thread that then exits: PR_SET_PDEATHSIG fires on the exit
    /// of the spawning thread, not only of the process.
    fn spawn_from_a_thread_that_exits(mut cmd: Command) -> Child {
        std::thread::spawn(move || cmd.spawn().expect("spawning")).join().unwrap()
    }

    #[test]
    fn a_child_that_dies_with_its_parent_runs_and_then_dies() {
        // Without it, the child outlives the spawning thread.
        let mut c = Command::new("sleep");
        c.arg("5");
        let mut plain = spawn_from_a_thread_that_exits(c);
        assert!(exited_within(&mut plain, Duration::from_millis(300)).is_none());
        plain.kill().unwrap();
        plain.wait().unwrap();

        // It runs (spawn succeeded past the pre_exec, the program is sleep) ...
        let mut c = Command::new("sleep");
        c.arg("5");
        die_with_parent(&mut c);
        let mut child = c.spawn().unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap();
        assert_eq!(comm.trim(), "sleep");
        assert!(exited_within(&mut child, Duration::from_millis(200)).is_none());
        child.kill().unwrap();
        child.wait().unwrap();
        // ... and gets SIGKILL once the thread that spawned it is gone.
        let mut c = Command::new("sleep");
        c.arg("5");
        die_with_parent(&mut c);
        let mut child = spawn_from_a_thread_that_exits(c);
        let status = exited_within(&mut child, Duration::from_secs(3)).expect("no SIGKILL on the parent's exit");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn a_passed_descriptor_reaches_the_child_and_the_child_dies_with_its_parent() {
        let (r, w) = pipe().unwrap();
        let mut c = Command::new("/bin/sh");
        let fd = pass_fd_and_die_with_parent(&mut c, r);
        c.args(["-c", &format!("head -c 5 <&{fd}")]).stdout(Stdio::piped());
        let child = c.spawn().unwrap();
        drop(c); // closes our copy of the read end
        std::fs::File::from(w).write_all(b"ready").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"ready");

        // Without the pre_exec the descriptor is closed in the child.
        let (r, _w) = pipe().unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&r);
        let out =
            Command::new("/bin/sh").args(["-c", &format!("head -c 1 <&{raw}")]).stderr(Stdio::null()).output().unwrap();
        assert!(!out.status.success());

        let (r, _w) = pipe().unwrap();
        let mut c = Command::new("sleep");
        c.arg("5");
        pass_fd_and_die_with_parent(&mut c, r);
        let mut child = spawn_from_a_thread_that_exits(c);
        let status = exited_within(&mut child, Duration::from_secs(3)).expect("no SIGKILL on the parent's exit");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
