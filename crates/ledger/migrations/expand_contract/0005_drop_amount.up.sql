-- Contract: no worker writes or reads `amount` any more.
SET LOCAL lock_timeout = '5s';
ALTER TABLE ledger DROP COLUMN amount;
