//! Which amount column a worker writes and a reader trusts, while `amount` is renamed
//! to `amount_cents` by expand-and-contract (see `migrate.rs`). The worker's knob is
//! `ZD_LEDGER_WRITES=old|both|new`; the reader is the runner's reconciliation.

use crate::{ident, Applied, LedgerError};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;
use tokio_postgres::Client;
use zerodrop_jobs::Job;

/// The amount columns a worker version writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Writes {
    /// `amount` only: every worker before the change.
    #[default]
    Old,
    /// `amount` and `amount_cents`, the same value (expand-and-contract's dual write).
    Both,
    /// `amount_cents` only: every worker after the change.
    New,
}

impl Writes {
    pub const ALL: [Writes; 3] = [Writes::Old, Writes::Both, Writes::New];

    pub fn as_str(self) -> &'static str {
        match self {
            Writes::Old => "old",
            Writes::Both => "both",
            Writes::New => "new",
        }
    }

    fn insert(self, s: &str) -> String {
        match self {
            Writes::Old => format!("INSERT INTO {s}.ledger (job_id, amount, applied_by) VALUES ($1, $2, $3)"),
            Writes::Both => {
                format!("INSERT INTO {s}.ledger (job_id, amount, amount_cents, applied_by) VALUES ($1, $2, $2, $3)")
            }
            Writes::New => format!("INSERT INTO {s}.ledger (job_id, amount_cents, applied_by) VALUES ($1, $2, $3)"),
        }
    }
}

impl std::str::FromStr for Writes {
    type Err = String;
    fn from_str(s: &str) -> Result<Writes, String> {
        Writes::ALL
            .into_iter()
            .find(|w| w.as_str() == s.trim())
            .ok_or_else(|| "expected `old` (amount), `both` (amount and amount_cents) or `new` (amount_cents)".into())
    }
}

/// The column a reader treats as the amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AmountColumn {
    Amount,
    AmountCents,
}

impl AmountColumn {
    pub fn as_str(self) -> &'static str {
        match self {
            AmountColumn::Amount => "amount",
            AmountColumn::AmountCents => "amount_cents",
        }
    }
}

/// [`crate::apply`] writing the columns `writes` names.
#[allow(clippy::too_many_arguments)]
pub async fn apply_as(
    client: &mut Client,
    schema: &str,
    job: &Job,
    applied_by: &str,
    idempotent: bool,
    work: Duration,
    writes: Writes,
) -> Result<Applied, LedgerError> {
    let s = ident(schema)?;
    let tx = client.transaction().await?;
    if idempotent {
        let claimed = tx
            .execute(&format!("INSERT INTO {s}.processed (job_id) VALUES ($1) ON CONFLICT DO NOTHING"), &[&job.id])
            .await?;
        if claimed == 0 {
            tx.commit().await?;
            return Ok(Applied::AlreadyApplied);
        }
    }
    tx.execute(&writes.insert(&s), &[&job.id, &job.amount, &applied_by]).await?;
    if !work.is_zero() {
        tokio::time::sleep(work).await;
    }
    tx.commit().await?;
    Ok(Applied::Applied)
}

/// Accepted jobs against the ledger, read through one amount column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AmountCheck {
    /// Accepted ids (duplicates ignored).
    pub accepted: u64,
    /// Accepted, no row.
    pub lost: Vec<String>,
    /// Accepted, more than one row: (id, rows).
    pub duplicated: Vec<(String, i64)>,
    /// One row whose amount in the column is missing, or differs from the one expected
    /// where the caller knows it: (id, found).
    pub wrong: Vec<(String, Option<i64>)>,
}

/// Every accepted id must have exactly one row, and that row a value in `column`
/// equal to `expected[id]` where given (any value where not).
pub async fn check_amounts(
    client: &Client,
    schema: &str,
    column: AmountColumn,
    accepted: &[String],
    expected: &HashMap<String, i64>,
) -> Result<AmountCheck, LedgerError> {
    let s = ident(schema)?;
    let c = column.as_str();
    let sql = format!(
        "SELECT a.id, count(l.job_id)::bigint, min(l.{c})::bigint
           FROM (SELECT DISTINCT unnest($1::text[]) AS id) a
           LEFT JOIN {s}.ledger l ON l.job_id = a.id
          GROUP BY a.id
          ORDER BY a.id"
    );
    let mut out = AmountCheck::default();
    for row in client.query(&sql, &[&accepted]).await? {
        let id: String = row.try_get(0)?;
        let n: i64 = row.try_get(1)?;
        let value: Option<i64> = row.try_get(2)?;
        out.accepted += 1;
        match n {
            0 => out.lost.push(id),
            1 => {
                let right = match (value, expected.get(&id)) {
                    (None, _) => false,
                    (Some(v), Some(want)) => v == *want,
                    (Some(_), None) => true,
                };
                if !right {
                    out.wrong.push((id, value));
                }
            }
            _ => out.duplicated.push((id, n)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_parse_and_name_their_columns() {
        for w in Writes::ALL {
            assert_eq!(w.as_str().parse::<Writes>().unwrap(), w);
        }
        let err = "amount_cents".parse::<Writes>().unwrap_err();
        assert!(err.contains("old") && err.contains("both") && err.contains("new"), "{err}");
        assert!(Writes::Old.insert("\"s\"").contains("(job_id, amount, applied_by)"));
        assert!(Writes::Both.insert("\"s\"").contains("amount, amount_cents"));
        assert!(Writes::New.insert("\"s\"").contains("(job_id, amount_cents, applied_by)"));
    }
}
