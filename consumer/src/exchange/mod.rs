//! Exchanges behind one trait, so the worker places, looks up and classifies orders the
//! same way whichever exchange a signal is routed to.

pub mod binance;
pub mod bybit;
pub mod mexc;
pub mod paper;
pub mod router;
pub mod rules;
pub mod transport;

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

/// A failed exchange call, classified, with the exchange's own code and message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}", code.as_ref().map(|c| format!("[{c}] ")).unwrap_or_default(), message)]
pub struct ExchangeError {
    /// What it means for the signal.
    pub class: ErrorClass,
    /// The exchange's error code, when it gave one.
    pub code: Option<String>,
    /// The exchange's message, or what went wrong on the way.
    pub message: String,
}

impl ExchangeError {
    /// An error of `class` without an exchange code.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            code: None,
            message: message.into(),
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

/// Spot markets trade without leverage: 1x is what they do, more is refused rather
/// than silently traded at a smaller size than the signal meant.
fn spot_leverage(exchange: ExchangeName, leverage: Leverage) -> Result<(), ExchangeError> {
    if leverage.get() == 1 {
        return Ok(());
    }
    Err(ExchangeError::new(
        ErrorClass::Fatal,
        format!(
            "{exchange} is set up for spot, which has no leverage; the signal asks for {}x",
            leverage.get()
        ),
    ))
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
}
