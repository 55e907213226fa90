-- Signed-in dashboard sessions, kept in the database so that they survive a restart and
-- work behind more than one dashboard. Only the SHA-256 of a session's id is stored: a
-- reader of this table cannot sign in with what it reads. A session ends when it has
-- been idle too long, at its absolute expiry, or when its user signs out.
CREATE TABLE dashboard_sessions (
    id_hash     BYTEA       PRIMARY KEY,
    csrf_token  TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX dashboard_sessions_expires_at_idx ON dashboard_sessions (expires_at);
