//! Risk limits: what ingest refuses from the signal alone, what the consumer refuses
//! when a limit was set after ingest took the signal or needs the ledger or the
//! exchange's price, the daily-loss kill switch, and that a close always goes.

use std::time::Duration;

use hoox_common::risk::{
    ALLOWED_SYMBOLS, MAX_DAILY_LOSS, MAX_LEVERAGE, MAX_NOTIONAL, MAX_QUANTITY,
};
use hoox_common::telegram::{watch_kill_switch, BotApi, Notifier};
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::support::exchanges::{Fault, Kind, MockExchange};
use crate::support::telegram::{MockTelegram, CHAT, TOKEN};
use crate::support::{
    accepted, broker, count, eventually, signal, wait_for_dead_letters, Options, TestApp,
};

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_signal_over_a_limit_is_refused_at_ingest_naming_the_limit_and_queues_nothing(
    pool: PgPool,
) {
    let app = TestApp::start(pool.clone()).await;
    app.ready().await;
    app.set_config(MAX_QUANTITY, "10").await;
    app.set_config("risk:max_quantity:BTCUSDT", "0.001").await;
    app.set_config(MAX_NOTIONAL, "100").await;

    let (status, envelope) = app.post(&signal("BTCUSDT")).await;
    assert_eq!(status, 400, "{envelope}");
    assert_eq!(envelope["result"]["limit"], "risk:max_quantity:BTCUSDT");
    assert_eq!(envelope["result"]["status"], "refused");

    // 0.005 × 68000 = 340, over the global notional of 100.
    let (status, envelope) = app.post(&signal("ETHUSDT")).await;
    assert_eq!(status, 400, "{envelope}");
    assert_eq!(envelope["result"]["limit"], MAX_NOTIONAL);

    app.set_config(MAX_LEVERAGE, "10").await;
    let mut levered = signal("ETHUSDT");
    levered["quantity"] = json!(0.001);
    levered["leverage"] = json!(20);
    let (status, envelope) = app.post(&levered).await;
    assert_eq!(status, 400, "{envelope}");
    assert_eq!(envelope["result"]["limit"], MAX_LEVERAGE);

    // Within every limit: accepted and filled, and it is the only fill.
    let mut small = signal("ETHUSDT");
    small["quantity"] = json!(0.001);
    let id = accepted(&app, &small).await;
    app.wait_for_fill(&id).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM fills").await, 1);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_close_is_never_refused_by_a_limit_or_the_allowed_symbols(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    app.ready().await;
    app.set_config(ALLOWED_SYMBOLS, "ETHUSDT").await;
    app.set_config(MAX_QUANTITY, "0.001").await;
    app.set_config(MAX_NOTIONAL, "1").await;

    let (status, envelope) = app.post(&signal("BTCUSDT")).await;
    assert_eq!(status, 400, "{envelope}");
    assert_eq!(envelope["result"]["limit"], ALLOWED_SYMBOLS);

    let mut close = signal("BTCUSDT");
    close["action"] = json!("CLOSE_LONG");
    let id = accepted(&app, &close).await;
    app.wait_for_fill(&id).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_limit_set_after_ingest_took_the_signal_dead_letters_it_as_fatal(pool: PgPool) {
    let mut app = TestApp::with(
        pool.clone(),
        Options {
            consumer: false,
            ..Options::default()
        },
    )
    .await;
    app.ready().await;
    let id = accepted(&app, &signal("BTCUSDT")).await;
    app.set_config("risk:max_quantity:BTCUSDT", "0.001").await;
    app.start_consumer(Vec::new());

    let connection = broker().await;
    let letters = wait_for_dead_letters(&app, &connection, 1).await;
    assert_eq!(letters[0].request_id.map(|u| u.to_string()), Some(id));
    assert_eq!(letters[0].reason, "fatal");
    let error = letters[0].error.clone().unwrap_or_default();
    assert!(error.contains("risk:max_quantity:BTCUSDT"), "{error}");
    assert_eq!(count(&pool, "SELECT count(*) FROM fills").await, 0);
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

/// An app whose consumer starts only when the test says, so that what is queued first
/// is taken in one batch.
async fn app_without_consumer(pool: &PgPool) -> TestApp {
    let app = TestApp::with(
        pool.clone(),
        Options {
            consumer: false,
            ..Options::default()
        },
    )
    .await;
    app.ready().await;
    app
}

async fn paper_position(pool: &PgPool, symbol: &str) -> Decimal {
    sqlx::query_scalar("SELECT quantity FROM positions WHERE exchange = 'paper' AND symbol = $1")
        .bind(symbol)
        .fetch_optional(pool)
        .await
        .expect("positions")
        .unwrap_or_default()
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_position_limit_counts_the_orders_in_flight_and_never_refuses_a_close(pool: PgPool) {
    let mut app = app_without_consumer(&pool).await;
    app.set_config("risk:max_position:BTCUSDT", "0.01").await;
    // Three buys of 0.005 queued together: the consumer takes them in one batch, so
    // the second and third start before the first fill is committed to the ledger.
    let mut ids = Vec::new();
    for price in [68000, 68001, 68002] {
        let mut buy = signal("BTCUSDT");
        buy["price"] = json!(price);
        ids.push(accepted(&app, &buy).await);
    }
    app.start_consumer(Vec::new());

    let connection = broker().await;
    let letters = wait_for_dead_letters(&app, &connection, 1).await;
    assert_eq!(
        letters[0].request_id.map(|u| u.to_string()),
        Some(ids[2].clone())
    );
    assert_eq!(letters[0].reason, "fatal");
    let error = letters[0].error.clone().unwrap_or_default();
    assert!(error.contains("risk:max_position:BTCUSDT"), "{error}");
    app.wait_for_fill(&ids[0]).await;
    app.wait_for_fill(&ids[1]).await;
    assert_eq!(
        paper_position(&pool, "BTCUSDT").await,
        "0.01".parse().unwrap()
    );

    // Lower the limit below the position: closing is still allowed, in full.
    app.set_config("risk:max_position:BTCUSDT", "0.001").await;
    let mut close = signal("BTCUSDT");
    close["action"] = json!("CLOSE_LONG");
    close["quantity"] = json!(0.01);
    let id = accepted(&app, &close).await;
    app.wait_for_fill(&id).await;
    assert_eq!(paper_position(&pool, "BTCUSDT").await, Decimal::ZERO);
    assert_eq!(count(&pool, "SELECT count(*) FROM fills").await, 3);
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_market_orders_notional_is_checked_at_the_exchanges_price(pool: PgPool) {
    let mut app = app_without_consumer(&pool).await;
    app.set_config(MAX_NOTIONAL, "100").await;
    app.set_config("paper:price:BTCUSDT", "68000").await;
    let market = |symbol: &str, quantity: f64| {
        let mut order = signal(symbol);
        order.as_object_mut().expect("an object").remove("price");
        order["quantity"] = json!(quantity);
        order
    };
    // 0.001 × 68000 = 68 goes; 0.002 × 68000 = 136 does not. Without a price the
    // signal carries, ingest cannot tell: both are queued.
    let within = accepted(&app, &market("BTCUSDT", 0.001)).await;
    let over = accepted(&app, &market("BTCUSDT", 0.002)).await;
    // No price to be had for ETHUSDT: the limit cannot be checked, so it refuses.
    let unpriced = accepted(&app, &market("ETHUSDT", 0.001)).await;
    // A close over the notional still goes.
    let mut close = market("BTCUSDT", 0.002);
    close["action"] = json!("CLOSE_LONG");
    let close = accepted(&app, &close).await;
    app.start_consumer(Vec::new());

    app.wait_for_fill(&within).await;
    app.wait_for_fill(&close).await;
    let connection = broker().await;
    let letters = wait_for_dead_letters(&app, &connection, 2).await;
    for id in [&over, &unpriced] {
        let letter = letters
            .iter()
            .find(|l| l.request_id.map(|u| u.to_string()).as_ref() == Some(id))
            .expect("dead-lettered");
        assert_eq!(letter.reason, "fatal");
        let error = letter.error.clone().unwrap_or_default();
        assert!(error.contains(MAX_NOTIONAL), "{error}");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM fills").await, 2);
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn the_days_realized_loss_beyond_its_limit_turns_the_kill_switch_on(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    app.ready().await;
    app.set_config(MAX_DAILY_LOSS, "5").await;
    // The chat is told by the bot's watch of the switch, as `hoox bot` runs it.
    let telegram = MockTelegram::start().await;
    let token = CancellationToken::new();
    let api = BotApi::new(&telegram.url(), SecretString::from(TOKEN.to_owned()), CHAT);
    let (notifier, _sender) = Notifier::start(api, token.clone());
    let watch = tokio::spawn(watch_kill_switch(
        app.config.clone(),
        notifier,
        token.clone(),
    ));

    // Long 0.01 at 60000, closed at 59000: a realized loss of 10.
    let mut open = signal("BTCUSDT");
    open["quantity"] = json!(0.01);
    open["price"] = json!(60000);
    let id = accepted(&app, &open).await;
    app.wait_for_fill(&id).await;
    assert!(!hoox::commands::kill_switch::state(&pool).await.unwrap());
    let mut close = open.clone();
    close["action"] = json!("CLOSE_LONG");
    close["price"] = json!(59000);
    let id = accepted(&app, &close).await;
    app.wait_for_fill(&id).await;

    let status = eventually("the kill switch", || async {
        let status = hoox::commands::kill_switch::status(&pool).await.ok()?;
        status.on.then_some(status)
    })
    .await;
    assert_eq!(
        status.changed.map(|(_, by)| by),
        Some("consumer".to_owned())
    );
    let reason = status.reason.expect("a reason");
    assert!(reason.contains(MAX_DAILY_LOSS), "{reason}");

    let (worker, context): (String, Value) = sqlx::query_as(
        "SELECT worker, context FROM system_logs WHERE kind = 'daily_loss_limit_reached'",
    )
    .fetch_one(&pool)
    .await
    .expect("one daily loss event");
    assert_eq!(worker, "consumer");
    assert_eq!(context["realizedPnl"], "-10");
    assert_eq!(context["limit"], "5");
    assert_eq!(
        context["day"],
        chrono::Utc::now().date_naive().to_string().as_str()
    );
    let change: Value = sqlx::query_scalar(
        "SELECT context FROM system_logs WHERE kind = 'kill_switch_changed' AND worker = 'consumer'",
    )
    .fetch_one(&pool)
    .await
    .expect("one kill switch change");
    assert_eq!(change["on"], true);
    assert_eq!(change["reason"], json!(reason));
    let told = eventually("the chat told why", || async {
        telegram
            .sent()
            .into_iter()
            .find(|m| m.chat_id == CHAT && m.text.contains(MAX_DAILY_LOSS))
    })
    .await;
    assert!(told.text.contains("-10"), "{}", told.text);
    token.cancel();
    watch.await.expect("the watch stops");

    // Trading is halted: the next webhook is answered 503.
    let (status, envelope) = app.post(&signal("ETHUSDT")).await;
    assert_eq!(status, 503, "{envelope}");

    // An operator turning it off takes the reason away with it.
    hoox::commands::kill_switch::set(&pool, hoox_common::logs::Worker::Cli, false)
        .await
        .unwrap();
    let status = hoox::commands::kill_switch::status(&pool).await.unwrap();
    assert!(!status.on);
    assert_eq!(status.reason, None);
    app.stop().await;
}

/// Sets `key` to `value` while the exchange holds an order unanswered, and checks that
/// the retry finds the order it placed instead of refusing the signal.
async fn change_while_an_order_hangs(pool: PgPool, key: &str, value: &str) {
    let mock = MockExchange::start(Kind::Bybit).await;
    // Taken but never answered, and the lookup right after is down: the attempt ends
    // not knowing, and the signal is retried.
    mock.fail_next(&[Fault::TakeAndHang]);
    mock.fail_next_lookups(1);
    let bybit = crate::exchanges::provider(Kind::Bybit, &mock, Duration::from_secs(1));
    let app = TestApp::with(
        pool.clone(),
        Options {
            exchanges: vec![bybit],
            ..Options::default()
        },
    )
    .await;
    app.ready().await;

    let mut order = signal("BTCUSDT");
    order["exchange"] = json!("bybit");
    let id = accepted(&app, &order).await;
    eventually("the order taken", || async {
        (mock.orders().len() == 1).then_some(())
    })
    .await;
    app.set_config(key, value).await;

    assert_eq!(app.wait_for_fill(&id).await, 1);
    assert_eq!(mock.orders().len(), 1, "traded twice");
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM system_logs WHERE request_id = $1::uuid ORDER BY id")
            .bind(&id)
            .fetch_all(&pool)
            .await
            .expect("the trail");
    assert!(kinds.iter().any(|k| k == "order_found"), "{kinds:?}");
    assert!(!kinds.iter().any(|k| k == "dead_lettered"), "{kinds:?}");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_limit_set_while_an_order_hangs_does_not_disown_it_on_the_retry(pool: PgPool) {
    change_while_an_order_hangs(pool, MAX_QUANTITY, "0.001").await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn the_kill_switch_turned_on_while_an_order_hangs_does_not_disown_it(pool: PgPool) {
    change_while_an_order_hangs(pool, hoox_common::runtime_config::KILL_SWITCH, "true").await;
}
