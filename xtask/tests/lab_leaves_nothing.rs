//! A lab leaves nothing behind: `up` in its own lab network namespace (private RabbitMQ
//! with its own epmd, private PostgreSQL, the pods), then `down`. Afterwards no process
//! that was in the lab is alive, nothing is left in the lab's network namespace (so the
//! kernel frees it, with its addresses and nftables rules), and no epmd is running that
//! was not running before. The runner stopped everything it started by itself; the one
//! process it had to kill is a daemon planted in the lab from outside (through
//! `cargo xtask client`), and it says so.
//! Needs what `cargo xtask test` provides: rabbitmq-server, PostgreSQL, unshare, nft,
//! ip, and the service binaries built next to this test's xtask binary.

use std::os::unix::fs::MetadataExt;
mod common;

use common::{service_bin_dir, xtask};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One process as /proc shows it; pid and start time together name it for good.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proc {
    pid: i32,
    ppid: i32,
    comm: String,
    cmdline: String,
    starttime: u64,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat[open + 1..close].to_string();
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    if matches!(*rest.first()?, "Z" | "X") {
        return None; // a zombie has left its namespaces and holds nothing
    }
    let ppid = rest.get(1)?.parse().ok()?;
    let starttime = rest.get(19)?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
    Some(Proc { pid, ppid, comm, cmdline, starttime })
}

fn all_procs() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| read_proc(e.file_name().to_str()?.parse().ok()?))
        .collect()
}

/// A network namespace by its nsfs device and inode.
fn netns_of(pid: i32) -> Option<(u64, u64)> {
    std::fs::metadata(format!("/proc/{pid}/ns/net")).ok().map(|m| (m.dev(), m.ino()))
}

fn in_netns(ns: (u64, u64)) -> Vec<Proc> {
    all_procs().into_iter().filter(|p| netns_of(p.pid) == Some(ns)).collect()
}

/// What `pgrep -x epmd` shows, zombies aside.
fn epmds() -> Vec<Proc> {
    all_procs().into_iter().filter(|p| p.comm == "epmd").collect()
}

/// Whether `pid` carries the private servers' tag (`ZERODROP_INFRA_TAG`) for a directory
/// under `dir`.
fn tagged_under(pid: i32, dir: &Path) -> bool {
    let needle = format!("ZERODROP_INFRA_TAG={}", dir.display());
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    env.split(|b| *b == 0).any(|v| v.starts_with(needle.as_bytes()))
}

fn alive(p: &Proc) -> bool {
    read_proc(p.pid).is_some_and(|now| now.starttime == p.starttime)
}

struct Up(Child);

