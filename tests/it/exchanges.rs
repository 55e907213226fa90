//! The real exchange providers against local mock exchanges that check requests like
//! the real services: each exchange fills, survives a rate limit, dead-letters a fatal
//! reject, and never trades twice when an order is taken but its answer never comes.

use std::sync::Arc;
use std::time::Duration;

use hoox_common::runtime_config::routing_key;
use hoox_consumer::exchange::transport::{Credentials, Environment, Http};
use hoox_consumer::exchange::{binance, bybit, mexc, Exchange};
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::exchanges::{Fault, Kind, MockExchange, KEY, MARK, SECRET};
use crate::support::{
    accepted, broker, count, dead_letters, wait_for_dead_letters, Options, TestApp,
};

const ALL: [Kind; 4] = [
    Kind::Bybit,
    Kind::Binance,
    Kind::MexcSpot,
    Kind::MexcFutures,
];

fn credentials(key: &str, secret: &str) -> Option<Credentials> {
    Credentials::from_pair(
        Some(SecretString::from(key.to_owned())),
        Some(SecretString::from(secret.to_owned())),
    )
}

fn live(url: String, secret: &str) -> Environment {
    Environment {
        base_url: Some(url),
        credentials: credentials(KEY, secret),
    }
}

/// The provider of `kind` trading on `live` and `testnet`, giving up on a call after `timeout`.
fn provider_for(
    kind: Kind,
    live: Environment,
    testnet: Environment,
    timeout: Duration,
) -> Arc<dyn Exchange> {
    let http = Http::new(timeout);
    match kind {
        Kind::Bybit => Arc::new(bybit::Bybit::new(
            http,
            live,
            testnet,
            bybit::Category::Linear,
            5000,
        )),
        Kind::Binance => Arc::new(binance::Binance::new(
            http,
            live,
            testnet,
            binance::Market::Usdm,
            5000,
        )),
        Kind::MexcSpot | Kind::MexcFutures => Arc::new(mexc::Mexc::new(
            http,
            live,
            testnet,
            if kind == Kind::MexcSpot {
                mexc::Market::Spot
            } else {
                mexc::Market::Futures
            },
            5000,
            mexc::FUTURES_ORDER_PATH.to_owned(),
        )),
    }
}

/// The provider of `kind` trading on `mock`'s live environment.
pub fn provider(kind: Kind, mock: &MockExchange, timeout: Duration) -> Arc<dyn Exchange> {
    provider_for(
        kind,
        live(mock.url(), SECRET),
        Environment::default(),
        timeout,
    )
}

fn exchange_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Bybit => "bybit",
        Kind::Binance => "binance",
        Kind::MexcSpot | Kind::MexcFutures => "mexc",
    }
}

fn is_spot(kind: Kind) -> bool {
    kind == Kind::MexcSpot
}

/// A signal for `kind`: 0.0059 BTC, which the 0.001 step floors to 0.005 BTC (MEXC
/// futures: 59 contracts of 0.0001 BTC), with leverage where the market has it.
fn order_signal(kind: Kind, action: &str) -> Value {
    let mut body = json!({
        "apiKey": crate::support::API_KEY,
        "exchange": exchange_name(kind),
        "action": action,
        "symbol": "BYBIT:BTCUSDT.P",
        "quantity": "0.0059",
        "price": 68000,
    });
    if !is_spot(kind) {
        body["leverage"] = json!(5);
    }
    body
}

async fn app_for(pool: &PgPool, exchanges: Vec<Arc<dyn Exchange>>) -> TestApp {
    let app = TestApp::with(
        pool.clone(),
        Options {
            exchanges,
            ..Options::default()
        },
    )
    .await;
    app.ready().await;
    app
}

type FillRow = (
    String,
    Option<String>,
    String,
    Option<Decimal>,
    Option<Decimal>,
    String,
);

async fn fill_of(pool: &PgPool, id: &str) -> FillRow {
    sqlx::query_as(
        "SELECT exchange, exchange_order_id, status, fill_price, fill_quantity, client_order_id FROM fills WHERE request_id = $1",
    )
    .bind(Uuid::parse_str(id).unwrap())
    .fetch_one(pool)
    .await
    .expect("one fill")
}

