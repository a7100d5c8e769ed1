//! The private RabbitMQ's epmd belongs to the run: started as our child on a port of its
//! own, used by the node (and no daemon started beside it), kept across a restart of the
//! node, and gone after `release()`. Real processes; other tests of this binary start
//! their own brokers meanwhile (and other runs on the machine theirs), so the epmds
//! judged are those started from this test process: their tag names a directory that
//! only this process creates (`infra-<our pid>-...`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use super::{Backends, Service};

/// Live (non-zombie) `epmd` processes as `(pid, ppid, cmdline)`: what `pgrep -x epmd` shows,
/// zombies aside (a container's PID 1 may never reap an orphaned one).
fn live_epmds() -> Vec<(i32, i32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let comm = &stat[stat.find('(')? + 1..stat.rfind(')')?];
            let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
            let state = rest.next()?;
            let ppid = rest.next()?.parse().ok()?;
            if comm != "epmd" || state == "Z" || state == "X" {
                return None;
            }
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ").trim().to_string();
            Some((pid, ppid, cmd))
        })
        .collect()
}

/// epmd's NAMES request: "name <node> at port <n>" lines, or None when nothing answers.
fn epmd_names(port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // Length 1, then NAMES_REQ ('n'); the answer is epmd's own port (4 bytes) and text.
    s.write_all(&[0, 1, b'n']).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    (buf.len() >= 4).then(|| String::from_utf8_lossy(&buf[4..]).into_owned())
}

/// Whether `pid` carries the infra tag of a directory this test process created.
fn started_here(pid: i32) -> bool {
    let needle = format!("{}=", super::process::TAG_VAR);
    let ours = format!("/infra-{}-", std::process::id());
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    env.split(|b| *b == 0).map(String::from_utf8_lossy).any(|v| v.starts_with(&needle) && v.contains(&ours))
}

fn port_arg(cmdline: &str) -> Option<u16> {
    let mut words = cmdline.split_whitespace();
    words.by_ref().find(|w| *w == "-port")?;
    words.next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_private_broker_runs_its_own_epmd_and_it_is_gone_after_release() {
    let me = std::process::id() as i32;
    let before: Vec<i32> = live_epmds().iter().map(|e| e.0).collect();
    let wd: PathBuf = std::env::temp_dir().join("zerodrop-infra-tests").join("epmd");
    std::fs::create_dir_all(&wd).unwrap();
    let b = Backends::acquire_with(&wd, None, None).await.expect("acquire private backends");

    // Exactly one helper, RabbitMQ's epmd: our child, in the foreground, on its own port.
    let helpers = b.helper_pgids();
    assert_eq!(helpers.len(), 1, "one helper (RabbitMQ's epmd): {helpers:?}");
    let epmd = helpers[0];
    let (_, ppid, cmdline) = live_epmds().into_iter().find(|e| e.0 == epmd).expect("our epmd is running");
    assert_eq!(ppid, me, "the epmd must be this run's child, not a daemon: {cmdline}");
    assert!(!cmdline.contains("-daemon"), "{cmdline}");
    let port = port_arg(&cmdline).unwrap_or_else(|| panic!("no -port in {cmdline:?}"));
    assert_ne!(port, 4369, "must not be the system-wide epmd's port");

    // The node registered with our epmd, and with no system-wide one.
    let node = format!("name zerodrop-{me}");
    let names = epmd_names(port).expect("our epmd answers NAMES");
    assert!(names.contains(&node), "the node is not registered with its epmd on {port}: {names:?}");
    if let Some(system) = epmd_names(4369) {
        assert!(!system.contains(&node), "a node of this run registered with the system epmd: {system:?}");
    }

    // No daemon appeared: every new epmd started from here is a child of this test
    // process (other tests here run their own brokers, each with its own child epmd).
    let daemons = |now: Vec<(i32, i32, String)>| -> Vec<(i32, i32, String)> {
        now.into_iter().filter(|e| !before.contains(&e.0) && e.1 != me && started_here(e.0)).collect()
    };
    assert!(daemons(live_epmds()).is_empty(), "epmd daemons appeared: {:?}", daemons(live_epmds()));

    // A restart of the broker keeps its epmd, and the node registers with it again.
    b.restart(Service::RabbitMq).await.expect("restart RabbitMQ");
    assert!(live_epmds().iter().any(|e| e.0 == epmd && e.1 == me), "the epmd did not survive the broker's restart");
    let names = epmd_names(port).expect("our epmd answers NAMES after the restart");
    assert!(names.contains(&node), "the restarted node did not register again: {names:?}");
    assert!(daemons(live_epmds()).is_empty(), "epmd daemons appeared on restart: {:?}", daemons(live_epmds()));

    let dirs = b.private_dirs();
    b.release().await.expect("release");
    // Ours is gone (the pid, and its port), nothing of the run is left, and no daemon.
    assert!(!live_epmds().iter().any(|e| e.0 == epmd), "our epmd (pid {epmd}) outlived release()");
    assert!(epmd_names(port).is_none(), "something still answers on our epmd's port {port}");
    for d in &dirs {
        let left = super::tests::tagged_under(d);
        assert!(left.is_empty(), "processes of {} left: {left:?}", d.display());
    }
    assert!(daemons(live_epmds()).is_empty(), "epmd daemons left behind: {:?}", daemons(live_epmds()));
}

#[test]
fn the_port_is_read_from_epmds_command_line() {
    assert_eq!(port_arg("/usr/bin/epmd -port 40001 -address 127.0.0.1"), Some(40001));
    assert_eq!(port_arg("/usr/lib/erlang/erts-13.1.5/bin/epmd -daemon"), None);
}
