//! Load across a fault, and the exactly-once verdict, shared by the fault tests.

use super::api::ApiProc;
use super::{wait_until, Fixture, WorkerProc};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When the fault is injected, counted from the start of the load.
pub const FAULT_AT: Duration = Duration::from_secs(2);
/// How long the load goes on once the fault is over.
pub const LOAD_AFTER: Duration = Duration::from_secs(6);

/// Jobs accepted with a 202, with when (since the load started).
pub struct Accepted(pub Vec<(String, Duration)>);

/// One load run across one fault.
pub struct Run<T> {
    pub accepted: Accepted,
    pub refused: usize,
    /// What the fault returned, and when it returned (since the load started).
    pub fault: T,
    pub fault_done: Duration,
}

/// One client posting jobs back to back; `fault` starts at `FAULT_AT` and the load goes on
/// for `LOAD_AFTER` once it has returned (a real restart takes as long as it takes).
pub async fn load<F: Future>(api: &ApiProc, prefix: &str, fault: F) -> Run<F::Output> {
    let addr = api.addr.clone();
    let prefix = prefix.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_client = stop.clone();
    let start = Instant::now();
    let client = tokio::task::spawn_blocking(move || {
        let (mut accepted, mut refused) = (Vec::new(), 0usize);
        let mut i = 0;
        while !stop_client.load(Ordering::Relaxed) {
            let id = format!("{prefix}-{i}");
            i += 1;
            match super::api::post_job(&addr, &id, 1) {
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
    let out = fault.await;
    let fault_done = start.elapsed();
    tokio::time::sleep(LOAD_AFTER).await;
    stop.store(true, Ordering::Relaxed);
    let (accepted, refused) = client.await.expect("the load client");
    Run { accepted, refused, fault: out, fault_done }
}

/// Waits until every accepted job is in the ledger, then counts lost and duplicated.
pub async fn reconcile(fx: &Fixture, accepted: &Accepted) -> (usize, usize, HashMap<String, i64>) {
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
    let missing: Vec<_> = accepted.0.iter().filter(|(id, _)| !r.contains_key(id)).collect();
    for (id, at) in missing.iter().take(10) {
        eprintln!("[lost] {id} accepted at {:.3}s after the load started", at.as_secs_f64());
    }
    let lost = missing.len();
    let duplicated = r.values().filter(|n| **n > 1).count();
    (lost, duplicated, r)
}

/// Zero lost, zero duplicated, enough load to mean something, and jobs accepted again
/// after `back_by` (when the server was back): the service recovered on its own.
pub fn assert_exactly_once<T>(name: &str, run: &Run<T>, back_by: Duration, lost: usize, duplicated: usize) {
    let accepted = &run.accepted.0;
    eprintln!(
        "[{name}] accepted={} refused={} lost={lost} duplicated={duplicated} fault_done={:.1}s",
        accepted.len(),
        run.refused,
        run.fault_done.as_secs_f64()
    );
    assert!(accepted.len() > 50, "[{name}] too little load to mean anything: {}", accepted.len());
    assert!(
        accepted.iter().any(|(_, t)| *t > back_by + Duration::from_secs(1)),
        "[{name}] nothing was accepted after the fault: the service did not recover"
    );
    assert_eq!(lost, 0, "[{name}] accepted jobs never applied");
    assert_eq!(duplicated, 0, "[{name}] jobs applied more than once");
}

pub async fn stop_all(api: ApiProc, workers: Vec<WorkerProc>) {
    api.stop();
    for mut w in workers {
        w.sigterm();
        let _ = w.wait_exit(Duration::from_secs(20)).await;
    }
}
