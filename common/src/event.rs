//! What happens to a signal, and what operators do: one typed event for each step, the
//! only source of the audit trail's rows. A row's `kind`, severity, message and context
//! are all derived here, in one place, so the trail, the metrics and the notifications
//! that read events can never disagree, and tests assert on kinds and fields instead of
//! on wording.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::logs::Severity;
use crate::message::DeadReason;
use crate::signal::{ExchangeName, Side, Signal};

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Event {
    /// Ingest queued a webhook's signal: the broker confirmed it.
    Accepted {
        /// The signal as queued.
        signal: Signal,
        /// Whether the producer gave an idempotency key.
        idempotency_key: bool,
        /// Whether an earlier publish of it had an unknown outcome.
        resent: bool,
    },
    /// A webhook repeating an accepted signal was answered 409.
    DuplicateRefused {
        /// Whether the producer gave an idempotency key.
        idempotency_key: bool,
    },
    /// The consumer took the signal off the queue.
    Dequeued {
        /// The attempt starting, 1 for the first.
        attempt: u32,
        /// Whether the broker delivered it before.
        redelivered: bool,
        /// Whether this attempt was started before and is resumed.
        resumed: bool,
        /// The batch it came in.
        batch: Uuid,
        /// How many deliveries the batch held.
        batch_size: usize,
    },
    /// Routing chose an exchange.
    Routed {
        /// Where the signal goes.
        exchange: ExchangeName,
        /// Whether to the exchange's testnet.
        testnet: bool,
        /// Whether config chose it (else the signal named it).
        by_config: bool,
    },
    /// Leverage was set before the order.
    LeverageSet {
        /// On which exchange.
        exchange: ExchangeName,
        /// The leverage set.
        leverage: u32,
    },
    /// An exchange took the order.
    OrderPlaced {
        /// On which exchange.
        exchange: ExchangeName,
        /// The exchange's order id.
        exchange_order_id: String,
        /// The client order id sent.
        client_order_id: String,
        /// The exchange's order status.
        status: String,
        /// Average fill price, when known.
        fill_price: Option<Decimal>,
    },
    /// The order was found by its client order id (placed by an earlier attempt, or
    /// its answer was lost).
    OrderFound {
        /// On which exchange.
        exchange: ExchangeName,
        /// The exchange's order id.
        exchange_order_id: String,
        /// The client order id looked up.
        client_order_id: String,
        /// The exchange's order status.
        status: String,
        /// Average fill price, when known.
        fill_price: Option<Decimal>,
    },
    /// An order's answer left its fate unclear; it is looked up by client order id.
    OrderLookup {
        /// On which exchange.
        exchange: ExchangeName,
        /// What the answer meant (`ambiguous`, `duplicate`, `fatal`).
        class: String,
        /// The exchange's own code, when it gave one.
        code: Option<String>,
        /// The exchange's answer.
        error: String,
    },
    /// An attempt failed.
    AttemptFailed {
        /// The exchange it was routed to, if routing got that far.
        exchange: Option<ExchangeName>,
        /// The attempt that failed.
        attempt: u32,
        /// What the failure means (`retryable`, `fatal`, `ambiguous`).
        class: String,
        /// The exchange's own code, when it gave one.
        code: Option<String>,
        /// What went wrong.
        error: String,
    },
    /// The next attempt waits in a delay tier.
    RetryScheduled {
        /// The exchange it was routed to.
        exchange: Option<ExchangeName>,
        /// The next attempt.
        next_attempt: u32,
        /// How long it waits, in milliseconds.
        delay_ms: u64,
    },
    /// The signal went to the dead-letter queue.
    DeadLettered {
        /// The stable reason code.
        reason: DeadReason,
        /// The last error.
        error: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The signal's fill was recorded.
    Filled {
        /// On which exchange.
        exchange: ExchangeName,
        /// Buy or sell.
        side: Side,
        /// Filled quantity, when known.
        fill_quantity: Option<Decimal>,
        /// Average fill price, when known.
        fill_price: Option<Decimal>,
        /// Seconds from the webhook's receipt to the exchange's answer.
        signal_to_order_seconds: f64,
    },
    /// A delivery of an attempt that already ran, acknowledged without trading.
    CopyRefused {
        /// The attempt the delivery carries.
        attempt: u32,
        /// Its generation (operator replays).
        replays: u32,
        /// How the request id's latest attempt ended; `None` for a copy in the same batch.
        state: Option<String>,
    },
    /// A delivery whose request id another consumer executes right now; it waits out
    /// the first delay tier and is looked at again.
    Deferred {
        /// The attempt the delivery carries.
        attempt: u32,
        /// How long it waits, in milliseconds.
        delay_ms: u64,
    },
    /// An operator replayed the dead letter.
    Replayed {
        /// Why it had been dead-lettered.
        reason: String,
        /// When ingest first accepted the signal.
        received_at: DateTime<Utc>,
    },
    /// An operator purged the dead letter.
    Purged {
        /// Why it had been dead-lettered.
        reason: String,
        /// Its last error.
        error: Option<String>,
    },
    /// The kill switch was turned on or off.
    KillSwitchChanged {
        /// Whether trading is now halted.
        on: bool,
        /// Why, when hoox turned it on by itself (an operator's change has none).
        reason: Option<String>,
    },
    /// The realized PnL of a UTC day fell below minus `risk:max_daily_loss`: the kill
    /// switch turns on.
    DailyLossLimitReached {
        /// The UTC day.
        day: NaiveDate,
        /// Its realized PnL so far, fees subtracted where reported.
        realized_pnl: Decimal,
        /// The limit it went beyond.
        limit: Decimal,
    },
    /// An operator changed a setting (a webhook key's value is never recorded).
    ConfigChanged {
        /// The config key.
        key: String,
        /// The new value; `None` when deleted.
        value: Option<String>,
        /// The value before.
        previous: Option<String>,
    },
    /// An operator took an exchange's figures for a position of the ledger
    /// (`hoox positions reconcile --adopt`).
    PositionAdopted {
        /// The exchange.
        exchange: ExchangeName,
        /// The exchange's market (`linear`, `usdm`, `spot`, `futures`).
        market: String,
        /// Whether it is the testnet's.
        testnet: bool,
        /// The ledger's symbol.
        symbol: String,
        /// The ledger's figures before; `None` when the ledger had no row.
        previous: Option<PositionFigures>,
        /// The figures taken from the exchange.
        adopted: PositionFigures,
    },
    /// Someone signed in to the dashboard.
    LoggedIn {
        /// The client's address.
        client: String,
    },
    /// A dashboard session was ended by signing out.
    LoggedOut,
    /// A dashboard sign-in with a wrong password was refused.
    LoginFailed {
        /// The client's address.
        client: String,
    },
    /// A dashboard sign-in was refused unchecked: too many attempts.
    LoginThrottled {
        /// The client's address.
        client: String,
        /// Whether the limit of all clients together (else this client's) was reached.
        global: bool,
    },
}

/// A position's quantity and entry, as an adoption records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PositionFigures {
    /// Signed net quantity: positive long, negative short.
    pub quantity: Decimal,
    /// The average entry price; `None` when flat or unknown.
    pub avg_entry_price: Option<Decimal>,
}

