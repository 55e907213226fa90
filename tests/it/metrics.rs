//! `/metrics` after traffic: the counters for that traffic moved. The recorder is one
//! per process and tests run in parallel, so each check is "moved by at least".

use chrono::Utc;
use hoox_common::runtime_config::KILL_SWITCH;
use serde_json::json;
use sqlx::PgPool;

use crate::support::{
    accepted, broker, message_for, publish_signed, signal, wait_for_dead_letters, TestApp,
};

/// The value of the sample `series` (name and labels exactly as rendered), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(app: &TestApp) -> String {
    let response = app
        .http
        .get(format!("http://{}/metrics", app.addr))
        .send()
        .await
        .expect("ingest answers /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn metrics_after_traffic_count_webhooks_orders_fills_and_dead_letters(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    app.ready().await;
    let before = scrape(&app).await;

    let mut ids = Vec::new();
    for symbol in ["BTCUSDT", "ETHUSDT", "SOLUSDT"] {
        ids.push(accepted(&app, &signal(symbol)).await);
    }
    let (status, _) = app.post(&json!({"apiKey": crate::support::API_KEY})).await;
    assert_eq!(status, 400);
    for id in &ids {
        app.wait_for_fill(id).await;
    }
    // A signal dequeued while the kill switch is on is dead-lettered.
    app.set_config(KILL_SWITCH, "true").await;
    let connection = broker().await;
    publish_signed(&app, &connection, &message_for("XRPUSDT", Utc::now())).await;
    wait_for_dead_letters(&app, &connection, 1).await;

    let after = crate::support::eventually("the dead letter counted", || async {
        let text = scrape(&app).await;
        let moved = |series: &str| sample(&text, series) - sample(&before, series);
        (moved(r#"hoox_dead_letters_total{reason="kill_switch"}"#) >= 1.0).then_some(text)
    })
    .await;
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert!(
        moved(r#"hoox_webhooks_total{status="202"}"#) >= 3.0,
        "{after}"
    );
    assert!(
        moved(r#"hoox_webhooks_total{status="400"}"#) >= 1.0,
        "{after}"
    );
    assert!(
        moved("hoox_webhook_duration_seconds_count") >= 4.0,
        "{after}"
    );
    assert!(
        moved("hoox_publish_duration_seconds_count") >= 3.0,
        "{after}"
    );
    assert!(
        moved(r#"hoox_orders_total{exchange="paper",outcome="placed"}"#) >= 3.0,
        "{after}"
    );
    assert!(
        moved("hoox_signal_to_order_seconds_count") >= 3.0,
        "{after}"
    );
    assert!(moved("hoox_batch_size_count") >= 1.0, "{after}");
    // The gauges are set at each scrape from the scraping app's state; parallel tests
    // share the recorder, so only their presence is checked here.
    for gauge in [
        "hoox_kill_switch",
        "hoox_broker_connected",
        "hoox_database_connected",
    ] {
        assert!(
            after.lines().any(|l| l.starts_with(&format!("{gauge} "))),
            "{gauge} in {after}"
        );
    }
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}
