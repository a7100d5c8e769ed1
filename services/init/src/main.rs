//! `zerodrop-init -- APP [ARGS...]`: the smallest init that makes PID 1 behave.
//!
//! As PID 1 of a PID namespace, a process receives only the signals it installed a
//! handler for; the kernel drops the rest, so an app that is PID 1 without a SIGTERM
//! handler never hears the kubelet. This init is PID 1 instead: it forwards every
//! termination signal to the app, which is an ordinary process again and so gets the
//! kernel's default action (SIGTERM kills it) unless it installs a handler. It also
//! reaps orphaned children, and exits with the app's status (128 + signal when the app
//! was killed), like tini or `docker run --init`.
//!
//! It logs one JSON line per forwarded signal and one when the app exits, in the
//! services' log shape (`fields.step`), so a report can prove what reached the app.

use std::ffi::CString;
use std::io::Write;
use std::process::ExitCode;

/// Signals an init passes on. SIGKILL and SIGSTOP cannot be caught; SIGCHLD is ours.
const FORWARDED: [libc::c_int; 6] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).skip_while(|a| a == "--").collect();
    if args.is_empty() {
        eprintln!("usage: zerodrop-init -- APP [ARGS...]");
        return ExitCode::from(64);
    }
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("zerodrop-init: {e}");
            ExitCode::from(70)
        }
    }
}

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write into the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn run(args: &[String]) -> Result<u8, String> {
    let argv: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| format!("argument {a:?} contains a NUL byte")))
        .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());

    let mut all = FORWARDED.to_vec();
    all.push(libc::SIGCHLD);
    let set = signal_set(&all);
    let mut old: libc::sigset_t = signal_set(&[]);
    // Block before fork so no signal slips in between; the child restores the mask,
    // and exec resets handlers, so the app starts with every default disposition.
    // SAFETY: plain libc calls; the child only calls async-signal-safe functions.
    let child = unsafe {
        if libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
            return Err(format!("sigprocmask: {}", std::io::Error::last_os_error()));
        }
        let pid = libc::fork();
        if pid == 0 {
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            libc::execvp(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
        pid
    };
    if child < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    log("init_started", &format!(r#""app":{:?},"app_pid":{child}"#, args[0]));
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: waits on the set blocked above.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child, sig) };
            log("signal_forwarded", &format!(r#""signal":"{}","app_pid":{child}"#, name(sig)));
            continue;
        }
        // Reap everything that exited: the app, and any orphan re-parented to us.
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: non-blocking wait for any child.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                let (code, how) = if libc::WIFSIGNALED(status) {
                    let s = libc::WTERMSIG(status);
                    (128 + s, format!(r#""killed_by":"{}""#, name(s)))
                } else {
                    let c = libc::WEXITSTATUS(status);
                    (c, format!(r#""exit_code":{c}"#))
                };
                log("app_exited", &how);
                return Ok(code.clamp(0, 255) as u8);
            }
        }
    }
}

fn name(sig: libc::c_int) -> String {
    match sig {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGUSR1 => "SIGUSR1".into(),
        libc::SIGUSR2 => "SIGUSR2".into(),
        libc::SIGKILL => "SIGKILL".into(),
        other => format!("signal {other}"),
    }
}

/// One line in the services' JSON log shape, on stderr (the pod log).
fn log(step: &str, fields: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let _ = std::io::stderr().write_all(line(step, fields, now).as_bytes());
}

/// The whole line, newline included, so that it reaches the log in one write(2): the
/// app writes to the same file at the same moments (its own SIGTERM lines), and
/// `eprintln!` writes each piece of its format separately, which tore both lines.
fn line(step: &str, fields: &str, now: std::time::Duration) -> String {
    let mut line = format!(
        r#"{{"timestamp":"{}","level":"INFO","fields":{{"step":"{step}",{fields}}},"target":"zerodrop_init"}}"#,
        rfc3339(now)
    );
    line.push('\n');
    line
}

/// UTC RFC 3339 with microseconds, without a date crate (civil-from-days, H. Hinnant).
fn rfc3339(d: std::time::Duration) -> String {
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_log_line_is_one_whole_line_for_one_write() {
        let l = super::line("signal_forwarded", r#""signal":"SIGTERM","app_pid":2"#, std::time::Duration::new(1, 0));
        assert_eq!(
            l,
            "{\"timestamp\":\"1970-01-01T00:00:01.000000Z\",\"level\":\"INFO\",\"fields\":{\"step\":\"signal_forwarded\",\
             \"signal\":\"SIGTERM\",\"app_pid\":2},\"target\":\"zerodrop_init\"}\n"
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let d = std::time::Duration::new(1_795_438_951, 268_150_000);
        assert_eq!(super::rfc3339(d), "2026-11-23T13:02:31.268150Z");
        assert_eq!(super::rfc3339(std::time::Duration::ZERO), "1970-01-01T00:00:00.000000Z");
    }
}