impl std::fmt::Display for PositionFigures {
    /// `0.5 @ 3000`, `0.5 @ unknown`, `0`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.avg_entry_price {
            Some(price) => write!(f, "{} @ {price}", self.quantity),
            None if self.quantity.is_zero() => write!(f, "{}", self.quantity),
            None => write!(f, "{} @ unknown", self.quantity),
        }
    }
}

impl Event {
    /// The stable snake_case name stored in `system_logs.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::DuplicateRefused { .. } => "duplicate_refused",
            Self::Dequeued { .. } => "dequeued",
            Self::Routed { .. } => "routed",
            Self::LeverageSet { .. } => "leverage_set",
            Self::OrderPlaced { .. } => "order_placed",
            Self::OrderFound { .. } => "order_found",
            Self::OrderLookup { .. } => "order_lookup",
            Self::AttemptFailed { .. } => "attempt_failed",
            Self::RetryScheduled { .. } => "retry_scheduled",
            Self::DeadLettered { .. } => "dead_lettered",
            Self::Filled { .. } => "filled",
            Self::CopyRefused { .. } => "copy_refused",
            Self::Deferred { .. } => "deferred",
            Self::Replayed { .. } => "replayed",
            Self::Purged { .. } => "purged",
            Self::KillSwitchChanged { .. } => "kill_switch_changed",
            Self::DailyLossLimitReached { .. } => "daily_loss_limit_reached",
            Self::ConfigChanged { .. } => "config_changed",
            Self::PositionAdopted { .. } => "position_adopted",
            Self::LoggedIn { .. } => "logged_in",
            Self::LoggedOut => "logged_out",
            Self::LoginFailed { .. } => "login_failed",
            Self::LoginThrottled { .. } => "login_throttled",
        }
    }

    /// How much it matters to an operator.
    pub fn severity(&self) -> Severity {
        match self {
            Self::Accepted { .. }
            | Self::DuplicateRefused { .. }
            | Self::Dequeued { .. }
            | Self::Routed { .. }
            | Self::LeverageSet { .. }
            | Self::OrderPlaced { .. }
            | Self::OrderFound { .. }
            | Self::Filled { .. }
            | Self::ConfigChanged { .. }
            | Self::LoggedIn { .. }
            | Self::LoggedOut => Severity::Info,
            Self::OrderLookup { .. }
            | Self::AttemptFailed { .. }
            | Self::RetryScheduled { .. }
            | Self::CopyRefused { .. }
            | Self::Deferred { .. }
            | Self::Replayed { .. }
            | Self::Purged { .. }
            | Self::KillSwitchChanged { .. }
            | Self::PositionAdopted { .. }
            | Self::LoginFailed { .. }
            | Self::LoginThrottled { .. } => Severity::Warn,
            Self::DeadLettered { .. } | Self::DailyLossLimitReached { .. } => Severity::Error,
        }
    }

    /// The row's message, for people.
    pub fn message(&self) -> String {
        match self {
            Self::Accepted { signal, resent, .. } => format!(
                "webhook accepted: {} {} {} {}; queued{}",
                signal.action,
                signal.quantity,
                signal.symbol,
                signal.exchange.map_or("(routed)", ExchangeName::as_str),
                if *resent {
                    " again (an earlier publish had an unknown outcome)"
                } else {
                    ""
                },
            ),
            Self::DuplicateRefused { .. } => {
                "a webhook repeating this signal was refused as a duplicate (409)".to_owned()
            }
            Self::Dequeued {
                attempt, resumed, ..
            } => format!(
                "dequeued: attempt {attempt}{}",
                if *resumed {
                    " (resumed: it was started before)"
                } else {
                    ""
                }
            ),
            Self::Routed {
                exchange,
                testnet,
                by_config,
            } => format!(
                "routed to {exchange}{} by {}",
                if *testnet { " testnet" } else { "" },
                if *by_config { "config" } else { "the signal" }
            ),
            Self::LeverageSet { leverage, .. } => format!("leverage set to {leverage}x"),
            Self::OrderPlaced {
                exchange,
                exchange_order_id,
                status,
                fill_price,
                ..
            } => order_message("placed", *exchange, exchange_order_id, status, *fill_price),
            Self::OrderFound {
                exchange,
                exchange_order_id,
                status,
                fill_price,
                ..
            } => order_message("found", *exchange, exchange_order_id, status, *fill_price),
            Self::OrderLookup {
                class, code, error, ..
            } => format!(
                "order answer was {class} ({}); looking it up by client order id",
                with_code(code.as_deref(), error)
            ),
            Self::AttemptFailed {
                attempt,
                class,
                code,
                error,
                ..
            } => format!(
                "attempt {attempt} failed ({class}): {}",
                with_code(code.as_deref(), error)
            ),
            Self::RetryScheduled {
                next_attempt,
                delay_ms,
                ..
            } => format!(
                "attempt {next_attempt} in {}",
                human_millis(*delay_ms)
            ),
            Self::DeadLettered { reason, error, .. } => {
                format!("dead-lettered ({}): {error}", reason.as_str())
            }
            Self::Filled { .. } => "fill recorded".to_owned(),
            Self::CopyRefused { state, .. } => format!(
                "{}; acknowledged without trading",
                match state.as_deref() {
                    None => "delivered twice in one batch",
                    Some("filled") => "delivered again after its fill was recorded",
                    Some("dead") => "delivered again after it was dead-lettered (only `hoox dlq replay` runs it again)",
                    Some(_) => "delivered again after this attempt ran",
                }
            ),
            Self::Deferred { delay_ms, .. } => format!(
                "delivered while another consumer executes it; looked at again in {}",
                human_millis(*delay_ms)
            ),
            Self::Replayed { reason, .. } => format!(
                "replayed from the dead-letter queue by an operator (was {reason}); attempts start again"
            ),
            Self::Purged { reason, .. } => {
                format!("dead letter purged by an operator (was {reason})")
            }
            Self::KillSwitchChanged { on: true, reason } => match reason {
                Some(reason) => format!("kill switch turned on: trading halted ({reason})"),
                None => "kill switch turned on: trading halted".to_owned(),
            },
            Self::KillSwitchChanged { on: false, .. } => {
                "kill switch turned off: trading resumed".to_owned()
            }
            Self::DailyLossLimitReached {
                day,
                realized_pnl,
                limit,
            } => format!(
                "realized PnL of {day} (UTC) is {realized_pnl}, below -{limit} ({}): turning the kill switch on",
                crate::risk::MAX_DAILY_LOSS
            ),
            Self::ConfigChanged { key, value, .. } => match value {
                Some(value) => format!("config set: {key} = {value}"),
                None => format!("config deleted: {key}"),
            },
            Self::PositionAdopted {
                exchange,
                market,
                testnet,
                symbol,
                previous,
                adopted,
            } => format!(
                "position adopted from {exchange} {market}{}: {symbol} {} -> {adopted}",
                if *testnet { " testnet" } else { "" },
                previous.map_or_else(|| "(no row)".to_owned(), |p| p.to_string()),
            ),
            Self::LoggedIn { client } => format!("dashboard sign-in from {client}"),
            Self::LoggedOut => "dashboard session signed out".to_owned(),
            Self::LoginFailed { client } => {
                format!("dashboard sign-in from {client} refused: wrong password")
            }
            Self::LoginThrottled { client, global } => format!(
                "dashboard sign-in from {client} refused unchecked: too many attempts {}",
                if *global { "from all clients" } else { "from this client" }
            ),
        }
    }

    /// The event's fields as the row's structured context (the kind has its column).
    pub fn context(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut value {
            fields.remove("kind");
        }
        value
    }
}

