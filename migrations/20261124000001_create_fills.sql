-- One row per executed signal. `request_id` is unique: recording the same signal twice
-- is impossible, and a redelivered message finds its fill here instead of trading again.
CREATE TABLE fills (
    id                 BIGSERIAL PRIMARY KEY,
    request_id         UUID        NOT NULL UNIQUE,
    exchange           TEXT        NOT NULL,
    paper              BOOLEAN     NOT NULL,
    testnet            BOOLEAN     NOT NULL DEFAULT FALSE,
    symbol             TEXT        NOT NULL,
    action             TEXT        NOT NULL,
    side               TEXT        NOT NULL CHECK (side IN ('buy', 'sell')),
    reduce_only        BOOLEAN     NOT NULL,
    quantity           NUMERIC     NOT NULL CHECK (quantity > 0),
    leverage           INTEGER              CHECK (leverage BETWEEN 1 AND 125),
    order_type         TEXT        NOT NULL CHECK (order_type IN ('market', 'limit')),
    requested_price    NUMERIC,
    client_order_id    TEXT        NOT NULL,
    exchange_order_id  TEXT,
    status             TEXT        NOT NULL,
    fill_price         NUMERIC,
    fill_quantity      NUMERIC,
    raw_response       JSONB,
    received_at        TIMESTAMPTZ NOT NULL,
    executed_at        TIMESTAMPTZ NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX fills_created_at_idx ON fills (created_at);
CREATE INDEX fills_symbol_created_at_idx ON fills (symbol, created_at);
