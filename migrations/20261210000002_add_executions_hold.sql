-- A signal waiting for its retry holds its symbol: the later signals of that symbol wait
-- until it fills or is dead-lettered. The hold is the `retrying` row itself, so these
-- columns say which queue and symbol it holds and since when the signal's age counts
-- (a new owner of the partition reads them after a crash). Rows written before this
-- migration hold nothing.
ALTER TABLE executions
    ADD COLUMN queue      TEXT,
    ADD COLUMN symbol     TEXT,
    ADD COLUMN age_origin TIMESTAMPTZ;

CREATE INDEX executions_holds ON executions (queue, symbol) WHERE state = 'retrying';
