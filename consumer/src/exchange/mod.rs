//! Exchanges behind one trait, so the worker places, looks up and classifies orders the
//! same way whichever exchange a signal is routed to.

pub mod binance;
pub mod bybit;
pub mod mexc;
pub mod paper;
pub mod router;
pub mod rules;
pub mod signing;
pub mod transport;

use std::future::Future;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hoox_common::message::QueueMessage;
use hoox_common::signal::{Action, ExchangeName, Leverage, OrderType, Side, Symbol};
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

/// The client order id sent with every order: the request id's 32 hex digits, which
/// fit every exchange's length and alphabet rules. The exchange refuses a second order
/// with the same id, so a redelivered signal cannot trade twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientOrderId(String);

impl ClientOrderId {
    /// The id derived from `request_id`.
    pub fn from_request_id(request_id: Uuid) -> Self {
        Self(request_id.simple().to_string())
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One order, as the worker asks an exchange to place it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    /// The signal's id.
    pub request_id: Uuid,
    /// The exchange-side idempotency key.
    pub client_order_id: ClientOrderId,
    /// The instrument.
    pub symbol: Symbol,
    /// What the signal asked.
    pub action: Action,
    /// Buy or sell.
    pub side: Side,
    /// Base-asset quantity.
    pub quantity: Decimal,
    /// Market or limit.
    pub order_type: OrderType,
    /// Limit price, or the reference price of a market order.
    pub price: Option<Decimal>,
    /// Reduce-only.
    pub reduce_only: bool,
    /// Use the testnet host and keys.
    pub testnet: bool,
    /// Stop-loss trigger price.
    pub stop_loss: Option<Decimal>,
    /// Take-profit trigger price.
    pub take_profit: Option<Decimal>,
}

impl OrderRequest {
    /// The order a queue message asks for.
    pub fn from_message(message: &QueueMessage) -> Self {
        let signal = &message.signal;
        Self {
            request_id: message.request_id,
            client_order_id: ClientOrderId::from_request_id(message.request_id),
            symbol: signal.symbol.clone(),
            action: signal.action,
            side: signal.action.side(),
            quantity: signal.quantity.get(),
            order_type: signal.order_type,
            price: signal.price.map(|p| p.get()),
            reduce_only: signal.reduce_only,
            testnet: signal.test,
            stop_loss: signal.stop_loss.map(|p| p.get()),
            take_profit: signal.take_profit.map(|p| p.get()),
        }
    }
}

/// An exchange's account of an order it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderAck {
    /// The exchange's order id.
    pub exchange_order_id: String,
    /// The exchange's order status, lower-case (`new`, `filled`, …).
    pub status: String,
    /// Average fill price, when known.
    pub fill_price: Option<Decimal>,
    /// Filled quantity, when known.
    pub fill_quantity: Option<Decimal>,
    /// The fee charged, in the quote currency; `None` unless the exchange reports it so.
    pub fee: Option<Decimal>,
    /// When the exchange took the order.
    pub placed_at: DateTime<Utc>,
    /// The exchange's answer, as received (never holds credentials).
    pub raw: Value,
}

/// What a failed exchange call means for the signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later: rate limit, 5xx, timeout before sending, connection refused.
    Retryable,
    /// Will never succeed as sent: rejected order, balance, credentials.
    Fatal,
    /// Sent but unanswered: the order may exist; look it up before anything else.
    Ambiguous,
    /// The exchange already holds an order with this client id.
    Duplicate,
}

impl ErrorClass {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Fatal => "fatal",
            Self::Ambiguous => "ambiguous",
            Self::Duplicate => "duplicate",
        }
    }
}

/// Why a call failed, as a code: the exchange's own, an HTTP status when the answer
/// carried none, or one of hoox's own checks before anything was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The exchange's own code (Bybit `retCode`, Binance and MEXC `code`).
    Exchange(i64),
    /// The HTTP status of an answer that carried no code of the exchange's.
    Http(u16),
    /// One of hoox's own refusals.
    Hoox(HooxCode),
}

