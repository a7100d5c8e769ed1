//! Faults survived with the final stage's settings, against the real RabbitMQ and
//! PostgreSQL: the broker cut off mid-load, the database cut off mid-load (a partition:
//! a relay drops every connection and refuses new ones while the servers run on), and a
//! worker SIGKILLed mid-job. Every accepted (202) job must be applied exactly once:
//! zero lost, zero duplicated. Real server restarts are in `faults_restart.rs`.

mod common;

use common::api::ApiProc;
use common::load::{assert_exactly_once, load, reconcile, stop_all, FAULT_AT};
use common::outage::{amqp_upstream, amqp_via, postgres_upstream, postgres_via, Relay};
use common::{amqp_url, api_stage_env, stage_env, Fixture};
use std::time::Duration;
use zerodrop_stages::StageName;

const FINAL: StageName = StageName::SurgeJitter;
const OUTAGE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_going_away_mid_load_loses_and_duplicates_nothing() {
    let fx = Fixture::new("fault_amqp").await;
    let relay = Relay::start(amqp_upstream(&amqp_url())).await;
    let url = amqp_via(&amqp_url(), relay.addr);
    let env = |extra: Vec<(&'static str, String)>| {
        let mut e = stage_env(FINAL);
        e.push(("AMQP_URL", url.clone()));
        e.extend(extra);
        e
    };
    let mut workers = vec![fx.spawn_worker(&env(vec![])), fx.spawn_worker(&env(vec![]))];
    for w in &mut workers {
        w.wait_ready(Duration::from_secs(15)).await;
    }
    let api = ApiProc::start(&url, &fx.topology.queue, &api_stage_env(FINAL));
    let run = load(&api, &fx.job_id("amqp"), async { relay.outage(OUTAGE) }).await;
    assert!(relay.cuts() >= 3, "the outage cut {} connections", relay.cuts());
    let (lost, duplicated, _) = reconcile(&fx, &run.accepted).await;
    for w in &workers {
        assert!(w.has_step("consumer_restarted"), "a worker did not reconnect:\n{}", w.dump());
    }
    stop_all(api, workers).await;
    assert_exactly_once("rabbitmq outage", &run, FAULT_AT + OUTAGE, lost, duplicated);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_mid_load_loses_and_duplicates_nothing() {
    let fx = Fixture::new("fault_pg").await;
    let db_url = zerodrop_ledger::database_url();
    let relay = Relay::start(postgres_upstream(&db_url)).await;
    let via = postgres_via(&db_url, relay.addr);
    let mut env = stage_env(FINAL);
    env.push(("DATABASE_URL", via));
    env.push(("ZD_JOB_WORK_MS", "5".into()));
    let mut workers = vec![fx.spawn_worker(&env), fx.spawn_worker(&env)];
    for w in &mut workers {
        w.wait_ready(Duration::from_secs(15)).await;
    }
    let api = ApiProc::start(&amqp_url(), &fx.topology.queue, &api_stage_env(FINAL));
    let run = load(&api, &fx.job_id("pg"), async { relay.outage(OUTAGE) }).await;
    assert!(relay.cuts() >= 1, "the outage cut no database connection");
    let (lost, duplicated, _) = reconcile(&fx, &run.accepted).await;
    assert_eq!(fx.depths().await.1, 0, "jobs were parked in the dead-letter queue");
    stop_all(api, workers).await;
    assert_exactly_once("postgresql outage", &run, FAULT_AT + OUTAGE, lost, duplicated);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sigkilled_mid_job_loses_and_duplicates_nothing() {
    let fx = Fixture::new("fault_kill").await;
    let mut env = stage_env(FINAL);
    // Long enough inside the transaction that the kill lands mid-job.
    env.push(("ZD_JOB_WORK_MS", "25".into()));
    let mut victim = fx.spawn_worker(&env);
    let mut survivor = fx.spawn_worker(&env);
    victim.wait_ready(Duration::from_secs(15)).await;
    survivor.wait_ready(Duration::from_secs(15)).await;
    let api = ApiProc::start(&amqp_url(), &fx.topology.queue, &api_stage_env(FINAL));
    let pid = victim.pid();
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let run = load(&api, &fx.job_id("kill"), async { unsafe { libc::kill(pid, libc::SIGKILL) } }).await;
    assert!(victim.wait_exit(Duration::from_secs(5)).await.is_some(), "SIGKILL did not end the worker");
    let (lost, duplicated, _) = reconcile(&fx, &run.accepted).await;
    stop_all(api, vec![survivor]).await;
    assert_exactly_once("worker SIGKILL", &run, FAULT_AT + OUTAGE, lost, duplicated);
    fx.cleanup().await;
}

/// A 202 means "the broker confirmed it" only with publisher confirms, which are an api
/// lever: the api under fault must run with the api's behaviour, not the worker's.
#[test]
fn the_api_under_fault_publishes_with_confirms() {
    let env = api_stage_env(FINAL);
    assert!(env.contains(&("ZD_PUBLISHER_CONFIRMS", "true".to_string())), "{env:?}");
    assert!(stage_env(FINAL).contains(&("ZD_ACK", "after-commit".to_string())));
}
