//! The trading signal: what a webhook asks for, parsed once at the edge into types that
//! cannot hold a bad value, so nothing downstream has to validate again.
//!
//! Parsing walks the JSON object field by field instead of deriving `Deserialize`, so
//! that every refusal names the field and says what was expected: a trader reading a
//! 400 in TradingView's alert log has nothing else to go on.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A webhook field that could not be accepted, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The JSON field name as the producer sent it (camelCase).
    pub field: String,
    /// What was wrong with it.
    pub reason: String,
}

impl FieldError {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// An exchange hoox can route to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeName {
    /// Bybit V5.
    Bybit,
    /// Binance (USD-M futures by default).
    Binance,
    /// MEXC (spot v3 by default).
    Mexc,
    /// The built-in simulated exchange.
    Paper,
}

impl ExchangeName {
    /// Every exchange, in a stable order.
    pub const ALL: [ExchangeName; 4] = [Self::Bybit, Self::Binance, Self::Mexc, Self::Paper];

    /// The lowercase name used in config, logs and rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bybit => "bybit",
            Self::Binance => "binance",
            Self::Mexc => "mexc",
            Self::Paper => "paper",
        }
    }
}

impl fmt::Display for ExchangeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExchangeName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == lower)
            .ok_or_else(|| {
                format!("unknown exchange `{s}` (expected bybit, binance, mexc or paper)")
            })
    }
}

/// What the signal asks to do with a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Open or add long (buy). `BUY` is an alias.
    Long,
    /// Open or add short (sell). `SELL` is an alias.
    Short,
    /// Sell, reduce-only.
    CloseLong,
    /// Buy, reduce-only.
    CloseShort,
}

impl Action {
    /// The order side this action trades.
    pub fn side(self) -> Side {
        match self {
            Self::Long | Self::CloseShort => Side::Buy,
            Self::Short | Self::CloseLong => Side::Sell,
        }
    }

    /// Whether the action only ever reduces a position.
    pub fn is_close(self) -> bool {
        matches!(self, Self::CloseLong | Self::CloseShort)
    }

    /// The canonical upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Long => "LONG",
            Self::Short => "SHORT",
            Self::CloseLong => "CLOSE_LONG",
            Self::CloseShort => "CLOSE_SHORT",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "LONG" | "BUY" => Ok(Self::Long),
            "SHORT" | "SELL" => Ok(Self::Short),
            "CLOSE_LONG" => Ok(Self::CloseLong),
            "CLOSE_SHORT" => Ok(Self::CloseShort),
            _ => Err(format!(
                "unknown action `{s}` (expected LONG, BUY, SHORT, SELL, CLOSE_LONG or CLOSE_SHORT)"
            )),
        }
    }
}

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

impl Side {
    /// `buy` or `sell`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }
}

/// Market or limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderType {
    /// Fill at the market (the default).
    #[default]
    Market,
    /// Rest at `price`.
    Limit,
}

impl OrderType {
    /// `market` or `limit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Market => "market",
            Self::Limit => "limit",
        }
    }
}

/// A normalised instrument name such as `BTCUSDT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Symbol(String);

impl Symbol {
    /// Longest symbol accepted; real instrument names are far shorter.
    const MAX_LEN: usize = 32;

