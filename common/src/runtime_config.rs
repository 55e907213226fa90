//! The operator's settings from the `config` table (kill switch, routing, webhook key),
//! cached in memory and refreshed the moment they change: the table's trigger NOTIFYs
//! `hoox_config`, and a periodic re-read covers notifications lost while the listening
//! connection was down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::retry::{sleep_unless_cancelled, Reconnect};
use crate::risk;
use crate::signal::{ExchangeName, Leverage, Symbol};

/// `trade:kill_switch`: `true` stops all trading.
pub const KILL_SWITCH: &str = "trade:kill_switch";
/// `webhooks:api_key`: overrides `HOOX_WEBHOOK_API_KEY`; stored as `sha256:<hex>`.
pub const WEBHOOK_API_KEY: &str = "webhooks:api_key";
/// `exchanges:default_routing`: where signals without an exchange go.
pub const DEFAULT_ROUTING: &str = "exchanges:default_routing";
/// `paper:latency_ms`: simulated round trip of the paper exchange.
pub const PAPER_LATENCY_MS: &str = "paper:latency_ms";
/// The notification channel of the `config` table.
pub const CHANNEL: &str = "hoox_config";
/// The prefix that marks a stored key as a SHA-256 digest rather than the key itself.
pub const SHA256_PREFIX: &str = "sha256:";

/// How often the table is re-read even without a notification.
const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// `exchanges:routing:<SYMBOL>`: a per-symbol routing override.
pub fn routing_key(symbol: &Symbol) -> String {
    format!("exchanges:routing:{symbol}")
}

/// `paper:price:<SYMBOL>`: the paper exchange's market price for a symbol.
pub fn paper_price_key(symbol: &Symbol) -> String {
    format!("paper:price:{symbol}")
}

/// Whether a config value turns a switch on (`true`, `on`, `1`, `yes`).
pub fn is_on(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "true" | "on" | "1" | "yes"
    )
}

/// The stored form of a webhook key: `sha256:<hex>`, so the table never holds it.
pub fn hash_secret(secret: &str) -> String {
    format!(
        "{SHA256_PREFIX}{}",
        hex::encode(Sha256::digest(secret.as_bytes()))
    )
}

/// Compares a presented secret with an expected one (plain or `sha256:<hex>`) in
/// constant time: both sides are hashed first, so neither length nor content leaks.
pub fn secret_matches(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = match expected.strip_prefix(SHA256_PREFIX) {
        Some(hex_digest) => match hex::decode(hex_digest) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            _ => return false,
        },
        None => Sha256::digest(expected.as_bytes()).to_vec(),
    };
    presented.as_slice().ct_eq(&expected).into()
}

/// Maximum `paper:latency_ms` honoured.
pub const MAX_PAPER_LATENCY_MS: u64 = 10_000;

/// Shortest webhook key accepted, in characters (not bytes).
pub const MIN_API_KEY_CHARS: usize = 16;

/// A webhook key too short to resist guessing, or with whitespace in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a webhook key takes at least {MIN_API_KEY_CHARS} characters and no whitespace")]
pub struct WeakApiKey;

/// Checks a webhook key, from `webhooks:api_key` or `HOOX_WEBHOOK_API_KEY`: at least
/// [`MIN_API_KEY_CHARS`] characters, counted as characters so that a few multi-byte
/// ones do not pass for a long key, and no whitespace.
pub fn check_api_key(key: &str) -> Result<(), WeakApiKey> {
    if key.chars().count() < MIN_API_KEY_CHARS || key.chars().any(char::is_whitespace) {
        return Err(WeakApiKey);
    }
    Ok(())
}

/// Writes `value` under `key` in the `config` table, or removes `key` when `None`.
pub async fn put(
    conn: &mut PgConnection,
    key: &str,
    value: Option<&str>,
) -> Result<(), sqlx::Error> {
    match value {
        Some(value) => sqlx::query(
            r#"
            INSERT INTO config (key, value) VALUES ($1, $2)
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
            "#,
        )
        .bind(key)
        .bind(value),
        None => sqlx::query("DELETE FROM config WHERE key = $1").bind(key),
    }
    .execute(conn)
    .await
    .map(drop)
}

/// The keys an operator may set, as shown in help and errors.
pub const KNOWN_KEYS: [&str; 12] = [
    KILL_SWITCH,
    WEBHOOK_API_KEY,
    DEFAULT_ROUTING,
    "exchanges:routing:<SYMBOL>",
    "paper:price:<SYMBOL>",
    PAPER_LATENCY_MS,
    risk::ALLOWED_SYMBOLS,
    "risk:max_quantity[:<SYMBOL>]",
    "risk:max_leverage[:<SYMBOL>]",
    "risk:max_notional[:<SYMBOL>]",
    "risk:max_position[:<SYMBOL>]",
    risk::MAX_DAILY_LOSS,
];

