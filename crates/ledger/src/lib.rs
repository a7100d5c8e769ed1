//! The PostgreSQL ledger: the side effect the worker applies once per job, and what the
//! runner reconciles accepted job ids against.
//!
//! Everything lives in one schema per run, so concurrent runs and tests never share
//! rows. The schema name is the only identifier interpolated into SQL; it is checked
//! against `[a-z0-9_]{1,48}` by every function before it is used, and quoted.
//!
//! Two tables:
//!
//! - `ledger`: one row per application of a job. Deliberately *not* unique on
//!   `job_id`: a job applied twice leaves two rows, so double application is countable.
//! - `processed`: one row per job id, written by the idempotent consumer in the same
//!   transaction as the ledger row (the dedupe key and the side effect commit together).

pub mod migrate;
pub mod writes;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use serde::Serialize;
use std::time::Duration;
use tokio_postgres::{Client, NoTls};
pub use writes::{AmountColumn, Writes};
use zerodrop_jobs::Job;

/// Used when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Longest accepted schema name.
pub const MAX_SCHEMA_LEN: usize = 48;
/// Bound on opening one database connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("invalid schema name {0:?}: expected 1 to {MAX_SCHEMA_LEN} characters of a-z 0-9 _")]
    InvalidSchema(String),
    #[error("invalid database url: {}", describe_pg(.0))]
    InvalidUrl(tokio_postgres::Error),
    #[error("cannot build the connection pool: {0}")]
    Build(String),
    #[error("no database connection: {}", describe_pool(.0))]
    Pool(PoolError),
    #[error("database: {}", describe_pg(.0))]
    Db(tokio_postgres::Error),
}

// Manual conversions: the inner errors' own `Display` hides the server's message in
// their source, so the variants above print the whole story themselves and are not
// marked as `#[source]` (which would print it twice in an `anyhow` chain).
impl From<tokio_postgres::Error> for LedgerError {
    fn from(e: tokio_postgres::Error) -> Self {
        LedgerError::Db(e)
    }
}

impl From<PoolError> for LedgerError {
    fn from(e: PoolError) -> Self {
        LedgerError::Pool(e)
    }
}

fn describe_pg(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{e}: {db}");
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Backend(pg) => describe_pg(pg),
        other => other.to_string(),
    }
}

/// The outcome of [`apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// A ledger row was written and committed.
    Applied,
    /// Idempotent mode only: the job id was already processed; nothing was written.
    AlreadyApplied,
}

/// Accepted job ids compared with the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// Ledger rows whose job id is among the accepted ids.
    pub applied_rows: i64,
    /// Accepted ids with no ledger row, sorted.
    pub lost: Vec<String>,
    /// Accepted ids with more than one ledger row, with their row count, sorted by id.
    pub duplicated: Vec<(String, i64)>,
}

/// `DATABASE_URL`, or [`DEFAULT_DATABASE_URL`] when unset or empty.
pub fn database_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => DEFAULT_DATABASE_URL.to_string(),
    }
}

/// Checks `schema` against `[a-z0-9_]{1,48}`.
pub fn validate_schema(schema: &str) -> Result<(), LedgerError> {
    let ok = !schema.is_empty()
        && schema.len() <= MAX_SCHEMA_LEN
        && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(LedgerError::InvalidSchema(schema.to_string()))
    }
}

/// The schema as a quoted SQL identifier, after validation.
fn ident(schema: &str) -> Result<String, LedgerError> {
    validate_schema(schema)?;
    Ok(format!("\"{schema}\""))
}

fn pg_config(database_url: &str) -> Result<tokio_postgres::Config, LedgerError> {
    let mut cfg: tokio_postgres::Config = database_url.parse().map_err(LedgerError::InvalidUrl)?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(CONNECT_TIMEOUT);
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("zerodrop");
    }
    Ok(cfg)
}

/// Opens one connection (no pool) and drives it on a background task. For the runner,
/// tests and one-off administration.
pub async fn connect(database_url: &str) -> Result<Client, LedgerError> {
    let (client, connection) = pg_config(database_url)?.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe_pg(&e), "postgres connection ended");
        }
    });
    Ok(client)
}

