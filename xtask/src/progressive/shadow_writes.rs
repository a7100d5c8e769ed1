//! Shadow copies of jobs and the ledgers. A copied job must not be applied to the
//! users' ledger a second time, so the copy (Host name ending in `-shadow`) goes to a
//! shadow sink: its own queue, applied by v2's worker to a ledger schema of its own
//! ([`JobsSpec`]). After the phase both ledgers are reconciled by job id:
//!
//! - the users' ledger holds exactly one row per job a user was told was accepted
//!   (none lost, none twice) and no row for any other id (none extra: a copy whose
//!   original failed would be one);
//! - the shadow ledger holds exactly one row per copy v2 accepted.
//!
//! The decision (what the counts mean) is [`WritesReport::from_counts`], pure; the
//! reading is [`reconcile`], against the real ledgers.

use crate::backing::Backing;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use zerodrop_jobs::Topology;
use zerodrop_ledger::Reconciliation;
use zerodrop_load::RunResult;
use zerodrop_platform::router::JobsSpec;

/// The run's queues and schemas: unique per run, as the experiment's stages are.
pub fn jobs_spec(run_id: &str) -> JobsSpec {
    let id = run_id.replace('-', "").to_lowercase();
    JobsSpec {
        queue: format!("zerodrop.{run_id}.progressive"),
        schema: format!("zd_{id}_users"),
        shadow_queue: format!("zerodrop.{run_id}.progressive.shadow"),
        shadow_schema: format!("zd_{id}_shadow"),
    }
}

/// Declares both queues and creates both schemas, before the fleet starts.
pub async fn prepare(b: &Backing, j: &JobsSpec) -> Result<()> {
    for q in [&j.queue, &j.shadow_queue] {
        Topology::new(q.as_str()).declare(&b.channel).await.with_context(|| format!("declaring queue {q}"))?;
    }
    for s in [&j.schema, &j.shadow_schema] {
        zerodrop_ledger::create_schema(&b.db, s).await.with_context(|| format!("creating ledger schema {s}"))?;
    }
    Ok(())
}

/// One ledger against the ids that should be in it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LedgerCheck {
    pub schema: String,
    /// Ids that should each have exactly one row.
    pub expected: u64,
    /// Every row in the schema.
    pub rows: i64,
    /// Expected ids with no row (the first few; `lost` counts them all).
    pub lost: u64,
    pub lost_ids: Vec<String>,
    /// Expected ids with more than one row.
    pub twice: u64,
    /// Rows whose id was not expected here.
    pub extra: i64,
}

impl LedgerCheck {
    fn of(schema: &str, expected: u64, rows: i64, r: &Reconciliation) -> LedgerCheck {
        LedgerCheck {
            schema: schema.into(),
            expected,
            rows,
            lost: r.lost.len() as u64,
            lost_ids: r.lost.iter().take(5).cloned().collect(),
            twice: r.duplicated.len() as u64,
            extra: rows - r.applied_rows,
        }
    }

