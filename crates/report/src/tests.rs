//! Synthetic reports through the whole renderer.

use super::model::*;
use super::{checks, summary::StageSummary, svg};
use serde_json::{json, Value};
use zerodrop_load::{Class, Kind, Profile, Record, RunResult};
use zerodrop_stages::{Stage, StageName};

/// 10 s of load at 10 req/s; steady = [0, 5 s), roll = [5 s, 10 s). In the roll,
/// the first requests get the given failure classes, in order.
fn stage_run(name: StageName, failures: &[(Class, u64)]) -> StageRun {
    let mut fails = failures.iter().flat_map(|(c, n)| std::iter::repeat_n(*c, *n as usize));
    let mut records = Vec::new();
    for i in 0..100u64 {
        let at_us = i * 100_000;
        let class = if at_us >= 5_000_000 { fails.next().unwrap_or(Class::Ok) } else { Class::Ok };
        let latency_us = if class == Class::Ok { 5_000 } else { 1_000 };
        records.push(Record::new(at_us, latency_us, class, Kind::Fast));
    }
    let ev = |t_ms, pod: &str, kind| PodEvent { t_ms, pod: pod.into(), app: "api".into(), kind, detail: String::new() };
    StageRun {
        stage: Stage::get(name),
        repeat: 0,
        load: RunResult {
            started_unix_ms: 1_700_000_000_000,
            profile: Profile { duration: std::time::Duration::from_secs(10), rate_per_sec: 10, ..Profile::default() },
            records,
            accepted_jobs: vec!["j-1".into()],
            late_sends: 0,
            connections_opened: 4,
            pods: vec![],
            mirrored: vec![],
            mirrored_accepted_jobs: vec![],
        },
        steady: Window { from_us: 0, to_us: 5_000_000 },
        roll: Window { from_us: 5_000_000, to_us: 10_000_000 },
        rollout_seconds: 4.5,
        endpoints: vec![
            EndpointSample { t_ms: -2000, ready: 2 },
            EndpointSample { t_ms: 6000, ready: 1 },
            EndpointSample { t_ms: 8000, ready: 2 },
        ],
        desired_endpoints: 2,
        events: vec![
            ev(5200, "api-old-1", PodEventKind::Terminating),
            ev(5200, "api-old-1", PodEventKind::Sigterm),
            ev(7000, "api-old-1", PodEventKind::Exited),
        ],
        logs: Vec::new(),
        jobs: Jobs { accepted: 10, applied_rows: 7, lost: 3, settled: true, ..Jobs::default() },
        pod_logs_dir: format!("pods/{}", name.as_str()),
        third_party: None,
    }
}

fn line(t_ms: i64, pod: &str, app: &str, step: &str, fields: Value) -> LogLine {
    LogLine {
        t_ms,
        timestamp: format!("2024-01-01T00:00:{:06.3}Z", t_ms as f64 / 1000.0),
        pod: pod.into(),
        app: app.into(),
        step: step.into(),
        fields,
    }
}

/// A graceful api pod's shutdown, resources disposed in `order`.
fn graceful(pod: &str, order: &[&str]) -> Vec<LogLine> {
    let mut v = vec![
        line(5200, pod, "api", "sigterm_received", json!({})),
        line(5210, pod, "api", "readiness_failing", json!({})),
        line(6210, pod, "api", "listener_closed", json!({})),
        line(6300, pod, "api", "drain_complete", json!({"elapsed_ms": 90, "connections_left": 0, "clean": true})),
    ];
    for (i, r) in order.iter().enumerate() {
        v.push(line(6400 + i as i64, pod, "api", "dispose", json!({ "resource": r })));
    }
    v.push(line(6500, pod, "api", "telemetry_flushed", json!({})));
    v.push(line(6501, pod, "api", "exit", json!({"code": 0})));
    v
}

