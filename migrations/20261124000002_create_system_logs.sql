-- The audit trail: every step of a signal's life, from ingest to fill or dead letter.
-- Writers pass `created_at` as the moment the event happened (rows of one batch are
-- written in one transaction after the fact); the default is the insert time.
CREATE TABLE system_logs (
    id          BIGSERIAL PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    request_id  UUID,
    worker      TEXT        NOT NULL CHECK (worker IN ('ingest', 'consumer', 'cli')),
    severity    TEXT        NOT NULL CHECK (severity IN ('debug', 'info', 'warn', 'error')),
    message     TEXT        NOT NULL,
    context     JSONB       NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX system_logs_request_id_idx ON system_logs (request_id, created_at);
CREATE INDEX system_logs_created_at_idx ON system_logs (created_at);
