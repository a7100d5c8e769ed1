-- The negative control: the rename in one step. Every worker still writing `amount`
-- fails from this commit until it is replaced.
SET LOCAL lock_timeout = '5s';
ALTER TABLE ledger RENAME COLUMN amount TO amount_cents;
