//! The init against the kernel's real PID-1 rule, with real processes and signals:
//! PID 1 of a PID namespace gets only the signals it handles, so SIGTERM to an app
//! that is PID 1 without a handler is dropped, while the same app under the init
//! dies of it at once.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INIT: &str = env!("CARGO_BIN_EXE_zerodrop-init");

/// `unshare --pid --fork --kill-child CMD`: CMD is PID 1 of a new PID namespace.
fn in_pid_namespace(cmd: &[&str]) -> Child {
    let mut args = vec!["--pid", "--fork", "--kill-child"];
    if unsafe { libc::geteuid() } != 0 {
        args.extend(["--user", "--map-root-user"]);
    }
    Command::new("unshare")
        .args(&args)
        .arg("--")
        .args(cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) must be installed and PID namespaces allowed")
}

/// Host PID of PID 1 inside the namespace that `unshare` (pid `outer`) created.
fn ns_init(outer: u32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let children = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no child of unshare {outer} appeared");
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn sigterm(pid: i32) {
    // Give the exec a moment, so the signal meets the final program.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

#[test]
fn a_pid_1_without_a_handler_drops_sigterm() {
    let mut child = in_pid_namespace(&["sleep", "30"]);
    sigterm(ns_init(child.id()));
    assert!(wait_exit(&mut child, Duration::from_secs(2)).is_none(), "PID 1 without a handler must ignore SIGTERM");
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn under_the_init_sigterm_reaches_the_app_and_its_status_comes_back() {
    let mut child = in_pid_namespace(&[INIT, "--", "sleep", "30"]);
    let started = Instant::now();
    sigterm(ns_init(child.id()));
    let status = wait_exit(&mut child, Duration::from_secs(5)).expect("the app must die of the forwarded SIGTERM");
    assert!(started.elapsed() < Duration::from_secs(5));
    // unshare passes on the init's status: 128 + SIGTERM.
    assert_eq!(status.code().or(status.signal().map(|s| 128 + s)), Some(143), "{status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains(r#""step":"signal_forwarded","signal":"SIGTERM""#), "{log}");
    assert!(log.contains(r#""step":"app_exited","killed_by":"SIGTERM""#), "{log}");
}

#[test]
fn the_apps_exit_code_is_the_inits() {
    let status = Command::new(INIT).args(["--", "sh", "-c", "exit 7"]).stderr(Stdio::null()).status().unwrap();
    assert_eq!(status.code(), Some(7));
    let status = Command::new(INIT).args(["--", "/nonexistent/app"]).stderr(Stdio::null()).status().unwrap();
    assert_eq!(status.code(), Some(127), "exec failure is 127, as in a shell");
    let status = Command::new(INIT).stderr(Stdio::null()).status().unwrap();
    assert_eq!(status.code(), Some(64), "usage error");
}
