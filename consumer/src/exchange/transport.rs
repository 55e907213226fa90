//! What every real exchange shares: one HTTP client with a deadline, the keys and host
//! of each environment (live and testnet), the exchange's clock, and how a failed call
//! is classified before the exchange's own answer is read.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hoox_common::signal::{ExchangeName, Symbol};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{ErrorClass, ExchangeError};

/// How long a measured clock offset is trusted before it is measured again.
const CLOCK_TTL: Duration = Duration::from_secs(30 * 60);

/// An API key and its secret; neither is ever printed.
#[derive(Clone)]
pub struct Credentials {
    api_key: SecretString,
    secret: SecretString,
}

impl Credentials {
    /// Keys from their two settings; `None` unless both are set.
    pub fn from_pair(api_key: Option<SecretString>, secret: Option<SecretString>) -> Option<Self> {
        Some(Self {
            api_key: api_key?,
            secret: secret?,
        })
    }

    /// The API key, as sent in a header.
    pub fn api_key(&self) -> &str {
        self.api_key.expose_secret()
    }

    /// Lowercase hex HMAC-SHA256 of `payload` under the secret.
    pub fn sign(&self, payload: &str) -> String {
        hoox_common::signing::hmac_sha256_hex(
            self.secret.expose_secret().as_bytes(),
            payload.as_bytes(),
        )
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials([REDACTED])")
    }
}

/// Where an exchange's server time is read: a public path and the JSON pointer of its
/// milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct TimeSource {
    /// The path, e.g. `/fapi/v1/time`.
    pub path: &'static str,
    /// Where the milliseconds are in the answer, e.g. `/serverTime`.
    pub pointer: &'static str,
}

/// One environment of an exchange (live, or testnet/demo): its host, its keys, and
/// the offset of its clock from ours.
#[derive(Debug)]
pub struct Venue {
    exchange: ExchangeName,
    testnet: bool,
    base_url: Option<String>,
    credentials: Option<Credentials>,
    time: TimeSource,
    offset_ms: AtomicI64,
    synced_at: Mutex<Option<Instant>>,
}

impl Venue {
    fn new(
        exchange: ExchangeName,
        testnet: bool,
        base_url: Option<String>,
        credentials: Option<Credentials>,
        time: TimeSource,
    ) -> Self {
        Self {
            exchange,
            testnet,
            base_url: base_url.map(|url| url.trim_end_matches('/').to_owned()),
            credentials,
            time,
            offset_ms: AtomicI64::new(0),
            synced_at: Mutex::new(None),
        }
    }

    /// Whether orders can be signed and sent here.
    pub fn is_usable(&self) -> bool {
        self.base_url.is_some() && self.credentials.is_some()
    }

    /// The keys, or a fatal error naming what is missing.
    pub fn credentials(&self) -> Result<&Credentials, ExchangeError> {
        match (&self.base_url, &self.credentials) {
            (Some(_), Some(credentials)) => Ok(credentials),
            (None, _) => Err(self.fatal(format!("no {} base URL configured", self.environment()))),
            (Some(_), None) => Err(self.fatal(format!(
                "no {} API credentials configured",
                self.environment()
            ))),
        }
    }

    /// `https://host/path`.
    pub fn url(&self, path: &str) -> Result<String, ExchangeError> {
        let base = self
            .base_url
            .as_deref()
            .ok_or_else(|| self.fatal(format!("no {} base URL configured", self.environment())))?;
        Ok(format!("{base}{path}"))
    }

    fn environment(&self) -> String {
        format!(
            "{}{}",
            self.exchange.as_str().to_ascii_uppercase(),
            if self.testnet { " testnet" } else { "" }
        )
    }

    fn fatal(&self, message: String) -> ExchangeError {
        ExchangeError::new(ErrorClass::Fatal, message)
    }

