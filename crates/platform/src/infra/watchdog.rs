//! A tiny `sh` watchdog that outlives us: if this process dies without `release()` (Ctrl-C
//! without a handler, SIGKILL, panic=abort), `Drop` never runs, so the private servers, which
//! sit in their own process groups and do not see the terminal's SIGINT, would live on. The
//! watchdog reads registrations on a pipe from us; EOF without a final `release` line means
//! we are gone: it stops the registered servers (graceful signal, then SIGKILL to the group
//! after 10 s) and removes the registered directories.

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;

use super::process::TAG_VAR;

// Lines: "proc <pid> <signal>", "dir <path>", "release".
// A group is only signalled while its leader still carries our tag variable, so a pid that
// was reused by an unrelated process is never touched.
const SCRIPT: &str = r#"
procs=""
dirs=""
while IFS= read -r line; do
  case "$line" in
    "proc "*) procs="$procs ${line#proc }" ;;
    "dir "*) dirs="$dirs
${line#dir }" ;;
    release) exit 0 ;;
  esac
done
echo "[infra] watchdog: the runner exited without releasing its backends; stopping its private servers" >&2
set -- $procs
ours=""
while [ $# -ge 2 ]; do
  if grep -qa "$TAG=" "/proc/$1/environ" 2>/dev/null; then
    ours="$ours $1"
    kill -$2 $1 2>/dev/null
  fi
  shift 2
done
i=0
while [ $i -lt 100 ]; do
  alive=""
  for g in $ours; do kill -0 -$g 2>/dev/null && alive=1; done
  [ -z "$alive" ] && break
  sleep 0.1
  i=$((i+1))
done
for g in $ours; do kill -0 -$g 2>/dev/null && kill -9 -$g 2>/dev/null; done
sleep 0.2
printf '%s\n' "$dirs" | while IFS= read -r d; do [ -n "$d" ] && rm -rf -- "$d"; done
echo "[infra] watchdog: done" >&2
"#;

pub(super) struct Watchdog {
    child: Child,
    stdin: Mutex<Option<ChildStdin>>,
}

impl Watchdog {
    pub fn spawn() -> Result<Watchdog> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(SCRIPT)
            .env("TAG", TAG_VAR)
            .env_remove(TAG_VAR)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Its own group, so the terminal's Ctrl-C does not kill it along with us.
            .process_group(0)
            .spawn()
            .context("spawning the infra watchdog (/bin/sh)")?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin: Mutex::new(stdin) })
    }

    fn send(&self, line: &str) {
        let mut guard = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = guard.as_mut() {
            // A dead watchdog only loses the safety net; never fail a run for it.
            let _ = w.write_all(line.as_bytes()).and_then(|_| w.flush());
        }
    }

    pub fn watch_dir(&self, dir: &Path) {
        if let Some(s) = dir.to_str().filter(|s| !s.contains('\n')) {
            self.send(&format!("dir {s}\n"));
        }
    }

    pub fn watch_proc(&self, pid: i32, signal: libc::c_int) {
        self.send(&format!("proc {pid} {signal}\n"));
    }

    /// Everything is cleaned up: tell the watchdog to exit without acting.
    pub fn dismiss(mut self) {
        self.send("release\n");
        self.stdin.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
