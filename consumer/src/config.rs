//! The consumer's settings: every flag also reads its environment variable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hoox_common::config::parse_secret;
use secrecy::SecretString;

use crate::batch::BatchBounds;
use crate::exchange::binance::{self, Binance};
use crate::exchange::bybit::{self, Bybit};
use crate::exchange::mexc::{self, Mexc};
use crate::exchange::transport::{Credentials, Environment, Http};
use crate::exchange::Exchange;

/// Settings of the batch consumer (besides the shared [`hoox_common::config::ServiceArgs`]).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerArgs {
    /// Listen address of `/healthz` and `/readyz`.
    #[arg(long, env = "HOOX_CONSUMER_ADDR", default_value = "127.0.0.1:9090")]
    pub consumer_addr: SocketAddr,

    /// Most signals executed in one batch.
    #[arg(long, env = "HOOX_BATCH_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,

    /// Longest time spent filling a batch after its first signal, in ms. A lone signal
    /// never waits for it.
    #[arg(long, env = "HOOX_BATCH_TIMEOUT_MS", default_value_t = 1000)]
    pub batch_timeout_ms: u64,

    /// Signals older than this (seconds since ingest accepted them) are dead-lettered, never executed.
    #[arg(long, env = "HOOX_SIGNAL_MAX_AGE_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub signal_max_age_secs: u64,

    #[command(flatten)]
    pub exchanges: ExchangeArgs,

    #[command(flatten)]
    pub telegram: hoox_common::telegram::TelegramArgs,
}

impl ConsumerArgs {
    /// The batch bounds these settings give.
    pub fn batch_bounds(&self) -> BatchBounds {
        BatchBounds {
            size: usize::from(self.batch_size),
            timeout: Duration::from_millis(self.batch_timeout_ms),
        }
    }
}

/// Keys, hosts and markets of the real exchanges. A missing key pair leaves that
/// environment unusable: a signal routed there is dead-lettered, naming it.
#[derive(Debug, Clone, clap::Args)]
pub struct ExchangeArgs {
    /// How long an exchange call may take, in ms; an order unanswered by then is
    /// looked up by its client order id before anything else.
    #[arg(long, env = "HOOX_EXCHANGE_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub exchange_timeout_ms: u64,

    /// How long a signed request stays valid after its timestamp, in ms (`recvWindow`).
    #[arg(long, env = "HOOX_RECV_WINDOW_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub recv_window_ms: u64,

    #[command(flatten)]
    pub bybit: BybitArgs,

    #[command(flatten)]
    pub binance: BinanceArgs,

    #[command(flatten)]
    pub mexc: MexcArgs,
}

/// Bybit V5.
#[derive(Debug, Clone, clap::Args)]
pub struct BybitArgs {
    /// Bybit API key.
    #[arg(long, env = "BYBIT_API_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub bybit_api_key: Option<SecretString>,
    /// Bybit API secret.
    #[arg(long, env = "BYBIT_API_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub bybit_api_secret: Option<SecretString>,
    /// Bybit host.
    #[arg(long, env = "BYBIT_BASE_URL", default_value = bybit::LIVE_URL)]
    pub bybit_base_url: String,
    /// Bybit testnet API key (signals with `"test": true`).
    #[arg(long, env = "BYBIT_TESTNET_API_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub bybit_testnet_api_key: Option<SecretString>,
    /// Bybit testnet API secret.
    #[arg(long, env = "BYBIT_TESTNET_API_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub bybit_testnet_api_secret: Option<SecretString>,
    /// Bybit testnet host (`https://api-demo.bybit.com` for demo trading).
    #[arg(long, env = "BYBIT_TESTNET_BASE_URL", default_value = bybit::TESTNET_URL)]
    pub bybit_testnet_base_url: String,
    /// Bybit market: `linear` (USDT perpetuals) or `spot`.
    #[arg(long, env = "BYBIT_CATEGORY", value_enum, default_value = "linear")]
    pub bybit_category: bybit::Category,
}

/// Binance.
#[derive(Debug, Clone, clap::Args)]
pub struct BinanceArgs {
    /// Binance API key.
    #[arg(long, env = "BINANCE_API_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub binance_api_key: Option<SecretString>,
    /// Binance API secret.
    #[arg(long, env = "BINANCE_API_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub binance_api_secret: Option<SecretString>,
    /// Binance host [default: https://fapi.binance.com, or https://api.binance.com for spot]
    #[arg(long, env = "BINANCE_BASE_URL")]
    pub binance_base_url: Option<String>,
    /// Binance testnet API key (signals with `"test": true`).
    #[arg(long, env = "BINANCE_TESTNET_API_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub binance_testnet_api_key: Option<SecretString>,
    /// Binance testnet API secret.
    #[arg(long, env = "BINANCE_TESTNET_API_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub binance_testnet_api_secret: Option<SecretString>,
    /// Binance testnet host [default: https://demo-fapi.binance.com, or https://testnet.binance.vision for spot]
    #[arg(long, env = "BINANCE_TESTNET_BASE_URL")]
    pub binance_testnet_base_url: Option<String>,
    /// Binance wallet API host, asked by `hoox health --exchanges` what the live key may do (withdrawals) [default: https://api.binance.com]
    #[arg(long, env = "BINANCE_WALLET_URL", default_value = binance::WALLET_URL, hide_default_value = true)]
    pub binance_wallet_url: String,
    /// Binance market: `usdm` (USD-M futures) or `spot`.
    #[arg(long, env = "BINANCE_MARKET", value_enum, default_value = "usdm")]
    pub binance_market: binance::Market,
}

