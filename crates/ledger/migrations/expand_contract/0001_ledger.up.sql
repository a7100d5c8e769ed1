-- The ledger as every worker version before this change knows it (the same tables as
-- zerodrop_ledger::create_schema, which the workers still run at startup: IF NOT
-- EXISTS keeps both harmless to each other).
CREATE TABLE IF NOT EXISTS ledger (
    seq        bigserial   PRIMARY KEY,
    job_id     text        NOT NULL,
    amount     bigint      NOT NULL,
    applied_by text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ledger_job_id_idx ON ledger (job_id);
CREATE TABLE IF NOT EXISTS processed (
    job_id       text        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
