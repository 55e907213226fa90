//! The risk limits that need more than the signal: the position an order leaves
//! (`risk:max_position`), a market order's notional at the exchange's last price
//! (`risk:max_notional`), and the realized loss of the UTC day (`risk:max_daily_loss`).
//!
//! The ledger moves when a batch commits, but a symbol's next order may go as soon as
//! the exchange took the one before (its read-back and commit run meanwhile). So the
//! position an order starts from is the ledger's plus the orders this consumer placed
//! whose fills are not committed yet ([`InFlight`]); both are read so that a fill that
//! commits in between is counted once, never twice or not at all. A symbol runs on one
//! consumer at a time, so no other consumer holds orders of it in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{NaiveDate, Utc};
use hoox_common::event::Event;
use hoox_common::logs::{LogEntry, Worker};
use hoox_common::risk::{self, Refusal};
use hoox_common::runtime_config::RuntimeConfig;
use hoox_common::signal::{ExchangeName, Side, Symbol};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use crate::exchange::{ErrorClass, Exchange, ExchangeError, OrderRequest};

/// Where a position is kept: per exchange, market, environment and symbol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PositionKey {
    /// The exchange.
    pub exchange: ExchangeName,
    /// Its market (`linear`, `spot`, …).
    pub market: &'static str,
    /// Whether the testnet's.
    pub testnet: bool,
    /// The instrument.
    pub symbol: Symbol,
}

impl PositionKey {
    /// The position `order` moves on `provider`.
    pub fn of(provider: &dyn Exchange, order: &OrderRequest) -> Self {
        Self {
            exchange: provider.name(),
            market: provider.market(),
            testnet: order.testnet,
            symbol: order.symbol.clone(),
        }
    }
}

/// How `order` moves its position: plus its quantity for a buy, minus for a sell.
pub fn change(order: &OrderRequest) -> Decimal {
    match order.side {
        Side::Buy => order.quantity,
        Side::Sell => -order.quantity,
    }
}

/// Orders this consumer sent whose fills are not committed yet, as the position changes
/// they asked for, by request id.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    orders: Arc<Mutex<HashMap<Uuid, (PositionKey, Decimal)>>>,
}

