//! The ledger's migrations against a real PostgreSQL (DATABASE_URL, as in postgres.rs;
//! `cargo xtask test` points it at a private server). Each test works in its own
//! schema and drops it at the end.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use zerodrop_jobs::Job;
use zerodrop_ledger::migrate::{self, Plan};
use zerodrop_ledger::writes::{self, AmountColumn, Writes};
use zerodrop_ledger::{self as ledger, LedgerError};

fn unique_schema(tag: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("zdt_mig_{tag}_{}_{nanos}", std::process::id())
}

async fn client() -> Client {
    let url = ledger::database_url();
    match tokio::time::timeout(Duration::from_secs(10), ledger::connect(&url)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("PostgreSQL is unreachable at {url}: {e}; run the suite with `cargo xtask test`"),
        Err(_) => panic!("PostgreSQL at {url} did not answer within 10 s"),
    }
}

/// The ledger's columns at each version, `?` marking a nullable one.
fn expected_columns(plan: Plan, version: i64) -> &'static str {
    match (plan, version) {
        (_, 0) => "",
        (_, 1) => "seq job_id amount applied_by applied_at",
        (Plan::ExpandContract, 2 | 3) => "seq job_id amount applied_by applied_at amount_cents?",
        (Plan::ExpandContract, 4) => "seq job_id amount? applied_by applied_at amount_cents",
        (Plan::ExpandContract, 5) => "seq job_id applied_by applied_at amount_cents",
        (Plan::Destructive, 2) => "seq job_id amount_cents applied_by applied_at",
        _ => unreachable!("no version {version} in {plan:?}"),
    }
}

async fn columns(conn: &mut sqlx::PgConnection) -> String {
    let cols = migrate::ledger_columns(conn).await.unwrap();
    // As a set: undoing a drop adds the column back at the end.
    let mut named: Vec<String> = cols.into_iter().map(|(c, null)| if null { format!("{c}?") } else { c }).collect();
    named.sort();
    named.join(" ")
}

fn sorted(columns: &str) -> String {
    let mut v: Vec<&str> = columns.split_whitespace().collect();
    v.sort();
    v.join(" ")
}

async fn write(c: &mut Client, schema: &str, id: &str, amount: i64, w: Writes) -> Result<(), LedgerError> {
    let job = Job { id: id.into(), amount };
    writes::apply_as(c, schema, &job, "t", true, Duration::ZERO, w).await.map(|_| ())
}

/// Up, down and up again through every step of both plans, checking the columns
/// after each move; rows written along the way keep their amounts through every move.
#[tokio::test]
async fn every_migration_step_applies_rolls_back_and_applies_again() {
    let url = ledger::database_url();
    let mut c = client().await;
    for plan in [Plan::ExpandContract, Plan::Destructive] {
        let schema = unique_schema(&plan.as_str().replace('-', "_"));
        let mut conn = migrate::connect(&url, &schema).await.unwrap();
        assert_eq!(migrate::current_version(&mut conn).await.unwrap(), 0);
        let mut written: HashMap<String, i64> = HashMap::new();
        for v in 1..=plan.latest() {
            migrate::migrate_to(&mut conn, plan, v).await.unwrap();
            assert_eq!(columns(&mut conn).await, sorted(expected_columns(plan, v)), "{plan:?} up to {v}");
            migrate::migrate_to(&mut conn, plan, v - 1).await.unwrap();
            assert_eq!(migrate::current_version(&mut conn).await.unwrap(), v - 1);
            assert_eq!(columns(&mut conn).await, sorted(expected_columns(plan, v - 1)), "{plan:?} down to {}", v - 1);
            migrate::migrate_to(&mut conn, plan, v).await.unwrap();
            assert_eq!(columns(&mut conn).await, sorted(expected_columns(plan, v)), "{plan:?} up again to {v}");
            // A row in the mode the plan's workers use at this version.
            let w = match (plan, v) {
                (_, 1) => Writes::Old,
                (Plan::ExpandContract, 2..=4) => Writes::Both,
                _ => Writes::New,
            };
            let id = format!("{}-v{v}", plan.as_str());
            write(&mut c, &schema, &id, 100 + v, w).await.unwrap();
            written.insert(id, 100 + v);
        }
        // All the way down to version 1 and back up: no amount lost on the way.
        migrate::migrate_to(&mut conn, plan, 1).await.unwrap();
        let ids: Vec<String> = written.keys().cloned().collect();
        let down = writes::check_amounts(&c, &schema, AmountColumn::Amount, &ids, &written).await.unwrap();
        assert!(down.lost.is_empty() && down.wrong.is_empty() && down.duplicated.is_empty(), "{down:?}");
        migrate::migrate_to(&mut conn, plan, plan.latest()).await.unwrap();
        let up = writes::check_amounts(&c, &schema, AmountColumn::AmountCents, &ids, &written).await.unwrap();
        assert!(up.lost.is_empty() && up.wrong.is_empty() && up.duplicated.is_empty(), "{up:?}");
        migrate::migrate_to(&mut conn, plan, 0).await.unwrap();
        assert_eq!(columns(&mut conn).await, "");
        assert!(migrate::migrate_to(&mut conn, plan, plan.latest() + 1).await.is_err());
        ledger::drop_schema(&c, &schema).await.unwrap();
    }
}