    /// The exchange's current time in ms, measuring the clock offset first when it
    /// was never measured or is stale.
    pub async fn timestamp(&self, http: &Http) -> Result<i64, ExchangeError> {
        let fresh = self
            .synced_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < CLOCK_TTL);
        if !fresh {
            self.sync(http).await?;
        }
        Ok(now_ms() + self.offset_ms.load(Ordering::Relaxed))
    }

    /// Measures the offset of the exchange's clock: its time against the middle of our
    /// round trip.
    async fn sync(&self, http: &Http) -> Result<(), ExchangeError> {
        let url = self.url(self.time.path)?;
        let before = now_ms();
        let reply = http.send(self.exchange, http.get(&url), Write::No).await?;
        let after = now_ms();
        let server = reply
            .json
            .as_ref()
            .and_then(|body| body.pointer(self.time.pointer))
            .and_then(integer)
            .ok_or_else(|| {
                ExchangeError::new(
                    ErrorClass::Retryable,
                    format!(
                        "{} server time unreadable: {}",
                        self.exchange,
                        reply.excerpt()
                    ),
                )
            })?;
        let offset = server - (before + after) / 2;
        self.offset_ms.store(offset, Ordering::Relaxed);
        if let Ok(mut at) = self.synced_at.lock() {
            *at = Some(Instant::now());
        }
        tracing::debug!(exchange = %self.exchange, testnet = self.testnet, offset_ms = offset, "exchange clock measured");
        Ok(())
    }

    /// Runs a signed call with this environment's keys and the exchange's time, after
    /// checking the keys are set (an environment without them fails here, before
    /// anything is sent). When the exchange refuses the timestamp, measures its clock
    /// again and sends once more (the refused request did nothing, so sending it again
    /// is safe).
    pub async fn signed<'v, T, F, Fut>(
        &'v self,
        http: &Http,
        refused_timestamp: impl Fn(&ExchangeError) -> bool,
        call: F,
    ) -> Result<T, ExchangeError>
    where
        F: Fn(&'v Credentials, i64) -> Fut,
        Fut: Future<Output = Result<T, ExchangeError>>,
    {
        let credentials = self.credentials()?;
        match call(credentials, self.timestamp(http).await?).await {
            Err(err) if refused_timestamp(&err) => {
                tracing::warn!(exchange = %self.exchange, error = %err, "timestamp refused; measuring the exchange clock again");
                self.sync(http).await?;
                call(credentials, self.timestamp(http).await?).await
            }
            other => other,
        }
    }
}

/// Where one environment is and the keys it takes, as configured.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// The host, e.g. `https://api.bybit.com`; none: this environment is not set up.
    pub base_url: Option<String>,
    /// The keys; none: orders cannot be signed.
    pub credentials: Option<Credentials>,
}

/// An exchange's live and testnet environments.
#[derive(Debug)]
pub struct Venues {
    live: Venue,
    testnet: Venue,
}

impl Venues {
    /// Both environments of `exchange`, reading server time from `time`.
    pub fn new(
        exchange: ExchangeName,
        live: Environment,
        testnet: Environment,
        time: TimeSource,
    ) -> Self {
        Self {
            live: Venue::new(exchange, false, live.base_url, live.credentials, time),
            testnet: Venue::new(exchange, true, testnet.base_url, testnet.credentials, time),
        }
    }

    /// The testnet environment when `testnet`, else the live one.
    pub fn get(&self, testnet: bool) -> &Venue {
        if testnet {
            &self.testnet
        } else {
            &self.live
        }
    }
}

/// Milliseconds since the epoch, by our clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether a request may have changed something at the exchange if it went unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// It places an order: an unanswered request may have traded.
    Order,
    /// It reads, or changes a setting that is safe to set again.
    No,
}

impl Write {
    /// What a request whose outcome is unknown (no answer, a 5xx, an unreadable reply)
    /// means: an order may exist, so it is looked up; anything else is simply retried.
    pub fn unknown_outcome(self) -> ErrorClass {
        match self {
            Self::Order => ErrorClass::Ambiguous,
            Self::No => ErrorClass::Retryable,
        }
    }
}

/// An exchange's answer, whatever its status.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body, parsed when it is JSON.
    pub json: Option<Value>,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// The start of the body, for error messages.
    pub fn excerpt(&self) -> String {
        let text = self.text.trim();
        match text.char_indices().nth(200) {
            Some((end, _)) => format!("HTTP {}: {}…", self.status.as_u16(), &text[..end]),
            None if text.is_empty() => format!("HTTP {}", self.status.as_u16()),
            None => format!("HTTP {}: {text}", self.status.as_u16()),
        }
    }

    /// The class an HTTP status alone gives, when it settles the matter: rate limits
    /// and bans are retryable; a 5xx or gateway timeout leaves an order's fate unknown.
    pub fn status_class(&self, write: Write) -> Option<ErrorClass> {
        let status = self.status;
        if status == StatusCode::TOO_MANY_REQUESTS || status.as_u16() == 418 {
            return Some(ErrorClass::Retryable);
        }
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            return Some(write.unknown_outcome());
        }
        None
    }
}

/// The HTTP client every exchange shares.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    timeout: Duration,
}

impl Http {
    /// A client giving up on a call after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("hoox/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend is compiled in");
        Self { client, timeout }
    }

    /// A GET request.
    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.client.get(url)
    }

    /// A request of `method`.
    pub fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends `request` and reads the whole answer. A request that could not connect is
    /// retryable (nothing was sent); one that was sent but not answered in time is
    /// ambiguous when it places an order.
    pub async fn send(
        &self,
        exchange: ExchangeName,
        request: reqwest::RequestBuilder,
        write: Write,
    ) -> Result<Reply, ExchangeError> {
        let unanswered = |err: reqwest::Error| {
            // The URL can carry a signature: never repeat it.
            let err = err.without_url();
            if err.is_connect() {
                return ExchangeError::new(
                    ErrorClass::Retryable,
                    format!("cannot connect to {exchange}: {err}"),
                );
            }
            let what = if err.is_timeout() {
                format!("no answer from {exchange} within {:?}", self.timeout)
            } else {
                format!("{exchange} connection failed: {err}")
            };
            let what = match write {
                Write::Order => format!("{what}; the order may have been placed"),
                Write::No => what,
            };
            ExchangeError::new(write.unknown_outcome(), what)
        };
        // A request that cannot be built was never sent.
        let request = request.build().map_err(|err| {
            ExchangeError::new(
                ErrorClass::Fatal,
                format!(
                    "cannot build a request to {exchange}: {}",
                    err.without_url()
                ),
            )
        })?;
        // The path names the endpoint; the query can carry a signature and is dropped.
        let endpoint = request.url().path().to_owned();
        let started = std::time::Instant::now();
        let answered = async {
            let response = self.client.execute(request).await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        }
        .await;
        hoox_common::metrics::exchange_request(exchange.as_str(), &endpoint, started.elapsed());
        let (status, text) = answered.map_err(unanswered)?;
        let json = serde_json::from_str(&text).ok();
        Ok(Reply { status, json, text })
    }
}