    /// Normalises a TradingView ticker: strips an `EXCHANGE:` prefix and a `.P`
    /// (perpetual) suffix, and upper-cases what is left.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        let without_prefix = trimmed.rsplit(':').next().unwrap_or(trimmed);
        let upper = without_prefix.to_ascii_uppercase();
        let base = upper.strip_suffix(".P").unwrap_or(&upper);
        if base.is_empty() {
            return Err(format!("`{raw}` is not a symbol"));
        }
        if base.len() > Self::MAX_LEN {
            return Err(format!("longer than {} characters", Self::MAX_LEN));
        }
        if !base.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "`{raw}` is not a symbol (letters and digits only, e.g. BTCUSDT or BYBIT:BTCUSDT.P)"
            ));
        }
        Ok(Self(base.to_owned()))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Symbol {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Symbol> for String {
    fn from(value: Symbol) -> Self {
        value.0
    }
}

/// A strictly positive exact decimal within the bounds every exchange accepts: a
/// quantity or a price.
///
/// The bounds are here, not only at the webhook, so that the queue message's decode
/// (serde `try_from`) refuses an out-of-range value too:
/// - below [`Positive::MAX`] (10^14): above any order size or price an exchange
///   takes, and small enough that the product of any two (a notional, quantity ×
///   price) stays below `Decimal::MAX` (about 7.9 × 10^28), so the consumer's
///   arithmetic on them cannot overflow;
/// - at most [`Positive::MAX_FRACTION_DIGITS`] (16) digits after the point, finer than
///   any exchange's quantity step or price tick; more is a float artefact or noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct Positive(Decimal);

impl Positive {
    /// Every value is below this: 10^14.
    pub const MAX: Decimal = Decimal::from_parts(0x107A_4000, 0x5AF3, 0, false, 0);
    /// Most digits after the decimal point.
    pub const MAX_FRACTION_DIGITS: u32 = 16;

    /// Wraps a decimal greater than zero, below [`Self::MAX`], with at most
    /// [`Self::MAX_FRACTION_DIGITS`] digits after the point (trailing zeros aside).
    pub fn new(value: Decimal) -> Result<Self, String> {
        let value = value.normalize();
        if value <= Decimal::ZERO {
            return Err(format!("must be greater than 0, got {value}"));
        }
        if value >= Self::MAX {
            return Err(format!("must be less than {}, got {value}", Self::MAX));
        }
        if value.scale() > Self::MAX_FRACTION_DIGITS {
            return Err(format!(
                "at most {} digits after the decimal point, got {value}",
                Self::MAX_FRACTION_DIGITS
            ));
        }
        Ok(Self(value))
    }

    /// The value.
    pub fn get(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Positive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl TryFrom<Decimal> for Positive {
    type Error = String;

    fn try_from(value: Decimal) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Positive> for Decimal {
    fn from(value: Positive) -> Self {
        value.0
    }
}

/// Leverage between 1 and 125, the widest range the exchanges offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Leverage(u32);

impl Leverage {
    /// Wraps a leverage in 1..=125.
    pub fn new(value: u32) -> Result<Self, String> {
        if (1..=125).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!("must be an integer from 1 to 125, got {value}"))
        }
    }

    /// The value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Leverage {
    type Error = String;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Leverage> for u32 {
    fn from(value: Leverage) -> Self {
        value.0
    }
}

/// A producer-chosen key that makes resends of one alert idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Longest key accepted.
    const MAX_LEN: usize = 128;

    /// Accepts 1 to 128 printable ASCII characters.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(format!("must be 1 to {} characters", Self::MAX_LEN));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces".to_owned());
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated, normalised signal: what travels on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Signal {
    /// The exchange the producer asked for; `None` lets routing decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeName>,
    /// What to do.
    pub action: Action,
    /// The instrument.
    pub symbol: Symbol,
    /// Base-asset quantity, exact.
    pub quantity: Positive,
    /// Leverage to set before the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leverage: Option<Leverage>,
    /// Market or limit.
    #[serde(default)]
    pub order_type: OrderType,
    /// Limit price, or the reference price of a market order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Positive>,
    /// Whether the order may only reduce a position (always true for closes).
    #[serde(default)]
    pub reduce_only: bool,
    /// Route to the exchange's testnet with the testnet keys.
    #[serde(default)]
    pub test: bool,
    /// Stop-loss trigger price, where the exchange supports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_loss: Option<Positive>,
    /// Take-profit trigger price, where the exchange supports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take_profit: Option<Positive>,
}

/// A webhook body, parsed: the signal and the producer's idempotency key, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSignal {
    /// The signal to queue.
    pub signal: Signal,
    /// The `idempotencyKey` field, when sent.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Every field a webhook may carry; anything else is refused so that a typo such as
/// `levrage` cannot silently place an order without the leverage the trader meant.
pub const KNOWN_FIELDS: [&str; 13] = [
    "apiKey",
    "exchange",
    "action",
    "symbol",
    "quantity",
    "leverage",
    "orderType",
    "price",
    "reduceOnly",
    "test",
    "idempotencyKey",
    "stopLoss",
    "takeProfit",
];

impl WebhookSignal {
    /// Parses the fields of a webhook object. `apiKey` is ignored here: the caller
    /// authenticates before it asks for validation.
    pub fn from_json(body: &Map<String, Value>) -> Result<Self, FieldError> {
        if let Some(unknown) = body.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(FieldError::new(unknown, "unknown field"));
        }
        let field = |name: &str| body.get(name).filter(|v| !v.is_null());

        let exchange = field("exchange")
            .map(|v| {
                parse_str(v, "exchange")?
                    .parse()
                    .map_err(|e| FieldError::new("exchange", e))
            })
            .transpose()?;
        let action: Action = parse_str(required(field("action"), "action")?, "action")?
            .parse()
            .map_err(|e| FieldError::new("action", e))?;
        let symbol = Symbol::parse(parse_str(required(field("symbol"), "symbol")?, "symbol")?)
            .map_err(|e| FieldError::new("symbol", e))?;
        let quantity = parse_positive(required(field("quantity"), "quantity")?, "quantity")?;
        let leverage = field("leverage").map(parse_leverage).transpose()?;
        let order_type = match field("orderType") {
            None => OrderType::Market,
            Some(v) => match parse_str(v, "orderType")?.to_ascii_lowercase().as_str() {
                "market" => OrderType::Market,
                "limit" => OrderType::Limit,
                other => {
                    return Err(FieldError::new(
                        "orderType",
                        format!("unknown order type `{other}` (expected market or limit)"),
                    ))
                }
            },
        };
        let price = field("price")
            .map(|v| parse_positive(v, "price"))
            .transpose()?;
        if order_type == OrderType::Limit && price.is_none() {
            return Err(FieldError::new("price", "required for a limit order"));
        }
        let reduce_only = field("reduceOnly")
            .map(|v| parse_bool(v, "reduceOnly"))
            .transpose()?;
        if action.is_close() && reduce_only == Some(false) {
            return Err(FieldError::new(
                "reduceOnly",
                format!("{action} is always reduce-only; drop the field or set it to true"),
            ));
        }
        let test = field("test")
            .map(|v| parse_bool(v, "test"))
            .transpose()?
            .unwrap_or(false);
        let stop_loss = field("stopLoss")
            .map(|v| parse_positive(v, "stopLoss"))
            .transpose()?;
        let take_profit = field("takeProfit")
            .map(|v| parse_positive(v, "takeProfit"))
            .transpose()?;
        let idempotency_key = field("idempotencyKey")
            .map(|v| {
                IdempotencyKey::parse(parse_str(v, "idempotencyKey")?)
                    .map_err(|e| FieldError::new("idempotencyKey", e))
            })
            .transpose()?;

        Ok(Self {
            signal: Signal {
                exchange,
                action,
                symbol,
                quantity,
                leverage,
                order_type,
                price,
                reduce_only: action.is_close() || reduce_only.unwrap_or(false),
                test,
                stop_loss,
                take_profit,
            },
            idempotency_key,
        })
    }
}

fn required<'a>(value: Option<&'a Value>, name: &str) -> Result<&'a Value, FieldError> {
    value.ok_or_else(|| FieldError::new(name, "required"))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_str<'a>(value: &'a Value, name: &str) -> Result<&'a str, FieldError> {
    value
        .as_str()
        .ok_or_else(|| FieldError::new(name, format!("must be a string, got {}", type_name(value))))
}