impl InFlight {
    fn orders(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (PositionKey, Decimal)>> {
        self.orders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `request_id` is about to be sent, moving `key` by `change`.
    pub fn add(&self, request_id: Uuid, key: PositionKey, change: Decimal) {
        self.orders().insert(request_id, (key, change));
    }

    /// Forgets the orders whose outcomes are committed (their fills are in the ledger).
    pub fn settle(&self, request_ids: impl IntoIterator<Item = Uuid>) {
        let mut orders = self.orders();
        for id in request_ids {
            orders.remove(&id);
        }
    }

    /// The other orders in flight on `key`.
    fn on(&self, key: &PositionKey, except: Uuid) -> Vec<(Uuid, Decimal)> {
        self.orders()
            .iter()
            .filter(|(id, (k, _))| **id != except && k == key)
            .map(|(id, (_, change))| (*id, *change))
            .collect()
    }
}

/// Why an order may not go now.
#[derive(Debug, thiserror::Error)]
pub enum Blocked {
    /// Over a limit: dead-letter it as `fatal`, naming the limit.
    #[error("refused by a risk limit: {0}; not executed")]
    Refused(#[from] Refusal),
    /// What the limit needs could not be read (the exchange's price, the ledger).
    #[error(transparent)]
    Unknown(ExchangeError),
}

/// Checks `order`, which does not only reduce, against the position and notional
/// limits that apply to it; reads nothing when none is set.
pub async fn check(
    pool: &PgPool,
    config: &RuntimeConfig,
    in_flight: &InFlight,
    provider: &dyn Exchange,
    order: &OrderRequest,
) -> Result<(), Blocked> {
    let symbol = &order.symbol;
    if risk::limit(config, risk::MAX_POSITION, symbol)?.is_some() {
        let key = PositionKey::of(provider, order);
        let held = position(pool, in_flight, &key, order.request_id)
            .await
            .map_err(|err| {
                Blocked::Unknown(ExchangeError::new(
                    ErrorClass::Retryable,
                    format!(
                        "cannot read the position of {symbol} for {}: {err}",
                        risk::MAX_POSITION
                    ),
                ))
            })?;
        risk::check_position(config, symbol, held, change(order))?;
    }
    // A priced order's notional was checked with the signal.
    if order.price.is_none() && risk::limit(config, risk::MAX_NOTIONAL, symbol)?.is_some() {
        let price = provider
            .last_price(symbol, order.testnet)
            .await
            .map_err(|err| {
                Blocked::Unknown(err.context(format!(
                    "cannot price the market order for {}",
                    risk::MAX_NOTIONAL
                )))
            })?;
        let notional = order
            .quantity
            .checked_mul(price)
            .map_or(Decimal::MAX, |n| n.normalize());
        risk::check_figure(config, risk::MAX_NOTIONAL, symbol, "notional", notional)?;
    }
    Ok(())
}

/// The net position on `key` before the order `request_id`: the ledger's, plus the
/// orders in flight whose fills the same snapshot does not hold yet.
async fn position(
    pool: &PgPool,
    in_flight: &InFlight,
    key: &PositionKey,
    request_id: Uuid,
) -> Result<Decimal, sqlx::Error> {
    // Read before the ledger: an order settled after this read has its fill committed
    // before the ledger read below, and is found there by its request id.
    let pending = in_flight.on(key, request_id);
    let ids: Vec<Uuid> = pending.iter().map(|(id, _)| *id).collect();
    let (ledger, committed): (Option<Decimal>, Vec<Uuid>) = sqlx::query_as(
        r#"
        SELECT (SELECT quantity FROM positions
                WHERE exchange = $1 AND market = $2 AND testnet = $3 AND symbol = $4),
               ARRAY(SELECT request_id FROM fills WHERE request_id = ANY($5))
        "#,
    )
    .bind(key.exchange.as_str())
    .bind(key.market)
    .bind(key.testnet)
    .bind(key.symbol.as_str())
    .bind(&ids)
    .fetch_one(pool)
    .await?;
    Ok(pending
        .iter()
        .filter(|(id, _)| !committed.contains(id))
        .fold(ledger.unwrap_or_default(), |held, (_, change)| {
            held.saturating_add(*change)
        }))
}

/// The realized PnL of `day` (UTC) over every fill that is not a testnet's.
pub async fn realized_pnl(pool: &PgPool, day: NaiveDate) -> Result<Decimal, sqlx::Error> {
    let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(realized_pnl), 0) FROM fills WHERE executed_at >= $1 AND NOT testnet",
    )
    .bind(start)
    .fetch_one(pool)
    .await
}

/// Turns the kill switch on when today's realized loss is beyond `risk:max_daily_loss`
/// (or the limit cannot be read); gives the rows it wrote. Reads nothing while no limit
/// is set or the switch is on.
pub async fn guard_daily_loss(
    pool: &PgPool,
    config: &RuntimeConfig,
) -> Result<Option<Vec<LogEntry>>, sqlx::Error> {
    if config.get(risk::MAX_DAILY_LOSS).is_none() || config.kill_switch() {
        return Ok(None);
    }
    let day = Utc::now().date_naive();
    let realized_pnl = realized_pnl(pool, day).await?;
    let (reason, cause) = match risk::daily_loss_breached(config, realized_pnl) {
        Ok(None) => return Ok(None),
        Ok(Some(limit)) => (
            format!(
                "realized PnL of {day} (UTC) is {}, below -{limit} ({})",
                realized_pnl.normalize(),
                risk::MAX_DAILY_LOSS
            ),
            vec![Event::DailyLossLimitReached {
                day,
                realized_pnl: realized_pnl.normalize(),
                limit,
            }],
        ),
        Err(unreadable) => (unreadable.to_string(), Vec::new()),
    };
    hoox_common::kill_switch::trip(pool, Worker::Consumer, &reason, cause).await
}