impl std::fmt::Display for ErrorCode {
    /// The text stored in events, attempt histories and dead letters: `110007`,
    /// `HTTP 502`, `min_order`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exchange(code) => write!(f, "{code}"),
            Self::Http(status) => write!(f, "HTTP {status}"),
            Self::Hoox(code) => f.write_str(code.as_str()),
        }
    }
}

/// hoox's own error codes, for refusals made before an order reaches an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HooxCode {
    /// The order is below the instrument's minimum quantity or value, or above its maximum.
    MinOrder,
    /// A quantity or price the instrument's arithmetic cannot hold.
    OutOfRange,
    /// The paper exchange already holds an order with this client id.
    DuplicateClientOrderId,
}

impl HooxCode {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MinOrder => "min_order",
            Self::OutOfRange => "out_of_range",
            Self::DuplicateClientOrderId => "duplicate_client_order_id",
        }
    }
}

/// A failed exchange call, classified, with the exchange's own code and message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}", code.as_ref().map(|c| format!("[{c}] ")).unwrap_or_default(), message)]
pub struct ExchangeError {
    /// What it means for the signal.
    pub class: ErrorClass,
    /// The error's code, when there is one.
    pub code: Option<ErrorCode>,
    /// The exchange's message, or what went wrong on the way.
    pub message: String,
}

impl ExchangeError {
    /// An error of `class` without a code.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            code: None,
            message: message.into(),
        }
    }

    /// An error of `class` with `code`.
    pub fn with_code(class: ErrorClass, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            class,
            code: Some(code),
            message: message.into(),
        }
    }

    /// Whether the exchange answered with its own `code`.
    pub fn is_exchange_code(&self, code: i64) -> bool {
        self.code == Some(ErrorCode::Exchange(code))
    }

    /// The same error, its message prefixed with what was being done.
    #[must_use]
    pub fn context(self, doing: impl std::fmt::Display) -> Self {
        Self {
            message: format!("{doing}: {}", self.message),
            ..self
        }
    }
}

/// What one environment's keys may do, as the exchange reports it to a signed
/// read-only call. `None` where the exchange does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyCheck {
    /// Whether the keys may place orders on the market hoox trades.
    pub can_trade: Option<bool>,
    /// Whether the keys may withdraw funds: hoox never needs it, and a stolen key that
    /// has it can empty the account.
    pub can_withdraw: Option<bool>,
}

impl OrderAck {
    /// An exchange's acknowledgement of a new order that says nothing of its state or
    /// fills (Bybit, MEXC): status `accepted`, to be read back.
    pub fn accepted(exchange_order_id: String, raw: Value) -> Self {
        Self {
            exchange_order_id,
            status: "accepted".to_owned(),
            fill_price: None,
            fill_quantity: None,
            fee: None,
            placed_at: Utc::now(),
            raw,
        }
    }

    /// The state `lookup` finds for an order just placed as `self`; `self` when the
    /// lookup fails or finds nothing (the order stands either way, and its fill is
    /// recorded as accepted).
    pub async fn read_back(
        self,
        exchange: ExchangeName,
        lookup: impl Future<Output = Result<Option<OrderAck>, ExchangeError>>,
    ) -> OrderAck {
        match lookup.await {
            Ok(Some(found)) => found,
            Ok(None) => self,
            Err(err) => {
                tracing::warn!(%exchange, order_id = %self.exchange_order_id, error = %err, "order placed; its state could not be read back");
                self
            }
        }
    }
}