fn parse_bool(value: &Value, name: &str) -> Result<bool, FieldError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(FieldError::new(
            name,
            format!("must be true or false, got {}", type_name(other)),
        )),
    }
}

/// The source text of a number or numeric string: JSON numbers are taken from their
/// source text (serde_json's `arbitrary_precision`), never through `f64`, so `0.005`
/// stays `0.005`.
fn number_text<'a>(value: &'a Value, name: &str) -> Result<&'a str, FieldError> {
    match value {
        Value::Number(n) => Ok(n.as_str()),
        Value::String(s) => Ok(s),
        other => Err(FieldError::new(
            name,
            format!(
                "must be a number or numeric string, got {}",
                type_name(other)
            ),
        )),
    }
}

/// Whether `text` is plain decimal notation: an optional `-`, digits without a leading
/// zero (a lone `0` before the point is fine), then optionally `.` and digits. No `+`,
/// exponent, `_`, hex, spaces, or a point without digits on both sides: a producer
/// that sends `1e2` or `.5` is guessing at a format, and a guess is not an order.
fn is_plain_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && (whole == "0" || !whole.starts_with('0')) && fraction.is_none_or(digits)
}

/// Reads a number or numeric string in plain decimal notation as an exact decimal.
fn parse_decimal(value: &Value, name: &str) -> Result<Decimal, FieldError> {
    let text = number_text(value, name)?;
    if !is_plain_decimal(text) {
        return Err(FieldError::new(
            name,
            format!("`{text}` is not a plain decimal number (digits, optionally `.` and digits, e.g. 0.005)"),
        ));
    }
    Decimal::from_str_exact(text).map_err(|_| {
        FieldError::new(
            name,
            format!("`{text}` has more digits than an exact decimal holds"),
        )
    })
}

