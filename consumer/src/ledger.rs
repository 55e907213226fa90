//! The positions ledger's arithmetic: what one fill does to a position, by the usual
//! average-cost rules, in exact decimals. Pure: `store` reads and writes the rows.
//!
//! - Opening or adding moves the average entry to the quantity-weighted mean of the old
//!   entry and the fill price.
//! - Reducing realizes `(exit − entry) × quantity` for a long (`(entry − exit) ×
//!   quantity` for a short) and keeps the entry; closing to zero clears it.
//! - A fill larger than the position reverses it: the closed part realizes as above,
//!   the rest opens the other way at the fill price.
//! - A fee reported in the quote currency is subtracted from the realized PnL of the
//!   fill that paid it, opening fills included.
//! - A fill without a price still moves the quantity: what is held is certain. What
//!   cannot be priced is never invented: an entry it would move becomes unknown, and a
//!   part it closes (or a part closed against an unknown entry) realizes nothing known,
//!   which marks the position's realized PnL incomplete for good.

use hoox_common::signal::Side;
use rust_decimal::Decimal;

/// One fill, as the ledger sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trade {
    /// Buy or sell.
    pub side: Side,
    /// The executed base quantity (not negative).
    pub quantity: Decimal,
    /// The average fill price, when the exchange reported one.
    pub price: Option<Decimal>,
    /// The fee in the quote currency, when the exchange reported one.
    pub fee: Option<Decimal>,
}

/// One position: exchange, market, environment and symbol are its key, kept by `store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Signed net quantity: positive long, negative short.
    pub quantity: Decimal,
    /// The average entry price; `None` when flat or unknown.
    pub avg_entry_price: Option<Decimal>,
    /// Realized PnL in the quote currency, fees subtracted.
    pub realized_pnl: Decimal,
    /// Fees paid in the quote currency.
    pub fees: Decimal,
    /// False once a fill closed something that could not be priced.
    pub complete: bool,
}

impl Position {
    /// A flat position with nothing realized.
    pub fn flat() -> Self {
        Self {
            complete: true,
            ..Self::default()
        }
    }