fn report() -> Report {
    let mut naive = stage_run(StageName::Naive, &[(Class::Reset, 2)]);
    naive.events.push(PodEvent {
        t_ms: 6900,
        pod: "api-old-1".into(),
        app: "api".into(),
        kind: PodEventKind::Sigkill,
        detail: "killed by signal 9".into(),
    });
    let mut pid1 = stage_run(StageName::Pid1, &[(Class::Refused, 7), (Class::Reset, 1)]);
    pid1.logs = vec![
        line(5200, "api-old-1", "api", "sigterm_received", json!({})),
        line(5201, "api-old-1", "api", "exit_now", json!({})),
    ];
    let mut drain = stage_run(StageName::ReverseDrain, &[]);
    drain.logs = graceful("api-old-1", &checks::API_TEARDOWN);
    drain.jobs.lost = 0;
    Report {
        run_id: "run-<1>".into(),
        started_at: "2024-01-01T00:00:00Z".into(),
        platform: "local".into(),
        command: "cargo xtask experiment --profile quick".into(),
        machine: Machine { hostname: "box".into(), cpus: 2, os: "linux".into(), kernel: "6.1".into() },
        profile: ExperimentProfile {
            name: "quick".into(),
            load: Profile::default(),
            warmup_s: 1,
            steady_s: 5,
            cooldown_s: 1,
            api_replicas: 2,
            worker_replicas: 1,
            propagation_delay_ms: 1000,
            job_backlog: 0,
            api_capacity: 16,
            propagation: None,
        },
        stages: vec![naive, pid1, drain],
        repeats: 1,
        guardian: Some(GuardianCheck {
            drain_budget_ms: 5000,
            request_ms: 20000,
            expected_exit_code: 70,
            exit_code: Some(70),
            exit_after_ms: 8012,
            client_outcome: "reset".into(),
            logs: vec![line(8012, "api-guardian", "api", "guardian_fired", json!({"code": 70}))],
        }),
        incomplete: None,
    }
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("zerodrop-report-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn report_json_has_the_contract_keys_and_values() {
    let dir = tmpdir("json");
    super::write(&report(), &dir).unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(v["schema_version"], SCHEMA_VERSION);
    assert_eq!(v["run_id"], "run-<1>");
    assert_eq!(v["profile"]["load"]["rate_per_sec"], 200);
    assert_eq!(v["guardian"]["fired"], true);
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3);
    let pid1 = &stages[1];
    assert_eq!(pid1["name"], "pid1");
    assert_eq!(pid1["lever"], Stage::get(StageName::Pid1).lever);
    // The roll window only: 50 requests, 8 failed.
    assert_eq!(pid1["requests"]["total"], 50);
    assert_eq!(pid1["requests"]["failed"], 8);
    for key in
        ["ok", "http_4xx", "refused", "reset", "timeout", "http_502", "http_503", "http_504", "http_500", "other"]
    {
        assert!(pid1["requests"]["by_class"][key].is_u64(), "by_class.{key} missing");
    }
    assert_eq!(pid1["requests"]["by_class"]["refused"], 7);
    assert_eq!(pid1["requests"]["by_class"]["reset"], 1);
    assert!((pid1["error_rate"].as_f64().unwrap() - 0.16).abs() < 1e-9);
    for w in ["roll", "steady"] {
        for k in ["p50", "p99", "max"] {
            assert!(pid1["latency_ms"][w][k].is_number(), "latency_ms.{w}.{k}");
        }
    }
    assert!((pid1["latency_ms"]["steady"]["max"].as_f64().unwrap() - 5.0).abs() < 0.5);
    for k in ["accepted", "lost", "duplicated", "extra_applications", "dead_lettered", "settled"] {
        assert!(!pid1["jobs"][k].is_null(), "jobs.{k}");
    }
    assert_eq!(pid1["jobs"]["lost"], 3);
    assert_eq!(pid1["rollout_seconds"], 4.5);
    assert_eq!(pid1["capacity"]["min_ready_endpoints"], 1);
    assert_eq!(pid1["capacity"]["desired"], 2);
    // Steady 10 ok/s; the worst roll second had 10 - 8 = 2 ok: an 80% dip.
    let dip = pid1["capacity"]["throughput_dip_pct"].as_f64().unwrap();
    assert!((dip - 80.0).abs() < 1.0, "dip {dip}");
    assert_eq!(pid1["evidence"].as_array().unwrap().len(), 2);
    assert_eq!(pid1["evidence"][0]["step"], "sigterm_received");
    assert_eq!(pid1["stage"]["pod"]["entrypoint"], "init");
    let c = &pid1["checks"];
    assert_eq!(c["sigterm_handler_fired"], true);
    assert!(c["readiness_before_listener_close"].is_null());
    assert!(c["teardown_reverse_order"].is_null());
    assert_eq!(c["guardian_fired"], false);
    assert_eq!(stages[0]["checks"]["killed_by_sigkill"], 1);
    assert_eq!(stages[0]["checks"]["sigterm_handler_fired"], false);
    assert_eq!(stages[2]["checks"]["teardown_reverse_order"], true);
    assert_eq!(stages[2]["checks"]["readiness_before_listener_close"], true);
    // No per-request dump.
    assert!(!v.to_string().contains("latency_us"));
    assert!(dir.join("charts/reverse-drain.svg").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn markdown_has_one_table_row_per_stage_and_honest_prose() {
    let dir = tmpdir("md");
    let r = report();
    super::write(&r, &dir).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let table: Vec<&str> = md
        .split("## Before / after")
        .nth(1)
        .unwrap()
        .lines()
        .skip_while(|l| !l.starts_with("| Stage"))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert_eq!(table.len(), r.stages.len(), "{table:#?}");
    for (row, s) in table.iter().zip(&r.stages) {
        assert!(row.starts_with(&format!("| {} |", s.stage.name.as_str())), "{row}");
    }
    assert!(md.contains("run-&lt;1&gt;"));
    assert!(md.contains("![pid1 timeline](charts/pid1.svg)"));
    // Seven refused of 50 against none: the intervals still touch, so no claim.
    assert!(!md.contains("refused rose beyond noise"), "{md}");
    assert!(md.contains("Too few events on either side to tell a difference from noise"), "{md}");
    // Two resets not near the SIGKILL: nothing for pid1's lever to remove.
    assert!(md.contains("| **pid1** (vs naive) | requests cut by a SIGKILL | 0 | 0 / 50"), "{md}");
    assert!(md.contains("not detectable"), "{md}");
    // Equal windows and Wilson intervals in the main table.
    assert!(md.contains("| pid1 | 16.00% (8.34%–28.51%) |"), "{md}");
    assert!(md.contains("dispose ×4"));
    assert!(md.contains("✅ 70 (expected 70)"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Repeats: verdicts pool every repeat, the json carries min/median/max and the
/// lever effect, and the markdown a row per stage in the repeats table.
#[test]
fn repeats_are_pooled_and_summarised() {
    let dir = tmpdir("repeat");
    let mut r = report();
    let mut second = report().stages;
    for s in &mut second {
        s.repeat = 1;
    }
    // The second pid1 run refuses a little more.
    second[1] = stage_run(StageName::Pid1, &[(Class::Refused, 9), (Class::Reset, 1)]);
    second[1].repeat = 1;
    r.stages.extend(second);
    r.repeats = 2;
    super::write(&r, &dir).unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let pid1 = &v["stages"][1];
    assert_eq!(v["stages"].as_array().unwrap().len(), 3, "one entry per stage");
    assert_eq!(pid1["repeats"], 2);
    assert_eq!(pid1["window_seconds"], 5.0);
    assert_eq!(pid1["stats"]["refused"], json!({ "min": 7.0, "median": 8.0, "max": 9.0 }));
    assert_eq!(pid1["requests"]["failed_rate"]["failed"], 18);
    assert_eq!(pid1["requests"]["failed_rate"]["total"], 100);
    let ci = pid1["requests"]["failed_rate"]["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() < 0.18 && ci[1].as_f64().unwrap() > 0.18);
    assert_eq!(pid1["lever_effect"]["targets"][0], "cut_by_sigkill");
    assert_eq!(pid1["lever_effect"]["target_causes"][0], json!(["cut_by_sigkill"]));
    assert!(pid1["causes"].is_object() && pid1["runs"][1]["causes"].is_object(), "causes per stage and per repeat");
    assert_eq!(pid1["lever_effect"]["verdict"], "not-detectable");
    assert!(v["stages"][0]["lever_effect"].is_null(), "the baseline has no lever");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("## Over 2 repeats"), "{md}");
    assert!(md.contains("| pid1 | 9 (8–10) |"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checks_catch_a_wrong_teardown_order() {
    let mut run = stage_run(StageName::ReverseDrain, &[]);
    run.logs = graceful("api-a", &checks::API_TEARDOWN);
    assert_eq!(checks::compute(&run).0.teardown_reverse_order, Some(true));

    // A subsequence in the right order is fine.
    run.logs = graceful("api-a", &["http_server", "amqp_connection"]);
    assert_eq!(checks::compute(&run).0.teardown_reverse_order, Some(true));

    run.logs = graceful("api-a", &["http_server", "amqp_connection", "amqp_channel"]);
    let (c, notes) = checks::compute(&run);
    assert_eq!(c.teardown_reverse_order, Some(false));
    assert!(notes.iter().any(|n| n.contains("amqp_channel") && n.contains("api-a")), "{notes:?}");

    // Telemetry must be flushed after the last dispose.
    run.logs = graceful("api-a", &checks::API_TEARDOWN);
    run.logs.retain(|l| l.step != "telemetry_flushed");
    assert_eq!(checks::compute(&run).0.teardown_reverse_order, Some(false));

    // Worker order differs from the api's.
    run.logs = graceful("w", &checks::WORKER_TEARDOWN)
        .into_iter()
        .map(|mut l| {
            l.app = "worker".into();
            l
        })
        .collect();
    assert_eq!(checks::compute(&run).0.teardown_reverse_order, Some(true));

    // Listener closed before readiness failed.
    run.logs = graceful("api-a", &checks::API_TEARDOWN);
    run.logs.retain(|l| l.step != "readiness_failing");
    let c = checks::compute(&run).0;
    assert_eq!(c.readiness_before_listener_close, Some(false));

    run.logs.clear();
    let c = checks::compute(&run).0;
    assert_eq!(
        (c.readiness_before_listener_close, c.teardown_reverse_order, c.sigterm_handler_fired),
        (None, None, false)
    );
}

#[test]
fn svg_is_well_formed_looking_and_escaped() {
    let mut run = stage_run(StageName::Pid1, &[(Class::Refused, 5), (Class::Http503, 2)]);
    run.events.push(PodEvent {
        t_ms: 5500,
        pod: "api-<evil>&".into(),
        app: "api".into(),
        kind: PodEventKind::Sigterm,
        detail: String::new(),
    });
    let s = StageSummary::of(&run);
    let out = svg::render(&run, &s);
    assert!(out.starts_with("<svg"), "{}", &out[..40]);
    assert!(out.trim_end().ends_with("</svg>"));
    assert!(out.contains("pid1"));
    assert!(out.contains("api-&lt;evil&gt;&amp;"));
    assert!(!out.contains("<evil"));
    assert!(out.contains(">refused</text>") && out.contains(">http_503</text>"));
    assert_eq!(out.matches("<text").count(), out.matches("</text>").count());
    assert_eq!(svg::esc(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
}

#[test]
fn evidence_is_bounded_and_says_what_it_left_out() {
    let mut run = stage_run(StageName::ReverseDrain, &[]);
    run.events.clear();
    for p in 0..6 {
        run.logs.extend(graceful(&format!("api-{p}"), &checks::API_TEARDOWN).into_iter().map(|mut l| {
            l.t_ms += p * 10_000;
            l
        }));
    }
    // Lines before a pod's SIGTERM are not evidence.
    run.logs.insert(0, line(100, "api-0", "api", "started", json!({})));
    // 6 pods x 7 rows (the four dispose lines collapse into one).
    let ev = super::evidence::collect(&run, 40);
    assert_eq!(ev.rows.len(), 40);
    assert_eq!(ev.omitted, 2);
    assert_eq!(ev.omitted_pods, vec!["api-5".to_string()]);
    assert_eq!(ev.rows[0].step, "sigterm_received");
    assert!(ev.rows.iter().any(|r| r.step == "dispose ×4" && r.fields.starts_with("http_server → publisher")));
}

#[test]
fn report_round_trips_through_json() {
    let text = serde_json::to_string(&report()).unwrap();
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back.stages[1].stage, Stage::get(StageName::Pid1));
}

/// Renders a six-stage synthetic report (30 s runs at 40 req/s, roll from 10 s to
/// 20 s) into $ZERODROP_SAMPLE_DIR (default: the temp dir) for eyeballing:
/// `cargo test -p xtask report::tests::sample -- --ignored`.
#[test]
#[ignore]
fn sample() {
    // (class, first second, last second, per second) bursts, per stage.
    let bursts: [&[(Class, u64, u64, u64)]; 6] = [
        &[(Class::Reset, 11, 12, 6), (Class::Http502, 17, 17, 4), (Class::Timeout, 12, 13, 2)],
        &[(Class::Refused, 11, 13, 15), (Class::Reset, 11, 11, 5), (Class::Refused, 16, 18, 12)],
        &[(Class::Reset, 14, 14, 4), (Class::Http503, 15, 15, 2)],
        &[],
        &[(Class::Timeout, 15, 15, 1)],
        &[],
    ];
    let mut r = report();
    r.stages = StageName::ALL
        .iter()
        .zip(bursts)
        .enumerate()
        .map(|(i, (n, b))| {
            let mut run = stage_run(*n, &[]);
            run.load.records = (0..30 * 40u64)
                .map(|k| {
                    let (sec, j) = (k / 40, k % 40);
                    let class = b
                        .iter()
                        .scan(0, |seen, (c, from, to, per)| {
                            let hit = (*from..=*to).contains(&sec) && j >= *seen && j < *seen + per;
                            *seen += if (*from..=*to).contains(&sec) { *per } else { 0 };
                            Some(hit.then_some(*c))
                        })
                        .flatten()
                        .next()
                        .unwrap_or(Class::Ok);
                    let latency_us = match class {
                        Class::Timeout => 5_000_000,
                        Class::Ok if (10..20).contains(&sec) => 8_000 + (k * 7919 % 300) * 1000,
                        _ => 3_000 + (k * 7919 % 40) * 1000,
                    };
                    Record::new(k * 25_000, latency_us, class, Kind::Fast)
                })
                .collect();
            run.load.profile.duration = std::time::Duration::from_secs(30);
            run.steady = Window { from_us: 3_000_000, to_us: 10_000_000 };
            run.roll = Window { from_us: 10_000_000, to_us: 20_000_000 };
            run.rollout_seconds = 9.0 + i as f64 * 0.4;
            run.jobs.lost = [5, 4, 4, 2, 0, 0][i];
            run.jobs.duplicated = [0, 0, 0, 0, 1, 0][i];
            run.jobs.settled = i != 1;
            let ev = |t_ms, pod: &str, kind, detail: &str| PodEvent {
                t_ms,
                pod: pod.into(),
                app: "api".into(),
                kind,
                detail: detail.into(),
            };
            run.events.clear();
            run.endpoints = vec![EndpointSample { t_ms: -2000, ready: 2 }];
            for (p, (t0, pod)) in [(10_500, "api-5f7c-old1"), (15_500, "api-5f7c-old2")].into_iter().enumerate() {
                let surge = i == 5;
                run.events.push(ev(t0 - 1200, &format!("api-9d2e-new{p}"), PodEventKind::Created, ""));
                run.events.push(ev(t0 - 200, &format!("api-9d2e-new{p}"), PodEventKind::Ready, ""));
                run.events.push(ev(t0, pod, PodEventKind::Terminating, ""));
                run.events.push(ev(t0 + 100, pod, PodEventKind::Sigterm, ""));
                if i == 0 {
                    run.events.push(ev(t0 + 12_000, pod, PodEventKind::Sigkill, "killed by signal 9"));
                }
                run.events.push(ev(t0 + if i == 0 { 12_001 } else { 1_900 }, pod, PodEventKind::Exited, "exit code 0"));
                run.endpoints.push(EndpointSample { t_ms: t0 - 200, ready: if surge { 3 } else { 2 } });
                run.endpoints.push(EndpointSample { t_ms: t0 + 50, ready: if surge { 2 } else { 1 } });
                run.endpoints.push(EndpointSample { t_ms: t0 + 2500, ready: 2 });
                if i >= 2 {
                    run.logs.extend(graceful(pod, &checks::API_TEARDOWN).into_iter().map(|mut l| {
                        l.t_ms += t0 - 5100;
                        l
                    }));
                }
            }
            run
        })
        .collect();
    let dir = std::env::var_os("ZERODROP_SAMPLE_DIR").map_or_else(|| tmpdir("sample"), Into::into);
    super::write(&r, &dir).unwrap();
    eprintln!("wrote {}", dir.display());
}

#[test]
fn deregistration_check_compares_endpoint_removal_with_the_listener_close() {
    let mut run = stage_run(StageName::Pid1, &[]);
    let removed = |t_ms| PodEvent {
        t_ms,
        pod: "api-a".into(),
        app: "api".into(),
        kind: PodEventKind::EndpointRemoved,
        detail: String::new(),
    };
    // pid1: the process (and its listener) went away 1.5 s before the Service noticed.
    run.logs = vec![
        line(100, "api-a", "api", "sigterm_received", json!({})),
        line(101, "api-a", "api", "exit_now", json!({})),
    ];
    run.events = vec![removed(1600)];
    let (c, notes) = checks::compute(&run);
    assert_eq!(c.deregistered_before_listener_close, Some(false));
    assert!(notes.iter().any(|n| n.contains("1499 ms later")), "{notes:?}");
    // readiness-prestop: removed during preStop, listener closed after the wait.
    run.logs = vec![line(4000, "api-a", "api", "listener_closed", json!({}))];
    run.events = vec![removed(1500)];
    assert_eq!(checks::compute(&run).0.deregistered_before_listener_close, Some(true));
    // Workers have no endpoints and are not judged.
    run.logs = vec![line(4000, "w", "worker", "listener_closed", json!({}))];
    assert_eq!(checks::compute(&run).0.deregistered_before_listener_close, None);
}

/// Issue #8, defect 4: a kind run showed the local platform's 1500 ms, which nothing
/// on a cluster applies. The report prints what the platform filled in: the measured
/// delay and what was measured; the local platform's configured delay reads as before.
#[test]
fn the_propagation_line_is_what_the_platform_measured_or_applies() {
    let line = |r: &Report| {
        let dir = tmpdir("propagation");
        super::write(r, &dir).unwrap();
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        md.lines().find(|l| l.starts_with("| Propagation delay |")).unwrap().to_string()
    };
    let mut r = report();
    r.profile.propagation_delay_ms = 1500;
    assert_eq!(line(&r), "| Propagation delay | 1500 ms (Service keeps routing to a terminating pod) |");
    r.profile.propagation = Some(Propagation { configured_ms: Some(1500), measured: None, what: String::new() });
    assert_eq!(line(&r), "| Propagation delay | 1500 ms (Service keeps routing to a terminating pod) |");
    // The local platform names its distribution.
    r.profile.propagation = Some(Propagation {
        configured_ms: Some(1500),
        measured: None,
        what: "the local Service applies each endpoint change 1000 ms + per-node skew U[0, 600) ms".into(),
    });
    assert_eq!(
        line(&r),
        "| Propagation delay | 1500 ms on average: the local Service applies each endpoint change 1000 ms + per-node skew U[0, 600) ms |"
    );
    // A measured one (as the kind platform reports it), from 14, 31 and 22 ms.
    r.profile.propagation = Some(Propagation {
        configured_ms: None,
        measured: MeasuredDelay::of(&[14, 31, 22]),
        what: "the cluster's own delay from an api pod turning terminating".into(),
    });
    let kind = line(&r);
    assert!(kind.starts_with("| Propagation delay | measured p50 22 ms, max 31 ms over 3 pods: the cluster's own delay from an api pod turning terminating"), "{kind}");
    assert!(!kind.contains("1500"), "{kind}");
    let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back.profile.propagation, r.profile.propagation);
    // Older reports have no such field.
    let mut old = serde_json::to_value(&r).unwrap();
    old["profile"].as_object_mut().unwrap().remove("propagation");
    let old: Report = serde_json::from_value(old).unwrap();
    assert_eq!(old.profile.propagation, None);
}

#[test]
fn a_failed_stage_leaves_a_partial_report_that_says_so() {
    for kept in [0, 2] {
        let mut r = report();
        r.stages.truncate(kept);
        r.guardian = None;
        r.incomplete = Some(super::model::Incomplete {
            stage: "reverse-drain".into(),
            repeat: 0,
            reason: "the rolling deploy failed: no progress for 180 s".into(),
        });
        let dir = tmpdir(&format!("partial-{kept}"));
        super::write(&r, &dir).unwrap();
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.contains("**INCOMPLETE.** Stage `reverse-drain` (repeat 1) failed"), "{md}");
        assert!(md.contains(&format!("only the {kept} stage run(s)")), "{md}");
        let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(json["incomplete"]["stage"], "reverse-drain");
        assert_eq!(json["stages"].as_array().map(|s| s.len()), Some(kept));
    }
    // A complete run says nothing of the kind.
    let dir = tmpdir("complete");
    super::write(&report(), &dir).unwrap();
    assert!(!std::fs::read_to_string(dir.join("report.md")).unwrap().contains("INCOMPLETE"));
}