impl Drop for Up {
    /// On a failed assertion: Ctrl-C, as a user would, so that the runner still cleans up
    /// (a SIGKILL would skip its checks and leave whatever the failure was about behind).
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(60) {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn up_then_down_leaves_no_process_no_epmd_and_no_lab_namespace_and_names_what_it_killed() {
    let bin_dir = service_bin_dir();
    let epmds_before = epmds();
    let target = std::env::temp_dir().join(format!("zd-lab-leaves-nothing-{}", std::process::id()));
    std::fs::create_dir_all(&target).unwrap();
    let log_path = target.join("up.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let up = xtask(&target)
        .args(["up", "--stage", "naive", "--bin-dir"])
        .arg(&bin_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting xtask up");
    let mut up = Up(up);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // The state file names the runner inside the lab; its namespace is the lab.
    let state = target.join("zerodrop-up/state.json");
    let t = Instant::now();
    while !state.exists() {
        if let Some(status) = up.0.try_wait().unwrap() {
            panic!("up exited ({status}):\n{}", log());
        }
        assert!(t.elapsed() < Duration::from_secs(180), "the fleet did not come up within 180 s:\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let runner = state["pid"].as_i64().expect("the runner's pid in state.json") as i32;
    let lab = netns_of(runner).expect("the runner's network namespace");
    assert_ne!(Some(lab), netns_of(std::process::id() as i32), "up must run in a lab namespace of its own");

    // Everything the lab runs, while it runs: among it the broker's epmd, a child of the
    // runner (not a daemon), on a port of its own.
    let during = in_netns(lab);
    let lab_epmds: Vec<&Proc> = during.iter().filter(|p| p.comm == "epmd").collect();
    assert_eq!(lab_epmds.len(), 1, "one epmd in the lab: {lab_epmds:?}");
    assert_eq!(lab_epmds[0].ppid, runner, "the lab's epmd must be the runner's child: {:?}", lab_epmds[0]);
    assert!(!lab_epmds[0].cmdline.contains("-daemon"), "{:?}", lab_epmds[0]);
    assert!(during.iter().any(|p| p.comm == "beam.smp"), "no broker in the lab: {during:?}");

    // A daemon planted in the lab from outside: no child of the runner, it would keep the
    // namespace alive after the run, so the lab's last check must kill it and say why.
    let plant = "( setsid sleep 600 </dev/null >/dev/null 2>&1 & ) ; echo planted";
    let client = xtask(&target).args(["client", "--run", "up", "--", "sh", "-c", plant]).output().unwrap();
    assert!(client.status.success(), "client: {client:?}");
    let t = Instant::now();
    let planted = loop {
        if let Some(p) = in_netns(lab).into_iter().find(|p| p.cmdline == "sleep 600") {
            break p;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the planted daemon is not in the lab");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(planted.ppid, runner);

    let down = xtask(&target).arg("down").stdin(Stdio::null()).output().expect("running xtask down");
    assert!(down.status.success(), "down: {down:?}");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = up.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "up did not stop within 90 s of down:\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = log();
    assert!(status.success(), "up exited with {status}:\n{out}");

    // Nothing that was in the lab lives on, nothing is in its namespace (the kernel frees
    // a namespace nothing holds: no process, no pinning fd, no socket of a relay), and no
    // epmd appeared anywhere.
    let survivors: Vec<&Proc> = during.iter().filter(|p| alive(p)).collect();
    assert!(survivors.is_empty(), "processes of the lab still alive after down: {survivors:?}\n{out}");
    let left = in_netns(lab);
    assert!(left.is_empty(), "processes left in the lab's network namespace: {left:?}\n{out}");
    // Judged by the infra tag (inherited by everything the private servers start, a
    // daemon included): other runs on a shared machine may start epmds meanwhile.
    let was_running = |p: &Proc| epmds_before.iter().any(|b| b.pid == p.pid && b.starttime == p.starttime);
    let new_epmds: Vec<Proc> = epmds().into_iter().filter(|p| !was_running(p)).collect();
    let tag_root = target.canonicalize().unwrap_or_else(|_| target.clone());
    let ours: Vec<&Proc> = new_epmds.iter().filter(|p| tagged_under(p.pid, &tag_root)).collect();
    assert!(ours.is_empty(), "epmd processes of this run still running: {ours:?}\n{out}");
    if !new_epmds.is_empty() {
        eprintln!("epmd processes started meanwhile by others (not judged): {new_epmds:?}");
    }
    // It got there by stopping what it started; the only kill is the planted daemon's,
    // named with its pid and why.
    assert!(!alive(&planted), "the planted daemon outlived the lab");
    let kills: Vec<&str> = out.lines().filter(|l| l.contains(" killed ")).collect();
    assert_eq!(kills.len(), 1, "exactly one kill, the planted daemon's:\n{out}");
    let expected = format!(
        "[lab] killed sleep (pid {}, `sleep 600`) with SIGTERM: left in the lab after its runner exited",
        planted.pid
    );
    assert!(kills[0].starts_with(&expected), "{}\nexpected it to start with: {expected}", kills[0]);
    assert!(kills[0].contains("entered with nsenter"), "{}", kills[0]);
    eprintln!("up's output:\n{out}");
    let _ = std::fs::remove_dir_all(&target);
}