/// What one market can carry on an order. What it cannot carry is refused, never
/// dropped: trading bigger, smaller or unprotected against what the signal meant would
/// be worse than not trading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketTraits {
    /// The market's name in messages (`linear`, `spot`, `USD-M futures`, …).
    pub name: &'static str,
    /// Whether positions carry leverage (a spot market trades 1x only).
    pub leverage: bool,
    /// Whether stop-loss and take-profit prices can be attached to the order itself.
    pub attached_stops: bool,
    /// Whether the market holds positions that a reduce-only order can reduce. A spot
    /// market holds coins instead: a sell there can only reduce them, so a reduce-only
    /// sell is a plain sell, and a reduce-only buy can reduce nothing.
    pub positions: bool,
}

impl MarketTraits {
    /// A futures market: leverage, positions, and stops attached to the order.
    pub const fn futures(name: &'static str) -> Self {
        Self {
            name,
            leverage: true,
            attached_stops: true,
            positions: true,
        }
    }

    /// A spot market: 1x only, no positions, no attached stops.
    pub const fn spot() -> Self {
        Self {
            name: "spot",
            leverage: false,
            attached_stops: false,
            positions: false,
        }
    }

    /// The same market, refusing attached stops (Binance sends them as separate algo
    /// orders, which hoox does not place).
    #[must_use]
    pub const fn without_attached_stops(self) -> Self {
        Self {
            attached_stops: false,
            ..self
        }
    }

    /// Refuses leverage the market cannot carry: 1x is what a spot market does, more
    /// is refused rather than silently traded at a smaller size than the signal meant.
    pub fn check_leverage(
        &self,
        exchange: ExchangeName,
        leverage: Leverage,
    ) -> Result<(), ExchangeError> {
        if self.leverage || leverage.get() == 1 {
            return Ok(());
        }
        Err(ExchangeError::new(
            ErrorClass::Fatal,
            format!(
                "{exchange} is set up for {}, which has no leverage; the signal asks for {}x",
                self.name,
                leverage.get()
            ),
        ))
    }

    /// Refuses what the market cannot carry on `order`: attached stop-loss or
    /// take-profit, and a reduce-only buy where there are no positions to reduce.
    pub fn check_order(
        &self,
        exchange: ExchangeName,
        order: &OrderRequest,
    ) -> Result<(), ExchangeError> {
        if !self.attached_stops && (order.stop_loss.is_some() || order.take_profit.is_some()) {
            return Err(ExchangeError::new(
                ErrorClass::Fatal,
                format!(
                    "{exchange} {} orders cannot carry a stop-loss or take-profit, and hoox places no separate stop orders; send the signal without stopLoss/takeProfit",
                    self.name
                ),
            ));
        }
        if !self.positions && order.reduce_only && order.side == Side::Buy {
            return Err(ExchangeError::new(
                ErrorClass::Fatal,
                format!(
                    "{exchange} {} has no short positions for a reduce-only buy ({}) to reduce; a buy there only adds coins",
                    self.name, order.action
                ),
            ));
        }
        Ok(())
    }

    /// Whether `order` is sent with the market's reduce-only flag: on a market with
    /// positions, when the order asks for it (a spot sell reduces holdings by nature).
    pub fn sends_reduce_only(&self, order: &OrderRequest) -> bool {
        self.positions && order.reduce_only
    }
}

/// One open futures position, as the exchange reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The instrument, named as signals name it (`BTCUSDT`, also for MEXC's `BTC_USDT`).
    pub symbol: Symbol,
    /// The signed base-asset quantity: positive long, negative short.
    pub quantity: Decimal,
    /// The average entry price.
    pub entry_price: Decimal,
}

/// One asset's spot balance, as the exchange reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// The asset (`BTC`, `USDT`).
    pub asset: String,
    /// What is free to trade.
    pub free: Decimal,
    /// What open orders hold.
    pub locked: Decimal,
    /// `free + locked`.
    pub total: Decimal,
}

impl Balance {
    /// The balance of `asset` with `free` and `locked`; `None` when their sum overflows.
    pub fn new(asset: impl Into<String>, free: Decimal, locked: Decimal) -> Option<Self> {
        Some(Self {
            asset: asset.into(),
            total: free.checked_add(locked)?,
            free,
            locked,
        })
    }
}

