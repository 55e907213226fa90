-- Operator settings (the original's KV): kill switch, routing, webhook key, risk limits.
-- Every change is announced on the `hoox_config` channel so running processes pick it
-- up at once instead of polling.
CREATE TABLE config (
    key         TEXT        PRIMARY KEY,
    value       TEXT        NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE FUNCTION config_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('hoox_config', COALESCE(NEW.key, OLD.key));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER config_changed
    AFTER INSERT OR UPDATE OR DELETE ON config
    FOR EACH ROW EXECUTE FUNCTION config_notify();
