//! `hoox positions reconcile` against the mock exchanges' position and balance
//! endpoints: matches, futures and spot differences, `--adopt` with its audit events
//! and its guard against a fill landing meanwhile, unreadable exchanges, paper, and the
//! binary's exit status.

use std::sync::Arc;

use async_trait::async_trait;
use clap::Parser;
use hoox::commands::positions::reconcile::{
    reconcile, venues, Adoption, Book, ExchangeReport, Failure, Line, LineStatus, Outcome, Summary,
};
use hoox_common::runtime_config::RuntimeConfig;
use hoox_common::signal::{ExchangeName, Leverage};
use hoox_consumer::config::ExchangeArgs;
use hoox_consumer::exchange::paper::Paper;
use hoox_consumer::exchange::{
    ErrorClass, Exchange, ExchangeError, Holdings, OrderAck, OrderRequest,
};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::exchanges::{Coin, Held, Kind, MockExchange, KEY, SECRET};
use crate::support::{database_url, hoox_on};

fn d(text: &str) -> Decimal {
    text.parse().expect("a decimal literal")
}

/// The exchange settings of a command line, as `hoox` reads them.
#[derive(Parser)]
struct Keys {
    #[command(flatten)]
    keys: ExchangeArgs,
}

/// The providers `hoox positions reconcile` builds from `flags`.
fn providers(flags: &[String]) -> Vec<Arc<dyn Exchange>> {
    let keys = Keys::try_parse_from(std::iter::once("hoox".to_owned()).chain(flags.to_vec()))
        .expect("exchange flags");
    keys.keys.providers()
}

/// Flags giving `exchange` the mock's key on `url`.
fn keys_for(exchange: &str, url: &str, key: &str) -> Vec<String> {
    vec![
        format!("--{exchange}-api-key={key}"),
        format!("--{exchange}-api-secret={SECRET}"),
        format!("--{exchange}-base-url={url}"),
    ]
}

/// A ledger row with realized PnL, fees and fills of its own, which adoption keeps.
async fn ledger_row(
    pool: &PgPool,
    (exchange, market, symbol): (&str, &str, &str),
    quantity: &str,
    entry: Option<&str>,
) {
    sqlx::query(
        r#"
        INSERT INTO positions (exchange, market, testnet, symbol, quantity, avg_entry_price, realized_pnl, fees, fills)
        VALUES ($1, $2, false, $3, $4, $5, 12.5, 1.25, 3)
        "#,
    )
    .bind(exchange)
    .bind(market)
    .bind(symbol)
    .bind(d(quantity))
    .bind(entry.map(d))
    .execute(pool)
    .await
    .expect("insert a ledger row");
}

type Row = (Decimal, Option<Decimal>, Decimal, Decimal, i64);

async fn row(pool: &PgPool, exchange: &str, symbol: &str) -> Option<Row> {
    sqlx::query_as(
        r#"
        SELECT quantity, avg_entry_price, realized_pnl, fees, fills
        FROM positions WHERE exchange = $1 AND symbol = $2 AND NOT testnet
        "#,
    )
    .bind(exchange)
    .bind(symbol)
    .fetch_optional(pool)
    .await
    .expect("read a ledger row")
}

async fn adoption_events(pool: &PgPool) -> Vec<(String, String, String, Value)> {
    sqlx::query_as(
        r#"
        SELECT kind, worker, severity, context FROM system_logs
        WHERE kind = 'position_adopted' ORDER BY context->>'exchange', context->>'symbol'
        "#,
    )
    .fetch_all(pool)
    .await
    .expect("read the audit trail")
}

fn report<'a>(reports: &'a [ExchangeReport], exchange: ExchangeName, market: &str) -> &'a Outcome {
    &reports
        .iter()
        .find(|r| r.exchange == exchange && r.market == market && !r.testnet)
        .unwrap_or_else(|| panic!("no report for {exchange} {market}: {reports:#?}"))
        .outcome
}

fn lines(outcome: &Outcome) -> &[Line] {
    match outcome {
        Outcome::Compared { lines, .. } => lines,
        other => panic!("not compared: {other:?}"),
    }
}

/// (instrument, ledger quantity, exchange quantity, status) of every line.
fn statuses(outcome: &Outcome) -> Vec<(String, Decimal, Decimal, LineStatus)> {
    lines(outcome)
        .iter()
        .map(|l| {
            (
                l.instrument.clone(),
                l.ledger_quantity,
                l.exchange_quantity,
                l.status,
            )
        })
        .collect()
}

