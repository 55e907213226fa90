//! Risk limits, set as `risk:` keys in the `config` table and seen by every process
//! within a second of a change (the table's NOTIFY).
//!
//! - `risk:allowed_symbols`: comma-separated symbols that may be opened; empty or unset
//!   allows all.
//! - `risk:max_quantity`, `risk:max_leverage`, `risk:max_notional` (quote currency),
//!   `risk:max_position` (the absolute net position after the order): each global, and
//!   per symbol (`risk:max_quantity:BTCUSDT`), the per-symbol value winning. Ingest
//!   checks what the signal alone tells (a notional only when the signal carries a
//!   price); the consumer checks again before the order, with the position from the
//!   ledger and a market order's notional at the exchange's last price.
//! - `risk:max_daily_loss`: when the realized PnL of the UTC day falls below minus this
//!   amount, the consumer turns the kill switch on.
//!
//! An order that only reduces a position (`CLOSE_LONG`, `CLOSE_SHORT`, reduce-only) is
//! never refused, not even for a symbol no longer allowed: reducing risk is always
//! allowed, and refusing a close would trap the trader in the position.
//!
//! A limit whose stored value cannot be read (written to the table by hand) refuses
//! every order it applies to: a risk limit fails closed.

use rust_decimal::Decimal;

use crate::runtime_config::RuntimeConfig;
use crate::signal::{Action, Signal, Symbol};

/// `risk:allowed_symbols`: the symbols that may be opened.
pub const ALLOWED_SYMBOLS: &str = "risk:allowed_symbols";
/// `risk:max_quantity[:SYMBOL]`: the largest order quantity.
pub const MAX_QUANTITY: &str = "risk:max_quantity";
/// `risk:max_leverage[:SYMBOL]`: the highest leverage an order may ask for.
pub const MAX_LEVERAGE: &str = "risk:max_leverage";
/// `risk:max_notional[:SYMBOL]`: the largest order value, quantity × price.
pub const MAX_NOTIONAL: &str = "risk:max_notional";

/// `risk:max_position[:SYMBOL]`: the largest absolute net position an order may leave.
pub const MAX_POSITION: &str = "risk:max_position";
/// `risk:max_daily_loss`: the realized loss of a UTC day that turns the kill switch on.
pub const MAX_DAILY_LOSS: &str = "risk:max_daily_loss";

/// The limits that take a per-symbol form (`<limit>:<SYMBOL>`).
pub const PER_SYMBOL: [&str; 4] = [MAX_QUANTITY, MAX_LEVERAGE, MAX_NOTIONAL, MAX_POSITION];

/// Why an order goes against a risk limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The symbol is not in `risk:allowed_symbols`.
    #[error("{symbol} is not in {ALLOWED_SYMBOLS} ({allowed})")]
    NotAllowed {
        /// The signal's symbol.
        symbol: Symbol,
        /// The allowed symbols, as stored.
        allowed: String,
    },
    /// A figure of the order is over its limit.
    #[error("{what} {value} is over {key} = {limit}")]
    Over {
        /// The config key that set the limit (`risk:max_quantity:BTCUSDT`).
        key: String,
        /// What was measured: `quantity`, `leverage`, `notional` or `position`.
        what: &'static str,
        /// The order's figure.
        value: Decimal,
        /// The limit.
        limit: Decimal,
    },
    /// The limit's stored value is not a number: every order it applies to is refused.
    #[error("{key} holds `{stored}`, which is not a limit; set it again with `hoox config set`")]
    Unreadable {
        /// The config key.
        key: String,
        /// What the table holds.
        stored: String,
    },
}

impl Refusal {
    /// The config key of the limit.
    pub fn key(&self) -> &str {
        match self {
            Self::NotAllowed { .. } => ALLOWED_SYMBOLS,
            Self::Over { key, .. } | Self::Unreadable { key, .. } => key,
        }
    }
}

