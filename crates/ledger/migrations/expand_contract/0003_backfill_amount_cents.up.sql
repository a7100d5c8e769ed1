-- Backfill: rows written before every worker dual-wrote. Run only once the dual-write
-- deploy is complete, or an old worker still running could add a row it misses.
-- (One statement: the ledger of a run is small. A production table would be
-- backfilled in batches, outside one long transaction.)
UPDATE ledger SET amount_cents = amount WHERE amount_cents IS NULL;
