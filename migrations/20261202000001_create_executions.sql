-- The consumer's claim on each signal it executes, taken before any order is sent and
-- updated in the transaction that records the attempt's outcome. It makes a requestId
-- execute at most once whatever the broker delivers: a copy of a message, a redelivery
-- in the same batch, or a dead letter copied back to the main queue by hand.
--
-- `replays` is the message's generation (operator replays so far): only `hoox dlq
-- replay` makes a newer one, so a dead letter cannot run again any other way.
-- `attempt` is the last attempt started; `state` says how it ended:
--   running   started, outcome not yet recorded (in flight, or its consumer died)
--   retrying  failed retryably; the next attempt waits in a delay tier
--   filled    an order was placed or found and its fill recorded
--   dead      dead-lettered
CREATE TABLE executions (
    request_id  UUID        PRIMARY KEY,
    replays     INTEGER     NOT NULL CHECK (replays >= 0),
    attempt     INTEGER     NOT NULL CHECK (attempt >= 1),
    state       TEXT        NOT NULL CHECK (state IN ('running', 'retrying', 'filled', 'dead')),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Signals filled before this table existed are done.
INSERT INTO executions (request_id, replays, attempt, state)
SELECT request_id, 0, 1, 'filled' FROM fills;
