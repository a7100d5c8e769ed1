//! The ledger's schema as versioned, reversible migrations, run by sqlx's migrator
//! (`Migrator::run` up to a version, `Migrator::undo` down to one).
//!
//! Two plans share version 1 (the ledger as every worker so far knows it):
//!
//! - [`Plan::ExpandContract`]: `amount` → `amount_cents` as add (2), backfill (3),
//!   new column required and old optional (4), drop the old (5); the worker deploys
//!   between them are the runner's (`cargo xtask migrate`).
//! - [`Plan::Destructive`]: the rename in one step (2), the negative control.
//!
//! The SQL lives in `crates/ledger/migrations/<plan>/` and is compiled in, so a binary
//! migrates wherever it runs. Every run works in its own schema: the connection's
//! `search_path` is that schema, so sqlx's `_sqlx_migrations` table and the
//! migrations' unqualified names land there.

use crate::{ident, validate_schema, LedgerError, CONNECT_TIMEOUT};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::PgConnectOptions;
/// The migrations' connection (sqlx's), for callers that hold one across steps.
pub use sqlx::postgres::PgConnection;
use sqlx::ConnectOptions;
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

/// One reversible step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub version: i64,
    pub name: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

macro_rules! step {
    ($v:expr, $dir:literal, $name:literal) => {
        Step {
            version: $v,
            name: $name,
            up: include_str!(concat!("../migrations/", $dir, "/", $name, ".up.sql")),
            down: include_str!(concat!("../migrations/", $dir, "/", $name, ".down.sql")),
        }
    };
}

const BASELINE: Step = step!(1, "expand_contract", "0001_ledger");

const EXPAND_CONTRACT: [Step; 5] = [
    BASELINE,
    step!(2, "expand_contract", "0002_add_amount_cents"),
    step!(3, "expand_contract", "0003_backfill_amount_cents"),
    step!(4, "expand_contract", "0004_amount_cents_required"),
    step!(5, "expand_contract", "0005_drop_amount"),
];

const DESTRUCTIVE: [Step; 2] = [BASELINE, step!(2, "destructive", "0002_rename_amount")];

/// Which sequence of schema versions a run walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Plan {
    ExpandContract,
    Destructive,
}

impl Plan {
    pub fn steps(self) -> &'static [Step] {
        match self {
            Plan::ExpandContract => &EXPAND_CONTRACT,
            Plan::Destructive => &DESTRUCTIVE,
        }
    }

    pub fn latest(self) -> i64 {
        self.steps().last().map(|s| s.version).unwrap_or(0)
    }

    pub fn step(self, version: i64) -> Option<&'static Step> {
        self.steps().iter().find(|s| s.version == version)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::ExpandContract => "expand-contract",
            Plan::Destructive => "destructive",
        }
    }

    /// sqlx's migrator over this plan's steps up to `version` (a migrator holding later
    /// steps would apply them too).
    async fn migrator(self, version: i64) -> Result<Migrator, MigrateError> {
        let steps: Vec<Step> = self.steps().iter().filter(|s| s.version <= version).copied().collect();
        Migrator::new(Embedded(steps)).await.map_err(MigrateError::Sqlx)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Schema(#[from] LedgerError),
    #[error("plan {plan} has no schema version {version}")]
    UnknownVersion { plan: &'static str, version: i64 },
    #[error("cannot connect to the database for migrations: {0}")]
    Connect(sqlx::Error),
    #[error("migration: {0}")]
    Sqlx(sqlx::migrate::MigrateError),
    #[error("reading the schema version: {0}")]
    Version(sqlx::Error),
}

/// The steps as sqlx migrations: an up and a down of the same version each.
#[derive(Debug)]
struct Embedded(Vec<Step>);

type Resolved = Result<Vec<Migration>, Box<dyn std::error::Error + Send + Sync>>;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Resolved> + Send>> {
        let mut out = Vec::with_capacity(self.0.len() * 2);
        for s in self.0 {
            let name = Cow::Borrowed(s.name);
            out.push(Migration::new(s.version, name.clone(), MigrationType::ReversibleUp, Cow::Borrowed(s.up), false));
            out.push(Migration::new(s.version, name, MigrationType::ReversibleDown, Cow::Borrowed(s.down), false));
        }
        Box::pin(async move { Ok(out) })
    }
}

/// One connection whose `search_path` is `schema` (created if missing).
pub async fn connect(database_url: &str, schema: &str) -> Result<PgConnection, MigrateError> {
    validate_schema(schema)?;
    let base = PgConnectOptions::from_str(database_url).map_err(MigrateError::Connect)?.application_name("zerodrop");
    let opts = base.options([("search_path", schema)]);
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, opts.connect())
        .await
        .map_err(|_| MigrateError::Connect(sqlx::Error::PoolTimedOut))?
        .map_err(MigrateError::Connect)?;
    let create = format!("CREATE SCHEMA IF NOT EXISTS {}", ident(schema)?);
    sqlx::raw_sql(&create).execute(&mut conn).await.map_err(MigrateError::Connect)?;
    Ok(conn)
}

/// The highest applied version (0 for a fresh schema).
pub async fn current_version(conn: &mut PgConnection) -> Result<i64, MigrateError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(MigrateError::Version)?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await
        .map_err(MigrateError::Version)?;
    Ok(v.unwrap_or(0))
}

/// Brings the schema to `version` of `plan`: up through each missing step, or down
/// through each step above it. Each step runs in its own transaction.
pub async fn migrate_to(conn: &mut PgConnection, plan: Plan, version: i64) -> Result<(), MigrateError> {
    if version != 0 && plan.step(version).is_none() {
        return Err(MigrateError::UnknownVersion { plan: plan.as_str(), version });
    }
    let from = current_version(conn).await?;
    let moved = if version >= from {
        plan.migrator(version).await?.run(&mut *conn).await
    } else {
        plan.migrator(from).await?.undo(&mut *conn, version).await
    };
    if let Err(e) = moved {
        // sqlx returns on a failed step without releasing its session-level advisory
        // lock (one per database): release it, or every other migrator waits forever.
        let _ = sqlx::raw_sql("SELECT pg_advisory_unlock_all()").execute(&mut *conn).await;
        tracing::warn!(plan = plan.as_str(), from, to = version, error = %e, "migration failed");
        return Err(MigrateError::Sqlx(e));
    }
    tracing::info!(plan = plan.as_str(), from, to = version, "schema migrated");
    Ok(())
}

/// The ledger table's columns and whether each is nullable, in order.
pub async fn ledger_columns(conn: &mut PgConnection) -> Result<Vec<(String, bool)>, MigrateError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, is_nullable::text FROM information_schema.columns
          WHERE table_schema = current_schema() AND table_name = 'ledger' ORDER BY ordinal_position",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(MigrateError::Version)?;
    Ok(rows.into_iter().map(|(c, n)| (c, n == "YES")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_is_numbered_from_one_without_gaps_and_every_step_has_both_directions() {
        for plan in [Plan::ExpandContract, Plan::Destructive] {
            for (i, s) in plan.steps().iter().enumerate() {
                assert_eq!(s.version, i as i64 + 1, "{plan:?}");
                assert!(!s.up.trim().is_empty() && !s.down.trim().is_empty(), "{}", s.name);
            }
        }
        assert_eq!((Plan::ExpandContract.latest(), Plan::Destructive.latest()), (5, 2));
        assert!(Plan::Destructive.step(2).unwrap().up.contains("RENAME COLUMN amount TO amount_cents"));
    }
}
