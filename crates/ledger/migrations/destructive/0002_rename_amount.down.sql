SET LOCAL lock_timeout = '5s';
ALTER TABLE ledger RENAME COLUMN amount_cents TO amount;
