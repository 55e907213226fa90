-- What the positions ledger needs of each fill: the market it traded on (an exchange
-- runs one market per consumer: bybit linear|spot, binance usdm|spot, mexc
-- spot|futures, paper paper), the fee in the quote currency when the exchange reports
-- one, and the PnL the fill realized (closed part minus fee; NULL when it closed
-- something that could not be priced). Rows written before this migration have none of
-- them and never entered the ledger.
ALTER TABLE fills
    ADD COLUMN market       TEXT,
    ADD COLUMN fee          NUMERIC,
    ADD COLUMN realized_pnl NUMERIC;

CREATE INDEX fills_executed_at_idx ON fills (executed_at);