/// Whether `signal` only reduces a position.
pub fn reduces(signal: &Signal) -> bool {
    signal.reduce_only || matches!(signal.action, Action::CloseLong | Action::CloseShort)
}

/// The limit `base` for `symbol`: the per-symbol key when set, else the global one;
/// with the key it came from.
pub fn limit(
    config: &RuntimeConfig,
    base: &str,
    symbol: &Symbol,
) -> Result<Option<(String, Decimal)>, Refusal> {
    let per_symbol = format!("{base}:{symbol}");
    let Some((key, stored)) = config
        .get(&per_symbol)
        .map(|v| (per_symbol, v))
        .or_else(|| config.get(base).map(|v| (base.to_owned(), v)))
    else {
        return Ok(None);
    };
    match stored.trim().parse::<Decimal>() {
        Ok(value) if value > Decimal::ZERO => Ok(Some((key, value))),
        _ => Err(Refusal::Unreadable { key, stored }),
    }
}

/// Refuses `figure` when it is over the limit `base` for `symbol`.
pub fn check_figure(
    config: &RuntimeConfig,
    base: &str,
    symbol: &Symbol,
    what: &'static str,
    figure: Decimal,
) -> Result<(), Refusal> {
    match limit(config, base, symbol)? {
        Some((key, limit)) if figure > limit => Err(Refusal::Over {
            key,
            what,
            value: figure,
            limit,
        }),
        _ => Ok(()),
    }
}

/// The checks `signal` can be put through on its own: the allowed symbols, its
/// quantity, its leverage, and its notional when it carries a price.
pub fn check_signal(config: &RuntimeConfig, signal: &Signal) -> Result<(), Refusal> {
    if reduces(signal) {
        return Ok(());
    }
    if let Some(allowed) = config.get(ALLOWED_SYMBOLS) {
        let listed = parse_symbols(&allowed).map_err(|_| Refusal::Unreadable {
            key: ALLOWED_SYMBOLS.to_owned(),
            stored: allowed.clone(),
        })?;
        if !listed.is_empty() && !listed.contains(&signal.symbol) {
            return Err(Refusal::NotAllowed {
                symbol: signal.symbol.clone(),
                allowed,
            });
        }
    }
    let symbol = &signal.symbol;
    let quantity = signal.quantity.get();
    check_figure(config, MAX_QUANTITY, symbol, "quantity", quantity)?;
    if let Some(leverage) = signal.leverage {
        check_figure(
            config,
            MAX_LEVERAGE,
            symbol,
            "leverage",
            Decimal::from(leverage.get()),
        )?;
    }
    if let Some(price) = signal.price {
        if let Some(notional) = quantity.checked_mul(price.get()) {
            check_figure(config, MAX_NOTIONAL, symbol, "notional", notional)?;
        }
    }
    Ok(())
}

/// Refuses an order whose net position after it, `held + change` (signed: positive
/// long), is over `risk:max_position` for `symbol`, unless it leaves the position no
/// larger than it was: an order that shrinks an oversized position is allowed.
pub fn check_position(
    config: &RuntimeConfig,
    symbol: &Symbol,
    held: Decimal,
    change: Decimal,
) -> Result<(), Refusal> {
    let Some((key, limit)) = limit(config, MAX_POSITION, symbol)? else {
        return Ok(());
    };
    let after = held.checked_add(change).map(|after| after.abs());
    match after {
        Some(after) if after <= limit || after <= held.abs() => Ok(()),
        // A position beyond what a decimal holds is over any limit.
        after => Err(Refusal::Over {
            key,
            what: "position",
            value: after.unwrap_or(Decimal::MAX),
            limit,
        }),
    }
}