/// MEXC.
#[derive(Debug, Clone, clap::Args)]
pub struct MexcArgs {
    /// MEXC API key.
    #[arg(long, env = "MEXC_API_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub mexc_api_key: Option<SecretString>,
    /// MEXC API secret.
    #[arg(long, env = "MEXC_API_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub mexc_api_secret: Option<SecretString>,
    /// MEXC host [default: https://api.mexc.com, or https://contract.mexc.com for futures]
    #[arg(long, env = "MEXC_BASE_URL")]
    pub mexc_base_url: Option<String>,
    /// MEXC testnet API key; MEXC runs no public testnet, so this needs a testnet URL too.
    #[arg(long, env = "MEXC_TESTNET_API_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub mexc_testnet_api_key: Option<SecretString>,
    /// MEXC testnet API secret.
    #[arg(long, env = "MEXC_TESTNET_API_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub mexc_testnet_api_secret: Option<SecretString>,
    /// MEXC testnet host (none by default: MEXC has no public testnet).
    #[arg(long, env = "MEXC_TESTNET_BASE_URL")]
    pub mexc_testnet_base_url: Option<String>,
    /// MEXC market: `spot` or `futures` (for keys MEXC lets trade futures).
    #[arg(long, env = "MEXC_MARKET", value_enum, default_value = "spot")]
    pub mexc_market: mexc::Market,
    /// Path of MEXC's futures order endpoint (`/api/v1/private/order/submit` is the documented alternative).
    #[arg(long, env = "MEXC_FUTURES_ORDER_PATH", default_value = mexc::FUTURES_ORDER_PATH)]
    pub mexc_futures_order_path: String,
}

impl ExchangeArgs {
    /// The Bybit, Binance and MEXC providers these settings describe.
    pub fn providers(&self) -> Vec<Arc<dyn Exchange>> {
        let http = Http::new(Duration::from_millis(self.exchange_timeout_ms));
        let recv_window = self.recv_window_ms;
        let environment = |url: Option<&str>,
                           key: &Option<SecretString>,
                           secret: &Option<SecretString>| Environment {
            base_url: url.map(str::to_owned),
            credentials: Credentials::from_pair(key.clone(), secret.clone()),
        };
        let (b, n, m) = (&self.bybit, &self.binance, &self.mexc);
        let (binance_live, binance_testnet) = n.binance_market.default_urls();
        let mexc_live = match m.mexc_market {
            mexc::Market::Spot => mexc::SPOT_URL,
            mexc::Market::Futures => mexc::FUTURES_URL,
        };
        vec![
            Arc::new(Bybit::new(
                http.clone(),
                environment(
                    Some(&b.bybit_base_url),
                    &b.bybit_api_key,
                    &b.bybit_api_secret,
                ),
                environment(
                    Some(&b.bybit_testnet_base_url),
                    &b.bybit_testnet_api_key,
                    &b.bybit_testnet_api_secret,
                ),
                b.bybit_category,
                recv_window,
            )),
            Arc::new(
                Binance::new(
                    http.clone(),
                    environment(
                        Some(n.binance_base_url.as_deref().unwrap_or(binance_live)),
                        &n.binance_api_key,
                        &n.binance_api_secret,
                    ),
                    environment(
                        Some(
                            n.binance_testnet_base_url
                                .as_deref()
                                .unwrap_or(binance_testnet),
                        ),
                        &n.binance_testnet_api_key,
                        &n.binance_testnet_api_secret,
                    ),
                    n.binance_market,
                    recv_window,
                )
                .with_wallet_url(Some(n.binance_wallet_url.clone())),
            ),
            Arc::new(Mexc::new(
                http,
                environment(
                    Some(m.mexc_base_url.as_deref().unwrap_or(mexc_live)),
                    &m.mexc_api_key,
                    &m.mexc_api_secret,
                ),
                environment(
                    m.mexc_testnet_base_url.as_deref(),
                    &m.mexc_testnet_api_key,
                    &m.mexc_testnet_api_secret,
                ),
                m.mexc_market,
                recv_window,
                m.mexc_futures_order_path.clone(),
            )),
        ]
    }
}