/// What an account holds on the market hoox trades there, from a signed read-only call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holdings {
    /// A futures market's open positions (none open: an empty list).
    Positions(Vec<Position>),
    /// A spot market's non-zero balances.
    Balances(Vec<Balance>),
    /// The exchange keeps no book apart from hoox's own ledger (the paper exchange):
    /// there is nothing to compare the ledger with, which is not the same as holding
    /// nothing.
    LedgerOnly,
}

/// One exchange.
#[async_trait]
pub trait Exchange: Send + Sync {
    /// Which exchange this is.
    fn name(&self) -> ExchangeName;

    /// The market this provider trades (`linear`, `usdm`, `spot`, …): a position is
    /// kept per exchange and market. The default, for stand-ins with one market, is the
    /// exchange's name.
    fn market(&self) -> &'static str {
        self.name().as_str()
    }

    /// Whether keys for the live (or, with `testnet`, the test) environment are set.
    fn has_credentials(&self, testnet: bool) -> bool;

    /// Sets the symbol's leverage; an "unchanged" answer is success.
    async fn set_leverage(
        &self,
        order: &OrderRequest,
        leverage: Leverage,
    ) -> Result<(), ExchangeError>;

    /// Places the order; the answer may be an acknowledgement only (no status or fills).
    async fn place_order(&self, order: &OrderRequest) -> Result<OrderAck, ExchangeError>;

    /// The state of an order that `place_order` just placed, for an exchange whose answer
    /// to a new order is an acknowledgement only; `placed` when the state cannot be read
    /// (the order stands either way). The default, for answers that carry the fills,
    /// keeps `placed`.
    async fn read_back(&self, order: &OrderRequest, placed: OrderAck) -> OrderAck {
        let _ = order;
        placed
    }

    /// The last traded price of `symbol`, from the exchange's public ticker, for the
    /// notional of a market order. The default, for stand-ins without a market, is an
    /// error: a limit that needs the price is then refused, never waved through.
    async fn last_price(&self, symbol: &Symbol, testnet: bool) -> Result<Decimal, ExchangeError> {
        let _ = testnet;
        Err(ExchangeError::new(
            ErrorClass::Fatal,
            format!("{} has no price for {symbol}", self.name()),
        ))
    }

    /// Finds the order with `order.client_order_id`, if the exchange has it.
    async fn order_by_client_id(
        &self,
        order: &OrderRequest,
    ) -> Result<Option<OrderAck>, ExchangeError>;

    /// Makes one signed read-only call with the live (or, with `testnet`, the test)
    /// keys and reports what they may do; an error means they do not work (or the
    /// exchange did not answer). Never places or changes anything.
    ///
    /// The default is for stand-ins that talk to no exchange: it says the keys cannot
    /// be checked, so a provider that forgets to implement it is never reported healthy.
    async fn check_keys(&self, testnet: bool) -> Result<KeyCheck, ExchangeError> {
        let _ = testnet;
        Err(ExchangeError::new(
            ErrorClass::Fatal,
            format!("{} cannot check its keys", self.name()),
        ))
    }

    /// Makes signed read-only calls with the live (or, with `testnet`, the test) keys
    /// and gives what the account holds on the market hoox trades. An exchange that
    /// cannot be reached, refuses the keys or answers unreadably is an error, never an
    /// empty list. Never places or changes anything.
    ///
    /// The default is for stand-ins that talk to no exchange: it says the holdings
    /// cannot be read, so a provider that forgets to implement it never reports a flat
    /// account.
    async fn positions(&self, testnet: bool) -> Result<Holdings, ExchangeError> {
        let _ = testnet;
        Err(ExchangeError::new(
            ErrorClass::Fatal,
            format!("{} cannot read its positions", self.name()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoox_common::signal::Symbol;

    fn order(action: Action) -> OrderRequest {
        let request_id = Uuid::new_v4();
        OrderRequest {
            request_id,
            client_order_id: ClientOrderId::from_request_id(request_id),
            symbol: Symbol::parse("BTCUSDT").unwrap(),
            action,
            side: action.side(),
            quantity: Decimal::ONE,
            order_type: OrderType::Market,
            price: None,
            reduce_only: action.is_close(),
            testnet: false,
            stop_loss: None,
            take_profit: None,
        }
    }

    #[test]
    fn codes_show_as_they_are_stored() {
        assert_eq!(ErrorCode::Exchange(110_007).to_string(), "110007");
        assert_eq!(ErrorCode::Exchange(-2019).to_string(), "-2019");
        assert_eq!(ErrorCode::Http(502).to_string(), "HTTP 502");
        assert_eq!(ErrorCode::Hoox(HooxCode::MinOrder).to_string(), "min_order");
        let err = ExchangeError::with_code(
            ErrorClass::Fatal,
            ErrorCode::Exchange(10_004),
            "bybit: error sign!",
        );
        assert_eq!(err.to_string(), "[10004] bybit: error sign!");
        assert!(err.is_exchange_code(10_004) && !err.is_exchange_code(10_002));
        assert_eq!(
            err.context("cannot read bybit linear holdings").to_string(),
            "[10004] cannot read bybit linear holdings: bybit: error sign!"
        );
    }

    #[test]
    fn spot_refuses_leverage_stops_and_reduce_only_buys() {
        let spot = MarketTraits::spot();
        let leverage = |x| Leverage::new(x).unwrap();
        assert!(spot
            .check_leverage(ExchangeName::Bybit, leverage(1))
            .is_ok());
        let refused = spot
            .check_leverage(ExchangeName::Bybit, leverage(5))
            .unwrap_err();
        assert_eq!(refused.class, ErrorClass::Fatal);
        assert!(refused.message.contains("5x"), "{refused}");

        let mut with_stop = order(Action::Long);
        with_stop.stop_loss = Some(Decimal::ONE_HUNDRED);
        assert_eq!(
            spot.check_order(ExchangeName::Mexc, &with_stop)
                .unwrap_err()
                .class,
            ErrorClass::Fatal
        );
        // A spot sell can only reduce holdings: closing a long is a plain sell.
        let close_long = order(Action::CloseLong);
        assert!(spot.check_order(ExchangeName::Mexc, &close_long).is_ok());
        assert!(!spot.sends_reduce_only(&close_long));
        // A spot buy only adds coins: it cannot close a short.
        assert_eq!(
            spot.check_order(ExchangeName::Mexc, &order(Action::CloseShort))
                .unwrap_err()
                .class,
            ErrorClass::Fatal
        );
    }

    #[test]
    fn futures_carry_leverage_stops_and_reduce_only() {
        let linear = MarketTraits::futures("linear");
        assert!(linear
            .check_leverage(ExchangeName::Bybit, Leverage::new(20).unwrap())
            .is_ok());
        let mut with_stop = order(Action::CloseShort);
        with_stop.take_profit = Some(Decimal::ONE_HUNDRED);
        assert!(linear.check_order(ExchangeName::Bybit, &with_stop).is_ok());
        assert!(linear.sends_reduce_only(&with_stop));
        assert!(!linear.sends_reduce_only(&order(Action::Long)));
        // Binance attaches no stops to an order.
        let usdm = MarketTraits::futures("USD-M futures").without_attached_stops();
        assert!(usdm.check_order(ExchangeName::Binance, &with_stop).is_err());
        assert!(usdm
            .check_order(ExchangeName::Binance, &order(Action::CloseShort))
            .is_ok());
    }

    #[test]
    fn balances_total_free_and_locked() {
        let balance = Balance::new("BTC", "0.1".parse().unwrap(), "0.02".parse().unwrap());
        assert_eq!(balance.unwrap().total, "0.12".parse::<Decimal>().unwrap());
        assert_eq!(Balance::new("X", Decimal::MAX, Decimal::ONE), None);
    }
}
