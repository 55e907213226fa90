-- Every row names its event's kind (a stable snake_case name such as `accepted`,
-- `order_placed`, `dead_lettered`); the message is rendered from the event. Rows
-- written before events existed keep a NULL kind and their message.
ALTER TABLE system_logs ADD COLUMN kind TEXT;
CREATE INDEX system_logs_kind_created_at_idx ON system_logs (kind, created_at);
