//! Instrument rules (quantity step, minimum, price tick), fetched from an exchange's
//! public instrument endpoint and cached, and how an order is sized to them: the
//! quantity floored to the step, the price rounded to the tick, anything below the
//! minimum refused as fatal with the numbers that explain why.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hoox_common::signal::{ExchangeName, OrderType, Symbol};
use rust_decimal::{Decimal, RoundingStrategy};

use super::{ErrorClass, ErrorCode, ExchangeError, HooxCode};

/// How long fetched rules are trusted: exchanges change steps and ticks rarely, and
/// announce it.
const RULES_TTL: Duration = Duration::from_secs(60 * 60);

/// One instrument's trading rules, in the unit orders are sent in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentRules {
    /// Quantities are multiples of this.
    pub qty_step: Decimal,
    /// Smallest quantity accepted.
    pub min_qty: Decimal,
    /// Largest quantity accepted, when the exchange says.
    pub max_qty: Option<Decimal>,
    /// Prices are multiples of this, when the exchange says.
    pub tick_size: Option<Decimal>,
    /// Smallest order value (quantity × price), when the exchange says.
    pub min_notional: Option<Decimal>,
    /// Base coin per contract, where quantities are in contracts (MEXC futures).
    pub contract_size: Option<Decimal>,
}

/// A symbol's rules for limit and for market orders (exchanges may cap market orders
/// differently), read from one answer of the instrument endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolRules {
    /// For limit orders.
    pub limit: InstrumentRules,
    /// For market orders.
    pub market: InstrumentRules,
}

impl SymbolRules {
    /// The same rules for both order types.
    pub fn same(rules: InstrumentRules) -> Self {
        Self {
            limit: rules.clone(),
            market: rules,
        }
    }

    fn for_type(&self, order_type: OrderType) -> &InstrumentRules {
        match order_type {
            OrderType::Limit => &self.limit,
            OrderType::Market => &self.market,
        }
    }
}

/// An order's quantity and price as they go on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sized {
    /// Floored to the step.
    pub quantity: Decimal,
    /// Rounded to the tick.
    pub price: Option<Decimal>,
}

impl InstrumentRules {
    /// Sizes an order of `quantity` at `price` (in the instrument's units) for `exchange`.
    pub fn size(
        &self,
        exchange: ExchangeName,
        symbol: &Symbol,
        quantity: Decimal,
        price: Option<Decimal>,
        reduce_only: bool,
    ) -> Result<Sized, ExchangeError> {
        let fatal = |message: String| {
            ExchangeError::with_code(
                ErrorClass::Fatal,
                ErrorCode::Hoox(HooxCode::MinOrder),
                message,
            )
        };
        let floored =
            floor_to(quantity, self.qty_step).ok_or_else(|| out_of_range("quantity", quantity))?;
        if floored < self.min_qty || floored.is_zero() {
            return Err(fatal(format!(
                "quantity {} {symbol} is below {exchange}'s minimum order quantity {} (step {})",
                quantity.normalize(),
                self.min_qty.normalize(),
                self.qty_step.normalize()
            )));
        }
        if let Some(max) = self.max_qty.filter(|max| floored > *max) {
            return Err(fatal(format!(
                "quantity {} {symbol} is above {exchange}'s maximum order quantity {}",
                floored.normalize(),
                max.normalize()
            )));
        }
        let price = price.map(|p| self.tick(p)).transpose()?;
        if let (Some(min), Some(price), false) = (self.min_notional, price, reduce_only) {
            let notional = floored
                .checked_mul(price)
                .ok_or_else(|| out_of_range("order value of", floored))?;
            if notional < min {
                return Err(fatal(format!(
                    "order value {} ({} {symbol} at {}) is below {exchange}'s minimum of {}",
                    notional.normalize(),
                    floored.normalize(),
                    price.normalize(),
                    min.normalize()
                )));
            }
        }
        Ok(Sized {
            quantity: floored,
            price,
        })
    }

    /// `price` rounded to the tick, when the exchange gives one.
    pub fn tick(&self, price: Decimal) -> Result<Decimal, ExchangeError> {
        match self.tick_size {
            Some(tick) => round_to(price, tick).ok_or_else(|| out_of_range("price", price)),
            None => Ok(price),
        }
    }
}

