-- The dashboard pages through fills newest first by (executed_at, id), filtered by
-- exchange or symbol, and through system_logs newest first by id, filtered by worker or
-- severity: each filter gets an index in that order, so that a page reads its rows and
-- never scans the table, even when few rows match. Unfiltered, fills are read by
-- fills_executed_at_idx and system_logs by its primary key.
CREATE INDEX fills_exchange_executed_at_idx ON fills (exchange, executed_at, id);
CREATE INDEX fills_symbol_executed_at_idx ON fills (symbol, executed_at, id);
CREATE INDEX system_logs_worker_id_idx ON system_logs (worker, id);
CREATE INDEX system_logs_severity_id_idx ON system_logs (severity, id);
