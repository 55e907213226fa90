-- The positions ledger: one row per exchange, market, environment and symbol, updated
-- in the transaction that writes each fill (average-cost rules, see docs/design.md).
-- `quantity` is signed: positive long, negative short. `avg_entry_price` is NULL when
-- flat, or when a fill without a price made it unknown. `complete` turns false for
-- good once a fill closed something that could not be priced: `realized_pnl` then
-- lacks that part.
CREATE TABLE positions (
    exchange        TEXT        NOT NULL,
    market          TEXT        NOT NULL,
    testnet         BOOLEAN     NOT NULL,
    symbol          TEXT        NOT NULL,
    quantity        NUMERIC     NOT NULL DEFAULT 0,
    avg_entry_price NUMERIC              CHECK (avg_entry_price > 0),
    realized_pnl    NUMERIC     NOT NULL DEFAULT 0,
    fees            NUMERIC     NOT NULL DEFAULT 0,
    complete        BOOLEAN     NOT NULL DEFAULT TRUE,
    fills           BIGINT      NOT NULL DEFAULT 0,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, market, testnet, symbol)
);
