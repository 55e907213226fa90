-- Keys that make a resent webhook a 409 instead of a second order. A row whose
-- `expires_at` has passed is free to be claimed again; ingest sweeps them away.
CREATE TABLE idempotency_keys (
    key         TEXT        PRIMARY KEY,
    request_id  UUID        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
