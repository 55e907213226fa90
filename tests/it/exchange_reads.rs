//! The providers' read-only calls against the mock exchanges. The signed holdings call:
//! open positions and balances read exactly in every market, Bybit's pages followed to
//! the end, and a refused key or an unreachable host an error, never an empty account.
//! The public ticker: every market's last price, and no price for a symbol not listed.

use std::sync::Arc;
use std::time::Duration;

use hoox_common::runtime_config::RuntimeConfig;
use hoox_common::signal::Symbol;
use hoox_consumer::exchange::transport::{Credentials, Environment, Http};
use hoox_consumer::exchange::{
    binance, bybit, mexc, paper, Balance, ErrorClass, ErrorCode, Exchange, Holdings, Position,
};
use rust_decimal::Decimal;
use secrecy::SecretString;

use crate::support::exchanges::{Coin, Held, Kind, MockExchange, KEY, SECRET};

/// One market of one exchange, as a deployment sets it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    BybitLinear,
    BybitSpot,
    BinanceUsdm,
    BinanceSpot,
    MexcSpot,
    MexcFutures,
}

const EVERY_MARKET: [Setup; 6] = [
    Setup::BybitLinear,
    Setup::BybitSpot,
    Setup::BinanceUsdm,
    Setup::BinanceSpot,
    Setup::MexcSpot,
    Setup::MexcFutures,
];

impl Setup {
    /// The mock that stands in for this market's exchange.
    fn kind(self) -> Kind {
        match self {
            Self::BybitLinear | Self::BybitSpot => Kind::Bybit,
            Self::BinanceUsdm | Self::BinanceSpot => Kind::Binance,
            Self::MexcSpot => Kind::MexcSpot,
            Self::MexcFutures => Kind::MexcFutures,
        }
    }

    /// The exchange's answer to a key it does not know.
    fn bad_key_code(self) -> i64 {
        match self {
            Self::BybitLinear | Self::BybitSpot => 10003,
            Self::BinanceUsdm | Self::BinanceSpot => -2015,
            Self::MexcSpot => 10072,
            Self::MexcFutures => 402,
        }
    }

    /// The provider trading this market on `url` with `key`.
    fn provider(self, url: String, key: &str) -> Arc<dyn Exchange> {
        let live = Environment {
            base_url: Some(url),
            credentials: Credentials::from_pair(
                Some(SecretString::from(key.to_owned())),
                Some(SecretString::from(SECRET.to_owned())),
            ),
        };
        let testnet = Environment::default();
        let http = Http::new(Duration::from_secs(5));
        match self {
            Self::BybitLinear | Self::BybitSpot => Arc::new(bybit::Bybit::new(
                http,
                live,
                testnet,
                if self == Self::BybitSpot {
                    bybit::Category::Spot
                } else {
                    bybit::Category::Linear
                },
                5000,
            )),
            Self::BinanceUsdm | Self::BinanceSpot => Arc::new(binance::Binance::new(
                http,
                live,
                testnet,
                if self == Self::BinanceSpot {
                    binance::Market::Spot
                } else {
                    binance::Market::Usdm
                },
                5000,
            )),
            Self::MexcSpot | Self::MexcFutures => Arc::new(mexc::Mexc::new(
                http,
                live,
                testnet,
                if self == Self::MexcSpot {
                    mexc::Market::Spot
                } else {
                    mexc::Market::Futures
                },
                5000,
                mexc::FUTURES_ORDER_PATH.to_owned(),
            )),
        }
    }
}

fn d(text: &str) -> Decimal {
    text.parse().expect("a decimal literal")
}

fn position(symbol: &str, quantity: &str, entry_price: &str) -> Position {
    Position {
        symbol: Symbol::parse(symbol).expect("a symbol"),
        quantity: d(quantity),
        entry_price: d(entry_price),
    }
}

fn balance(asset: &str, free: &str, locked: &str, total: &str) -> Balance {
    Balance {
        asset: asset.to_owned(),
        free: d(free),
        locked: d(locked),
        total: d(total),
    }
}