    fn exact(&self) -> bool {
        self.lost == 0 && self.twice == 0 && self.extra == 0
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct WritesReport {
    pub users: LedgerCheck,
    pub shadow: LedgerCheck,
    /// Copies v2 accepted whose original a user was also told was accepted: with no
    /// shadow sink, each would have reached the users' queue a second time.
    pub copies_of_accepted: u64,
    /// Copies v2 accepted whose original failed: with no shadow sink, each would have
    /// become a row for a job its user was told had failed, which no idempotency key
    /// prevents.
    pub orphan_copies: u64,
    /// Both queues drained and the ledgers stopped growing before they were read.
    pub settled: bool,
}

impl WritesReport {
    pub fn from_counts(
        users: LedgerCheck,
        shadow: LedgerCheck,
        accepted: &[String],
        copies: &[String],
        settled: bool,
    ) -> WritesReport {
        let accepted: BTreeSet<&String> = accepted.iter().collect();
        let copies_of_accepted = copies.iter().filter(|id| accepted.contains(id)).count() as u64;
        WritesReport {
            users,
            shadow,
            copies_of_accepted,
            orphan_copies: copies.len() as u64 - copies_of_accepted,
            settled,
        }
    }

    /// Exit 3 unless both ledgers hold exactly what they should.
    pub fn check(&self) -> Result<(), String> {
        let u = &self.users;
        if !u.exact() {
            return Err(format!(
                "shadow writes: the users' ledger has {} rows that no user's accepted job explains, {} jobs applied \
                 twice and {} accepted jobs lost (first: {:?})",
                u.extra, u.twice, u.lost, u.lost_ids
            ));
        }
        let s = &self.shadow;
        if !s.exact() {
            return Err(format!(
                "shadow writes: the shadow ledger holds {} rows for {} accepted copies ({} missing, {} twice, {} extra)",
                s.rows, s.expected, s.lost, s.twice, s.extra
            ));
        }
        if s.expected == 0 {
            return Err("shadow writes: v2 accepted no copied job, so the shadow sink was not exercised".into());
        }
        Ok(())
    }

    pub fn markdown(&self, o: &mut String) {
        let (u, s) = (&self.users, &self.shadow);
        let _ = writeln!(
            o,
            "### Writes\n\nCopied jobs carry the Host name suffixed `-shadow`, as Envoy and Istio mark mirrored \
             requests; the api publishes them to the shadow sink, which v2's worker applies to a ledger schema of \
             its own. Both ledgers reconciled by job id after the phase{}:\n",
            if self.settled { "" } else { " (**a queue had not drained within 45 s**: the counts may be short)" }
        );
        let _ = writeln!(o, "| ledger | should hold | rows | lost | twice | extra |\n|---|---|---|---|---|---|");
        for (name, c) in [("users'", u), ("shadow", s)] {
            let _ = writeln!(
                o,
                "| {name} (`{}`) | {} | {} | {} | {} | {} |",
                c.schema, c.expected, c.rows, c.lost, c.twice, c.extra
            );
        }
        let _ = writeln!(
            o,
            "\n{} of the copies were of jobs a user had been told were accepted: without the shadow sink each would \
             have reached the users' queue a second time, where only the worker's idempotency key stops it. {} were \
             copies of jobs whose original failed: those no idempotency key stops, since the users' ledger has no \
             row for them to match. **{}**\n",
            self.copies_of_accepted,
            self.orphan_copies,
            match self.check() {
                Ok(()) => format!("0 extra and 0 doubled rows in the users' ledger; {} copied jobs applied to the shadow ledger alone.", s.rows),
                Err(e) => e,
            }
        );
    }
}

/// Waits for both queues to drain, then reconciles both ledgers: the users' with the
/// ids the users were told were accepted, the shadow's with the copies v2 accepted.
pub async fn reconcile(b: &Backing, j: &JobsSpec, load: &RunResult) -> Result<WritesReport> {
    let mut settled = true;
    for (q, s) in [(&j.queue, &j.schema), (&j.shadow_queue, &j.shadow_schema)] {
        settled &= b.wait_settled(&Topology::new(q.as_str()), s).await;
    }
    let (accepted, copies) = (&load.accepted_jobs, &load.mirrored_accepted_jobs);
    let mut checks = Vec::new();
    for (schema, ids) in [(&j.schema, accepted), (&j.shadow_schema, copies)] {
        let rows = zerodrop_ledger::total_rows(&b.db, schema).await.with_context(|| format!("counting {schema}"))?;
        let r =
            zerodrop_ledger::reconcile(&b.db, schema, ids).await.with_context(|| format!("reconciling {schema}"))?;
        let distinct = ids.iter().collect::<BTreeSet<_>>().len() as u64;
        checks.push(LedgerCheck::of(schema, distinct, rows, &r));
    }
    let shadow = checks.pop().unwrap_or_default();
    let users = checks.pop().unwrap_or_default();
    Ok(WritesReport::from_counts(users, shadow, accepted, copies, settled))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(applied_rows: i64, lost: &[&str], twice: &[&str]) -> Reconciliation {
        Reconciliation {
            applied_rows,
            lost: lost.iter().map(|s| s.to_string()).collect(),
            duplicated: twice.iter().map(|s| (s.to_string(), 2)).collect(),
        }
    }

    fn ids(r: std::ops::Range<u32>) -> Vec<String> {
        r.map(|i| format!("p-{i}")).collect()
    }

    #[test]
    fn exact_ledgers_pass_and_count_the_copies_by_what_their_originals_did() {
        let users = LedgerCheck::of("u", 10, 10, &rec(10, &[], &[]));
        let shadow = LedgerCheck::of("s", 3, 3, &rec(3, &[], &[]));
        // Copies of p-8, p-9 (accepted) and p-42 (its original failed).
        let copies = vec!["p-8".to_string(), "p-9".into(), "p-42".into()];
        let w = WritesReport::from_counts(users, shadow, &ids(0..10), &copies, true);
        assert_eq!((w.copies_of_accepted, w.orphan_copies), (2, 1));
        assert_eq!(w.check(), Ok(()));
        let mut md = String::new();
        w.markdown(&mut md);
        assert!(md.contains("0 extra and 0 doubled rows"), "{md}");
    }

    #[test]
    fn a_row_no_user_job_explains_a_second_row_or_a_loss_fails_the_users_ledger() {
        let ok_shadow = || LedgerCheck::of("s", 1, 1, &rec(1, &[], &[]));
        // A copy applied to the users' ledger: 11 rows for 10 accepted ids.
        let extra = LedgerCheck::of("u", 10, 11, &rec(10, &[], &[]));
        assert_eq!(extra.extra, 1);
        let w = WritesReport::from_counts(extra, ok_shadow(), &ids(0..10), &["p-1".into()], true);
        assert!(w.check().unwrap_err().contains("1 rows that no user's accepted job explains"));
        let twice = LedgerCheck::of("u", 10, 11, &rec(11, &[], &["p-3"]));
        assert_eq!(twice.extra, 0);
        assert!(WritesReport::from_counts(twice, ok_shadow(), &ids(0..10), &[], true).check().is_err());
        let lost = LedgerCheck::of("u", 10, 9, &rec(9, &["p-0"], &[]));
        let e = WritesReport::from_counts(lost, ok_shadow(), &ids(0..10), &[], true).check().unwrap_err();
        assert!(e.contains("1 accepted jobs lost") && e.contains("p-0"), "{e}");
    }

    #[test]
    fn a_shadow_ledger_short_of_the_copies_or_never_exercised_fails() {
        let users = || LedgerCheck::of("u", 2, 2, &rec(2, &[], &[]));
        let short = LedgerCheck::of("s", 2, 1, &rec(1, &["p-1"], &[]));
        let copies = ids(0..2);
        assert!(WritesReport::from_counts(users(), short, &ids(0..2), &copies, true).check().is_err());
        let none = LedgerCheck::of("s", 0, 0, &rec(0, &[], &[]));
        let e = WritesReport::from_counts(users(), none, &ids(0..2), &[], true).check().unwrap_err();
        assert!(e.contains("not exercised"), "{e}");
    }

    #[test]
    fn the_run_s_names_are_valid_queue_and_schema_names() {
        let j = jobs_spec("20261206-214500");
        assert_eq!(j.schema, "zd_20261206214500_users");
        assert_eq!(j.shadow_schema, "zd_20261206214500_shadow");
        assert!(zerodrop_ledger::validate_schema(&j.schema).is_ok());
        assert!(zerodrop_ledger::validate_schema(&j.shadow_schema).is_ok());
        assert_eq!(j.shadow_queue, format!("{}.shadow", j.queue));
    }
}