/// A decimal from a JSON string or number, kept exact.
pub fn decimal(value: &Value) -> Option<Decimal> {
    match value {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n
            .to_string()
            .parse()
            .ok()
            .or_else(|| Decimal::from_scientific(&n.to_string()).ok()),
        _ => None,
    }
}

/// An amount from a JSON string or number, an empty string meaning zero (as Bybit
/// gives a coin's unused fields).
pub fn amount(value: &Value) -> Option<Decimal> {
    match value {
        Value::String(s) if s.trim().is_empty() => Some(Decimal::ZERO),
        other => decimal(other),
    }
}

/// The error of an answer that does not hold the `what` it should: the call reached
/// the exchange, but what it holds cannot be read, so nothing is assumed.
pub fn unreadable(exchange: ExchangeName, what: &str, value: &Value) -> ExchangeError {
    let shown = value.to_string();
    let excerpt = match shown.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &shown[..end]),
        None => shown,
    };
    ExchangeError::new(
        ErrorClass::Retryable,
        format!("{exchange} answered an unreadable {what}: {excerpt}"),
    )
}

/// The price at `pointer` in a ticker's answer: a decimal above zero, or an error that
/// says the ticker could not be read.
pub fn price_at(
    exchange: ExchangeName,
    body: &Value,
    pointer: &str,
) -> Result<Decimal, ExchangeError> {
    body.pointer(pointer)
        .and_then(decimal)
        .filter(|price| *price > Decimal::ZERO)
        .ok_or_else(|| unreadable(exchange, "ticker", body))
}

/// An instrument as an exchange names it (`BTCUSDT`, MEXC futures' `BTC_USDT`), named
/// as signals name it.
pub fn exchange_symbol(exchange: ExchangeName, raw: &str) -> Result<Symbol, ExchangeError> {
    Symbol::parse(&raw.replace('_', "")).map_err(|why| {
        ExchangeError::new(
            ErrorClass::Retryable,
            format!("{exchange} named an instrument `{raw}` hoox cannot read: {why}"),
        )
    })
}

/// An integer from a JSON string or number.
pub fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// A JSON string or number as text (exchange order ids come as either).
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `PartiallyFilled`, `PARTIALLY_FILLED` → `partially_filled`.
pub fn status_name(status: &str) -> String {
    let mut out = String::with_capacity(status.len() + 4);
    let mut previous_lower = false;
    for c in status.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A query string of `params` in the given order, values percent-encoded.
pub fn query_string(params: &[(&str, String)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_stay_exact_from_strings_and_numbers() {
        let body: Value =
            serde_json::from_str(r#"{"a":"0.1","b":0.30000000000000004,"c":1e-3}"#).unwrap();
        assert_eq!(decimal(&body["a"]), Some("0.1".parse().unwrap()));
        assert_eq!(
            decimal(&body["b"]),
            Some("0.30000000000000004".parse().unwrap())
        );
        assert_eq!(decimal(&body["c"]), Some("0.001".parse().unwrap()));
        assert_eq!(decimal(&json!(null)), None);
    }

    #[test]
    fn statuses_read_the_same_from_every_exchange() {
        assert_eq!(status_name("PartiallyFilled"), "partially_filled");
        assert_eq!(status_name("PARTIALLY_FILLED"), "partially_filled");
        assert_eq!(status_name("Filled"), "filled");
        assert_eq!(status_name("NEW"), "new");
    }

    #[test]
    fn query_strings_keep_order_and_encode_values() {
        assert_eq!(
            query_string(&[("symbol", "BTCUSDT".into()), ("note", "a,b c".into())]),
            "symbol=BTCUSDT&note=a%2Cb+c"
        );
    }

    #[test]
    fn credentials_never_show() {
        let credentials = Credentials::from_pair(
            Some(SecretString::from("key-123".to_owned())),
            Some(SecretString::from("secret-456".to_owned())),
        )
        .unwrap();
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("key-123") && !shown.contains("secret-456"));
        assert!(Credentials::from_pair(Some(SecretString::from("k".to_owned())), None).is_none());
    }
}
