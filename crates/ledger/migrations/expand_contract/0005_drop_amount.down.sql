-- The data is restored from the new column, which holds the same values.
SET LOCAL lock_timeout = '5s';
ALTER TABLE ledger ADD COLUMN amount bigint;
UPDATE ledger SET amount = amount_cents;