fn parse_positive(value: &Value, name: &str) -> Result<Positive, FieldError> {
    Positive::new(parse_decimal(value, name)?).map_err(|e| FieldError::new(name, e))
}

/// Reads leverage: a plain integer, as a number or a string (`10`, `"10"`). `10.0` and
/// `1e1` are refused like any other non-integer notation: leverage is a count.
fn parse_leverage(value: &Value) -> Result<Leverage, FieldError> {
    let text = number_text(value, "leverage")?;
    let invalid = || {
        FieldError::new(
            "leverage",
            format!("must be a plain integer from 1 to 125, got `{text}`"),
        )
    };
    if !is_plain_decimal(text) || text.contains(['.', '-']) {
        return Err(invalid());
    }
    let whole = text.parse::<u32>().map_err(|_| invalid())?;
    Leverage::new(whole).map_err(|e| FieldError::new("leverage", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<WebhookSignal, FieldError> {
        WebhookSignal::from_json(value.as_object().expect("test bodies are objects"))
    }

    fn minimal() -> Value {
        json!({"action": "long", "symbol": "BTCUSDT", "quantity": 0.005})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut body = minimal();
        body[field] = value;
        body
    }

    fn error_of(value: Value) -> FieldError {
        parse(value).expect_err("the body must be refused")
    }

    #[test]
    fn quantity_keeps_its_exact_decimal_text() {
        let parsed = parse(minimal()).unwrap();
        assert_eq!(parsed.signal.quantity.get().to_string(), "0.005");
        let from_string = parse(with("quantity", json!("0.1"))).unwrap();
        assert_eq!(from_string.signal.quantity.get().to_string(), "0.1");
        let long_tail = parse(with("quantity", json!(0.3000000000000004))).unwrap();
        assert_eq!(
            long_tail.signal.quantity.get().to_string(),
            "0.3000000000000004"
        );
        // Exponents are not plain decimal notation, as a number or as a string.
        let number: Value = serde_json::from_str("5e-3").unwrap();
        assert_eq!(error_of(with("quantity", number)).field, "quantity");
        assert_eq!(error_of(with("quantity", json!("5e-3"))).field, "quantity");
    }

    #[test]
    fn only_plain_decimal_notation_is_accepted() {
        for good in ["1", "0.005", "10.50", "123", "0.0000000000000001"] {
            assert!(parse(with("quantity", json!(good))).is_ok(), "{good}");
        }
        for bad in [
            "1_000", "+1", ".5", "00001", "01.5", "1.", "0x10", "1e2", "1E2", " 1", "1 ", "", "-",
            "1.2.3", "١", "Infinity", "0.5\0",
        ] {
            let err = error_of(with("quantity", json!(bad)));
            assert_eq!(err.field, "quantity", "{bad:?} gave {err}");
        }
        for source in ["1e2", "5E-3", "1.5e0"] {
            let number: Value = serde_json::from_str(source).unwrap();
            assert_eq!(error_of(with("price", number)).field, "price", "{source}");
        }
    }

    #[test]
    fn leverage_is_a_plain_integer() {
        for (good, expected) in [(json!(10), 10), (json!("10"), 10), (json!("125"), 125)] {
            let leverage = parse(with("leverage", good)).unwrap().signal.leverage;
            assert_eq!(leverage.map(Leverage::get), Some(expected));
        }
        let float: Value = serde_json::from_str("10.0").unwrap();
        let exponent: Value = serde_json::from_str("1e1").unwrap();
        for bad in [
            float,
            exponent,
            json!("1e1"),
            json!("10.0"),
            json!("010"),
            json!("+10"),
            json!("-10"),
            json!("99999999999999999999"),
        ] {
            assert_eq!(
                error_of(with("leverage", bad.clone())).field,
                "leverage",
                "{bad}"
            );
        }
    }

    #[test]
    fn quantities_and_prices_are_bounded() {
        assert_eq!(Positive::MAX.to_string(), "100000000000000");
        for field in ["quantity", "price", "stopLoss", "takeProfit"] {
            for bad in [
                "79228162514264337593543950335",
                "100000000000000",
                "99999999999999999.5",
                "0.00000000000000001",
                "1.12345678901234567",
            ] {
                let err = error_of(with(field, json!(bad)));
                assert_eq!(err.field, field, "{field}={bad} gave {err}");
            }
            let big: Value = serde_json::from_str("1e28").unwrap();
            assert_eq!(error_of(with(field, big)).field, field);
            let largest = parse(with(field, json!("99999999999999.9999999999999999")));
            assert!(
                largest.is_err(),
                "30 significant digits do not fit a Decimal"
            );
            assert!(parse(with(field, json!("99999999999999.99"))).is_ok());
            assert!(parse(with(field, json!("1.0000000000000001"))).is_ok());
        }
        // Trailing zeros are not digits of the value.
        assert!(parse(with("quantity", json!("1.000000000000000000"))).is_ok());
    }

    #[test]
    fn queue_decode_refuses_out_of_range_values() {
        let wire = |quantity: &str| {
            format!(
                r#"{{"action":"LONG","symbol":"BTCUSDT","quantity":"{quantity}","orderType":"market","reduceOnly":false,"test":false}}"#
            )
        };
        assert!(serde_json::from_str::<Signal>(&wire("0.005")).is_ok());
        for bad in ["0", "-1", "100000000000000", "0.00000000000000001"] {
            assert!(
                serde_json::from_str::<Signal>(&wire(bad)).is_err(),
                "{bad} must not decode"
            );
        }
    }

    #[test]
    fn tradingview_tickers_are_normalised() {
        for raw in [
            "BTCUSDT",
            "btcusdt",
            "BTCUSDT.P",
            "BYBIT:BTCUSDT.P",
            " binance:btcusdt.p ",
        ] {
            assert_eq!(Symbol::parse(raw).unwrap().as_str(), "BTCUSDT", "{raw}");
        }
        assert_eq!(
            Symbol::parse("1000PEPEUSDT").unwrap().as_str(),
            "1000PEPEUSDT"
        );
    }

    #[test]
    fn bad_symbols_are_refused() {
        for raw in ["", "BYBIT:", ".P", "BTC/USDT", "BTC USDT", &"A".repeat(33)] {
            assert!(Symbol::parse(raw).is_err(), "{raw:?} must be refused");
        }
    }

    #[test]
    fn actions_are_case_insensitive_with_aliases() {
        for (raw, action) in [
            ("long", Action::Long),
            ("BUY", Action::Long),
            ("Sell", Action::Short),
            ("short", Action::Short),
            ("close_long", Action::CloseLong),
            ("CLOSE_SHORT", Action::CloseShort),
        ] {
            assert_eq!(
                parse(with("action", json!(raw))).unwrap().signal.action,
                action
            );
        }
        assert_eq!(error_of(with("action", json!("hold"))).field, "action");
    }

    #[test]
    fn closes_are_reduce_only_and_trade_the_opposite_side() {
        let close_long = parse(with("action", json!("CLOSE_LONG"))).unwrap().signal;
        assert!(close_long.reduce_only);
        assert_eq!(close_long.action.side(), Side::Sell);
        let close_short = parse(with("action", json!("CLOSE_SHORT"))).unwrap().signal;
        assert_eq!(close_short.action.side(), Side::Buy);
        let err = error_of(json!({
            "action": "CLOSE_LONG", "symbol": "BTCUSDT", "quantity": 1, "reduceOnly": false
        }));
        assert_eq!(err.field, "reduceOnly");
    }

    #[test]
    fn every_refusal_names_its_field() {
        let cases = [
            (json!({"symbol": "BTCUSDT", "quantity": 1}), "action"),
            (json!({"action": "LONG", "quantity": 1}), "symbol"),
            (json!({"action": "LONG", "symbol": "BTCUSDT"}), "quantity"),
            (with("quantity", json!(0)), "quantity"),
            (with("quantity", json!(-1)), "quantity"),
            (with("quantity", json!("abc")), "quantity"),
            (with("quantity", json!("NaN")), "quantity"),
            (with("quantity", json!(true)), "quantity"),
            (with("quantity", json!([1])), "quantity"),
            (with("symbol", json!(42)), "symbol"),
            (with("exchange", json!("kraken")), "exchange"),
            (with("leverage", json!(0)), "leverage"),
            (with("leverage", json!(126)), "leverage"),
            (with("leverage", json!(2.5)), "leverage"),
            (with("quantity", json!("1e28")), "quantity"),
            (with("leverage", json!("ten")), "leverage"),
            (with("orderType", json!("stop")), "orderType"),
            (with("orderType", json!("limit")), "price"),
            (with("price", json!(-3)), "price"),
            (with("reduceOnly", json!("yes")), "reduceOnly"),
            (with("test", json!(1)), "test"),
            (with("idempotencyKey", json!("")), "idempotencyKey"),
            (with("idempotencyKey", json!("has space")), "idempotencyKey"),
            (with("stopLoss", json!(0)), "stopLoss"),
            (with("takeProfit", json!({})), "takeProfit"),
            (with("levrage", json!(10)), "levrage"),
        ];
        for (body, field) in cases {
            let err = error_of(body.clone());
            assert_eq!(err.field, field, "body {body} gave {err}");
        }
    }

    #[test]
    fn optional_fields_are_parsed() {
        let parsed = parse(json!({
            "apiKey": "ignored here",
            "exchange": "Bybit",
            "action": "SELL",
            "symbol": "BYBIT:ETHUSDT.P",
            "quantity": "1.50",
            "leverage": "10",
            "orderType": "LIMIT",
            "price": 2500.5,
            "reduceOnly": "true",
            "test": true,
            "idempotencyKey": "alert-42",
            "stopLoss": 2600,
            "takeProfit": "2400",
        }))
        .unwrap();
        let signal = parsed.signal;
        assert_eq!(signal.exchange, Some(ExchangeName::Bybit));
        assert_eq!(signal.symbol.as_str(), "ETHUSDT");
        assert_eq!(signal.quantity.get().to_string(), "1.5");
        assert_eq!(signal.leverage.map(Leverage::get), Some(10));
        assert_eq!(signal.order_type, OrderType::Limit);
        assert_eq!(
            signal.price.map(|p| p.get().to_string()),
            Some("2500.5".into())
        );
        assert!(signal.reduce_only && signal.test);
        assert_eq!(parsed.idempotency_key.unwrap().as_str(), "alert-42");
    }

    #[test]
    fn nulls_count_as_absent() {
        let parsed = parse(with("leverage", Value::Null)).unwrap();
        assert_eq!(parsed.signal.leverage, None);
    }

    #[test]
    fn signal_round_trips_through_its_wire_form_exactly() {
        let signal = parse(with("price", json!("68425.10"))).unwrap().signal;
        let wire = serde_json::to_string(&signal).unwrap();
        assert!(wire.contains(r#""quantity":"0.005""#), "{wire}");
        let back: Signal = serde_json::from_str(&wire).unwrap();
        assert_eq!(back, signal);
    }
}
