-- A claimed key counts as a duplicate only once the broker has confirmed its message.
-- An unconfirmed key (publish outcome unknown: a crash, a connection lost before the
-- confirm) keeps its requestId, and a resend publishes the signal again under it.
-- Keys claimed before this column existed count as confirmed.
ALTER TABLE idempotency_keys ADD COLUMN confirmed BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE idempotency_keys ALTER COLUMN confirmed SET DEFAULT FALSE;
