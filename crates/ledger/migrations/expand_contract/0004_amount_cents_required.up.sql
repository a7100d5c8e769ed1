-- The new column becomes the required one and the old one optional, so that workers
-- which stop writing `amount` can be deployed next. Fails (and rolls back) if any row
-- still lacks amount_cents: the backfill must have run.
SET LOCAL lock_timeout = '5s';
ALTER TABLE ledger ALTER COLUMN amount_cents SET NOT NULL;
ALTER TABLE ledger ALTER COLUMN amount DROP NOT NULL;
