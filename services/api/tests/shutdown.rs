//! The shutdown sequence of the real binary, against the real broker.

mod common;
use common::{assert_in_order, queue_depth, stage_env, unique, Api};
use std::time::{Duration, Instant};
use zerodrop_stages::{Stage, StageName};

#[test]
fn graceful_shutdown_runs_every_step_in_order_and_finishes_in_flight_work() {
    let b = Stage::get(StageName::RequeueIdempotency).api;
    let api = Api::start(&unique("order"), &stage_env(b));
    let mut api = api;
    let addr_api = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slow = {
        let a = api.addr;
        let slot = addr_api.clone();
        std::thread::spawn(move || {
            let probe = Api::request_to(a, "GET", "/work?ms=1500");
            *slot.lock().unwrap() = Some(probe);
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    api.signal(libc::SIGTERM);
    // Readiness fails at once while the listener stays open (deregistration wait).
    std::thread::sleep(Duration::from_millis(150));
    let (status, _) = api.request("GET", "/readyz", &[], b"");
    assert_eq!(status, 503, "readiness must fail during the deregistration wait");
    let code = api.wait(Duration::from_secs(15));
    slow.join().unwrap();
    assert_eq!(code, Some(0), "steps: {:#?}", api.steps());
    let slow_result = addr_api.lock().unwrap().take().unwrap();
    assert_eq!(slow_result.map(|r| r.0).ok(), Some(200), "the in-flight request must complete");
    assert_in_order(
        &api.steps(),
        &[
            "sigterm_received",
            "guardian_armed",
            "readiness_failing",
            "deregistration_wait_over",
            "listener_closed",
            "drain_started",
            "drain_complete",
            "dispose http_server",
            "dispose publisher",
            "dispose amqp_channel",
            "dispose amqp_connection",
            "telemetry_flushed",
            "exit",
        ],
    );
}

#[test]
fn guardian_force_exits_with_its_own_code_when_the_budget_is_exceeded() {
    let b = Stage::get(StageName::SurgeJitter).api;
    let mut api = Api::start(&unique("guardian"), &stage_env(b));
    let long_ms = (b.guardian_deadline() + Duration::from_secs(3)).as_millis();
    let a = api.addr;
    let client = std::thread::spawn(move || Api::request_to(a, "GET", &format!("/work?ms={long_ms}")));
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    api.signal(libc::SIGTERM);
    let code = api.wait(Duration::from_secs(30));
    let took = t0.elapsed();
    assert_eq!(code, Some(70), "steps: {:#?}", api.steps());
    assert!(took < b.guardian_deadline() + Duration::from_secs(2), "guardian fired late: {took:?}");
    assert!(api.steps().iter().any(|s| s == "guardian_fired"));
    assert!(client.join().unwrap().is_err(), "the over-long request cannot have completed");
}

/// pid1's app installs no handler: not being PID 1 (an init is), the kernel's
/// default action for SIGTERM kills it on the spot, with nothing logged.
#[test]
fn without_a_handler_sigterm_kills_the_app_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let b = Stage::get(StageName::Pid1).api;
    let mut api = Api::start(&unique("nohandler"), &stage_env(b));
    api.signal(libc::SIGTERM);
    let st = api.wait_status(Duration::from_secs(5)).expect("SIGTERM's default action must kill the app");
    assert_eq!(st.signal(), Some(libc::SIGTERM), "{st:?}");
    assert!(api.steps().iter().all(|s| s != "sigterm_received"), "{:?}", api.steps());
    assert!(api.steps().iter().any(|s| s == "no_signal_handler"), "{:?}", api.steps());
}

#[test]
fn exit_now_exits_at_once_on_sigterm() {
    let mut b = Stage::get(StageName::Pid1).api;
    b.on_sigterm = zerodrop_stages::SigtermResponse::ExitNow;
    let mut api = Api::start(&unique("exitnow"), &stage_env(b));
    api.signal(libc::SIGTERM);
    assert_eq!(api.wait(Duration::from_secs(5)), Some(0));
    assert_in_order(&api.steps(), &["sigterm_received", "exit_now"]);
}

#[test]
fn with_confirms_a_202_means_the_broker_has_the_job() {
    let b = Stage::get(StageName::ReverseDrain).api;
    assert!(b.publisher_confirms);
    let api = Api::start(&unique("confirms"), &stage_env(b));
    let json = [("content-type", "application/json")];
    for i in 0..20 {
        let (status, body) = api.request("POST", "/jobs", &json, format!(r#"{{"id":"c-{i}","amount":5}}"#).as_bytes());
        assert_eq!(status, 202, "{body}");
    }
    // Confirmed means enqueued: no waiting needed before counting.
    assert_eq!(queue_depth(&api.queue), 20);
}