/// A Bybit linear account and a MEXC spot account whose holdings differ from the
/// ledger: a bigger BTCUSDT long, an ETHUSDT short entered elsewhere, a SOLUSDT long
/// the exchange no longer holds; more BTC than the ledger knows, SOL bought outside
/// hoox, and USDT cash.
async fn differing_accounts(pool: &PgPool) -> (MockExchange, MockExchange) {
    let bybit = MockExchange::start(Kind::Bybit).await;
    bybit.hold(vec![
        Held::new("BTCUSDT", "0.02", "61000.5"),
        Held::new("ETHUSDT", "-1", "3000"),
    ]);
    ledger_row(pool, ("bybit", "linear", "BTCUSDT"), "0.01", Some("60000")).await;
    ledger_row(pool, ("bybit", "linear", "ETHUSDT"), "-1", Some("3010")).await;
    ledger_row(pool, ("bybit", "linear", "SOLUSDT"), "5", Some("150")).await;
    ledger_row(pool, ("bybit", "linear", "XRPUSDT"), "0", None).await;

    let mexc = MockExchange::start(Kind::MexcSpot).await;
    mexc.fund(vec![
        Coin::new("BTC", "0.1", "0.02"),
        Coin::new("SOL", "3", "0"),
        Coin::new("USDT", "500", "0"),
    ]);
    ledger_row(pool, ("mexc", "spot", "BTCUSDT"), "0.1", Some("60000")).await;
    (bybit, mexc)
}

