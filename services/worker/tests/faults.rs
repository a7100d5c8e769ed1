//! Faults survived with the final stage's settings, against the real RabbitMQ and
//! PostgreSQL: the broker taken away mid-load, the database taken away mid-load, and a
//! worker SIGKILLed mid-job. Every accepted (202) job must be applied exactly once:
//! zero lost, zero duplicated.

mod common;

use common::api::ApiProc;
use common::outage::{amqp_upstream, amqp_via, postgres_upstream, postgres_via, Relay};
use common::{amqp_url, stage_env, wait_until, Fixture, WorkerProc};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use zerodrop_stages::StageName;

const FINAL: StageName = StageName::SurgeJitter;
const LOAD_FOR: Duration = Duration::from_secs(8);
const FAULT_AT: Duration = Duration::from_secs(2);
const OUTAGE: Duration = Duration::from_secs(3);

/// Jobs accepted with a 202, with when (since the load started).
struct Accepted(Vec<(String, Duration)>);

/// One client posting jobs back to back for `LOAD_FOR`; `fault` runs at `FAULT_AT`.
async fn load(api: &ApiProc, prefix: &str, fault: impl FnOnce()) -> (Accepted, usize) {
    let addr = api.addr.clone();
    let prefix = prefix.to_string();
    let client = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let (mut accepted, mut refused) = (Vec::new(), 0usize);
        let mut i = 0;
        while start.elapsed() < LOAD_FOR {
            let id = format!("{prefix}-{i}");
            i += 1;
            match common::api::post_job(&addr, &id, 1) {
                Some(202) => accepted.push((id, start.elapsed())),
                _ => {
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (Accepted(accepted), refused)
    });
    tokio::time::sleep(FAULT_AT).await;
    fault();
    client.await.expect("the load client")
}

/// Waits until every accepted job is in the ledger, then counts lost and duplicated.
async fn reconcile(fx: &Fixture, accepted: &Accepted) -> (usize, usize, HashMap<String, i64>) {
    let rows = || async {
        let sql = format!("SELECT job_id, count(*) FROM \"{}\".ledger GROUP BY job_id", fx.schema);
        let rows = fx.db.query(&sql, &[]).await.expect("count rows per job");
        rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect::<HashMap<_, _>>()
    };
    wait_until(Duration::from_secs(60), || async {
        let r = rows().await;
        accepted.0.iter().all(|(id, _)| r.contains_key(id))
    })
    .await;
    let r = rows().await;
    let lost = accepted.0.iter().filter(|(id, _)| !r.contains_key(id)).count();
    let duplicated = r.values().filter(|n| **n > 1).count();
    (lost, duplicated, r)
}

fn assert_exactly_once(name: &str, accepted: &Accepted, refused: usize, lost: usize, duplicated: usize) {
    eprintln!("[{name}] accepted={} refused={refused} lost={lost} duplicated={duplicated}", accepted.0.len());
    assert!(accepted.0.len() > 50, "[{name}] too little load to mean anything: {}", accepted.0.len());
    assert!(
        accepted.0.iter().any(|(_, t)| *t > FAULT_AT + OUTAGE + Duration::from_secs(1)),
        "[{name}] nothing was accepted after the fault: the service did not recover"
    );
    assert_eq!(lost, 0, "[{name}] accepted jobs never applied");
    assert_eq!(duplicated, 0, "[{name}] jobs applied more than once");
}

async fn stop_all(api: ApiProc, workers: Vec<WorkerProc>) {
    api.stop();
    for mut w in workers {
        w.sigterm();
        let _ = w.wait_exit(Duration::from_secs(20)).await;
    }
}

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
    let api = ApiProc::start(&url, &fx.topology.queue, &stage_env(FINAL));
    let (accepted, refused) = load(&api, &fx.job_id("amqp"), || relay.outage(OUTAGE)).await;
    assert!(relay.cuts() >= 3, "the outage cut {} connections", relay.cuts());
    let (lost, duplicated, _) = reconcile(&fx, &accepted).await;
    for w in &workers {
        assert!(w.has_step("consumer_restarted"), "a worker did not reconnect:\n{}", w.dump());
    }
    stop_all(api, workers).await;
    assert_exactly_once("rabbitmq outage", &accepted, refused, lost, duplicated);
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
    let api = ApiProc::start(&amqp_url(), &fx.topology.queue, &stage_env(FINAL));
    let (accepted, refused) = load(&api, &fx.job_id("pg"), || relay.outage(OUTAGE)).await;
    assert!(relay.cuts() >= 1, "the outage cut no database connection");
    let (lost, duplicated, _) = reconcile(&fx, &accepted).await;
    assert_eq!(fx.depths().await.1, 0, "jobs were parked in the dead-letter queue");
    stop_all(api, workers).await;
    assert_exactly_once("postgresql outage", &accepted, refused, lost, duplicated);
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
    let api = ApiProc::start(&amqp_url(), &fx.topology.queue, &stage_env(FINAL));
    let pid = victim.pid();
    let (accepted, refused) = load(&api, &fx.job_id("kill"), || unsafe {
        libc::kill(pid, libc::SIGKILL);
    })
    .await;
    assert!(victim.wait_exit(Duration::from_secs(5)).await.is_some(), "SIGKILL did not end the worker");
    let (lost, duplicated, _) = reconcile(&fx, &accepted).await;
    stop_all(api, vec![survivor]).await;
    assert_exactly_once("worker SIGKILL", &accepted, refused, lost, duplicated);
    fx.cleanup().await;
}
