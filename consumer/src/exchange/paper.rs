//! The paper exchange: simulated fills recorded in `paper_orders`, so a fresh install
//! trades without an exchange account. It keeps the real exchanges' one promise that
//! matters most here: a client order id is accepted once.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hoox_common::runtime_config::{
    paper_price_key, RuntimeConfig, MAX_PAPER_LATENCY_MS, PAPER_LATENCY_MS,
};
use hoox_common::signal::{ExchangeName, Leverage, Symbol};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    ErrorClass, ErrorCode, Exchange, ExchangeError, Holdings, HooxCode, KeyCheck, OrderAck,
    OrderRequest,
};

/// The simulated exchange.
pub struct Paper {
    pool: PgPool,
    config: RuntimeConfig,
}

impl Paper {
    /// A paper exchange keeping its book in `pool`, priced from `config`.
    pub fn new(pool: PgPool, config: RuntimeConfig) -> Self {
        Self { pool, config }
    }

    /// A limit order fills at its price; a market order at the signal's price, else at
    /// `paper:price:<SYMBOL>`, else without a price.
    fn fill_price(&self, order: &OrderRequest) -> Option<Decimal> {
        order.price.or_else(|| self.market_price(&order.symbol))
    }

    /// `paper:price:<SYMBOL>`, when set to a price.
    fn market_price(&self, symbol: &Symbol) -> Option<Decimal> {
        self.config
            .get(&paper_price_key(symbol))
            .and_then(|p| p.trim().parse::<Decimal>().ok())
            .filter(|p| *p > Decimal::ZERO)
    }

    /// `paper:latency_ms`: a simulated exchange round trip.
    fn latency(&self) -> Duration {
        self.config
            .get(PAPER_LATENCY_MS)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, |ms| {
                Duration::from_millis(ms.min(MAX_PAPER_LATENCY_MS))
            })
    }
}

type PaperRow = (Uuid, Option<Decimal>, Decimal, DateTime<Utc>);

fn ack(order: &OrderRequest, (order_id, price, quantity, created_at): PaperRow) -> OrderAck {
    OrderAck {
        exchange_order_id: order_id.to_string(),
        status: "filled".to_owned(),
        fill_price: price,
        fill_quantity: Some(quantity),
        // The paper exchange charges nothing.
        fee: Some(Decimal::ZERO),
        placed_at: created_at,
        raw: json!({
            "orderId": order_id,
            "clientOrderId": order.client_order_id.as_str(),
            "status": "filled",
            "price": price,
            "quantity": quantity,
        }),
    }
}

fn database_error(err: sqlx::Error) -> ExchangeError {
    // The insert may or may not have committed: look the order up before retrying.
    ExchangeError::new(
        ErrorClass::Ambiguous,
        format!("paper book unavailable: {err}"),
    )
}

#[async_trait]
impl Exchange for Paper {
    fn name(&self) -> ExchangeName {
        ExchangeName::Paper
    }

    fn has_credentials(&self, _testnet: bool) -> bool {
        true
    }

    async fn set_leverage(&self, _: &OrderRequest, _: Leverage) -> Result<(), ExchangeError> {
        Ok(())
    }

    /// No keys are needed: the paper exchange always trades and holds nothing to withdraw.
    async fn check_keys(&self, _testnet: bool) -> Result<KeyCheck, ExchangeError> {
        Ok(KeyCheck {
            can_trade: Some(true),
            can_withdraw: Some(false),
        })
    }

    /// Paper positions exist only in hoox's ledger, built from the paper fills: the
    /// paper exchange keeps no account of its own to compare the ledger with.
    async fn positions(&self, _testnet: bool) -> Result<Holdings, ExchangeError> {
        Ok(Holdings::LedgerOnly)
    }

    async fn place_order(&self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        let latency = self.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let row: Option<PaperRow> = sqlx::query_as(
            r#"
            INSERT INTO paper_orders
                (client_order_id, order_id, request_id, symbol, side, order_type, quantity, price, reduce_only)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (client_order_id) DO NOTHING
            RETURNING order_id, price, quantity, created_at
            "#,
        )
        .bind(order.client_order_id.as_str())
        .bind(Uuid::new_v4())
        .bind(order.request_id)
        .bind(order.symbol.as_str())
        .bind(order.side.as_str())
        .bind(order.order_type.as_str())
        .bind(order.quantity)
        .bind(self.fill_price(order))
        .bind(order.reduce_only)
        .fetch_optional(&self.pool)
        .await
        .map_err(database_error)?;
        match row {
            Some(row) => Ok(ack(order, row)),
            None => Err(ExchangeError::with_code(
                ErrorClass::Duplicate,
                ErrorCode::Hoox(HooxCode::DuplicateClientOrderId),
                format!(
                    "client order id {} already used",
                    order.client_order_id.as_str()
                ),
            )),
        }
    }

    /// `paper:price:<SYMBOL>`: the price a market order fills at.
    async fn last_price(&self, symbol: &Symbol, testnet: bool) -> Result<Decimal, ExchangeError> {
        let _ = testnet;
        self.market_price(symbol).ok_or_else(|| {
            ExchangeError::new(
                ErrorClass::Fatal,
                format!(
                    "paper has no price for {symbol}: set {}",
                    paper_price_key(symbol)
                ),
            )
        })
    }

    async fn order_by_client_id(
        &self,
        order: &OrderRequest,
    ) -> Result<Option<OrderAck>, ExchangeError> {
        let row: Option<PaperRow> = sqlx::query_as(
            "SELECT order_id, price, quantity, created_at FROM paper_orders WHERE client_order_id = $1",
        )
        .bind(order.client_order_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|err| ExchangeError::new(ErrorClass::Retryable, format!("paper book unavailable: {err}")))?;
        Ok(row.map(|row| ack(order, row)))
    }
}
