//! Real restarts with the final stage's settings: RabbitMQ restarted in the middle of a
//! load run, and PostgreSQL restarted in the middle of one. The restarts are done by
//! `cargo xtask test` (graceful stop, same port and data, start, wait until ready) on a
//! private pair that no other test uses; these tests fail without it. Every accepted (202)
//! job must be applied exactly once: zero lost, zero duplicated.
//!
//! Each test restarts one server and uses the main server for the other dependency, so the
//! two tests can run at the same time without one's restart landing in the other.

mod common;

use common::api::ApiProc;
use common::fault_ctl::{self, parse_answer};
use common::load::{assert_exactly_once, load, reconcile, stop_all};
use common::{amqp_url, api_stage_env, stage_env, Fixture, WorkerProc};
use std::time::Duration;
use zerodrop_stages::StageName;

const FINAL: StageName = StageName::SurgeJitter;

async fn metric_sum(workers: &[WorkerProc], series: &str) -> u64 {
    let mut sum = 0;
    for w in workers {
        sum += w.metric(series).await.unwrap_or_else(|| panic!("{series} missing from a worker's /metrics"));
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted_mid_load_loses_and_duplicates_nothing() {
    let ctl = fault_ctl::from_env();
    let mut fx = Fixture::on("restart_amqp", &ctl.amqp_url, &zerodrop_ledger::database_url()).await;
    let env = stage_env(FINAL);
    let mut workers = vec![fx.spawn_worker(&env), fx.spawn_worker(&env)];
    for w in &mut workers {
        w.wait_ready(Duration::from_secs(15)).await;
    }
    let api = ApiProc::start(&ctl.amqp_url, &fx.topology.queue, &api_stage_env(FINAL));
    let run = load(&api, &fx.job_id("amqp-restart"), ctl.restart("rabbitmq")).await;
    let down = run.fault;
    eprintln!("[rabbitmq restart] down for {down:?}");
    assert!(down > Duration::ZERO, "the runner measured no down time");
    let (lost, duplicated, _) = reconcile(&fx, &run.accepted).await;
    // The fixture's own session died with the old broker.
    fx.reconnect_amqp().await;
    assert_eq!(fx.depths().await.1, 0, "jobs were parked in the dead-letter queue");
    for w in &workers {
        assert!(w.has_step("consumer_lost"), "a worker never saw the broker go:\n{}", w.dump());
        assert!(w.has_step("consumer_restarted"), "a worker did not reconnect:\n{}", w.dump());
    }
    assert!(api.has_step("dependency_down"), "the api never saw the broker go:\n{}", api.lines().join("\n"));
    assert!(api.has_step("dependency_up"), "the api did not reconnect:\n{}", api.lines().join("\n"));
    stop_all(api, workers).await;
    assert_exactly_once("rabbitmq restart", &run, run.fault_done, lost, duplicated);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_load_loses_and_duplicates_nothing() {
    let ctl = fault_ctl::from_env();
    let mut fx = Fixture::on("restart_pg", &amqp_url(), &ctl.database_url).await;
    let mut env = stage_env(FINAL);
    // Long enough inside the transaction that the restart lands mid-job.
    env.push(("ZD_JOB_WORK_MS", "5".into()));
    let mut workers = vec![fx.spawn_worker(&env), fx.spawn_worker(&env)];
    for w in &mut workers {
        w.wait_ready(Duration::from_secs(15)).await;
    }
    let api = ApiProc::start(&amqp_url(), &fx.topology.queue, &api_stage_env(FINAL));
    let run = load(&api, &fx.job_id("pg-restart"), ctl.restart("postgres")).await;
    let down = run.fault;
    eprintln!("[postgres restart] down for {down:?}");
    assert!(down > Duration::ZERO, "the runner measured no down time");
    // The fixture's own session died with the old server.
    fx.reconnect_db().await;
    let (lost, duplicated, _) = reconcile(&fx, &run.accepted).await;
    assert_eq!(fx.depths().await.1, 0, "jobs were parked in the dead-letter queue");
    // Jobs that met the restart failed their transaction and went round again.
    let retried = metric_sum(&workers, "zerodrop_worker_jobs_total{outcome=\"requeued\"}").await;
    assert!(retried > 0, "no job met the restart: the workers never saw the database go");
    stop_all(api, workers).await;
    assert_exactly_once("postgres restart", &run, run.fault_done, lost, duplicated);
    fx.cleanup().await;
}

#[test]
fn fault_answers_parse() {
    assert_eq!(parse_answer("ok rabbitmq down_ms=6210 stopped_ms=2034"), Ok(Duration::from_millis(6210)));
    assert_eq!(parse_answer("ok postgres stopped_ms=3 down_ms=812"), Ok(Duration::from_millis(812)));
    assert_eq!(parse_answer("error no private postgres is running"), Err("no private postgres is running".into()));
    assert!(parse_answer("ok rabbitmq").is_err());
    assert!(parse_answer("ok rabbitmq down_ms=soon").is_err());
    assert!(parse_answer("").is_err());
    assert!(parse_answer("restarted").is_err());
}
