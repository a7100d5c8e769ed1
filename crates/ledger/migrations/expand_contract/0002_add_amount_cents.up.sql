-- Expand: the new column, nullable, so the old workers' inserts (which do not name
-- it) keep working. Adding a nullable column without a default is a catalogue change
-- only; the lock is held for milliseconds, and never waited for longer than 5 s.
SET LOCAL lock_timeout = '5s';
ALTER TABLE ledger ADD COLUMN amount_cents bigint;
