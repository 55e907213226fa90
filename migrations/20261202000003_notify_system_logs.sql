-- Lets `hoox logs tail --follow` stream `system_logs` without polling and without
-- missing a row.
--
-- `written_by` is the transaction that wrote the row. Ids are drawn when a row is
-- inserted but become visible when its transaction commits, so concurrent writers
-- (several consumers, ingest) commit ids out of order: a reader that only remembers the
-- last id it printed would skip a lower id committed later. A reader instead remembers
-- the oldest transaction still running when it last read (its snapshot's xmin): every
-- row it has not yet seen was written by that transaction or a later one. Rows from
-- before this migration keep NULL; they were all committed long ago. Setting the
-- default after adding the column keeps the ALTER from rewriting the table.
ALTER TABLE system_logs ADD COLUMN written_by xid8;
ALTER TABLE system_logs ALTER COLUMN written_by SET DEFAULT pg_current_xact_id();
CREATE INDEX system_logs_written_by_idx ON system_logs (written_by);

-- Each INSERT statement announces itself on `hoox_logs`, once, with the highest id it
-- wrote: a consumer's batch is one statement, so one notification instead of one per
-- row. The payload is only a hint (readers read by `written_by`, so a notification
-- that is lost, merged or late costs nothing), and a short one: pg_notify refuses
-- payloads over 8000 bytes, which a message could exceed. It is delivered when the
-- transaction commits, so the rows are visible to whoever it wakes.
CREATE FUNCTION system_logs_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('hoox_logs', (SELECT max(id)::text FROM inserted));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER system_logs_inserted
    AFTER INSERT ON system_logs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION system_logs_notify();