/// A value the instrument's arithmetic cannot hold: refused for good.
fn out_of_range(what: &str, value: Decimal) -> ExchangeError {
    ExchangeError::with_code(
        ErrorClass::Fatal,
        ErrorCode::Hoox(HooxCode::OutOfRange),
        format!(
            "{what} {} is out of range: sizing it overflows",
            value.normalize()
        ),
    )
}

/// `value` floored to a multiple of `step` (unchanged when `step` is zero); `None`
/// when the arithmetic overflows.
pub fn floor_to(value: Decimal, step: Decimal) -> Option<Decimal> {
    if step.is_zero() {
        return Some(value);
    }
    let steps = value.checked_div(step)?.floor();
    let floored = exact_multiple(steps.checked_mul(step)?, step)?;
    // A quotient past 28 significant digits is rounded, and its floor can miss.
    let gap = value.checked_sub(floored)?;
    (gap >= Decimal::ZERO && gap < step).then_some(floored)
}

/// `value` rounded to the nearest multiple of `tick`, halves away from zero (unchanged
/// when `tick` is zero); `None` when the arithmetic overflows.
pub fn round_to(value: Decimal, tick: Decimal) -> Option<Decimal> {
    if tick.is_zero() {
        return Some(value);
    }
    let ticks = value
        .checked_div(tick)?
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    let rounded = exact_multiple(ticks.checked_mul(tick)?, tick)?;
    let gap = value.checked_sub(rounded)?.abs();
    (gap.checked_mul(Decimal::TWO)? <= tick).then_some(rounded)
}

/// `value` when it is an exact multiple of `step`. Past 28 significant digits decimal
/// arithmetic rounds, and a size off the step would be refused by the exchange
/// anyway: such a size is out of range.
fn exact_multiple(value: Decimal, step: Decimal) -> Option<Decimal> {
    value
        .checked_rem(step)
        .is_some_and(|r| r.is_zero())
        .then(|| value.normalize())
}

/// A decimal as exchanges want it: plain digits, no exponent, no trailing zeros.
pub fn plain(value: Decimal) -> String {
    value.normalize().to_string()
}

/// `10^-places`: the step a precision given in decimal places stands for.
pub fn step_from_places(places: u32) -> Decimal {
    Decimal::new(1, places.min(28))
}

/// Rules per environment (live or testnet) and symbol, fetched on first use and again
/// after an hour.
#[derive(Debug, Default)]
pub struct RulesCache {
    entries: Mutex<HashMap<(bool, Symbol), (SymbolRules, Instant)>>,
}

impl RulesCache {
    /// The rules for `order`'s type, from the cache or from what `fetch` gives (then
    /// cached).
    pub async fn get_or_fetch<F, Fut>(
        &self,
        order: &super::OrderRequest,
        fetch: F,
    ) -> Result<InstrumentRules, ExchangeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SymbolRules, ExchangeError>>,
    {
        let key = (order.testnet, order.symbol.clone());
        let cached = self.entries.lock().ok().and_then(|entries| {
            entries
                .get(&key)
                .filter(|(_, at)| at.elapsed() < RULES_TTL)
                .map(|(rules, _)| rules.for_type(order.order_type).clone())
        });
        if let Some(rules) = cached {
            return Ok(rules);
        }
        let rules = fetch().await?;
        let wanted = rules.for_type(order.order_type).clone();
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(key, (rules, Instant::now()));
        }
        Ok(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn btc() -> InstrumentRules {
        InstrumentRules {
            qty_step: d("0.001"),
            min_qty: d("0.001"),
            max_qty: Some(d("100")),
            tick_size: Some(d("0.10")),
            min_notional: Some(d("5")),
            contract_size: None,
        }
    }

    fn symbol() -> Symbol {
        Symbol::parse("BTCUSDT").unwrap()
    }

    #[test]
    fn quantity_floors_to_the_step_and_price_rounds_to_the_tick() {
        let sized = btc()
            .size(
                ExchangeName::Bybit,
                &symbol(),
                d("0.0059"),
                Some(d("68000.05")),
                false,
            )
            .unwrap();
        assert_eq!(plain(sized.quantity), "0.005");
        assert_eq!(plain(sized.price.unwrap()), "68000.1");
        let sized = btc()
            .size(
                ExchangeName::Bybit,
                &symbol(),
                d("2"),
                Some(d("68000.04")),
                false,
            )
            .unwrap();
        assert_eq!(plain(sized.quantity), "2");
        assert_eq!(plain(sized.price.unwrap()), "68000");
    }

    #[test]
    fn below_the_minimum_is_fatal_and_says_why() {
        let err = btc()
            .size(ExchangeName::Binance, &symbol(), d("0.0009"), None, false)
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Fatal);
        assert!(
            err.message
                .contains("0.0009 BTCUSDT is below binance's minimum order quantity 0.001"),
            "{}",
            err.message
        );
        let err = btc()
            .size(
                ExchangeName::Binance,
                &symbol(),
                d("0.001"),
                Some(d("100")),
                false,
            )
            .unwrap_err();
        assert!(
            err.message.contains("below binance's minimum of 5"),
            "{}",
            err.message
        );
        // Reduce-only orders close what is open, whatever its value.
        assert!(btc()
            .size(
                ExchangeName::Binance,
                &symbol(),
                d("0.001"),
                Some(d("100")),
                true
            )
            .is_ok());
        let err = btc()
            .size(ExchangeName::Binance, &symbol(), d("101"), None, false)
            .unwrap_err();
        assert!(err
            .message
            .contains("above binance's maximum order quantity 100"));
    }