fn undefined_or_null(e: &LedgerError) -> Option<SqlState> {
    match e {
        LedgerError::Db(pg) => pg.as_db_error().map(|d| d.code().clone()),
        _ => None,
    }
}

/// Every write mode against every schema version of expand-and-contract: the modes the
/// plan runs side by side at a version (old + both while dual-write rolls out at 2,
/// both + new while new-only rolls out at 4) must all succeed there; the destructive
/// rename breaks the old workers with an undefined column.
#[tokio::test]
async fn write_modes_against_every_intermediate_schema() {
    let url = ledger::database_url();
    let mut c = client().await;
    let schema = unique_schema("matrix");
    let mut conn = migrate::connect(&url, &schema).await.unwrap();
    // (version, [old, both, new]): true = the insert succeeds.
    let matrix: [(i64, [bool; 3]); 5] = [
        (1, [true, false, false]),
        (2, [true, true, false]),
        (3, [true, true, false]),
        (4, [false, true, true]),
        (5, [false, false, true]),
    ];
    let side_by_side: [(i64, &[Writes]); 5] = [
        (1, &[Writes::Old]),
        (2, &[Writes::Old, Writes::Both]),
        (3, &[Writes::Both]),
        (4, &[Writes::Both, Writes::New]),
        (5, &[Writes::New]),
    ];
    for ((v, outcomes), (v2, together)) in matrix.iter().zip(side_by_side) {
        assert_eq!(*v, v2);
        if *v == 4 {
            // An old worker still writing after the backfill (the matrix's own row at
            // version 3) leaves a row without amount_cents: version 4 refuses it, which
            // is why the plan backfills only once the dual-write deploy is complete.
            let err = migrate::migrate_to(&mut conn, Plan::ExpandContract, 4).await.unwrap_err();
            assert!(err.to_string().contains("contains null values"), "{err}");
            assert_eq!(migrate::current_version(&mut conn).await.unwrap(), 3);
            c.execute(&format!("DELETE FROM \"{schema}\".ledger WHERE job_id = 'm-3-old'"), &[]).await.unwrap();
        }
        migrate::migrate_to(&mut conn, Plan::ExpandContract, *v).await.unwrap();
        for (w, ok) in Writes::ALL.into_iter().zip(outcomes) {
            let got = write(&mut c, &schema, &format!("m-{v}-{}", w.as_str()), 7, w).await;
            assert_eq!(got.is_ok(), *ok, "version {v}, writes {}: {got:?}", w.as_str());
            if let Err(e) = &got {
                let code = undefined_or_null(e);
                assert!(
                    code == Some(SqlState::UNDEFINED_COLUMN) || code == Some(SqlState::NOT_NULL_VIOLATION),
                    "version {v}, writes {}: {e}",
                    w.as_str()
                );
            }
            if together.contains(&w) {
                assert!(*ok, "the plan runs {} at version {v}, so it must succeed there", w.as_str());
            }
        }
    }
    ledger::drop_schema(&c, &schema).await.unwrap();

    let schema = unique_schema("destructive");
    let mut conn = migrate::connect(&url, &schema).await.unwrap();
    migrate::migrate_to(&mut conn, Plan::Destructive, 1).await.unwrap();
    write(&mut c, &schema, "before", 5, Writes::Old).await.unwrap();
    migrate::migrate_to(&mut conn, Plan::Destructive, 2).await.unwrap();
    let err = write(&mut c, &schema, "old-after", 5, Writes::Old).await.unwrap_err();
    assert_eq!(undefined_or_null(&err), Some(SqlState::UNDEFINED_COLUMN), "{err}");
    assert!(err.to_string().contains("column \"amount\" of relation \"ledger\" does not exist"), "{err}");
    write(&mut c, &schema, "new-after", 5, Writes::New).await.unwrap();
    let ids = vec!["before".to_string(), "old-after".to_string(), "new-after".to_string()];
    let want: HashMap<String, i64> = ids.iter().map(|i| (i.clone(), 5)).collect();
    let check = writes::check_amounts(&c, &schema, AmountColumn::AmountCents, &ids, &want).await.unwrap();
    assert_eq!(check.lost, vec!["old-after".to_string()], "{check:?}");
    assert!(check.wrong.is_empty() && check.duplicated.is_empty(), "{check:?}");
    ledger::drop_schema(&c, &schema).await.unwrap();
}
