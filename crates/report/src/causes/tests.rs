//! One test per cause, each on a timeline shaped like a recorded stage's: three api
//! pods, one replaced, with the events and lifecycle lines both platforms record.

use super::{explain, Cause};
use crate::model::*;
use serde_json::json;
use zerodrop_load::{Class, Kind, Profile, Record, RunResult};
use zerodrop_stages::{Stage, StageName};

const OLD: &str = "api-old-1";
const NEW: &str = "api-new-1";
const WARM: &str = "api-old-2";

/// Steady [0, 5 s), deploy [5 s, 15 s). Steady traffic: 50 fast requests over three pods,
/// 1–2 ms each (a fast p99 of 2 ms, so the slow threshold for fast is 4 ms).
/// `OLD` gets SIGTERM at 6 s, closes its listener at 7 s, is removed from the
/// Service at 8 s and exits at 9 s. `NEW` is created at 6 s, ready at 6.5 s, and
/// warm at 8 s. The Service has 2 of 3 ready endpoints during [6.5 s, 9.5 s). A
/// third pod, `api-old-3`, is warm throughout.
fn timeline(extra: Vec<Record>) -> StageRun {
    let mut records: Vec<Record> = (0..50u64)
        .map(|i| {
            // Spread evenly over the three pods serving then.
            Record::new(i * 100_000, 1_000 + (i % 2) * 1_000, Class::Ok, Kind::Fast)
                .with_pod(Some([0, 2, 3][i as usize % 3]))
        })
        .collect();
    records.extend(extra);
    let ev = |t_ms, pod: &str, kind| PodEvent { t_ms, pod: pod.into(), app: "api".into(), kind, detail: String::new() };
    let line = |t_ms, pod: &str, step: &str| LogLine {
        t_ms,
        timestamp: String::new(),
        pod: pod.into(),
        app: "api".into(),
        step: step.into(),
        fields: json!({}),
    };
    StageRun {
        stage: Stage::get(StageName::RequeueIdempotency),
        repeat: 0,
        load: RunResult {
            started_unix_ms: 0,
            profile: Profile::default(),
            records,
            accepted_jobs: vec![],
            late_sends: 0,
            connections_opened: 3,
            pods: vec![OLD.into(), NEW.into(), WARM.into(), "api-old-3".into()],
            mirrored: vec![],
            mirrored_accepted_jobs: vec![],
        },
        steady: Window { from_us: 0, to_us: 5_000_000 },
        roll: Window { from_us: 5_000_000, to_us: 15_000_000 },
        rollout_seconds: 4.0,
        endpoints: vec![
            EndpointSample { t_ms: -1000, ready: 3 },
            EndpointSample { t_ms: 6500, ready: 2 },
            EndpointSample { t_ms: 9500, ready: 3 },
        ],
        desired_endpoints: 3,
        events: vec![
            ev(6000, OLD, PodEventKind::Terminating),
            ev(6000, OLD, PodEventKind::Sigterm),
            ev(6000, NEW, PodEventKind::Created),
            ev(6500, NEW, PodEventKind::Ready),
            ev(8000, OLD, PodEventKind::EndpointRemoved),
            ev(9000, OLD, PodEventKind::Exited),
        ],
        logs: vec![
            line(-3000, WARM, "cache_warm"),
            line(-3000, OLD, "cache_warm"),
            // The third pod, warm throughout, known from its log alone.
            line(-3000, "api-old-3", "cache_warm"),
            line(6000, OLD, "sigterm_received"),
            line(7000, OLD, "listener_closed"),
            line(8000, NEW, "cache_warm"),
        ],
        jobs: Jobs { accepted: 20, lost: 2, duplicated: 1, settled: true, ..Jobs::default() },
        pod_logs_dir: String::new(),
        third_party: None,
    }
}

fn rec(at_ms: u64, latency_ms: u64, class: Class, kind: Kind, pod: Option<u16>) -> Record {
    Record::new(at_ms * 1000, latency_ms * 1000, class, kind).with_pod(pod)
}

/// The cause of the single extra record.
fn cause_of(r: Record) -> Cause {
    let run = timeline(vec![r]);
    let c = explain(&run);
    c.of_record(50).expect("the extra record is explained")
}

fn with_kill(mut run: StageRun, t_ms: i64) -> StageRun {
    let ev = PodEvent { t_ms, pod: OLD.into(), app: "api".into(), kind: PodEventKind::Sigkill, detail: String::new() };
    run.events.push(ev);
    run
}

#[test]
fn refused_while_a_closed_listener_is_still_routed() {
    assert_eq!(cause_of(rec(7500, 1, Class::Refused, Kind::Fast, None)), Cause::RefusedStoppedListener);
    // Within the route lag after the removal, still its.
    assert_eq!(cause_of(rec(8500, 1, Class::Refused, Kind::Fast, None)), Cause::RefusedStoppedListener);
}