fn order_message(
    verb: &str,
    exchange: ExchangeName,
    id: &str,
    status: &str,
    price: Option<Decimal>,
) -> String {
    format!(
        "order {verb} on {exchange}: id {id}, status {status}{}",
        price.map(|p| format!(", price {p}")).unwrap_or_default()
    )
}

fn with_code(code: Option<&str>, error: &str) -> String {
    match code {
        Some(code) => format!("[{code}] {error}"),
        None => error.to_owned(),
    }
}

/// `30s`, `1.5s`, `250ms`.
fn human_millis(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", Duration::from_millis(ms).as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_its_kind_in_its_context_column_not_in_its_fields() {
        let event = Event::DeadLettered {
            reason: DeadReason::KillSwitch,
            error: "kill switch is on; not executed".to_owned(),
            attempts: 0,
        };
        assert_eq!(event.kind(), "dead_lettered");
        assert_eq!(event.severity(), Severity::Error);
        let context = event.context();
        assert_eq!(context["reason"], "kill_switch");
        assert_eq!(context["attempts"], 0);
        assert!(context.get("kind").is_none());
    }

    #[test]
    fn fields_are_camel_case_and_messages_are_rendered_from_them() {
        let event = Event::RetryScheduled {
            exchange: Some(ExchangeName::Bybit),
            next_attempt: 2,
            delay_ms: 30_000,
        };
        assert_eq!(event.context()["nextAttempt"], 2);
        assert_eq!(event.context()["delayMs"], 30_000);
        assert_eq!(event.message(), "attempt 2 in 30s");
    }

    #[test]
    fn an_adoption_records_both_figures() {
        let figures = |quantity: &str, price: Option<&str>| PositionFigures {
            quantity: quantity.parse().unwrap(),
            avg_entry_price: price.map(|p| p.parse().unwrap()),
        };
        let event = Event::PositionAdopted {
            exchange: ExchangeName::Bybit,
            market: "linear".to_owned(),
            testnet: false,
            symbol: "BTCUSDT".to_owned(),
            previous: Some(figures("0.01", Some("60000"))),
            adopted: figures("-0.02", Some("61000.5")),
        };
        assert_eq!(event.kind(), "position_adopted");
        assert_eq!(event.severity(), Severity::Warn);
        let context = event.context();
        assert_eq!(context["previous"]["quantity"], "0.01");
        assert_eq!(context["adopted"]["avgEntryPrice"], "61000.5");
        assert_eq!(
            event.message(),
            "position adopted from bybit linear: BTCUSDT 0.01 @ 60000 -> -0.02 @ 61000.5"
        );
    }
}