/// A config entry as it will be stored: the key normalised (`exchanges:routing:btcusdt.p`
/// is `exchanges:routing:BTCUSDT`) and the value validated and canonical (a webhook key
/// becomes its SHA-256 digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The normalised key.
    pub key: String,
    /// The value to store.
    pub value: String,
}

/// Normalises a key, refusing one hoox does not know.
pub fn normalise_key(key: &str) -> Result<String, String> {
    let key = key.trim();
    let symbol_key = |prefix: &str| -> Option<Result<String, String>> {
        let raw = key.strip_prefix(prefix)?;
        Some(
            Symbol::parse(raw)
                .map(|symbol| format!("{prefix}{symbol}"))
                .map_err(|e| format!("config key `{key}`: {e}")),
        )
    };
    let per_symbol_limit = || {
        risk::PER_SYMBOL
            .iter()
            .find_map(|base| symbol_key(&format!("{base}:")))
    };
    if let Some(normalised) = symbol_key("exchanges:routing:")
        .or_else(|| symbol_key("paper:price:"))
        .or_else(per_symbol_limit)
    {
        return normalised;
    }
    if [
        KILL_SWITCH,
        WEBHOOK_API_KEY,
        DEFAULT_ROUTING,
        PAPER_LATENCY_MS,
        risk::ALLOWED_SYMBOLS,
        risk::MAX_DAILY_LOSS,
    ]
    .contains(&key)
        || risk::PER_SYMBOL.contains(&key)
    {
        return Ok(key.to_owned());
    }
    Err(format!(
        "unknown config key `{key}`; known keys: {}",
        KNOWN_KEYS.join(", ")
    ))
}

/// Validates `value` for `key`; the error names the key and what it takes.
pub fn validate(key: &str, value: &str) -> Result<Setting, String> {
    let key = normalise_key(key)?;
    let trimmed = value.trim();
    let value = if key == KILL_SWITCH {
        match trimmed.to_ascii_lowercase().as_str() {
            "true" | "on" | "1" | "yes" => "true".to_owned(),
            "false" | "off" | "0" | "no" => "false".to_owned(),
            _ => return Err(format!("{key} takes true or false, not `{value}`")),
        }
    } else if key == WEBHOOK_API_KEY {
        check_api_key(value).map_err(|err| format!("{key}: {err}"))?;
        hash_secret(value)
    } else if key == DEFAULT_ROUTING || key.starts_with("exchanges:routing:") {
        trimmed
            .parse::<ExchangeName>()
            .map_err(|e| format!("{key}: {e}"))?
            .as_str()
            .to_owned()
    } else if key.starts_with("paper:price:") {
        match trimmed.parse::<rust_decimal::Decimal>() {
            Ok(price) if price > rust_decimal::Decimal::ZERO => price.normalize().to_string(),
            _ => return Err(format!("{key} takes a price above 0, not `{value}`")),
        }
    } else if key == risk::ALLOWED_SYMBOLS {
        let symbols = risk::parse_symbols(trimmed).map_err(|e| format!("{key}: {e}"))?;
        let mut names: Vec<String> = symbols.iter().map(ToString::to_string).collect();
        names.sort();
        names.dedup();
        names.join(",")
    } else if key == risk::MAX_LEVERAGE || key.starts_with("risk:max_leverage:") {
        match trimmed.parse::<u32>().map(Leverage::new) {
            Ok(Ok(leverage)) => leverage.get().to_string(),
            _ => {
                return Err(format!(
                    "{key} takes a whole leverage from 1 to 125, not `{value}`"
                ))
            }
        }
    } else if key.starts_with("risk:") {
        match trimmed.parse::<rust_decimal::Decimal>() {
            Ok(limit) if limit > rust_decimal::Decimal::ZERO => limit.normalize().to_string(),
            _ => return Err(format!("{key} takes a number above 0, not `{value}`")),
        }
    } else {
        match trimmed.parse::<u64>() {
            Ok(ms) if ms <= MAX_PAPER_LATENCY_MS => ms.to_string(),
            _ => {
                return Err(format!(
                    "{key} takes whole milliseconds from 0 to {MAX_PAPER_LATENCY_MS}, not `{value}`"
                ))
            }
        }
    };
    Ok(Setting { key, value })
}

/// A snapshot of the `config` table.
pub type Snapshot = Arc<HashMap<String, String>>;

/// The live view of the `config` table.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    current: watch::Receiver<Snapshot>,
}

