//! The two variants as steps: what changes at each step's trigger (a schema version,
//! then a worker deploy) and which column the reader trusts afterwards. The api never
//! touches the ledger, so the "old and new app versions" are worker versions, told
//! apart by `ZD_LEDGER_WRITES`.

use serde::Serialize;
use zerodrop_ledger::migrate::Plan;
use zerodrop_ledger::{AmountColumn, Writes};

/// One step, run under one load.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Step {
    pub name: &'static str,
    /// Migrated to at the trigger, before any deploy.
    pub migrate_to: Option<i64>,
    /// Then a rolling deploy of the workers writing these columns.
    pub deploy: Option<Writes>,
    /// The column the reconciliation reads amounts from after the step.
    pub reads: AmountColumn,
}

const fn step(name: &'static str, migrate_to: Option<i64>, deploy: Option<Writes>, reads: AmountColumn) -> Step {
    Step { name, migrate_to, deploy, reads }
}

use AmountColumn::{Amount, AmountCents};

/// Add → dual-write → backfill → switch reads → stop writing the old → drop the old.
/// Version 4 (`amount_cents` required, `amount` optional) must land before the
/// new-only workers, whose inserts leave `amount` empty.
const EXPAND_CONTRACT: [Step; 6] = [
    step("expand: add amount_cents", Some(2), None, Amount),
    step("dual-write", None, Some(Writes::Both), Amount),
    step("backfill", Some(3), None, Amount),
    step("switch reads", None, None, AmountCents),
    step("stop writing amount", Some(4), Some(Writes::New), AmountCents),
    step("contract: drop amount", Some(5), None, AmountCents),
];

/// The rename in one step, then the workers that know the new name.
const DESTRUCTIVE: [Step; 1] = [step("rename amount, deploy new workers", Some(2), Some(Writes::New), AmountCents)];

pub fn steps(plan: Plan) -> &'static [Step] {
    match plan {
        Plan::ExpandContract => &EXPAND_CONTRACT,
        Plan::Destructive => &DESTRUCTIVE,
    }
}

/// Both variants, in the order they run.
pub const VARIANTS: [Plan; 2] = [Plan::ExpandContract, Plan::Destructive];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every version of each plan is reached once, in order, and every step's readers
    /// and writers meet a column that exists at that version.
    #[test]
    fn each_plan_walks_its_versions_in_order_and_ends_on_the_new_column() {
        for plan in VARIANTS {
            let versions: Vec<i64> = steps(plan).iter().filter_map(|s| s.migrate_to).collect();
            let want: Vec<i64> = (2..=plan.latest()).collect();
            assert_eq!(versions, want, "{plan:?}");
            let last = steps(plan).last().unwrap();
            assert_eq!(last.reads, AmountColumn::AmountCents);
        }
        let deploys: Vec<Writes> = steps(Plan::ExpandContract).iter().filter_map(|s| s.deploy).collect();
        assert_eq!(deploys, [Writes::Both, Writes::New]);
        // The reader switches only after the backfill.
        let backfill = EXPAND_CONTRACT.iter().position(|s| s.migrate_to == Some(3)).unwrap();
        assert!(EXPAND_CONTRACT[..=backfill].iter().all(|s| s.reads == AmountColumn::Amount));
    }
}