/// A pool of at most `max_size` connections to `database_url`. Connections open
/// lazily, on first use (see [`Ledger::warm`]).
pub fn pool(database_url: &str, max_size: usize) -> Result<Pool, LedgerError> {
    let manager = Manager::from_config(
        pg_config(database_url)?,
        NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(max_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| LedgerError::Build(e.to_string()))
}

/// Creates the schema and its two tables if missing. Safe to run from several
/// processes starting at once (serialised by an advisory lock).
pub async fn create_schema(client: &Client, schema: &str) -> Result<(), LedgerError> {
    let s = ident(schema)?;
    // `schema` is validated: it can appear in a literal as well as in an identifier.
    let sql = format!(
        "BEGIN;
         SET LOCAL client_min_messages = warning;
         SELECT pg_advisory_xact_lock(hashtext('zerodrop_ledger_schema:{schema}'));
         CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.ledger (
             seq        bigserial   PRIMARY KEY,
             job_id     text        NOT NULL,
             amount     bigint      NOT NULL,
             applied_by text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );
         CREATE INDEX IF NOT EXISTS ledger_job_id_idx ON {s}.ledger (job_id);
         CREATE TABLE IF NOT EXISTS {s}.processed (
             job_id       text        PRIMARY KEY,
             processed_at timestamptz NOT NULL DEFAULT now()
         );
         COMMIT;"
    );
    client.batch_execute(&sql).await?;
    Ok(())
}

/// Drops the schema and everything in it. Only for schemas the caller created.
pub async fn drop_schema(client: &Client, schema: &str) -> Result<(), LedgerError> {
    let s = ident(schema)?;
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE")).await?;
    Ok(())
}

/// Applies `job` in one transaction: in idempotent mode the job id is first claimed in
/// `processed` (a second application finds it and writes nothing); then the ledger
/// row is inserted; then `work` is spent *inside* the transaction, as a real job's
/// processing would be, so a process killed mid-job leaves nothing behind.
pub async fn apply(
    client: &mut Client,
    schema: &str,
    job: &Job,
    applied_by: &str,
    idempotent: bool,
    work: Duration,
) -> Result<Applied, LedgerError> {
    writes::apply_as(client, schema, job, applied_by, idempotent, work, Writes::Old).await
}

/// Compares `accepted_ids` (duplicates ignored) with the ledger in one query.
pub async fn reconcile(client: &Client, schema: &str, accepted_ids: &[String]) -> Result<Reconciliation, LedgerError> {
    let s = ident(schema)?;
    let sql = format!(
        "SELECT a.id, count(l.job_id)::bigint
           FROM (SELECT DISTINCT unnest($1::text[]) AS id) a
           LEFT JOIN {s}.ledger l ON l.job_id = a.id
          GROUP BY a.id
          ORDER BY a.id"
    );
    let rows = client.query(&sql, &[&accepted_ids]).await?;
    let mut r = Reconciliation::default();
    for row in rows {
        let id: String = row.try_get(0)?;
        let n: i64 = row.try_get(1)?;
        r.applied_rows += n;
        match n {
            0 => r.lost.push(id),
            1 => {}
            _ => r.duplicated.push((id, n)),
        }
    }
    Ok(r)
}

/// Ledger rows for `job_id`.
pub async fn count_rows(client: &Client, schema: &str, job_id: &str) -> Result<i64, LedgerError> {
    let s = ident(schema)?;
    let row =
        client.query_one(&format!("SELECT count(*)::bigint FROM {s}.ledger WHERE job_id = $1"), &[&job_id]).await?;
    Ok(row.try_get(0)?)
}

/// All ledger rows.
pub async fn total_rows(client: &Client, schema: &str) -> Result<i64, LedgerError> {
    let s = ident(schema)?;
    let row = client.query_one(&format!("SELECT count(*)::bigint FROM {s}.ledger"), &[]).await?;
    Ok(row.try_get(0)?)
}

/// A connection pool bound to one (validated) schema.
#[derive(Clone)]
pub struct Ledger {
    pool: Pool,
    schema: String,
    /// The amount columns [`Ledger::apply`] writes.
    writes: Writes,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pool = self.pool.status();
        f.debug_struct("Ledger")
            .field("schema", &self.schema)
            .field("writes", &self.writes)
            .field("pool", &pool)
            .finish()
    }
}

