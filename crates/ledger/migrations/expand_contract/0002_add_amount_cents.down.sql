SET LOCAL lock_timeout = '5s';
ALTER TABLE ledger DROP COLUMN amount_cents;