impl RuntimeConfig {
    /// Waits for the database (created and migrated when missing) and starts the live
    /// view of its config; `None` when `token` is cancelled first.
    pub async fn open(
        database_url: &secrecy::SecretString,
        max_connections: u32,
        token: &CancellationToken,
    ) -> Result<Option<(PgPool, Self)>, sqlx::Error> {
        let Some(pool) = crate::db::connect_with_retry(database_url, max_connections, token).await
        else {
            return Ok(None);
        };
        let config = Self::start(pool.clone(), token.clone()).await?;
        Ok(Some((pool, config)))
    }

    /// Loads the table and keeps the copy fresh until `token` is cancelled.
    pub async fn start(pool: PgPool, token: CancellationToken) -> Result<Self, sqlx::Error> {
        let (tx, rx) = watch::channel(Arc::new(load(&pool).await?));
        tokio::spawn(refresh(pool, tx, token));
        Ok(Self { current: rx })
    }

    /// A fixed view, for tests and one-shot tools.
    pub fn fixed(values: HashMap<String, String>) -> Self {
        let (_tx, rx) = watch::channel(Arc::new(values));
        Self { current: rx }
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.current.borrow().get(key).cloned()
    }

    /// Whether the kill switch is on.
    pub fn kill_switch(&self) -> bool {
        self.get(KILL_SWITCH).is_some_and(|v| is_on(&v))
    }

    /// The exchange for signals without one: the symbol's override, else the default
    /// route, else `paper`. A value that names no exchange is an error naming the key.
    pub fn route(&self, symbol: &Symbol) -> Result<ExchangeName, String> {
        let snapshot = self.current.borrow();
        let routing_key = routing_key(symbol);
        let (key, value) = match snapshot.get(&routing_key) {
            Some(value) => (routing_key.as_str(), value),
            None => match snapshot.get(DEFAULT_ROUTING) {
                Some(value) => (DEFAULT_ROUTING, value),
                None => return Ok(ExchangeName::Paper),
            },
        };
        value.parse().map_err(|e| format!("config {key}: {e}"))
    }

    /// Waits until `predicate` holds for the current snapshot.
    pub async fn wait_until(&self, predicate: impl Fn(&HashMap<String, String>) -> bool) {
        let mut rx = self.current.clone();
        // An error means the refresher stopped: the snapshot can no longer change.
        let _ = rx.wait_for(|snapshot| predicate(snapshot)).await;
    }
}

async fn load(pool: &PgPool) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT key, value FROM config")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().collect())
}