impl Ledger {
    pub fn new(pool: Pool, schema: &str) -> Result<Ledger, LedgerError> {
        validate_schema(schema)?;
        Ok(Ledger { pool, schema: schema.to_string(), writes: Writes::Old })
    }

    /// The same ledger, writing the amount columns `writes` names.
    pub fn with_writes(self, writes: Writes) -> Ledger {
        Ledger { writes, ..self }
    }

    pub fn writes(&self) -> Writes {
        self.writes
    }

    /// [`pool`] + [`Ledger::new`]. Opens no connection yet.
    pub fn connect(database_url: &str, schema: &str, max_size: usize) -> Result<Ledger, LedgerError> {
        validate_schema(schema)?;
        Ledger::new(pool(database_url, max_size)?, schema)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub async fn create_schema(&self) -> Result<(), LedgerError> {
        let client = self.pool.get().await?;
        create_schema(&client, &self.schema).await
    }

    pub async fn drop_schema(&self) -> Result<(), LedgerError> {
        let client = self.pool.get().await?;
        drop_schema(&client, &self.schema).await
    }

    /// Opens every connection of the pool up front (and checks each with a round
    /// trip), so the first jobs do not pay for connecting. Returns how many are open.
    pub async fn warm(&self) -> Result<usize, LedgerError> {
        let n = self.pool.status().max_size;
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let client = self.pool.get().await?;
            client.simple_query("SELECT 1").await?;
            held.push(client);
        }
        Ok(held.len())
    }

    /// [`apply`] on a pooled connection.
    pub async fn apply(
        &self,
        job: &Job,
        applied_by: &str,
        idempotent: bool,
        work: Duration,
    ) -> Result<Applied, LedgerError> {
        let mut client = self.pool.get().await?;
        writes::apply_as(&mut client, &self.schema, job, applied_by, idempotent, work, self.writes).await
    }

    pub async fn reconcile(&self, accepted_ids: &[String]) -> Result<Reconciliation, LedgerError> {
        let client = self.pool.get().await?;
        reconcile(&client, &self.schema, accepted_ids).await
    }

    pub async fn count_rows(&self, job_id: &str) -> Result<i64, LedgerError> {
        let client = self.pool.get().await?;
        count_rows(&client, &self.schema, job_id).await
    }

    pub async fn total_rows(&self) -> Result<i64, LedgerError> {
        let client = self.pool.get().await?;
        total_rows(&client, &self.schema).await
    }

    /// Closes the pool: idle connections are dropped now, checked-out ones when they
    /// are returned; further `get`s fail.
    pub fn close(&self) {
        self.pool.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_validated() {
        for ok in ["zerodrop", "a", "run_42", "0abc", &"x".repeat(MAX_SCHEMA_LEN)] {
            assert!(validate_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a;drop", "A", "a-b", "a b", "a\"b", "é", &"x".repeat(MAX_SCHEMA_LEN + 1)] {
            assert!(matches!(validate_schema(bad), Err(LedgerError::InvalidSchema(_))), "{bad}");
        }
        assert_eq!(ident("run_1").unwrap(), "\"run_1\"");
    }

    #[test]
    fn invalid_schema_is_rejected_before_any_io() {
        assert!(matches!(Ledger::connect(DEFAULT_DATABASE_URL, "a;drop", 1), Err(LedgerError::InvalidSchema(_))));
        let err = Ledger::connect(DEFAULT_DATABASE_URL, "a;drop", 1).unwrap_err().to_string();
        assert!(err.contains("a;drop") && err.contains("a-z 0-9 _"), "{err}");
    }

    #[test]
    fn bad_url_is_a_clear_error() {
        let err = pool("postgres://u@h:notaport/db", 1).unwrap_err();
        assert!(matches!(err, LedgerError::InvalidUrl(_)), "{err}");
    }

    #[test]
    fn default_url_is_local() {
        assert!(DEFAULT_DATABASE_URL.starts_with("postgres://"));
    }
}
