-- How many partition queues each main queue was set up with. Ingest and every consumer
-- must hash symbols onto the same partitions, so a process started with another
-- HOOX_PARTITIONS refuses to run rather than send a symbol's signals somewhere else.
CREATE TABLE queue_partitions (
    queue       TEXT        PRIMARY KEY,
    partitions  INTEGER     NOT NULL CHECK (partitions BETWEEN 1 AND 100),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
