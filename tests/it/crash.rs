//! A consumer killed in the middle of a batch loses nothing and trades nothing twice.

use hoox_common::runtime_config::PAPER_LATENCY_MS;
use serde_json::json;
use sqlx::PgPool;

use crate::support::{count, eventually, signal, spawn_hoox, TestApp};

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn consumer_killed_mid_batch_loses_nothing_and_trades_nothing_twice(pool: PgPool) {
    // Ingest in this process; the consumer is a separate `hoox run` we can SIGKILL.
    let app = TestApp::ingest_only(pool.clone()).await;
    app.ready().await;
    // Each paper order takes 100 ms; outcomes cannot commit while the test holds a lock
    // on `fills`, so orders are placed and left uncommitted: the moment to kill.
    app.set_config(PAPER_LATENCY_MS, "100").await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE fills IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    for i in 0..20 {
        let symbol = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"][i % 4];
        let mut body = signal(symbol);
        body["idempotencyKey"] = json!(format!("crash-{i}"));
        let (status, envelope) = app.post(&body).await;
        assert_eq!(status, 202, "{envelope}");
    }

    let mut first = spawn_hoox(&app);
    eventually(
        "orders placed but their batch not yet committed",
        || async {
            let placed = count(&pool, "SELECT count(*) FROM paper_orders").await;
            let filled = count(&pool, "SELECT count(*) FROM fills").await;
            (placed >= 2 && filled < placed).then_some(())
        },
    )
    .await;
    first.kill().await.expect("SIGKILL");
    lock.rollback().await.unwrap();
    let placed_before_restart = count(&pool, "SELECT count(*) FROM paper_orders").await;
    assert!(placed_before_restart > count(&pool, "SELECT count(*) FROM fills").await);

    let mut second = spawn_hoox(&app);
    eventually("all 20 fills", || async {
        (count(&pool, "SELECT count(*) FROM fills").await == 20).then_some(())
    })
    .await;
    second.kill().await.expect("stop");

    assert_eq!(
        count(&pool, "SELECT count(*) FROM paper_orders").await,
        20,
        "no signal traded twice"
    );
    // Every fill points at the one order the paper exchange holds for it.
    let mismatched = count(
        &pool,
        r#"SELECT count(*) FROM fills f JOIN paper_orders p ON p.client_order_id = f.client_order_id
           WHERE f.exchange_order_id <> p.order_id::text"#,
    )
    .await;
    assert_eq!(mismatched, 0);
    // The orders placed before the kill were found again by client order id, not re-placed.
    let recovered = count(
        &pool,
        "SELECT count(*) FROM system_logs WHERE kind = 'order_found' AND context->>'exchange' = 'paper'",
    )
    .await;
    assert!(recovered >= 1, "redelivered orders were looked up");
    app.stop().await;
}
