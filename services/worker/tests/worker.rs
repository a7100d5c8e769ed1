//! The worker binary against the real RabbitMQ and PostgreSQL: redelivery and
//! idempotency, dead-lettering, and the shutdown order. Each test owns a unique queue
//! pair and ledger schema and removes them at the end.

mod common;

use common::{stage_env, wait_until, Fixture};
use std::collections::BTreeSet;
use std::time::Duration;
use zerodrop_stages::StageName;

const APPLIED: &str = "zerodrop_worker_jobs_total{outcome=\"applied\"}";
const ALREADY_APPLIED: &str = "zerodrop_worker_jobs_total{outcome=\"already_applied\"}";
const DEAD_LETTERED: &str = "zerodrop_worker_jobs_total{outcome=\"dead_lettered\"}";
const IN_FLIGHT: &str = "zerodrop_worker_jobs_in_flight";
const PHASE: &str = "zerodrop_worker_phase";
const READY: &str = "zerodrop_worker_ready";

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Every test, whatever its inner waits, ends within this.
const TEST_BUDGET: Duration = Duration::from_secs(55);

async fn bounded<F: std::future::Future<Output = T>, T>(test: F) -> T {
    match tokio::time::timeout(TEST_BUDGET, test).await {
        Ok(v) => v,
        Err(_) => panic!("the test overran its {TEST_BUDGET:?} budget"),
    }
}