fn differing_flags(bybit: &MockExchange, mexc: &MockExchange) -> Vec<String> {
    let mut flags = keys_for("bybit", &bybit.url(), KEY);
    flags.extend(keys_for("mexc", &mexc.url(), KEY));
    flags
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_ledger_that_matches_every_exchange_exits_zero_and_paper_is_ledger_only(pool: PgPool) {
    let bybit = MockExchange::start(Kind::Bybit).await;
    bybit.hold(vec![Held::new("BTCUSDT", "0.010", "60000.0")]);
    ledger_row(&pool, ("bybit", "linear", "BTCUSDT"), "0.01", Some("60000")).await;
    ledger_row(&pool, ("bybit", "linear", "ETHUSDT"), "0", None).await;
    let binance = MockExchange::start(Kind::Binance).await;
    binance.fund(vec![
        Coin::new("BTC", "0.4", "0.1"),
        Coin::new("USDT", "1000", "0"),
    ]);
    ledger_row(&pool, ("binance", "spot", "BTCUSDT"), "0.3", Some("60000")).await;
    ledger_row(&pool, ("binance", "spot", "BTCUSDC"), "0.2", Some("61000")).await;
    ledger_row(&pool, ("paper", "paper", "ETHUSDT"), "2", Some("3000")).await;
    ledger_row(&pool, ("paper", "paper", "SOLUSDT"), "0", None).await;

    let mut flags = keys_for("bybit", &bybit.url(), KEY);
    flags.extend(keys_for("binance", &binance.url(), KEY));
    flags.push("--binance-market=spot".to_owned());
    let mut providers = providers(&flags);
    providers.push(Arc::new(Paper::new(
        pool.clone(),
        RuntimeConfig::fixed(Default::default()),
    )));
    let venues = venues(&providers, None).expect("venues");
    let reports = reconcile(&pool, &venues, None, false)
        .await
        .expect("reconcile");

    assert_eq!(
        statuses(report(&reports, ExchangeName::Bybit, "linear")),
        vec![
            (
                "BTCUSDT".to_owned(),
                d("0.01"),
                d("0.01"),
                LineStatus::Match
            ),
            ("ETHUSDT".to_owned(), d("0"), d("0"), LineStatus::Match),
        ]
    );
    // BTCUSDT and BTCUSDC both hold BTC: 0.3 + 0.2 against 0.4 free + 0.1 locked;
    // USDT is cash.
    let spot = report(&reports, ExchangeName::Binance, "spot");
    assert_eq!(
        statuses(spot),
        vec![("BTC".to_owned(), d("0.5"), d("0.5"), LineStatus::Match)]
    );
    assert_eq!(lines(spot)[0].symbols, ["BTCUSDC", "BTCUSDT"]);
    assert!(matches!(
        spot,
        Outcome::Compared {
            book: Book::Spot,
            ..
        }
    ));
    assert_eq!(
        report(&reports, ExchangeName::Paper, "paper"),
        &Outcome::LedgerOnly { ledger_rows: 2 }
    );
    assert!(
        reports.iter().all(|r| r.exchange != ExchangeName::Mexc),
        "no keys, not read"
    );
    let summary = Summary::of(&reports);
    assert_eq!(summary, Summary::default(), "{reports:#?}");
    assert_eq!(summary.exit_code(), 0);
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn futures_and_spot_differences_are_found_and_nothing_is_written(pool: PgPool) {
    let (bybit, mexc) = differing_accounts(&pool).await;
    let providers = providers(&differing_flags(&bybit, &mexc));
    let venues = venues(&providers, None).expect("venues");
    let reports = reconcile(&pool, &venues, None, false)
        .await
        .expect("reconcile");

    let futures = report(&reports, ExchangeName::Bybit, "linear");
    assert_eq!(
        statuses(futures),
        vec![
            (
                "BTCUSDT".to_owned(),
                d("0.01"),
                d("0.02"),
                LineStatus::QuantityDiffers
            ),
            (
                "ETHUSDT".to_owned(),
                d("-1"),
                d("-1"),
                LineStatus::EntryDiffers
            ),
            (
                "SOLUSDT".to_owned(),
                d("5"),
                d("0"),
                LineStatus::QuantityDiffers
            ),
            ("XRPUSDT".to_owned(), d("0"), d("0"), LineStatus::Match),
        ]
    );
    let btc = &lines(futures)[0];
    assert_eq!(
        (btc.ledger_entry_price, btc.exchange_entry_price),
        (Some(d("60000")), Some(d("61000.5")))
    );

    assert_eq!(
        statuses(report(&reports, ExchangeName::Mexc, "spot")),
        vec![
            (
                "BTC".to_owned(),
                d("0.1"),
                d("0.12"),
                LineStatus::QuantityDiffers
            ),
            ("SOL".to_owned(), d("0"), d("3"), LineStatus::OutsideHoox),
        ]
    );
    let summary = Summary::of(&reports);
    assert_eq!(
        (
            summary.differences,
            summary.entry_differences,
            summary.unreadable
        ),
        (4, 1, 0)
    );
    assert_eq!(summary.exit_code(), 1);
    assert_eq!(
        row(&pool, "bybit", "BTCUSDT").await,
        Some((d("0.01"), Some(d("60000")), d("12.5"), d("1.25"), 3)),
        "without --adopt the ledger is not touched"
    );
    assert!(adoption_events(&pool).await.is_empty());
    assert!(bybit.refused().is_empty() && mexc.refused().is_empty());
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn adopt_takes_the_exchanges_figures_with_an_audit_event_per_row(pool: PgPool) {
    let (bybit, mexc) = differing_accounts(&pool).await;
    let providers = providers(&differing_flags(&bybit, &mexc));
    let venues = venues(&providers, None).expect("venues");
    let reports = reconcile(&pool, &venues, None, true)
        .await
        .expect("reconcile --adopt");

    let adopted = |outcome: &Outcome| -> Vec<(String, Option<Adoption>)> {
        lines(outcome)
            .iter()
            .map(|l| (l.instrument.clone(), l.adoption))
            .collect()
    };
    assert_eq!(
        adopted(report(&reports, ExchangeName::Bybit, "linear")),
        vec![
            ("BTCUSDT".to_owned(), Some(Adoption::Adopted)),
            ("ETHUSDT".to_owned(), Some(Adoption::Adopted)),
            ("SOLUSDT".to_owned(), Some(Adoption::Adopted)),
            ("XRPUSDT".to_owned(), None),
        ]
    );
    let summary = Summary::of(&reports);
    assert_eq!((summary.adopted, summary.differences), (5, 0));
    assert_eq!(summary.exit_code(), 0, "every difference was adopted");

    // Quantity and entry from the exchange; realized PnL, fees and fills kept.
    assert_eq!(
        row(&pool, "bybit", "BTCUSDT").await,
        Some((d("0.02"), Some(d("61000.5")), d("12.5"), d("1.25"), 3))
    );
    assert_eq!(
        row(&pool, "bybit", "ETHUSDT").await,
        Some((d("-1"), Some(d("3000")), d("12.5"), d("1.25"), 3))
    );
    assert_eq!(
        row(&pool, "bybit", "SOLUSDT").await,
        Some((d("0"), None, d("12.5"), d("1.25"), 3))
    );
    // Spot: the row keeps its side, so its entry; SOL held outside hoox gets a USDT
    // row with an unknown entry.
    assert_eq!(
        row(&pool, "mexc", "BTCUSDT").await,
        Some((d("0.12"), Some(d("60000")), d("12.5"), d("1.25"), 3))
    );
    assert_eq!(
        row(&pool, "mexc", "SOLUSDT").await,
        Some((d("3"), None, d("0"), d("0"), 0))
    );

    let events = adoption_events(&pool).await;
    assert_eq!(events.len(), 5, "{events:#?}");
    for (kind, worker, severity, _) in &events {
        assert_eq!(
            (kind.as_str(), worker.as_str(), severity.as_str()),
            ("position_adopted", "cli", "warn")
        );
    }
    assert_eq!(
        events[0].3,
        json!({
            "exchange": "bybit", "market": "linear", "testnet": false, "symbol": "BTCUSDT",
            "previous": {"quantity": "0.01", "avgEntryPrice": "60000"},
            "adopted": {"quantity": "0.02", "avgEntryPrice": "61000.5"},
        })
    );
    assert_eq!(
        events[4].3,
        json!({
            "exchange": "mexc", "market": "spot", "testnet": false, "symbol": "SOLUSDT",
            "previous": null,
            "adopted": {"quantity": "3", "avgEntryPrice": null},
        })
    );

    let again = reconcile(&pool, &venues, None, true)
        .await
        .expect("reconcile again");
    assert_eq!(Summary::of(&again), Summary::default(), "{again:#?}");
    assert_eq!(
        adoption_events(&pool).await.len(),
        5,
        "nothing left to adopt"
    );
}

/// A provider that commits a fill to the ledger while the exchange is being read, as
/// a consumer can.
struct FillWhileReading {
    inner: Arc<dyn Exchange>,
    pool: PgPool,
}

#[async_trait]
impl Exchange for FillWhileReading {
    fn name(&self) -> ExchangeName {
        self.inner.name()
    }

    fn market(&self) -> &'static str {
        self.inner.market()
    }

    fn has_credentials(&self, testnet: bool) -> bool {
        self.inner.has_credentials(testnet)
    }

    async fn set_leverage(&self, _: &OrderRequest, _: Leverage) -> Result<(), ExchangeError> {
        Err(ExchangeError::new(ErrorClass::Fatal, "reads only"))
    }

    async fn place_order(&self, _: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        Err(ExchangeError::new(ErrorClass::Fatal, "reads only"))
    }

    async fn order_by_client_id(
        &self,
        _: &OrderRequest,
    ) -> Result<Option<OrderAck>, ExchangeError> {
        Err(ExchangeError::new(ErrorClass::Fatal, "reads only"))
    }

    async fn positions(&self, testnet: bool) -> Result<Holdings, ExchangeError> {
        sqlx::query(
            "UPDATE positions SET quantity = quantity + 0.005, fills = fills + 1 WHERE exchange = 'bybit' AND symbol = 'BTCUSDT'",
        )
        .execute(&self.pool)
        .await
        .expect("a fill lands");
        self.inner.positions(testnet).await
    }
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn adopt_never_overwrites_a_fill_that_landed_after_the_ledger_was_read(pool: PgPool) {
    let (bybit, mexc) = differing_accounts(&pool).await;
    let providers: Vec<Arc<dyn Exchange>> = providers(&differing_flags(&bybit, &mexc))
        .into_iter()
        .map(|inner| {
            Arc::new(FillWhileReading {
                inner,
                pool: pool.clone(),
            }) as Arc<dyn Exchange>
        })
        .collect();
    let venues = venues(&providers, Some(ExchangeName::Bybit)).expect("venues");
    let reports = reconcile(&pool, &venues, Some(ExchangeName::Bybit), true)
        .await
        .expect("reconcile --adopt");

    let futures = lines(report(&reports, ExchangeName::Bybit, "linear"));
    assert_eq!(futures[0].instrument, "BTCUSDT");
    assert_eq!(futures[0].adoption, Some(Adoption::ChangedMeanwhile));
    assert_eq!(futures[2].adoption, Some(Adoption::Adopted), "SOLUSDT");
    assert_eq!(
        row(&pool, "bybit", "BTCUSDT").await,
        Some((d("0.015"), Some(d("60000")), d("12.5"), d("1.25"), 4)),
        "the fill stands"
    );
    let summary = Summary::of(&reports);
    assert_eq!((summary.changed_meanwhile, summary.differences), (1, 1));
    assert_eq!(summary.exit_code(), 1);
    let events = adoption_events(&pool).await;
    assert!(
        events.iter().all(|(_, _, _, c)| c["symbol"] != "BTCUSDT"),
        "{events:#?}"
    );
    assert!(
        reports.iter().all(|r| r.exchange == ExchangeName::Bybit),
        "--exchange bybit reads bybit only"
    );
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn refused_keys_and_an_unreachable_exchange_are_reported_as_such_and_adopt_nothing(
    pool: PgPool,
) {
    let binance = MockExchange::start(Kind::Binance).await;
    binance.hold(vec![Held::new("BTCUSDT", "1", "60000")]);
    ledger_row(&pool, ("binance", "usdm", "BTCUSDT"), "0.5", Some("60000")).await;
    ledger_row(&pool, ("mexc", "spot", "BTCUSDT"), "0.1", Some("60000")).await;
    ledger_row(&pool, ("bybit", "spot", "ETHUSDT"), "2", Some("3000")).await;
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("local addr")
    };

    let mut flags = keys_for("binance", &binance.url(), "not-the-key");
    flags.extend(keys_for("mexc", &format!("http://{closed}"), KEY));
    let providers = providers(&flags);
    let venues = venues(&providers, None).expect("venues");
    let reports = reconcile(&pool, &venues, None, true)
        .await
        .expect("reconcile --adopt");

    match report(&reports, ExchangeName::Binance, "usdm") {
        Outcome::Unreadable {
            failure,
            class,
            code,
            ..
        } => assert_eq!(
            (*failure, class.as_str(), code.as_deref()),
            (Failure::Refused, "fatal", Some("-2015"))
        ),
        other => panic!("binance: {other:?}"),
    }
    match report(&reports, ExchangeName::Mexc, "spot") {
        Outcome::Unreadable {
            failure,
            class,
            code,
            ..
        } => assert_eq!(
            (*failure, class.as_str(), code.as_deref()),
            (Failure::Unavailable, "retryable", None)
        ),
        other => panic!("mexc: {other:?}"),
    }
    // Bybit spot rows without Bybit keys: not checked, never flat.
    assert_eq!(
        report(&reports, ExchangeName::Bybit, "spot"),
        &Outcome::NotChecked { open_rows: 1 }
    );
    let summary = Summary::of(&reports);
    assert_eq!(
        (summary.unreadable, summary.differences, summary.not_checked),
        (2, 0, 1)
    );
    assert_eq!(summary.exit_code(), 2);
    assert_eq!(
        row(&pool, "binance", "BTCUSDT").await,
        Some((d("0.5"), Some(d("60000")), d("12.5"), d("1.25"), 3)),
        "nothing adopted from an exchange that could not be read"
    );
    assert!(adoption_events(&pool).await.is_empty());
    assert_eq!(binance.refused(), vec!["bad key".to_owned()]);
}

#[test]
fn naming_an_exchange_without_keys_is_an_error_that_says_so() {
    let providers = providers(&[]);
    let err = venues(&providers, Some(ExchangeName::Binance))
        .err()
        .expect("binance has no keys");
    assert!(
        err.contains("binance has no API keys") && err.contains("BINANCE_API_KEY"),
        "{err}"
    );
    assert!(venues(&providers, None).expect("no keys at all").is_empty());
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn the_binary_exits_one_on_a_difference_zero_once_adopted_and_two_without_keys(pool: PgPool) {
    let (bybit, _mexc) = differing_accounts(&pool).await;
    let url = database_url(&pool);
    let reconcile = |args: &[&str]| {
        let mut command = hoox_on(&url);
        command
            .args(["positions", "reconcile", "--exchange", "bybit"])
            .args(args)
            .env("BYBIT_API_KEY", KEY)
            .env("BYBIT_API_SECRET", SECRET)
            .env("BYBIT_BASE_URL", bybit.url());
        command
    };

    let output = reconcile(&["--json"]).output().await.expect("run hoox");
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["exitCode"], 1);
    assert_eq!(json["summary"]["differences"], 2);
    assert_eq!(json["exchanges"][0]["status"], "compared");
    assert_eq!(
        json["exchanges"][0]["lines"][0]["status"],
        "quantity_differs"
    );
    assert_eq!(json["exchanges"][0]["lines"][0]["exchangeQuantity"], "0.02");

    let output = reconcile(&["--adopt"]).output().await.expect("run hoox");
    let table = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{table}");
    let btc = table
        .lines()
        .find(|l| l.starts_with("BTCUSDT"))
        .expect("a BTCUSDT line");
    assert!(btc.ends_with("QUANTITY DIFFERS: adopted"), "{table}");
    assert_eq!(adoption_events(&pool).await.len(), 3);

    let output = hoox_on(&url)
        .args(["positions", "reconcile", "--exchange", "binance"])
        .output()
        .await
        .expect("run hoox");
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("binance has no API keys"), "{err}");

    // `hoox positions` still shows the ledger.
    let output = hoox_on(&url)
        .args(["positions", "--json"])
        .output()
        .await
        .expect("run hoox");
    assert!(output.status.success());
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(rows.len(), 5);
}