/// Positions whose sizes and prices no float holds exactly.
fn futures_book() -> Vec<Held> {
    vec![
        Held::new("BTCUSDT", "0.123456789", "67999.123456789"),
        Held::new("ETHUSDT", "-2.05", "3012.41"),
    ]
}

fn spot_coins() -> Vec<Coin> {
    vec![
        Coin::new("BTC", "0.100000001", "0.02"),
        Coin::new("USDT", "1234.56789012", "0"),
        Coin::new("ETH", "0", "0"),
    ]
}

fn expected_spot_balances() -> Vec<Balance> {
    vec![
        balance("BTC", "0.100000001", "0.02", "0.120000001"),
        balance("USDT", "1234.56789012", "0", "1234.56789012"),
    ]
}

#[tokio::test]
async fn futures_positions_are_read_signed_and_exact_on_every_exchange() {
    for setup in [Setup::BybitLinear, Setup::BinanceUsdm] {
        let mock = MockExchange::start(setup.kind()).await;
        mock.hold(futures_book());
        let holdings = setup
            .provider(mock.url(), KEY)
            .positions(false)
            .await
            .unwrap_or_else(|err| panic!("{setup:?}: {err}"));
        assert_eq!(
            holdings,
            Holdings::Positions(vec![
                position("BTCUSDT", "0.123456789", "67999.123456789"),
                position("ETHUSDT", "-2.05", "3012.41"),
            ]),
            "{setup:?}"
        );
        assert!(mock.refused().is_empty(), "{setup:?}: {:?}", mock.refused());
    }

    // MEXC counts contracts: 1234 of 0.0001 BTC long, 205 of 0.01 ETH short.
    let mock = MockExchange::start(Kind::MexcFutures).await;
    mock.hold(vec![
        Held::new("BTC_USDT", "1234", "67999.5"),
        Held::new("ETH_USDT", "-205", "3012.41"),
    ]);
    let holdings = Setup::MexcFutures
        .provider(mock.url(), KEY)
        .positions(false)
        .await
        .expect("MEXC futures positions");
    assert_eq!(
        holdings,
        Holdings::Positions(vec![
            position("BTCUSDT", "0.1234", "67999.5"),
            position("ETHUSDT", "-2.05", "3012.41"),
        ])
    );
    assert!(mock.refused().is_empty(), "{:?}", mock.refused());
}

#[tokio::test]
async fn spot_balances_are_read_exact_with_what_orders_hold_on_every_exchange() {
    for setup in [Setup::BybitSpot, Setup::BinanceSpot, Setup::MexcSpot] {
        let mock = MockExchange::start(setup.kind()).await;
        mock.fund(spot_coins());
        let holdings = setup
            .provider(mock.url(), KEY)
            .positions(false)
            .await
            .unwrap_or_else(|err| panic!("{setup:?}: {err}"));
        assert_eq!(
            holdings,
            Holdings::Balances(expected_spot_balances()),
            "{setup:?}"
        );
        assert!(mock.refused().is_empty(), "{setup:?}: {:?}", mock.refused());
    }
}

#[tokio::test]
async fn bybit_positions_are_read_across_every_page() {
    let mock = MockExchange::start(Kind::Bybit).await;
    // 450 positions: three pages of at most 200.
    let book: Vec<Held> = (0..450)
        .map(|n| {
            let size = format!("{}0.{n:03}1", if n % 2 == 0 { "" } else { "-" });
            Held::new(&format!("COIN{n}USDT"), &size, &format!("{n}.25"))
        })
        .collect();
    mock.hold(book.clone());

    let holdings = Setup::BybitLinear
        .provider(mock.url(), KEY)
        .positions(false)
        .await
        .expect("every page");
    let expected: Vec<Position> = book
        .iter()
        .map(|h| position(&h.symbol, &h.size, &h.entry))
        .collect();
    assert_eq!(holdings, Holdings::Positions(expected));
    assert_eq!(
        mock.position_cursors(),
        vec![
            None,
            Some("page%2C200".to_owned()),
            Some("page%2C400".to_owned())
        ],
        "each page asked for with the cursor the previous one gave"
    );
}

