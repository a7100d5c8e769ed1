-- Nothing to undo: the backfilled values equal the old column's, and undoing 0002
-- drops the column they are in. A no-op keeps the step reversible by version.
SELECT 1;
