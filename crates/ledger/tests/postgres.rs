//! The ledger against a real PostgreSQL (DATABASE_URL, default local trust auth).
//! Each test works in its own schema and drops it at the end.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::Client;
use zerodrop_jobs::Job;
use zerodrop_ledger::{self as ledger, Applied, Ledger, LedgerError};

fn unique_schema(tag: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("zdt_ledger_{tag}_{}_{nanos}", std::process::id())
}

async fn client() -> Client {
    let url = ledger::database_url();
    match tokio::time::timeout(Duration::from_secs(10), ledger::connect(&url)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!(
            "PostgreSQL is unreachable at {url}: {e}\n\
             start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start` (check: `pg_isready -h 127.0.0.1`), or run the suite with `cargo xtask test`, which starts private servers"
        ),
        Err(_) => panic!("PostgreSQL at {url} did not answer within 10 s; check `pg_isready -h 127.0.0.1`"),
    }
}

fn job(id: &str) -> Job {
    Job { id: id.into(), amount: 3 }
}

#[tokio::test]
async fn reconcile_finds_lost_and_duplicated_ids() {
    let mut c = client().await;
    let schema = unique_schema("rec");
    ledger::create_schema(&c, &schema).await.unwrap();
    // Creating twice is harmless.
    ledger::create_schema(&c, &schema).await.unwrap();

    let zero = Duration::ZERO;
    for id in ["a", "b", "b", "c", "c", "c", "stray"] {
        assert_eq!(ledger::apply(&mut c, &schema, &job(id), "t", false, zero).await.unwrap(), Applied::Applied);
    }
    let mut accepted: Vec<String> = ["a", "b", "c", "lost-1", "lost-2"].iter().map(|s| s.to_string()).collect();
    // Accepted twice by the client: still one id.
    accepted.push("a".into());

    let r = ledger::reconcile(&c, &schema, &accepted).await.unwrap();
    assert_eq!(r.applied_rows, 6, "{r:?}");
    assert_eq!(r.lost, vec!["lost-1".to_string(), "lost-2".to_string()]);
    assert_eq!(r.duplicated, vec![("b".to_string(), 2), ("c".to_string(), 3)]);
    assert_eq!(ledger::count_rows(&c, &schema, "c").await.unwrap(), 3);
    assert_eq!(ledger::count_rows(&c, &schema, "nope").await.unwrap(), 0);
    assert_eq!(ledger::total_rows(&c, &schema).await.unwrap(), 7);

    // Large id lists go through as one array parameter.
    let many: Vec<String> = (0..10_000).map(|i| format!("bulk-{i}")).collect();
    let r = ledger::reconcile(&c, &schema, &many).await.unwrap();
    assert_eq!((r.applied_rows, r.lost.len(), r.duplicated.len()), (0, 10_000, 0));

    ledger::drop_schema(&c, &schema).await.unwrap();
}

#[tokio::test]
async fn idempotent_apply_writes_once_and_work_rolls_back_on_drop() {
    let c = client().await;
    let schema = unique_schema("idem");
    ledger::create_schema(&c, &schema).await.unwrap();
    let l = Ledger::connect(&ledger::database_url(), &schema, 2).unwrap();
    assert_eq!(l.warm().await.unwrap(), 2);

    assert_eq!(l.apply(&job("j1"), "p1", true, Duration::ZERO).await.unwrap(), Applied::Applied);
    assert_eq!(l.apply(&job("j1"), "p2", true, Duration::ZERO).await.unwrap(), Applied::AlreadyApplied);
    assert_eq!(l.count_rows("j1").await.unwrap(), 1);
    // Not idempotent: the same id is applied again, and it shows.
    assert_eq!(l.apply(&job("j1"), "p3", false, Duration::ZERO).await.unwrap(), Applied::Applied);
    assert_eq!(l.count_rows("j1").await.unwrap(), 2);

    // A job abandoned during its in-transaction work leaves nothing behind: neither
    // the ledger row nor the idempotency claim.
    let abandoned =
        tokio::time::timeout(Duration::from_millis(300), l.apply(&job("j2"), "p1", true, Duration::from_secs(30)))
            .await;
    assert!(abandoned.is_err(), "the work should still be running");
    // The connection went back to the pool mid-transaction; the pool may recycle or
    // drop it, either way the transaction never commits.
    assert_eq!(ledger::count_rows(&c, &schema, "j2").await.unwrap(), 0);
    assert_eq!(l.apply(&job("j2"), "p1", true, Duration::ZERO).await.unwrap(), Applied::Applied);
    assert_eq!(l.count_rows("j2").await.unwrap(), 1);

    l.close();
    ledger::drop_schema(&c, &schema).await.unwrap();
}

#[tokio::test]
async fn schema_name_is_validated_everywhere() {
    let mut c = client().await;
    for bad in ["a;drop", "x\"; DROP SCHEMA public; --", "", "UPPER"] {
        assert!(matches!(ledger::create_schema(&c, bad).await, Err(LedgerError::InvalidSchema(_))), "{bad}");
        assert!(matches!(ledger::drop_schema(&c, bad).await, Err(LedgerError::InvalidSchema(_))), "{bad}");
        assert!(matches!(ledger::total_rows(&c, bad).await, Err(LedgerError::InvalidSchema(_))), "{bad}");
        assert!(matches!(ledger::reconcile(&c, bad, &[]).await, Err(LedgerError::InvalidSchema(_))), "{bad}");
        assert!(matches!(
            ledger::apply(&mut c, bad, &job("x"), "t", true, Duration::ZERO).await,
            Err(LedgerError::InvalidSchema(_))
        ));
        assert!(matches!(Ledger::connect(&ledger::database_url(), bad, 1), Err(LedgerError::InvalidSchema(_))));
    }
}

#[tokio::test]
async fn missing_schema_is_a_readable_database_error() {
    let c = client().await;
    let err = ledger::total_rows(&c, &unique_schema("missing")).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LedgerError::Db(_)));
    assert!(text.contains("does not exist"), "{text}");
}