    #[test]
    fn sizing_near_the_decimal_maximum_is_a_fatal_error_not_a_panic() {
        let tiny_step = InstrumentRules {
            qty_step: d("0.00000001"),
            tick_size: Some(d("0.00000001")),
            min_notional: Some(d("5")),
            ..btc()
        };
        for (quantity, price) in [
            (Decimal::MAX, None),
            (d("1"), Some(Decimal::MAX)),
            (
                d("7922816251426433759354395033"),
                Some(d("7922816251426433759354395033")),
            ),
        ] {
            let err = tiny_step
                .size(ExchangeName::Bybit, &symbol(), quantity, price, false)
                .unwrap_err();
            assert_eq!(err.class, ErrorClass::Fatal);
            assert_eq!(err.code, Some(ErrorCode::Hoox(HooxCode::OutOfRange)));
            assert_eq!(
                err.code.map(|c| c.to_string()).as_deref(),
                Some("out_of_range")
            );
        }
        assert_eq!(floor_to(Decimal::MAX, d("0.001")), None);
        assert_eq!(round_to(Decimal::MAX, d("0.1")), None);
        assert_eq!(floor_to(d("1.234"), Decimal::ZERO), Some(d("1.234")));
    }

    /// Any decimal: a mantissa of up to 96 bits at any scale.
    fn any_decimal() -> impl Strategy<Value = Decimal> {
        (any::<i128>(), 0u32..=28)
            .prop_map(|(m, scale)| Decimal::from_i128_with_scale(m % (1i128 << 96), scale))
    }

    /// A step or tick as exchanges publish them: 1, 5 or 25 at some power of ten.
    fn any_step() -> impl Strategy<Value = Decimal> {
        (prop::sample::select(vec![1i64, 5, 25]), 0u32..=18)
            .prop_map(|(m, scale)| Decimal::new(m, scale))
    }

    proptest! {
        #[test]
        fn flooring_never_panics_and_lands_on_the_step_below(value in any_decimal(), step in any_step()) {
            if let Some(floored) = floor_to(value, step) {
                prop_assert!(floored <= value);
                prop_assert!(value - floored < step);
                prop_assert!((floored % step).is_zero());
            }
        }

        #[test]
        fn rounding_never_panics_and_lands_within_half_a_tick(value in any_decimal(), tick in any_step()) {
            if let Some(rounded) = round_to(value, tick) {
                prop_assert!((value - rounded).abs() * Decimal::TWO <= tick);
                prop_assert!((rounded % tick).is_zero());
            }
        }

        #[test]
        fn sizing_never_panics(quantity in any_decimal(), price in any_decimal(), step in any_step(), tick in any_step()) {
            let rules = InstrumentRules {
                qty_step: step,
                tick_size: Some(tick),
                ..btc()
            };
            if let Ok(sized) = rules.size(ExchangeName::Bybit, &symbol(), quantity, Some(price), false) {
                prop_assert!(sized.quantity <= quantity);
                prop_assert!(sized.quantity >= rules.min_qty);
            }
        }
    }

    #[test]
    fn plain_never_uses_an_exponent() {
        assert_eq!(plain(d("0.00000001")), "0.00000001");
        assert_eq!(plain(d("1000000")), "1000000");
        assert_eq!(plain(d("1.2300")), "1.23");
        assert_eq!(step_from_places(4), d("0.0001"));
    }
}