#[tokio::test]
async fn a_refused_key_is_an_error_with_the_exchanges_code_never_an_empty_account() {
    for setup in EVERY_MARKET {
        let mock = MockExchange::start(setup.kind()).await;
        mock.hold(futures_book());
        mock.fund(spot_coins());
        let err = setup
            .provider(mock.url(), "not-the-key")
            .positions(false)
            .await
            .expect_err("a refused key reads nothing");
        assert_eq!(err.class, ErrorClass::Fatal, "{setup:?}: {err}");
        assert_eq!(
            err.code,
            Some(ErrorCode::Exchange(setup.bad_key_code())),
            "{setup:?}: {err}"
        );
        assert_eq!(mock.refused(), vec!["bad key".to_owned()], "{setup:?}");
    }
}

#[tokio::test]
async fn an_unreachable_exchange_is_an_error_never_an_empty_account() {
    // A port that was just free and is closed again: nothing answers there.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("local addr")
    };
    for setup in EVERY_MARKET {
        let err = setup
            .provider(format!("http://{closed}"), KEY)
            .positions(false)
            .await
            .expect_err("an unreachable exchange reads nothing");
        assert_eq!(err.class, ErrorClass::Retryable, "{setup:?}: {err}");
        assert_eq!(err.code, None, "{setup:?}: {err}");
    }
}

#[tokio::test]
async fn an_environment_without_keys_is_an_error_before_anything_is_sent() {
    for setup in EVERY_MARKET {
        let mock = MockExchange::start(setup.kind()).await;
        let err = setup
            .provider(mock.url(), KEY)
            .positions(true)
            .await
            .expect_err("no testnet is set up");
        assert_eq!(err.class, ErrorClass::Fatal, "{setup:?}: {err}");
        assert!(mock.refused().is_empty(), "{setup:?}: nothing was sent");
    }
}

#[tokio::test]
async fn the_paper_exchange_has_no_holdings_apart_from_the_ledger() {
    // The paper exchange reads nothing to answer: its pool is never connected.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://unused@127.0.0.1:1/unused")
        .expect("a lazy pool");
    let paper = paper::Paper::new(pool, RuntimeConfig::fixed(Default::default()));
    assert_eq!(paper.positions(false).await, Ok(Holdings::LedgerOnly));
    assert_eq!(paper.positions(true).await, Ok(Holdings::LedgerOnly));
}

#[tokio::test]
async fn every_market_reads_its_last_price_from_the_public_ticker_and_an_unknown_symbol_is_an_error(
) {
    let btc = Symbol::parse("BTCUSDT").expect("a symbol");
    let unknown = Symbol::parse("NOPEUSDT").expect("a symbol");
    let mark: Decimal = crate::support::exchanges::MARK.parse().expect("a price");
    for setup in EVERY_MARKET {
        let mock = MockExchange::start(setup.kind()).await;
        let provider = setup.provider(mock.url(), KEY);
        assert_eq!(
            provider.last_price(&btc, false).await,
            Ok(mark),
            "{setup:?}"
        );
        let err = provider
            .last_price(&unknown, false)
            .await
            .expect_err("no price for a symbol the exchange does not list");
        assert_ne!(err.class, ErrorClass::Duplicate, "{setup:?}: {err}");
        // The ticker is public: no key went with it.
        assert!(mock.refused().is_empty(), "{setup:?}");
    }
}

#[tokio::test]
async fn the_paper_exchange_prices_at_its_configured_price_or_refuses() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://unused@127.0.0.1:1/unused")
        .expect("a lazy pool");
    let config = RuntimeConfig::fixed(
        [("paper:price:BTCUSDT".to_owned(), "61000.5".to_owned())]
            .into_iter()
            .collect(),
    );
    let paper = paper::Paper::new(pool, config);
    let btc = Symbol::parse("BTCUSDT").expect("a symbol");
    assert_eq!(
        paper.last_price(&btc, false).await,
        Ok("61000.5".parse().unwrap())
    );
    let eth = Symbol::parse("ETHUSDT").expect("a symbol");
    let err = paper
        .last_price(&eth, false)
        .await
        .expect_err("no price set");
    assert_eq!(err.class, ErrorClass::Fatal);
}