async fn refresh(pool: PgPool, tx: watch::Sender<Snapshot>, token: CancellationToken) {
    let reload = |tx: &watch::Sender<Snapshot>, values: HashMap<String, String>| {
        tx.send_if_modified(|current| {
            let changed = **current != values;
            if changed {
                *current = Arc::new(values);
            }
            changed
        });
    };
    let mut reconnect = Reconnect::new();
    while !token.is_cancelled() {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listening.await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "config listener cannot LISTEN; retrying");
                if !sleep_unless_cancelled(reconnect.next_delay(), &token).await {
                    return;
                }
                continue;
            }
        };
        reconnect = Reconnect::new();
        // Changes made before LISTEN took effect are read here.
        if let Ok(values) = load(&pool).await {
            reload(&tx, values);
        }
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                notification = listener.try_recv() => match notification {
                    Ok(Some(_)) => {}
                    // `None`: the connection dropped; notifications may have been lost.
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "config listener failed; reconnecting");
                        break;
                    }
                },
                _ = tick.tick() => {}
            }
            match load(&pool).await {
                Ok(values) => reload(&tx, values),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot re-read config; keeping the last copy")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_plain_or_hashed_and_nothing_else() {
        assert!(secret_matches("s3cret", "s3cret"));
        assert!(secret_matches("s3cret", &hash_secret("s3cret")));
        assert!(!secret_matches("s3cret", "s3cret "));
        assert!(!secret_matches("", "s3cret"));
        assert!(!secret_matches("s3cret", &hash_secret("other")));
        assert!(!secret_matches("s3cret", "sha256:zz"));
    }

    #[test]
    fn routing_prefers_symbol_override_then_default_then_paper() {
        let btc = Symbol::parse("BTCUSDT").unwrap();
        let eth = Symbol::parse("ETHUSDT").unwrap();
        assert_eq!(
            RuntimeConfig::fixed(HashMap::new()).route(&btc),
            Ok(ExchangeName::Paper)
        );
        let config = RuntimeConfig::fixed(HashMap::from([
            (DEFAULT_ROUTING.to_owned(), "bybit".to_owned()),
            (routing_key(&eth), "Binance".to_owned()),
        ]));
        assert_eq!(config.route(&btc), Ok(ExchangeName::Bybit));
        assert_eq!(config.route(&eth), Ok(ExchangeName::Binance));
        let broken =
            RuntimeConfig::fixed(HashMap::from([(routing_key(&btc), "kraken".to_owned())]));
        assert!(broken
            .route(&btc)
            .unwrap_err()
            .contains("exchanges:routing:BTCUSDT"));
    }

    #[test]
    fn settings_are_validated_and_normalised() {
        let ok = |k: &str, v: &str| validate(k, v).unwrap();
        assert_eq!(ok(KILL_SWITCH, "ON").value, "true");
        assert_eq!(ok(DEFAULT_ROUTING, " Bybit ").value, "bybit");
        assert_eq!(
            ok("exchanges:routing:BYBIT:btcusdt.p", "mexc"),
            Setting {
                key: "exchanges:routing:BTCUSDT".into(),
                value: "mexc".into()
            }
        );
        assert_eq!(ok("paper:price:ETHUSDT", "3500.50").value, "3500.5");
        assert_eq!(ok(PAPER_LATENCY_MS, "250").value, "250");
        let key = ok(WEBHOOK_API_KEY, "a-long-enough-webhook-key");
        assert!(secret_matches("a-long-enough-webhook-key", &key.value));
        assert!(!key.value.contains("long-enough"));

        let err = |k: &str, v: &str| validate(k, v).unwrap_err();
        assert!(err(DEFAULT_ROUTING, "kraken").contains("unknown exchange `kraken`"));
        assert!(err("exchanges:routing:BTC-USDT", "bybit").contains("exchanges:routing:BTC-USDT"));
        assert!(err(KILL_SWITCH, "maybe").contains("true or false"));
        assert!(err(WEBHOOK_API_KEY, "short").contains("at least 16"));
        assert!(err("paper:price:BTCUSDT", "-1").contains("above 0"));
        assert!(err(PAPER_LATENCY_MS, "99999").contains("0 to 10000"));
        assert!(err("trade:killswitch", "true").contains("unknown config key `trade:killswitch`"));
    }

    #[test]
    fn risk_limits_are_validated_and_normalised() {
        let ok = |k: &str, v: &str| validate(k, v).unwrap();
        assert_eq!(
            ok("risk:max_quantity:btcusdt.p", "0.50"),
            Setting {
                key: "risk:max_quantity:BTCUSDT".into(),
                value: "0.5".into()
            }
        );
        assert_eq!(ok(risk::MAX_NOTIONAL, " 25000 ").value, "25000");
        assert_eq!(ok("risk:max_leverage:ETHUSDT", "20").value, "20");
        assert_eq!(
            ok(risk::ALLOWED_SYMBOLS, "ethusdt, BTCUSDT.P,ETHUSDT").value,
            "BTCUSDT,ETHUSDT"
        );
        assert_eq!(ok(risk::ALLOWED_SYMBOLS, "").value, "");

        let err = |k: &str, v: &str| validate(k, v).unwrap_err();
        assert!(err(risk::MAX_NOTIONAL, "0").contains("risk:max_notional"));
        assert!(err("risk:max_quantity:BTCUSDT", "lots").contains("above 0"));
        assert!(err(risk::MAX_LEVERAGE, "200").contains("1 to 125"));
        assert!(err(risk::MAX_LEVERAGE, "2.5").contains("1 to 125"));
        assert!(err(risk::ALLOWED_SYMBOLS, "BTCUSDT,BTC-USDT").contains("BTC-USDT"));
        assert!(err("risk:max_qty", "1").contains("unknown config key"));
    }

    #[test]
    fn webhook_keys_are_measured_in_characters_not_bytes() {
        assert_eq!(check_api_key("fifteen-chars-k"), Err(WeakApiKey));
        assert_eq!(check_api_key("sixteen-chars-ky"), Ok(()));
        let eight_two_byte_chars = "éééééééé";
        assert_eq!(eight_two_byte_chars.len(), 16);
        assert_eq!(check_api_key(eight_two_byte_chars), Err(WeakApiKey));
        assert_eq!(check_api_key(&"é".repeat(16)), Ok(()));
        assert_eq!(check_api_key("sixteen chars ky"), Err(WeakApiKey));
        assert!(validate(WEBHOOK_API_KEY, eight_two_byte_chars)
            .unwrap_err()
            .contains("at least 16 characters"));
    }

    #[test]
    fn switch_values() {
        for on in ["true", "ON", "1", "yes"] {
            assert!(is_on(on));
        }
        for off in ["false", "off", "0", "", "nope"] {
            assert!(!is_on(off));
        }
    }
}
