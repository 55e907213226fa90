-- The paper exchange's order book. Like a real exchange it refuses a second order with
-- the same client order id, so a redelivered signal cannot paper-trade twice either.
CREATE TABLE paper_orders (
    client_order_id  TEXT        PRIMARY KEY,
    order_id         UUID        NOT NULL UNIQUE,
    request_id       UUID        NOT NULL,
    symbol           TEXT        NOT NULL,
    side             TEXT        NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type       TEXT        NOT NULL CHECK (order_type IN ('market', 'limit')),
    quantity         NUMERIC     NOT NULL CHECK (quantity > 0),
    price            NUMERIC,
    reduce_only      BOOLEAN     NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