#[test]
fn a_refusal_with_no_pod_to_blame_is_unexplained() {
    // Before any listener closed, with endpoints ready: nothing explains it.
    assert_eq!(cause_of(rec(5500, 1, Class::Refused, Kind::Fast, None)), Cause::Unexplained);
}

#[test]
fn refused_with_no_endpoint() {
    let mut run = timeline(vec![rec(5500, 1, Class::Refused, Kind::Fast, None)]);
    run.endpoints.push(EndpointSample { t_ms: 5400, ready: 0 });
    assert_eq!(explain(&run).of_record(50), Some(Cause::RefusedNoEndpoint));
}

#[test]
fn cut_by_a_sigkill_within_its_reach() {
    let run = with_kill(timeline(vec![rec(8000, 1100, Class::Reset, Kind::Slow, None)]), 9000);
    assert_eq!(explain(&run).of_record(50), Some(Cause::CutBySigkill));
    // Past the reach it is the shutdown's, or nothing's.
    let run = with_kill(timeline(vec![rec(12000, 10, Class::Reset, Kind::Slow, None)]), 9000);
    assert_eq!(explain(&run).of_record(50), Some(Cause::Unexplained));
}

#[test]
fn a_timeout_that_spans_a_sigkill_is_the_kills() {
    // Hung at 8.9 s, given up at the 5 s client deadline: the kill at 9 s lies inside.
    let run = with_kill(timeline(vec![rec(8900, 5000, Class::Timeout, Kind::Slow, None)]), 9000);
    assert_eq!(explain(&run).of_record(50), Some(Cause::CutBySigkill));
}

#[test]
fn cut_mid_flight_by_a_shutdown() {
    assert_eq!(cause_of(rec(8700, 100, Class::Reset, Kind::Slow, None)), Cause::CutByShutdown);
    // A job submission failing in the server of a pod shutting down.
    assert_eq!(cause_of(rec(6500, 10, Class::Http500, Kind::Job, Some(0))), Cause::CutByShutdown);
    // A reset with no pod shutting down: unexplained, never quietly someone's.
    assert_eq!(cause_of(rec(5100, 10, Class::Reset, Kind::Slow, None)), Cause::Unexplained);
}

#[test]
fn a_reset_during_a_clean_drain_is_the_keepalive_close_race() {
    let mut run = timeline(vec![rec(8600, 1, Class::Reset, Kind::Fast, None)]);
    let line = |t_ms, step: &str, fields| LogLine {
        t_ms,
        timestamp: String::new(),
        pod: OLD.into(),
        app: "api".into(),
        step: step.into(),
        fields,
    };
    run.logs.push(line(8500, "drain_started", json!({"keepalive_close": "AtOnce"})));
    run.logs.push(line(8800, "drain_complete", json!({"clean": true})));
    assert_eq!(explain(&run).of_record(50), Some(Cause::KeepaliveCloseRace));
    // A reset that took its time was in flight: the shutdown's, clean drain or not.
    let mut slow = run.clone();
    slow.load.records[50].latency_us = 150_000;
    assert_eq!(explain(&slow).of_record(50), Some(Cause::CutByShutdown));
    // A drain that ran out of budget cut what it held: that is the shutdown's.
    run.logs.pop();
    run.logs.push(line(8800, "drain_complete", json!({"clean": false})));
    assert_eq!(explain(&run).of_record(50), Some(Cause::CutByShutdown));
}

#[test]
fn the_outcomes_csv_lists_each_explained_request() {
    let run = timeline(vec![rec(7500, 1, Class::Refused, Kind::Fast, None)]);
    let csv = super::csv(&run, &explain(&run));
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.ends_with("7500,1,deploy,fast,refused,,refused_stopped_listener\n"), "{csv}");
}

#[test]
fn shed_by_a_draining_pod() {
    assert_eq!(cause_of(rec(6600, 2, Class::Http503, Kind::Slow, Some(0))), Cause::ShedDrainingPod);
}

#[test]
fn shed_by_a_cold_pod() {
    assert_eq!(cause_of(rec(7000, 2, Class::Http503, Kind::Fast, Some(1))), Cause::ShedColdPod);
}

#[test]
fn shed_with_the_fleet_short() {
    // A warm pod, while 2 of 3 endpoints were ready.
    assert_eq!(cause_of(rec(9000, 2, Class::Http503, Kind::Fast, Some(2))), Cause::ShedFleetShort);
    // Three endpoints routed, but one pod deleted and its replacement still cold.
    let mut run = timeline(vec![rec(7200, 2, Class::Http503, Kind::Fast, Some(2))]);
    run.endpoints.retain(|e| e.ready == 3);
    assert_eq!(explain(&run).of_record(50), Some(Cause::ShedFleetShort));
}

