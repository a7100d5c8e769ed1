-- Rows written by new-only workers have no `amount`: copy it back before requiring it.
SET LOCAL lock_timeout = '5s';
UPDATE ledger SET amount = amount_cents WHERE amount IS NULL;
ALTER TABLE ledger ALTER COLUMN amount SET NOT NULL;
ALTER TABLE ledger ALTER COLUMN amount_cents DROP NOT NULL;
