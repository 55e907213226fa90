//! Risk limits: what ingest refuses from the signal alone, what the consumer refuses
//! when a limit was set after ingest took the signal, and that a close always goes.

use hoox_common::risk::{ALLOWED_SYMBOLS, MAX_NOTIONAL, MAX_QUANTITY};
use serde_json::json;
use sqlx::PgPool;

use crate::support::{accepted, broker, count, signal, wait_for_dead_letters, Options, TestApp};

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