#[test]
fn shed_with_the_fleet_full_and_warm() {
    // The other two pods answer as much in that second: the load was spread evenly.
    let even = vec![
        rec(12000, 2, Class::Http503, Kind::Fast, Some(2)),
        rec(12100, 2, Class::Ok, Kind::Fast, Some(1)),
        rec(12200, 2, Class::Ok, Kind::Fast, Some(3)),
    ];
    assert_eq!(explain(&timeline(even)).of_record(50), Some(Cause::ShedFullWarm));
    // The same in the steady window is counted there, not in the deploy's.
    let run = timeline(vec![rec(4990, 2, Class::Http503, Kind::Fast, Some(2))]);
    let c = explain(&run);
    assert_eq!(c.steady.get(&Cause::ShedFullWarm), Some(&1));
    assert_eq!(c.steady_failures(), 1);
    assert!(c.deploy.keys().all(|k| matches!(k, Cause::JobLost | Cause::JobAppliedTwice)));
}

#[test]
fn shed_by_a_pod_carrying_more_than_its_share() {
    // In the second of the 503, the warm pod answered 4 of 5 requests (80% > 1.5 × 1/3).
    let mut extra: Vec<Record> = (0..3).map(|i| rec(12100 + i * 100, 2, Class::Ok, Kind::Fast, Some(2))).collect();
    extra.push(rec(12500, 2, Class::Ok, Kind::Fast, Some(1)));
    extra.insert(0, rec(12050, 2, Class::Http503, Kind::Fast, Some(2)));
    let run = timeline(extra);
    assert_eq!(explain(&run).of_record(50), Some(Cause::ShedImbalanced));
}

#[test]
fn a_reset_while_another_pod_only_waits_to_deregister_is_still_the_race() {
    let mut run = timeline(vec![rec(8600, 1, Class::Reset, Kind::Fast, None)]);
    let line = |t_ms, pod: &str, step: &str, fields| LogLine {
        t_ms,
        timestamp: String::new(),
        pod: pod.into(),
        app: "api".into(),
        step: step.into(),
        fields,
    };
    run.logs.push(line(8500, OLD, "drain_started", json!({})));
    run.logs.push(line(8800, OLD, "drain_complete", json!({"clean": true})));
    // WARM got SIGTERM but drains only later: it closes nothing at 8.6 s.
    run.logs.push(line(8000, WARM, "sigterm_received", json!({})));
    run.logs.push(line(9500, WARM, "drain_started", json!({})));
    assert_eq!(explain(&run).of_record(50), Some(Cause::KeepaliveCloseRace));
}

#[test]
fn slow_on_a_cold_pod_and_on_a_warm_one() {
    assert_eq!(cause_of(rec(7000, 50, Class::Ok, Kind::Fast, Some(1))), Cause::SlowColdPod);
    assert_eq!(cause_of(rec(12000, 50, Class::Ok, Kind::Fast, Some(2))), Cause::SlowWarmPod);
    // Under the fast kind's threshold (2 × its 2 ms steady p99): not slow at all.
    let run = timeline(vec![rec(7000, 3, Class::Ok, Kind::Fast, Some(1))]);
    assert_eq!(explain(&run).of_record(50), None);
}

#[test]
fn jobs_lost_and_applied_twice_come_from_the_reconciliation() {
    let c = explain(&timeline(vec![]));
    assert_eq!(c.deploy_count(Cause::JobLost), 2);
    assert_eq!(c.deploy_count(Cause::JobAppliedTwice), 1);
}

#[test]
fn a_4xx_is_unexplained() {
    assert_eq!(cause_of(rec(7000, 2, Class::Http4xx, Kind::Fast, Some(2))), Cause::Unexplained);
}

#[test]
fn a_pod_that_never_warmed_is_cold_throughout() {
    // Others logged their warmth: this one never served enough to warm.
    let mut run = timeline(vec![rec(12000, 2, Class::Http503, Kind::Fast, Some(1))]);
    run.logs.retain(|l| !(l.pod == NEW && l.step == "cache_warm"));
    assert_eq!(explain(&run).of_record(50), Some(Cause::ShedColdPod));
}

#[test]
fn without_any_warmth_line_no_pod_is_called_cold() {
    // An older report: the api did not log it at all. Only the fleet's state speaks.
    let mut run = timeline(vec![rec(7000, 2, Class::Http503, Kind::Fast, Some(1))]);
    run.logs.retain(|l| l.step != "cache_warm");
    assert_eq!(explain(&run).of_record(50), Some(Cause::ShedFleetShort));
}

#[test]
fn every_cause_has_a_distinct_key() {
    let mut keys: Vec<&str> = Cause::ALL.iter().map(|c| c.key()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), Cause::ALL.len());
}
