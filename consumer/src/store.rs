//! The consumer's writes: one transaction per batch for its fills and audit rows, and
//! the read that tells a redelivered message from a new one.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use hoox_common::logs::{insert_logs, LogEntry};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// One `fills` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Fill {
    /// The signal's id.
    pub request_id: Uuid,
    /// Exchange name.
    pub exchange: String,
    /// Whether the exchange was `paper`.
    pub paper: bool,
    /// Whether the testnet was used.
    pub testnet: bool,
    /// Instrument.
    pub symbol: String,
    /// Signal action.
    pub action: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Reduce-only.
    pub reduce_only: bool,
    /// Requested quantity.
    pub quantity: Decimal,
    /// Requested leverage.
    pub leverage: Option<i32>,
    /// `market` or `limit`.
    pub order_type: String,
    /// Requested price.
    pub requested_price: Option<Decimal>,
    /// Client order id sent.
    pub client_order_id: String,
    /// The exchange's order id.
    pub exchange_order_id: Option<String>,
    /// The exchange's order status.
    pub status: String,
    /// Average fill price.
    pub fill_price: Option<Decimal>,
    /// Filled quantity.
    pub fill_quantity: Option<Decimal>,
    /// The exchange's raw answer.
    pub raw_response: Value,
    /// When ingest accepted the signal.
    pub received_at: DateTime<Utc>,
    /// When the exchange took the order.
    pub executed_at: DateTime<Utc>,
}

/// The ids among `ids` that already have a fill.
pub async fn filled_among(pool: &PgPool, ids: &[Uuid]) -> Result<HashSet<Uuid>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let found: Vec<Uuid> =
        sqlx::query_scalar("SELECT request_id FROM fills WHERE request_id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await?;
    Ok(found.into_iter().collect())
}

/// Writes a batch's fills and audit rows in one transaction. A fill whose request id is
/// already recorded is kept as it was: the unique key, not hope, makes this idempotent.
pub async fn commit_batch(
    pool: &PgPool,
    fills: &[Fill],
    logs: &[LogEntry],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for fill in fills {
        sqlx::query(
            r#"
            INSERT INTO fills (
                request_id, exchange, paper, testnet, symbol, action, side, reduce_only,
                quantity, leverage, order_type, requested_price, client_order_id,
                exchange_order_id, status, fill_price, fill_quantity, raw_response,
                received_at, executed_at
            )
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
            ON CONFLICT (request_id) DO NOTHING
            "#,
        )
        .bind(fill.request_id)
        .bind(&fill.exchange)
        .bind(fill.paper)
        .bind(fill.testnet)
        .bind(&fill.symbol)
        .bind(&fill.action)
        .bind(&fill.side)
        .bind(fill.reduce_only)
        .bind(fill.quantity)
        .bind(fill.leverage)
        .bind(&fill.order_type)
        .bind(fill.requested_price)
        .bind(&fill.client_order_id)
        .bind(&fill.exchange_order_id)
        .bind(&fill.status)
        .bind(fill.fill_price)
        .bind(fill.fill_quantity)
        .bind(&fill.raw_response)
        .bind(fill.received_at)
        .bind(fill.executed_at)
        .execute(&mut *tx)
        .await?;
    }
    insert_logs(&mut *tx, logs).await?;
    tx.commit().await
}
