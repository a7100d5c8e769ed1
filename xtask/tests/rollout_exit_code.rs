//! `cargo xtask rollout` against a real fleet: `up` in its own lab namespace with
//! private RabbitMQ and PostgreSQL, then a rollout whose new pods cannot reach the
//! broker, so they never become ready. The rollout must stream its steps, fail with
//! the reason and exit 4; `status` must answer while it runs.
//! Needs what `cargo xtask test` provides: rabbitmq-server, PostgreSQL, unshare, nft,
//! ip, and the service binaries built next to this test's xtask binary.

mod common;

use common::{run, service_bin_dir, xtask};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_rollout_that_never_becomes_ready_exits_4_with_the_reason() {
    let bin_dir = service_bin_dir();
    let target = std::env::temp_dir().join(format!("zd-rollout-exit-{}", std::process::id()));
    std::fs::create_dir_all(&target).unwrap();
    let log = std::fs::File::create(target.join("up.log")).unwrap();
    let up = xtask(&target)
        .args(["up", "--stage", "surge-jitter", "--bin-dir"])
        .arg(&bin_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting xtask up");
    let mut up = Up(up);
    let state = target.join("zerodrop-up/state.json");
    let t = Instant::now();
    while !state.exists() {
        if let Some(status) = up.0.try_wait().unwrap() {
            panic!("up exited ({status}):\n{}", std::fs::read_to_string(target.join("up.log")).unwrap_or_default());
        }
        assert!(t.elapsed() < Duration::from_secs(180), "the fleet did not come up within 180 s");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A new api pod template whose broker address is wrong: the api starts but its
    // readiness never passes, so only the progress deadline can end the rollout;
    // maxUnavailable 0 keeps the old pods serving meanwhile.
    let bad = "AMQP_URL=amqp://guest:guest@127.0.0.1:1/%2f";
    let started = Instant::now();
    let rollout = xtask(&target)
        .args(["rollout", "--only", "api", "--progress-deadline", "15s", "--set-env", bad])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting xtask rollout");
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let status = run(&target, &["status"]);
    assert!(status.status.success(), "status failed during the rollout: {status:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "status blocked for {:?} during the rollout", t.elapsed());
    let status_text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status_text.contains("api-r2-"), "status shows no new-revision pod:\n{status_text}");

    let out = rollout.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(4), "rollout exit code\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("rollout failed: no progress for 15 s") && stderr.contains("api-r2-"),
        "not the progress deadline naming the unready pod:\n{stderr}"
    );
    assert!(started.elapsed() >= Duration::from_secs(15), "failed before its deadline");
    assert!(stdout.contains("Created") && stdout.contains("new replicas created"), "no streamed progress:\n{stdout}");

    // A new pod that exits at start: the failure names its exit status and quotes the
    // app's own message from its log, not how the runner looked for its process.
    let out = run(
        &target,
        &["rollout", "--only", "api", "--progress-deadline", "30s", "--set-env", "ZD_CAPACITY=notanumber"],
    );
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(4), "rollout exit code\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("ZD_CAPACITY must be a positive integer") && stderr.contains("exit code"),
        "the app's own error and its exit status are not in the failure:\n{stderr}"
    );

    let down = run(&target, &["down"]);
    assert!(down.status.success(), "down: {down:?}");
    let t = Instant::now();
    while up.0.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(60), "up did not stop within 60 s of down");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_dir_all(&target);
}
