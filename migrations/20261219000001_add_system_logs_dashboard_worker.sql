-- The web dashboard records what its users change (and sign-ins) with worker
-- `dashboard`. The new check is added NOT VALID and then validated, so the scan of the
-- existing rows does not block writers (VALIDATE takes a weaker lock than ADD).
ALTER TABLE system_logs DROP CONSTRAINT system_logs_worker_check;
ALTER TABLE system_logs ADD CONSTRAINT system_logs_worker_check
    CHECK (worker IN ('ingest', 'consumer', 'cli', 'dashboard')) NOT VALID;
ALTER TABLE system_logs VALIDATE CONSTRAINT system_logs_worker_check;