fn with(mut env: Vec<(&'static str, String)>, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

/// A job committed but not yet acked when its worker is SIGKILLed is redelivered to
/// the next worker. Returns the job's ledger rows once everything settled.
async fn kill_after_commit_then_redeliver(idempotent: bool) -> i64 {
    let fx = Fixture::new(if idempotent { "redeliver_idem" } else { "redeliver_plain" }).await;
    let id = fx.job_id("job");
    fx.publish_job(&id, 5).await;
    let idem = idempotent.to_string();
    let env = with(stage_env(StageName::RequeueIdempotency), &[("ZD_IDEMPOTENT", &idem)]);

    // The first worker commits, then spends 3 s "sending a receipt" before its ack.
    let mut first = fx.spawn_worker(&with(env.clone(), &[("ZD_POST_COMMIT_MS", "3000"), ("ZD_POD", "first")]));
    first.wait_ready(READY_TIMEOUT).await;
    assert!(
        wait_until(Duration::from_secs(10), || async { fx.count_rows(&id).await >= 1 }).await,
        "the first worker never committed the job:\n{}",
        first.dump()
    );
    first.sigkill();
    assert!(first.wait_exit(EXIT_TIMEOUT).await.is_some(), "SIGKILL did not end the worker");
    assert_eq!(fx.count_rows(&id).await, 1, "committed exactly once before the kill");

    // The broker hands the unacked delivery to the next worker.
    let mut second = fx.spawn_worker(&with(env, &[("ZD_POST_COMMIT_MS", "0"), ("ZD_POD", "second")]));
    second.wait_ready(READY_TIMEOUT).await;
    let settled = if idempotent {
        wait_until(Duration::from_secs(12), || async {
            second.metric(ALREADY_APPLIED).await == Some(1) && second.metric(IN_FLIGHT).await == Some(0)
        })
        .await
    } else {
        wait_until(Duration::from_secs(12), || async {
            fx.count_rows(&id).await >= 2 && second.metric(IN_FLIGHT).await == Some(0)
        })
        .await
    };
    assert!(settled, "the redelivery was not processed by the second worker:\n{}", second.dump());

    // A graceful exit hands back anything still unacked, so empty queues afterwards
    // prove nothing is left in flight.
    second.sigterm();
    let status = second.wait_exit(EXIT_TIMEOUT).await.expect("the second worker exits on SIGTERM");
    assert!(status.success(), "exit {status}:\n{}", second.dump());
    assert_eq!(fx.depths().await, (0, 0), "queue and dead-letter queue empty");

    let rows = fx.count_rows(&id).await;
    let by = fx.applied_by(&id).await;
    if idempotent {
        assert_eq!(by, vec!["first".to_string()]);
    } else {
        assert_eq!(by, vec!["first".to_string(), "second".to_string()]);
    }
    fx.cleanup().await;
    rows
}

#[tokio::test]
async fn idempotent_consumer_applies_a_redelivered_job_once() {
    assert_eq!(bounded(kill_after_commit_then_redeliver(true)).await, 1);
}

#[tokio::test]
async fn without_idempotency_a_redelivered_job_is_applied_twice() {
    // The control experiment: proves the redelivery above really happened.
    assert_eq!(bounded(kill_after_commit_then_redeliver(false)).await, 2);
}

/// Poison messages go to the dead-letter queue once, and the worker carries on.
async fn poison_is_dead_lettered(stage: StageName) {
    let fx = Fixture::new(match stage {
        StageName::RequeueIdempotency => "poison_manual",
        _ => "poison_auto",
    })
    .await;
    let bad_id = fx.job_id("zero");
    let good_id = fx.job_id("good");
    let bad_payload = format!(r#"{{"id":"{bad_id}","amount":0}}"#);
    fx.publish(b"not json").await;
    fx.publish(bad_payload.as_bytes()).await;
    fx.publish_job(&good_id, 7).await;

    let mut w = fx.spawn_worker(&stage_env(stage));
    w.wait_ready(READY_TIMEOUT).await;
    let done = wait_until(Duration::from_secs(12), || async {
        fx.count_rows(&good_id).await == 1 && fx.depths().await == (0, 2) && w.metric(IN_FLIGHT).await == Some(0)
    })
    .await;
    assert!(
        done,
        "expected the valid job applied and 2 messages dead-lettered; depths {:?}:\n{}",
        fx.depths().await,
        w.dump()
    );
    assert_eq!(w.metric(DEAD_LETTERED).await, Some(2));
    assert_eq!(w.metric(APPLIED).await, Some(1));
    let poison_lines = w.lines().iter().filter(|l| l.contains("poison message dead-lettered")).count();
    assert_eq!(poison_lines, 2, "one log line per poison message:\n{}", w.dump());

    w.sigterm();
    let status = w.wait_exit(EXIT_TIMEOUT).await.expect("the worker exits on SIGTERM");
    assert!(status.success(), "exit {status}:\n{}", w.dump());

    assert_eq!(fx.total_rows().await, 1, "only the valid job reached the ledger");
    assert_eq!(fx.count_rows(&bad_id).await, 0);
    // Dead-lettered once each, never looped back into the work queue.
    assert_eq!(fx.depths().await, (0, 2));
    let parked: BTreeSet<Vec<u8>> = fx.take_all(&fx.topology.dead_letter_queue()).await.into_iter().collect();
    let expected: BTreeSet<Vec<u8>> = [b"not json".to_vec(), bad_payload.into_bytes()].into_iter().collect();
    assert_eq!(parked, expected);
    fx.cleanup().await;
}

#[tokio::test]
async fn poison_is_dead_lettered_with_manual_ack() {
    bounded(poison_is_dead_lettered(StageName::RequeueIdempotency)).await;
}

#[tokio::test]
async fn poison_is_dead_lettered_with_auto_ack() {
    // Reverse-drain: graceful shutdown, still auto-ack with unlimited prefetch.
    bounded(poison_is_dead_lettered(StageName::ReverseDrain)).await;
}

/// `/metrics` of a real worker, scraped as a Prometheus server would: OpenMetrics text
/// whose counters, phase and readiness follow what the worker is doing.
async fn metrics_scrape() {
    let fx = Fixture::new("metrics").await;
    let id = fx.job_id("job");
    fx.publish_job(&id, 3).await;
    let mut w = fx.spawn_worker(&stage_env(StageName::RequeueIdempotency));
    w.wait_ready(READY_TIMEOUT).await;
    assert!(
        wait_until(Duration::from_secs(10), || async { w.metric(APPLIED).await == Some(1) }).await,
        "the job was never counted as applied:\n{}",
        w.dump()
    );
    let accept = Some(zerodrop_metrics_check::PROMETHEUS_ACCEPT);
    let (status, _, text) = w.get_accepting("/metrics", accept).await.expect("a scrape");
    assert_eq!(status, 200);
    assert_eq!(text.lines().last(), Some("# EOF"), "OpenMetrics ends with # EOF:\n{text}");
    assert!(text.contains("# TYPE zerodrop_worker_jobs counter"), "{text}");
    assert_eq!(w.metric("zerodrop_worker_jobs_total{outcome=\"requeued\"}").await, Some(0));
    assert_eq!(w.metric(PHASE).await, Some(1), "serving");
    assert_eq!(w.metric("zerodrop_worker_phase_info{phase=\"serving\"}").await, Some(1));
    assert_eq!(w.metric("zerodrop_worker_phase_info{phase=\"deregistering\"}").await, Some(0));
    assert_eq!(w.metric(READY).await, Some(1));

    // This stage waits 1 s for deregistration with readiness failing, and the admin
    // port still answers meanwhile.
    w.sigterm();
    assert!(
        wait_until(Duration::from_secs(2), || async { w.metric(PHASE).await == Some(2) }).await,
        "the phase never read deregistering:\n{}",
        w.dump()
    );
    assert_eq!(w.metric("zerodrop_worker_phase_info{phase=\"deregistering\"}").await, Some(1));
    assert_eq!(w.metric("zerodrop_worker_phase_info{phase=\"serving\"}").await, Some(0));
    assert_eq!(w.metric(READY).await, Some(0));
    let status = w.wait_exit(EXIT_TIMEOUT).await.expect("the worker exits on SIGTERM");
    assert!(status.success(), "exit {status}:\n{}", w.dump());
    fx.cleanup().await;
}

#[tokio::test]
async fn metrics_follow_the_jobs_the_phase_and_readiness() {
    bounded(metrics_scrape()).await;
}

#[tokio::test]
async fn sigterm_cancels_finishes_requeues_then_disposes_in_reverse_order() {
    bounded(shutdown_order()).await;
}

async fn shutdown_order() {
    let fx = Fixture::new("shutdown").await;
    let ids: Vec<String> = (0..10).map(|i| fx.job_id(&format!("slow{i}"))).collect();
    for id in &ids {
        fx.publish_job(id, 1).await;
    }
    let mut w = fx.spawn_worker(&with(stage_env(StageName::RequeueIdempotency), &[("ZD_JOB_WORK_MS", "300")]));
    w.wait_ready(READY_TIMEOUT).await;
    assert!(
        wait_until(Duration::from_secs(10), || async { fx.total_rows().await >= 1 }).await,
        "no job was applied:\n{}",
        w.dump()
    );
    w.sigterm();
    let status = w.wait_exit(EXIT_TIMEOUT).await.expect("the worker exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit {status}:\n{}", w.dump());

    let steps = w.steps();
    let expected: [(&str, Option<&str>); 12] = [
        ("sigterm_received", None),
        ("readiness_failing", None),
        ("listener_closed", None),
        ("consumer_cancelled", None),
        ("inflight_finished", None),
        ("dispose", Some("http_server")),
        ("dispose", Some("consumer")),
        ("dispose", Some("amqp_channel")),
        ("dispose", Some("amqp_connection")),
        ("dispose", Some("db_pool")),
        ("telemetry_flushed", None),
        ("exit", None),
    ];
    let mut from = 0;
    for (step, resource) in expected {
        let found = steps[from..].iter().position(|(s, f)| {
            s == step && resource.is_none_or(|r| f.get("resource").and_then(|v| v.as_str()) == Some(r))
        });
        match found {
            Some(i) => from += i + 1,
            None => panic!(
                "step {step} {resource:?} missing or out of order; steps: {:?}\n{}",
                steps
                    .iter()
                    .map(|(s, f)| format!("{s}{}", f.get("resource").map(|r| format!("({r})")).unwrap_or_default()))
                    .collect::<Vec<_>>(),
                w.dump()
            ),
        }
    }
    assert!(!w.has_step("guardian_fired") && !w.has_step("drain_budget_exceeded"), "{}", w.dump());
    let requeued = steps
        .iter()
        .find(|(s, _)| s == "requeued")
        .and_then(|(_, f)| f.get("count")?.as_u64())
        .expect("a requeued step with a count");

    // Nothing lost, nothing doubled: every id is in the ledger exactly once, or back
    // in the queue.
    let r = zerodrop_ledger::reconcile(&fx.db, &fx.schema, &ids).await.expect("reconcile");
    assert!(r.duplicated.is_empty(), "{r:?}");
    let back: BTreeSet<String> = fx
        .take_all(&fx.topology.queue)
        .await
        .iter()
        .map(|p| zerodrop_jobs::Job::from_payload(p).expect("a requeued job").id)
        .collect();
    let not_applied: BTreeSet<String> = r.lost.iter().cloned().collect();
    assert_eq!(back, not_applied, "the jobs not in the ledger are exactly the ones back in the queue");
    eprintln!("shutdown: applied {}, requeued {requeued}, back in the queue {}", r.applied_rows, back.len());
    assert_eq!(r.applied_rows as usize + back.len(), ids.len());
    assert!(requeued >= 1, "with 10 slow jobs and prefetch 8 some must have been buffered:\n{}", w.dump());
    // Requeued deliveries are back in the queue (with any never delivered at all).
    assert!(requeued as usize <= back.len(), "requeued {requeued}, back {}:\n{}", back.len(), w.dump());
    fx.cleanup().await;
}

#[test]
fn a_bad_setting_is_a_startup_error_naming_the_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zerodrop-worker"))
        .env("ZD_JOB_WORK_MS", "fast")
        .env("ZD_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run the worker");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ZD_JOB_WORK_MS") && stderr.contains("fast"), "{stderr}");
}

/// A database error is transient with manual ack (the job is requeued and applied
/// once the database is back) and fatal to the job with auto-ack.
async fn database_error(stage: StageName) {
    let manual = stage == StageName::RequeueIdempotency;
    let fx = Fixture::new(if manual { "dberr_manual" } else { "dberr_auto" }).await;
    let id = fx.job_id("job");
    let mut w = fx.spawn_worker(&stage_env(stage));
    w.wait_ready(READY_TIMEOUT).await;
    // The ledger disappears under the running worker.
    zerodrop_ledger::drop_schema(&fx.db, &fx.schema).await.expect("drop the schema");
    fx.publish_job(&id, 2).await;
    let (series, want) = if manual {
        ("zerodrop_worker_jobs_total{outcome=\"requeued\"}", 2)
    } else {
        ("zerodrop_worker_jobs_total{outcome=\"failed\"}", 1)
    };
    assert!(
        wait_until(Duration::from_secs(10), || async { w.metric(series).await.is_some_and(|n| n >= want) }).await,
        "expected {series} >= {want}:\n{}",
        w.dump()
    );
    zerodrop_ledger::create_schema(&fx.db, &fx.schema).await.expect("recreate the schema");
    if manual {
        assert!(
            wait_until(Duration::from_secs(10), || async { fx.count_rows(&id).await == 1 }).await,
            "the requeued job was never applied:\n{}",
            w.dump()
        );
    } else {
        // Nothing will ever bring it back.
        assert!(wait_until(Duration::from_secs(5), || async { w.metric(IN_FLIGHT).await == Some(0) }).await);
        assert_eq!(fx.count_rows(&id).await, 0);
    }
    w.sigterm();
    let status = w.wait_exit(EXIT_TIMEOUT).await.expect("the worker exits on SIGTERM");
    assert!(status.success(), "exit {status}:\n{}", w.dump());
    assert_eq!(fx.depths().await, (0, 0));
    assert_eq!(fx.count_rows(&id).await, if manual { 1 } else { 0 });
    fx.cleanup().await;
}

#[tokio::test]
async fn database_error_requeues_with_manual_ack() {
    bounded(database_error(StageName::RequeueIdempotency)).await;
}

#[tokio::test]
async fn database_error_loses_the_job_with_auto_ack() {
    bounded(database_error(StageName::ReverseDrain)).await;
}

#[tokio::test]
async fn a_consumer_cancelled_by_the_broker_is_restarted_and_readiness_tells_the_truth() {
    bounded(async {
        let fx = Fixture::new("lost").await;
        let mut w = fx.spawn_worker(&stage_env(StageName::RequeueIdempotency));
        w.wait_ready(READY_TIMEOUT).await;
        // The broker cancels the consumer of a deleted queue; the worker declares the
        // queues again on a new session and consumes from them.
        fx.topology.delete(&fx.channel).await.expect("delete the queues");
        assert!(
            wait_until(Duration::from_secs(10), || async { w.has_step("consumer_restarted") }).await,
            "the consumer was not restarted:\n{}",
            w.dump()
        );
        assert!(w.has_step("dependency_down") && w.has_step("dependency_up"), "{}", w.dump());
        assert!(
            wait_until(Duration::from_secs(5), || async { w.get("/readyz").await.is_some_and(|(c, _)| c == 200) })
                .await
        );
        let id = fx.job_id("after");
        fx.publish_job(&id, 3).await;
        assert!(
            wait_until(Duration::from_secs(10), || async { fx.count_rows(&id).await == 1 }).await,
            "a job published after the restart was not applied:\n{}",
            w.dump()
        );
        w.sigterm();
        let status = w.wait_exit(EXIT_TIMEOUT).await.expect("the worker exits on SIGTERM");
        assert!(status.success(), "exit {status}:\n{}", w.dump());
        fx.cleanup().await;
    })
    .await;
}

/// Auto-ack: buffered deliveries are already acked, so the drain processes them; what
/// the budget cuts off is lost, and nothing is left in the queue to show for it.
async fn auto_ack_drain(budget_ms: &str) -> (zerodrop_ledger::Reconciliation, common::WorkerProc) {
    let fx = Fixture::new("autodrain").await;
    let ids: Vec<String> = (0..10).map(|i| fx.job_id(&format!("auto{i}"))).collect();
    for id in &ids {
        fx.publish_job(id, 1).await;
    }
    let env = with(stage_env(StageName::ReverseDrain), &[("ZD_JOB_WORK_MS", "300"), ("ZD_DRAIN_BUDGET_MS", budget_ms)]);
    let mut w = fx.spawn_worker(&env);
    w.wait_ready(READY_TIMEOUT).await;
    assert!(wait_until(Duration::from_secs(10), || async { fx.total_rows().await >= 1 }).await, "{}", w.dump());
    w.sigterm();
    let status = w.wait_exit(EXIT_TIMEOUT).await.expect("the worker exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", w.dump());
    // Unlimited prefetch: the whole queue was pushed to the worker and acked at once.
    assert_eq!(fx.depths().await, (0, 0));
    let r = zerodrop_ledger::reconcile(&fx.db, &fx.schema, &ids).await.expect("reconcile");
    assert!(r.duplicated.is_empty(), "{r:?}");
    fx.cleanup().await;
    (r, w)
}

#[tokio::test]
async fn auto_ack_drain_processes_buffered_jobs_within_the_budget() {
    let (r, w) = bounded(auto_ack_drain("5000")).await;
    assert!(r.lost.is_empty(), "{r:?}\n{}", w.dump());
    let after_cancel = w
        .steps()
        .iter()
        .find(|(s, _)| s == "inflight_finished")
        .and_then(|(_, f)| f.get("processed_after_cancel")?.as_u64());
    assert!(after_cancel.is_some_and(|n| n >= 1), "{}", w.dump());
}

#[tokio::test]
async fn auto_ack_drain_cut_by_the_budget_loses_jobs() {
    let (r, w) = bounded(auto_ack_drain("400")).await;
    assert!(!r.lost.is_empty(), "{r:?}\n{}", w.dump());
    assert!(w.has_step("inflight_abandoned"), "{}", w.dump());
    assert!(!w.has_step("inflight_finished") && !w.has_step("guardian_fired"), "{}", w.dump());
    // The cut is the worker's own: the teardown still ran in order.
    assert!(w.has_step("exit"), "{}", w.dump());
}

#[tokio::test]
async fn manual_ack_drain_cut_by_the_budget_loses_nothing() {
    bounded(async {
        let fx = Fixture::new("manualcut").await;
        let ids: Vec<String> = (0..3).map(|i| fx.job_id(&format!("long{i}"))).collect();
        for id in &ids {
            fx.publish_job(id, 1).await;
        }
        // Each job takes longer than the whole drain budget.
        let env = with(
            stage_env(StageName::RequeueIdempotency),
            &[("ZD_JOB_WORK_MS", "3000"), ("ZD_DRAIN_BUDGET_MS", "500")],
        );
        let mut w = fx.spawn_worker(&env);
        w.wait_ready(READY_TIMEOUT).await;
        assert!(
            wait_until(Duration::from_secs(10), || async { w.metric(IN_FLIGHT).await == Some(1) }).await,
            "{}",
            w.dump()
        );
        w.sigterm();
        let status = w.wait_exit(EXIT_TIMEOUT).await.expect("the worker exits after SIGTERM");
        assert_eq!(status.code(), Some(0), "{}", w.dump());
        assert!(w.has_step("inflight_abandoned") && !w.has_step("guardian_fired"), "{}", w.dump());

        let r = zerodrop_ledger::reconcile(&fx.db, &fx.schema, &ids).await.expect("reconcile");
        assert!(r.duplicated.is_empty(), "{r:?}");
        let back: BTreeSet<String> = fx
            .take_all(&fx.topology.queue)
            .await
            .iter()
            .map(|p| zerodrop_jobs::Job::from_payload(p).expect("a requeued job").id)
            .collect();
        let not_applied: BTreeSet<String> = r.lost.iter().cloned().collect();
        assert!(!back.is_empty(), "{}", w.dump());
        assert_eq!(back, not_applied, "every job not in the ledger is back in the queue");
        fx.cleanup().await;
    })
    .await;
}

#[tokio::test]
async fn a_job_failing_every_time_is_retried_up_to_the_limit_then_parked_with_its_reason() {
    bounded(async {
        use lapin::options::BasicGetOptions;
        use lapin::types::AMQPValue;
        let fx = Fixture::new("retry_limit").await;
        let id = fx.job_id("doomed");
        let env = with(stage_env(StageName::RequeueIdempotency), &[("ZD_MAX_DELIVERIES", "3")]);
        let mut w = fx.spawn_worker(&env);
        w.wait_ready(READY_TIMEOUT).await;
        // The database keeps failing for this job: its schema is gone.
        zerodrop_ledger::drop_schema(&fx.db, &fx.schema).await.expect("drop the schema");
        fx.publish_job(&id, 4).await;
        assert!(
            wait_until(Duration::from_secs(15), || async { w.metric(DEAD_LETTERED).await == Some(1) }).await,
            "the job was not parked:\n{}",
            w.dump()
        );
        let got = fx
            .channel
            .basic_get(fx.topology.dead_letter_queue().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
            .expect("the parked job is in the dead-letter queue");
        let headers = got.delivery.properties.headers().clone().expect("headers on the parked job");
        assert_eq!(headers.inner().get("x-zd-attempts"), Some(&AMQPValue::LongLongInt(3)));
        let reason = match headers.inner().get("x-zd-reason") {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => panic!("no reason header: {other:?}"),
        };
        assert!(reason.starts_with("database error"), "{reason}");
        assert_eq!(w.metric("zerodrop_worker_jobs_total{outcome=\"requeued\"}").await, Some(2), "{}", w.dump());
        // Never looped: nothing left in the work queue, nothing unacked.
        assert_eq!(fx.depths().await, (0, 0));
        zerodrop_ledger::create_schema(&fx.db, &fx.schema).await.expect("recreate the schema");
        w.sigterm();
        let status = w.wait_exit(EXIT_TIMEOUT).await.expect("the worker exits on SIGTERM");
        assert!(status.success(), "exit {status}:\n{}", w.dump());
        assert_eq!(fx.count_rows(&id).await, 0);
        fx.cleanup().await;
    })
    .await;
}
