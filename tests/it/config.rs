//! `hoox config`: values checked per key, changes audited, and running services
//! following them without a restart.

use serde_json::json;
use sqlx::PgPool;

use crate::support::{count, eventually, TestApp, API_KEY};

async fn hoox_config(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let output = app
        .hoox()
        .arg("config")
        .args(args)
        .output()
        .await
        .expect("hoox runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[sqlx::test(migrations = "./migrations")]
async fn bad_values_are_refused_naming_the_problem_and_nothing_is_written(pool: PgPool) {
    let app = TestApp::ingest_only(pool.clone()).await;
    for (args, expected) in [
        (
            vec!["set", "exchanges:default_routing", "kraken"],
            "unknown exchange `kraken`",
        ),
        (
            vec!["set", "exchanges:routing:BTC/USDT", "bybit"],
            "exchanges:routing:BTC/USDT",
        ),
        (vec!["set", "trade:kill_switch", "maybe"], "true or false"),
        (vec!["set", "webhooks:api_key", "short"], "at least 16"),
        (
            vec!["set", "trade:killswitch", "true"],
            "unknown config key `trade:killswitch`",
        ),
        (
            vec!["get", "exchanges:default_routing"],
            "exchanges:default_routing is not set",
        ),
        (
            vec!["delete", "paper:latency_ms"],
            "paper:latency_ms is not set",
        ),
    ] {
        let (ok, _, stderr) = hoox_config(&app, &args).await;
        assert!(!ok, "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM config").await, 0);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM system_logs WHERE worker = 'cli'"
        )
        .await,
        0
    );
    app.stop().await;
}

#[sqlx::test(migrations = "./migrations")]
async fn set_get_list_delete_are_audited_and_a_new_webhook_key_is_stored_as_a_digest(pool: PgPool) {
    let app = TestApp::ingest_only(pool.clone()).await;
    app.ready().await;

    let (ok, stdout, _) =
        hoox_config(&app, &["set", "exchanges:default_routing", " BINANCE "]).await;
    assert!(ok);
    assert_eq!(stdout.trim(), "exchanges:default_routing = binance");
    let (ok, stdout, _) = hoox_config(&app, &["get", "exchanges:default_routing"]).await;
    assert!(ok);
    assert_eq!(stdout.trim(), "binance");

    // The key comes on standard input, never on the command line.
    let new_key = "rotated-webhook-key-5f1c";
    let mut child = app
        .hoox()
        .args(["config", "set", "webhooks:api_key", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, format!("{new_key}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(new_key));
    let stored: String =
        sqlx::query_scalar("SELECT value FROM config WHERE key = 'webhooks:api_key'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        stored.starts_with("sha256:") && !stored.contains(new_key),
        "{stored}"
    );

    // The running ingest follows: the new key is accepted, the old one refused.
    let body =
        |key: &str| json!({"apiKey": key, "action": "LONG", "symbol": "BTCUSDT", "quantity": 1});
    eventually("the new key accepted", || async {
        (app.post(&body(new_key)).await.0 == 202).then_some(())
    })
    .await;
    assert_eq!(app.post(&body(API_KEY)).await.0, 401);

    let (ok, stdout, _) = hoox_config(&app, &["list"]).await;
    assert!(ok);
    assert!(
        stdout.contains("exchanges:default_routing = binance"),
        "{stdout}"
    );
    assert!(stdout.contains("webhooks:api_key = sha256:"), "{stdout}");
    assert!(!stdout.contains(new_key));

    let (ok, _, _) = hoox_config(&app, &["delete", "webhooks:api_key"]).await;
    assert!(ok);
    eventually("the configured key back", || async {
        (app.post(
            &json!({"apiKey": API_KEY, "action": "SHORT", "symbol": "BTCUSDT", "quantity": 2}),
        )
        .await
        .0 == 202)
            .then_some(())
    })
    .await;

    let audit: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT kind, context FROM system_logs WHERE worker = 'cli' ORDER BY created_at, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let changes: Vec<(&str, &serde_json::Value, &serde_json::Value)> = audit
        .iter()
        .map(|(kind, c)| (kind.as_str(), &c["key"], &c["value"]))
        .collect();
    assert_eq!(
        changes,
        [
            (
                "config_changed",
                &serde_json::json!("exchanges:default_routing"),
                &serde_json::json!("binance")
            ),
            (
                "config_changed",
                &serde_json::json!("webhooks:api_key"),
                &serde_json::json!("[redacted]")
            ),
            (
                "config_changed",
                &serde_json::json!("webhooks:api_key"),
                &serde_json::Value::Null
            ),
        ]
    );
    let everything = format!("{audit:?}");
    assert!(!everything.contains(new_key) && !everything.contains("sha256:"));
    app.stop().await;
}