/// The events of a signal's trail, in order: (kind, fields).
async fn events(pool: &PgPool, id: &str) -> Vec<(String, Value)> {
    sqlx::query_as(
        "SELECT kind, context FROM system_logs WHERE request_id = $1 ORDER BY created_at, id",
    )
    .bind(Uuid::parse_str(id).unwrap())
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Whether `events` hold one of `kind` whose fields include every pair of `fields`.
fn has(events: &[(String, Value)], kind: &str, fields: &[(&str, Value)]) -> bool {
    events
        .iter()
        .any(|(k, c)| k == kind && fields.iter().all(|(name, value)| &c[*name] == value))
}

/// The side and reduce-only flag of an order as the mock received it.
fn side_of(kind: Kind, order: &crate::support::exchanges::Order) -> (String, bool) {
    match kind {
        Kind::MexcFutures => (order.side.clone(), matches!(order.side.as_str(), "2" | "4")),
        _ => (order.side.clone(), order.reduce_only),
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn each_exchange_fills_signed_orders_sized_to_its_rules(pool: PgPool) {
    for kind in ALL {
        let mock = MockExchange::start(kind).await;
        let app = app_for(&pool, vec![provider(kind, &mock, Duration::from_secs(10))]).await;

        let id = accepted(&app, &order_signal(kind, "LONG")).await;
        app.wait_for_fill(&id).await;
        let orders = mock.orders();
        assert_eq!(orders.len(), 1, "{kind:?}");
        let order = &orders[0];
        let client_id = Uuid::parse_str(&id).unwrap().simple().to_string();
        assert_eq!(order.client_id, client_id, "{kind:?}");
        let (expected_symbol, expected_quantity, expected_side) = match kind {
            Kind::Bybit => ("BTCUSDT", "0.005", "Buy"),
            Kind::Binance | Kind::MexcSpot => ("BTCUSDT", "0.005", "BUY"),
            Kind::MexcFutures => ("BTC_USDT", "59", "1"),
        };
        assert_eq!(order.symbol, expected_symbol, "{kind:?}");
        assert_eq!(order.quantity, expected_quantity, "{kind:?}");
        assert_eq!(
            side_of(kind, order),
            (expected_side.to_owned(), false),
            "{kind:?}"
        );
        assert_eq!(order.price, None, "{kind:?}: a market order");

        let (exchange, order_id, status, price, quantity, stored_client_id) =
            fill_of(&pool, &id).await;
        assert_eq!(exchange, exchange_name(kind));
        assert_eq!(order_id.as_deref(), Some(order.id.as_str()), "{kind:?}");
        assert_eq!(status, "filled", "{kind:?}");
        assert_eq!(price, Some(MARK.parse().unwrap()), "{kind:?}");
        let base = if kind == Kind::MexcFutures {
            "0.0059"
        } else {
            "0.005"
        };
        assert_eq!(quantity, Some(base.parse().unwrap()), "{kind:?}");
        assert_eq!(stored_client_id, client_id);

        // Closing: reduce-only, and the leverage already set is not set again.
        let close = accepted(&app, &order_signal(kind, "CLOSE_LONG")).await;
        app.wait_for_fill(&close).await;
        let orders = mock.orders();
        assert_eq!(orders.len(), 2, "{kind:?}");
        let expected_close = match kind {
            Kind::Bybit => ("Sell", true),
            Kind::Binance => ("SELL", true),
            // Spot has no reduce-only: closing a long is a sell.
            Kind::MexcSpot => ("SELL", false),
            Kind::MexcFutures => ("4", true),
        };
        assert_eq!(
            side_of(kind, &orders[1]),
            (expected_close.0.to_owned(), expected_close.1),
            "{kind:?}"
        );
        let leverage = mock.leverage_calls();
        match kind {
            Kind::MexcSpot => assert!(leverage.is_empty()),
            // Both sides of a position without one: long (1) and short (2).
            Kind::MexcFutures => assert_eq!(
                leverage,
                vec![("BTC_USDT/1".to_owned(), 5), ("BTC_USDT/2".to_owned(), 5)]
            ),
            _ => assert_eq!(leverage, vec![("BTCUSDT".to_owned(), 5)], "{kind:?}"),
        }
        // A limit order: its price rounded to the 0.1 tick, resting (not filled).
        let mut limit = order_signal(kind, "SHORT");
        limit["orderType"] = json!("limit");
        limit["price"] = json!("68000.06");
        limit["quantity"] = json!("0.002");
        let resting = accepted(&app, &limit).await;
        app.wait_for_fill(&resting).await;
        let orders = mock.orders();
        assert_eq!(orders[2].price.as_deref(), Some("68000.1"), "{kind:?}");
        let (_, _, status, price, ..) = fill_of(&pool, &resting).await;
        assert_eq!((status.as_str(), price), ("new", None), "{kind:?}");

        // The mocks' clocks run 20 s ahead: nothing was refused, so the offset was measured.
        assert!(mock.refused().is_empty(), "{kind:?}: {:?}", mock.refused());
        app.stop().await;
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_rate_limited_order_is_retried_and_placed_once(pool: PgPool) {
    for kind in ALL {
        let mock = MockExchange::start(kind).await;
        mock.fail_next(&[Fault::RateLimit]);
        let app = app_for(&pool, vec![provider(kind, &mock, Duration::from_secs(10))]).await;

        let id = accepted(&app, &order_signal(kind, "LONG")).await;
        assert_eq!(app.wait_for_fill(&id).await, 1);
        assert_eq!(mock.orders().len(), 1, "{kind:?}");
        let code = match kind {
            Kind::Bybit => "10006",
            Kind::Binance => "-1003",
            Kind::MexcSpot => "429",
            Kind::MexcFutures => "510",
        };
        let trail = events(&pool, &id).await;
        assert!(
            has(
                &trail,
                "attempt_failed",
                &[
                    ("attempt", json!(1)),
                    ("class", json!("retryable")),
                    ("code", json!(code))
                ]
            ),
            "{kind:?}: {trail:?}"
        );
        assert!(
            has(&trail, "dequeued", &[("attempt", json!(2))]),
            "{kind:?}: {trail:?}"
        );
        app.stop().await;
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_fatal_reject_is_dead_lettered_with_the_exchange_code(pool: PgPool) {
    let connection = broker().await;
    for kind in ALL {
        let mock = MockExchange::start(kind).await;
        mock.fail_next(&[Fault::Reject]);
        let app = app_for(&pool, vec![provider(kind, &mock, Duration::from_secs(10))]).await;

        let id = accepted(&app, &order_signal(kind, "LONG")).await;
        let letters = wait_for_dead_letters(&app, &connection, 1).await;
        assert_eq!(letters[0].reason, "fatal", "{kind:?}");
        let code = match kind {
            Kind::Bybit => "110007",
            Kind::Binance => "-2019",
            Kind::MexcSpot => "10101",
            Kind::MexcFutures => "2005",
        };
        let error = letters[0].error.clone().unwrap_or_default();
        assert!(error.contains(&format!("[{code}]")), "{kind:?}: {error}");
        let history = &letters[0].message.as_ref().unwrap()["history"];
        assert_eq!(history[0]["code"], json!(code), "{kind:?}");
        assert!(mock.orders().is_empty(), "{kind:?}");
        let fills = count(
            &pool,
            &format!("SELECT count(*) FROM fills WHERE request_id = '{id}'"),
        )
        .await;
        assert_eq!(fills, 0);
        app.stop().await;
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn an_order_taken_but_unanswered_is_found_not_placed_again(pool: PgPool) {
    for kind in ALL {
        let mock = MockExchange::start(kind).await;
        mock.fail_next(&[Fault::TakeAndHang]);
        let app = app_for(&pool, vec![provider(kind, &mock, Duration::from_secs(1))]).await;

        let id = accepted(&app, &order_signal(kind, "LONG")).await;
        assert_eq!(app.wait_for_fill(&id).await, 1);
        let orders = mock.orders();
        assert_eq!(orders.len(), 1, "{kind:?}: traded twice");
        let (_, order_id, ..) = fill_of(&pool, &id).await;
        assert_eq!(order_id.as_deref(), Some(orders[0].id.as_str()), "{kind:?}");
        let trail = events(&pool, &id).await;
        assert!(
            has(&trail, "order_lookup", &[("class", json!("ambiguous"))])
                && has(&trail, "order_found", &[]),
            "{kind:?}: {trail:?}"
        );
        app.stop().await;
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_retry_after_an_unanswered_order_is_refused_by_the_exchange_and_found(pool: PgPool) {
    for kind in ALL {
        let mock = MockExchange::start(kind).await;
        // The order is taken unanswered, and lookups lag behind it: the signal is
        // retried, its lookup finds nothing again, and its second order meets the
        // exchange's duplicate check.
        mock.fail_next(&[Fault::TakeAndHang]);
        mock.lag_lookups();
        let app = app_for(&pool, vec![provider(kind, &mock, Duration::from_secs(1))]).await;

        let id = accepted(&app, &order_signal(kind, "LONG")).await;
        assert_eq!(app.wait_for_fill(&id).await, 1);
        let orders = mock.orders();
        assert_eq!(orders.len(), 1, "{kind:?}: traded twice");
        let (_, order_id, status, ..) = fill_of(&pool, &id).await;
        assert_eq!(order_id.as_deref(), Some(orders[0].id.as_str()), "{kind:?}");
        assert_eq!(status, "filled");
        let trail = events(&pool, &id).await;
        assert!(
            has(&trail, "dequeued", &[("attempt", json!(2))]),
            "{kind:?}: {trail:?}"
        );
        let second_answer = match kind {
            Kind::Bybit | Kind::Binance => ("order_lookup", ("class", json!("duplicate"))),
            // MEXC spot documents no duplicate code: the refusal is checked all the same.
            Kind::MexcSpot => ("order_lookup", ("class", json!("fatal"))),
            // MEXC futures answers a known externalOid with the existing order.
            Kind::MexcFutures => ("order_placed", ("exchange", json!("mexc"))),
        };
        assert!(
            has(&trail, second_answer.0, &[second_answer.1]),
            "{kind:?}: {trail:?}"
        );
        app.stop().await;
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_routing_override_sends_the_next_signal_elsewhere_without_a_restart(pool: PgPool) {
    let mock = MockExchange::start(Kind::Bybit).await;
    let bybit = provider(Kind::Bybit, &mock, Duration::from_secs(10));
    let paper = Arc::new(hoox_consumer::exchange::paper::Paper::new(
        pool.clone(),
        hoox_common::runtime_config::RuntimeConfig::fixed(Default::default()),
    ));
    let app = app_for(&pool, vec![bybit, paper]).await;
    let mut body = order_signal(Kind::Bybit, "LONG");
    body.as_object_mut().unwrap().remove("exchange");

    let first = accepted(&app, &body).await;
    app.wait_for_fill(&first).await;
    assert_eq!(fill_of(&pool, &first).await.0, "paper");

    // Through the operator's command, with a TradingView-style symbol it normalises.
    let output = app
        .hoox()
        .args([
            "config",
            "set",
            "exchanges:routing:BINANCE:btcusdt.p",
            "Bybit",
        ])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "exchanges:routing:BTCUSDT = bybit"
    );
    let symbol = hoox_common::signal::Symbol::parse("BTCUSDT").unwrap();
    let key = routing_key(&symbol);
    tokio::time::timeout(
        crate::support::DEADLINE,
        app.config
            .wait_until(|m| m.get(&key).map(String::as_str) == Some("bybit")),
    )
    .await
    .expect("the running consumer sees the change");
    body["quantity"] = json!("0.002");
    let second = accepted(&app, &body).await;
    app.wait_for_fill(&second).await;
    assert_eq!(fill_of(&pool, &second).await.0, "bybit");
    assert_eq!(mock.orders().len(), 1);
    app.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_test_signal_trades_on_the_testnet_with_the_testnet_keys(pool: PgPool) {
    let mainnet = MockExchange::start(Kind::Bybit).await;
    let testnet = MockExchange::with_keys(Kind::Bybit, "testnet-key", "testnet-secret").await;
    let bybit = provider_for(
        Kind::Bybit,
        live(mainnet.url(), SECRET),
        Environment {
            base_url: Some(testnet.url()),
            credentials: credentials("testnet-key", "testnet-secret"),
        },
        Duration::from_secs(10),
    );
    let app = app_for(&pool, vec![bybit]).await;
    let mut body = order_signal(Kind::Bybit, "LONG");
    body["test"] = json!(true);

    let id = accepted(&app, &body).await;
    app.wait_for_fill(&id).await;
    assert_eq!(testnet.orders().len(), 1);
    assert!(mainnet.orders().is_empty());
    assert!(testnet.refused().is_empty(), "{:?}", testnet.refused());
    app.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn wrong_secret_and_too_small_orders_are_fatal_and_say_why(pool: PgPool) {
    let connection = broker().await;
    let mock = MockExchange::start(Kind::Bybit).await;
    let wrong = provider_for(
        Kind::Bybit,
        live(mock.url(), "not-the-secret"),
        Environment::default(),
        Duration::from_secs(10),
    );
    let app = app_for(&pool, vec![wrong]).await;
    let mut body = order_signal(Kind::Bybit, "LONG");
    body.as_object_mut().unwrap().remove("leverage");
    accepted(&app, &body).await;
    let mut tiny = body.clone();
    tiny["quantity"] = json!("0.0004");
    accepted(&app, &tiny).await;
    let mut testnet = body.clone();
    testnet["test"] = json!(true);
    accepted(&app, &testnet).await;

    let letters = wait_for_dead_letters(&app, &connection, 3).await;
    let errors: Vec<String> = letters
        .iter()
        .map(|l| format!("{} {}", l.reason, l.error.clone().unwrap_or_default()))
        .collect();
    let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
    assert!(has("fatal [10004] bybit: error sign!"), "{errors:?}");
    // The instrument rules are public: the size is checked before anything is signed.
    assert!(
        has("quantity 0.0004 BTCUSDT is below bybit's minimum order quantity 0.001"),
        "{errors:?}"
    );
    assert!(
        has("no testnet API credentials configured for bybit"),
        "{errors:?}"
    );
    assert!(mock.orders().is_empty());
    assert_eq!(mock.refused(), vec!["bad signature".to_owned()]);
    app.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_retry_after_an_unanswered_order_looks_it_up_before_placing_it_again(pool: PgPool) {
    for kind in ALL {
        let mock = MockExchange::start(kind).await;
        // The order is taken unanswered and the lookup after it fails: the retry finds
        // the order by its client id and never sends it again.
        mock.fail_next(&[Fault::TakeAndHang]);
        mock.fail_next_lookups(1);
        let app = app_for(&pool, vec![provider(kind, &mock, Duration::from_secs(1))]).await;
        let id = accepted(&app, &order_signal(kind, "LONG")).await;
        assert_eq!(app.wait_for_fill(&id).await, 1);
        assert_eq!(mock.orders().len(), 1, "{kind:?}: one order");
        let (_, order_id, ..) = fill_of(&pool, &id).await;
        assert_eq!(order_id.as_deref(), Some(mock.orders()[0].id.as_str()));
        let duplicates_refused = count(
            &pool,
            "SELECT count(*) FROM system_logs WHERE kind = 'order_lookup' AND context->>'class' = 'duplicate'",
        )
        .await;
        assert_eq!(duplicates_refused, 0, "{kind:?}: never sent twice");
        app.stop().await;
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn every_transport_fault_ends_in_one_order_and_its_fill(pool: PgPool) {
    let connection = broker().await;
    for kind in ALL {
        let mock = MockExchange::start(kind).await;
        let app = app_for(&pool, vec![provider(kind, &mock, Duration::from_secs(1))]).await;
        let mut ids: Vec<Uuid> = Vec::new();
        for (n, fault) in Fault::TRANSPORT.into_iter().enumerate() {
            mock.fail_next(&[fault]);
            let mut body = order_signal(kind, "LONG");
            body["idempotencyKey"] = json!(format!("{kind:?}-{n}"));
            let id = accepted(&app, &body).await;
            // Whether the fault came before or after the order was taken, the signal is
            // retried or found, and ends in one fill.
            assert_eq!(app.wait_for_fill(&id).await, 1, "{kind:?} {fault:?}");
            let (_, order_id, ..) = fill_of(&pool, &id).await;
            let client_id = Uuid::parse_str(&id).unwrap().simple().to_string();
            let placed: Vec<_> = mock
                .orders()
                .into_iter()
                .filter(|o| o.client_id == client_id)
                .collect();
            assert_eq!(placed.len(), 1, "{kind:?} {fault:?}: one order");
            assert_eq!(order_id.as_deref(), Some(placed[0].id.as_str()));
            ids.push(id.parse().unwrap());
        }
        let accepted: Vec<String> = mock.orders().into_iter().map(|o| o.client_id).collect();
        let fills: Vec<String> = sqlx::query_scalar(
            "SELECT client_order_id FROM fills WHERE request_id = ANY($1) ORDER BY 1",
        )
        .bind(&ids)
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut accepted_sorted = accepted.clone();
        accepted_sorted.sort();
        assert_eq!(accepted_sorted, fills, "{kind:?}: orders taken = fills");
        assert!(dead_letters(&app, &connection).await.is_empty(), "{kind:?}");
        app.stop().await;
    }
    let _ = connection.close(200, "done".into()).await;
}