    /// Applies `trade` and returns the PnL it realized (its closed part minus its fee),
    /// or `None` when its closed part could not be priced.
    pub fn apply(&mut self, trade: &Trade) -> Option<Decimal> {
        let fee = trade.fee.unwrap_or_default();
        let size = trade.quantity.abs();
        let delta = match trade.side {
            Side::Buy => size,
            Side::Sell => -size,
        };
        let held = self.quantity;
        let closes = !held.is_zero() && held.is_sign_positive() != delta.is_sign_positive();
        let closed = if closes {
            size.min(held.abs())
        } else {
            Decimal::ZERO
        };
        let opened = size - closed;

        let gross = if closed.is_zero() {
            Some(Decimal::ZERO)
        } else {
            trade
                .price
                .zip(self.avg_entry_price)
                .and_then(|(exit, entry)| {
                    let per_unit = if held.is_sign_positive() {
                        exit.checked_sub(entry)?
                    } else {
                        entry.checked_sub(exit)?
                    };
                    per_unit.checked_mul(closed)
                })
        };

        let after = held + delta;
        self.avg_entry_price = if after.is_zero() {
            None
        } else if opened.is_zero() {
            // Reduced: the rest keeps its entry.
            self.avg_entry_price
        } else if closes || held.is_zero() {
            // Reversed or opened: the new side's entry is this fill's price.
            trade.price
        } else {
            // Added: the quantity-weighted mean of the old entry and the fill's price.
            trade
                .price
                .zip(self.avg_entry_price)
                .and_then(|(price, entry)| {
                    let old = held.abs();
                    let cost = entry
                        .checked_mul(old)?
                        .checked_add(price.checked_mul(size)?)?;
                    cost.checked_div(old + size)
                })
        };
        // Flat is plain zero, never a negative zero from the subtraction.
        self.quantity = if after.is_zero() {
            Decimal::ZERO
        } else {
            after
        };
        self.fees += fee;
        let realized = gross.map(|gross| gross - fee);
        match realized {
            Some(realized) => self.realized_pnl += realized,
            None => {
                // The fee is known even when the closed part is not.
                self.realized_pnl -= fee;
                self.complete = false;
            }
        }
        realized
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn trade(side: Side, quantity: &str, price: &str, fee: &str) -> Trade {
        Trade {
            side,
            quantity: d(quantity),
            price: Some(d(price)),
            fee: Some(d(fee)),
        }
    }

    fn position(quantity: &str, entry: Option<&str>, realized: &str, fees: &str) -> Position {
        Position {
            quantity: d(quantity),
            avg_entry_price: entry.map(d),
            realized_pnl: d(realized),
            fees: d(fees),
            complete: true,
        }
    }

    #[test]
    fn opening_and_adding_move_the_average_entry() {
        let mut p = Position::flat();
        assert_eq!(
            p.apply(&trade(Side::Buy, "0.01", "60000", "0.3")),
            Some(d("-0.3"))
        );
        assert_eq!(p, position("0.01", Some("60000"), "-0.3", "0.3"));
        // (0.01 × 60000 + 0.03 × 64000) / 0.04 = 63000
        assert_eq!(
            p.apply(&trade(Side::Buy, "0.03", "64000", "0.96")),
            Some(d("-0.96"))
        );
        assert_eq!(p, position("0.04", Some("63000"), "-1.26", "1.26"));
    }

    #[test]
    fn reducing_realizes_and_keeps_the_entry_and_closing_clears_it() {
        let mut p = position("0.04", Some("63000"), "0", "0");
        // (65000 − 63000) × 0.01 = 20, minus a 0.325 fee.
        assert_eq!(
            p.apply(&trade(Side::Sell, "0.01", "65000", "0.325")),
            Some(d("19.675"))
        );
        assert_eq!(p, position("0.03", Some("63000"), "19.675", "0.325"));
        // (62000 − 63000) × 0.03 = −30
        assert_eq!(
            p.apply(&trade(Side::Sell, "0.03", "62000", "0")),
            Some(d("-30"))
        );
        assert_eq!(p, position("0", None, "-10.325", "0.325"));
    }

    #[test]
    fn a_short_realizes_entry_minus_exit() {
        let mut p = Position::flat();
        p.apply(&trade(Side::Sell, "2", "100", "0"));
        assert_eq!(p, position("-2", Some("100"), "0", "0"));
        // Adding to a short: (2 × 100 + 2 × 110) / 4 = 105.
        p.apply(&trade(Side::Sell, "2", "110", "0"));
        assert_eq!(p.avg_entry_price, Some(d("105")));
        // Covering 3 at 95: (105 − 95) × 3 = 30.
        assert_eq!(
            p.apply(&trade(Side::Buy, "3", "95", "0.1")),
            Some(d("29.9"))
        );
        assert_eq!(p, position("-1", Some("105"), "29.9", "0.1"));
    }

    #[test]
    fn a_reversal_realizes_the_closed_part_and_opens_the_rest_at_the_fill_price() {
        let mut p = Position::flat();
        p.apply(&trade(Side::Buy, "0.01", "60000", "0"));
        // Closes 0.01 at 61000: +10; opens a 0.02 short at 61000.
        assert_eq!(
            p.apply(&trade(Side::Sell, "0.03", "61000", "0.5")),
            Some(d("9.5"))
        );
        assert_eq!(p, position("-0.02", Some("61000"), "9.5", "0.5"));
        // And back: covers 0.02 at 60500 (+10), opens a 0.01 long at 60500.
        assert_eq!(
            p.apply(&trade(Side::Buy, "0.03", "60500", "0")),
            Some(d("10"))
        );
        assert_eq!(p, position("0.01", Some("60500"), "19.5", "0.5"));
    }

    #[test]
    fn a_fill_without_a_price_moves_the_quantity_and_invents_no_figure() {
        let unpriced = |side, quantity: &str| Trade {
            side,
            quantity: d(quantity),
            price: None,
            fee: None,
        };
        // Adding without a price: the blended entry is unknown.
        let mut p = position("1", Some("100"), "0", "0");
        assert_eq!(p.apply(&unpriced(Side::Buy, "1")), Some(Decimal::ZERO));
        assert_eq!(p.quantity, d("2"));
        assert_eq!(p.avg_entry_price, None);
        assert!(p.complete, "nothing was closed yet");
        // Closing against the unknown entry realizes nothing known.
        assert_eq!(p.apply(&trade(Side::Sell, "1", "120", "0.2")), None);
        assert_eq!(p.quantity, d("1"));
        assert_eq!(p.realized_pnl, d("-0.2"));
        assert_eq!(p.fees, d("0.2"));
        assert!(!p.complete);
        // Flat, then a priced reopen has a known entry again; the PnL stays incomplete.
        p.apply(&unpriced(Side::Sell, "1"));
        assert_eq!(p.quantity, Decimal::ZERO);
        p.apply(&trade(Side::Buy, "1", "90", "0"));
        assert_eq!(p.avg_entry_price, Some(d("90")));
        assert!(!p.complete);
    }

    #[test]
    fn a_reduction_without_a_price_keeps_the_entry_of_what_is_left() {
        let mut p = position("3", Some("100"), "0", "0");
        let closed = p.apply(&Trade {
            side: Side::Sell,
            quantity: d("1"),
            price: None,
            fee: None,
        });
        assert_eq!(closed, None);
        assert_eq!(p.quantity, d("2"));
        assert_eq!(p.avg_entry_price, Some(d("100")));
        assert!(!p.complete);
    }

    fn trades() -> impl Strategy<Value = Vec<Trade>> {
        let one = (any::<bool>(), 1u32..=500, 1u32..=100_000, 0u32..=50).prop_map(
            |(buy, lots, cents, fee)| Trade {
                side: if buy { Side::Buy } else { Side::Sell },
                quantity: Decimal::new(i64::from(lots), 3),
                price: Some(Decimal::new(i64::from(cents), 2)),
                fee: Some(Decimal::new(i64::from(fee), 2)),
            },
        );
        prop::collection::vec(one, 1..40)
    }

    proptest! {
        /// The position's realized PnL is the sum of what each fill realized, and both
        /// agree with the cash the sequence moved: sells received minus buys paid minus
        /// fees equals the realized PnL minus the cost of what is still held at its
        /// average entry. Averages are rounded to 28 digits, hence the tiny tolerance.
        #[test]
        fn realized_pnl_is_the_sum_over_the_closed_parts(sequence in trades()) {
            let mut p = Position::flat();
            let mut parts = Decimal::ZERO;
            let mut cash = Decimal::ZERO;
            for t in &sequence {
                parts += p.apply(t).expect("every fill is priced");
                let notional = t.quantity * t.price.unwrap();
                cash += match t.side {
                    Side::Buy => -notional,
                    Side::Sell => notional,
                } - t.fee.unwrap();
            }
            prop_assert!(p.complete);
            prop_assert_eq!(p.realized_pnl, parts);
            let fees: Decimal = sequence.iter().map(|t| t.fee.unwrap()).sum();
            prop_assert_eq!(p.fees, fees);
            let held_cost = p.quantity * p.avg_entry_price.unwrap_or_default();
            let drift = (p.realized_pnl - held_cost - cash).abs();
            prop_assert!(drift < Decimal::new(1, 12), "drift {}", drift);
            prop_assert_eq!(p.avg_entry_price.is_none(), p.quantity.is_zero());
        }
    }
}