/// Whether `realized_pnl`, the realized PnL of the UTC day so far, is a loss beyond
/// `risk:max_daily_loss`; `Err` when the limit cannot be read (which trips it too).
pub fn daily_loss_breached(
    config: &RuntimeConfig,
    realized_pnl: Decimal,
) -> Result<Option<Decimal>, Refusal> {
    let Some(stored) = config.get(MAX_DAILY_LOSS) else {
        return Ok(None);
    };
    match stored.trim().parse::<Decimal>() {
        Ok(limit) if limit > Decimal::ZERO => Ok((realized_pnl < -limit).then_some(limit)),
        _ => Err(Refusal::Unreadable {
            key: MAX_DAILY_LOSS.to_owned(),
            stored,
        }),
    }
}

/// The symbols of a `risk:allowed_symbols` value, normalised; empty for an empty value.
pub fn parse_symbols(value: &str) -> Result<Vec<Symbol>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Symbol::parse(s).map_err(|e| format!("`{s}`: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::signal::WebhookSignal;

    fn config(pairs: &[(&str, &str)]) -> RuntimeConfig {
        RuntimeConfig::fixed(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        )
    }

    fn signal(body: serde_json::Value) -> Signal {
        let object = body.as_object().unwrap().clone();
        WebhookSignal::from_json(&object).unwrap().signal
    }

    fn buy(quantity: &str) -> Signal {
        signal(serde_json::json!({"action": "LONG", "symbol": "BTCUSDT", "quantity": quantity}))
    }

    #[test]
    fn the_per_symbol_limit_wins_over_the_global_one() {
        let limits = config(&[(MAX_QUANTITY, "5"), ("risk:max_quantity:BTCUSDT", "0.5")]);
        let refused = check_signal(&limits, &buy("1")).unwrap_err();
        assert_eq!(
            refused,
            Refusal::Over {
                key: "risk:max_quantity:BTCUSDT".to_owned(),
                what: "quantity",
                value: Decimal::ONE,
                limit: "0.5".parse().unwrap(),
            }
        );
        assert_eq!(refused.key(), "risk:max_quantity:BTCUSDT");
        assert!(check_signal(&limits, &buy("0.5")).is_ok(), "at the limit");
        let eth =
            signal(serde_json::json!({"action": "LONG", "symbol": "ETHUSDT", "quantity": "4"}));
        assert!(check_signal(&limits, &eth).is_ok(), "the global 5 for ETH");
    }

    #[test]
    fn leverage_and_a_priced_orders_notional_are_checked() {
        let limits = config(&[(MAX_LEVERAGE, "10"), (MAX_NOTIONAL, "1000")]);
        let levered = signal(serde_json::json!({
            "action": "LONG", "symbol": "BTCUSDT", "quantity": "0.01", "leverage": 20
        }));
        assert!(matches!(
            check_signal(&limits, &levered),
            Err(Refusal::Over {
                what: "leverage",
                ..
            })
        ));
        let priced = signal(serde_json::json!({
            "action": "SHORT", "symbol": "BTCUSDT", "quantity": "0.02",
            "orderType": "limit", "price": "60000"
        }));
        let refused = check_signal(&limits, &priced).unwrap_err();
        assert_eq!(
            refused,
            Refusal::Over {
                key: MAX_NOTIONAL.to_owned(),
                what: "notional",
                value: "1200".parse().unwrap(),
                limit: "1000".parse().unwrap(),
            }
        );
        // Without a price the notional waits for the consumer.
        assert!(check_signal(&limits, &buy("100")).is_ok());
    }

    #[test]
    fn an_order_that_only_reduces_is_never_refused() {
        let limits = config(&[
            (ALLOWED_SYMBOLS, "ETHUSDT"),
            (MAX_QUANTITY, "0.001"),
            (MAX_NOTIONAL, "1"),
            (MAX_LEVERAGE, "1"),
        ]);
        for close in [
            serde_json::json!({"action": "CLOSE_LONG", "symbol": "BTCUSDT", "quantity": "3"}),
            serde_json::json!({"action": "CLOSE_SHORT", "symbol": "BTCUSDT", "quantity": "3", "leverage": 50}),
            serde_json::json!({"action": "SHORT", "symbol": "BTCUSDT", "quantity": "3", "reduceOnly": true}),
        ] {
            assert_eq!(
                check_signal(&limits, &signal(close.clone())),
                Ok(()),
                "{close}"
            );
        }
        assert!(matches!(
            check_signal(&limits, &buy("0.001")),
            Err(Refusal::NotAllowed { .. })
        ));
    }

    #[test]
    fn allowed_symbols_are_read_normalised_and_empty_allows_all() {
        let limits = config(&[(ALLOWED_SYMBOLS, " btcusdt , ETHUSDT.P ")]);
        assert!(check_signal(&limits, &buy("1")).is_ok());
        let sol =
            signal(serde_json::json!({"action": "LONG", "symbol": "SOLUSDT", "quantity": "1"}));
        assert_eq!(
            check_signal(&limits, &sol).unwrap_err().key(),
            ALLOWED_SYMBOLS
        );
        assert!(check_signal(&config(&[(ALLOWED_SYMBOLS, "")]), &sol).is_ok());
    }

    fn d(value: &str) -> Decimal {
        value.parse().unwrap()
    }

    #[test]
    fn the_position_after_the_order_is_checked_and_shrinking_is_allowed() {
        let limits = config(&[(MAX_POSITION, "1"), ("risk:max_position:ETHUSDT", "10")]);
        let btc = Symbol::parse("BTCUSDT").unwrap();
        assert_eq!(check_position(&limits, &btc, d("0.6"), d("0.4")), Ok(()));
        assert_eq!(
            check_position(&limits, &btc, d("0.6"), d("0.5")),
            Err(Refusal::Over {
                key: MAX_POSITION.to_owned(),
                what: "position",
                value: d("1.1"),
                limit: d("1"),
            })
        );
        // A reversal is measured by the short it leaves: long 0.5, sell 2 → short 1.5.
        assert!(check_position(&limits, &btc, d("0.5"), d("-2")).is_err());
        assert_eq!(check_position(&limits, &btc, d("0.5"), d("-1.5")), Ok(()));
        // Above the limit already (it was lowered): shrinking goes, growing does not.
        assert_eq!(check_position(&limits, &btc, d("-3"), d("1")), Ok(()));
        assert!(check_position(&limits, &btc, d("-3"), d("-0.1")).is_err());
        let eth = Symbol::parse("ETHUSDT").unwrap();
        assert_eq!(check_position(&limits, &eth, d("9"), d("1")), Ok(()));
        assert_eq!(
            check_position(&config(&[]), &eth, d("9"), d("1000")),
            Ok(())
        );
    }

    #[test]
    fn the_daily_loss_trips_below_minus_the_limit_and_an_unreadable_one_trips_too() {
        let limits = config(&[(MAX_DAILY_LOSS, "500")]);
        assert_eq!(daily_loss_breached(&limits, d("-500")), Ok(None));
        assert_eq!(
            daily_loss_breached(&limits, d("-500.01")),
            Ok(Some(d("500")))
        );
        assert_eq!(daily_loss_breached(&limits, d("900")), Ok(None));
        assert_eq!(daily_loss_breached(&config(&[]), d("-1e6")), Ok(None));
        assert!(daily_loss_breached(&config(&[(MAX_DAILY_LOSS, "much")]), d("0")).is_err());
    }

    #[test]
    fn a_limit_that_cannot_be_read_refuses_instead_of_allowing() {
        for stored in ["lots", "-1", "0"] {
            let limits = config(&[(MAX_QUANTITY, stored)]);
            assert_eq!(
                check_signal(&limits, &buy("0.001")),
                Err(Refusal::Unreadable {
                    key: MAX_QUANTITY.to_owned(),
                    stored: stored.to_owned()
                })
            );
        }
    }
}
