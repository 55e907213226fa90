//! The webhook's answer table, row by row, in the contract's order of checks.

use hoox_common::runtime_config::{hash_secret, KILL_SWITCH, WEBHOOK_API_KEY};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::proxy::TcpProxy;
use crate::support::{count, eventually, signal, Options, TestApp, API_KEY};

fn error_of(envelope: &Value) -> &str {
    envelope["error"].as_str().unwrap_or_default()
}

async fn queued(app: &TestApp) -> i64 {
    count(&app.pool, "SELECT count(*) FROM idempotency_keys").await
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn accepted_webhook_answers_202_with_a_uuid_v4_request_id(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    app.ready().await;
    let (status, envelope) = app.post(&signal("BTCUSDT")).await;
    assert_eq!(status, 202, "{envelope}");
    assert_eq!(envelope["success"], true);
    assert_eq!(envelope["error"], Value::Null);
    assert_eq!(envelope["result"]["status"], "queued");
    let id: uuid::Uuid = envelope["result"]["requestId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(id.get_version_num(), 4);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn tradingview_text_plain_body_with_trailing_newline_is_accepted(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    app.ready().await;
    let body = format!("{}\n", signal("BYBIT:ETHUSDT.P"));
    let (status, envelope) = app
        .post_raw(body, &[("content-type", "text/plain; charset=utf-8")])
        .await;
    assert_eq!(status, 202, "{envelope}");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn body_over_64_kib_is_rejected_with_413_before_anything_else(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    let mut huge = signal("BTCUSDT");
    huge["apiKey"] = json!("wrong");
    huge["pad"] = json!("x".repeat(70 * 1024));
    let (status, envelope) = app.post(&huge).await;
    assert_eq!(status, 413, "{envelope}");
    assert!(error_of(&envelope).contains("65536"), "{envelope}");

    // Without a Content-Length (chunked), the limit still holds while reading.
    let chunks =
        futures_util::stream::iter((0..70).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let (status, _) = app.post_raw(reqwest::Body::wrap_stream(chunks), &[]).await;
    assert_eq!(status, 413);
    assert_eq!(queued(&app).await, 0);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn body_that_is_not_a_json_object_is_rejected_with_400(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    for body in [
        "",
        "not json",
        "{\"apiKey\": ",
        "[1, 2]",
        "\"LONG\"",
        "null",
        "{\"a\":1}}",
    ] {
        let (status, envelope) = app.post_raw(body, &[]).await;
        assert_eq!(status, 400, "{body:?} gave {envelope}");
        assert!(
            error_of(&envelope).starts_with("body is not a JSON object"),
            "{envelope}"
        );
    }
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_key_sent_twice_is_rejected_with_400_naming_it_and_never_authenticates(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    app.ready().await;
    let bodies = [
        (
            r#"{"apiKey":"wrong","apiKey":"test-webhook-key","action":"LONG","symbol":"BTCUSDT","quantity":1}"#,
            "duplicate field: apiKey",
        ),
        (
            r#"{"apiKey":"test-webhook-key","action":"LONG","symbol":"BTCUSDT","quantity":0.001,"quantity":5}"#,
            "duplicate field: quantity",
        ),
    ];
    for (body, error) in bodies {
        let (status, envelope) = app.post_raw(body, &[]).await;
        assert_eq!(status, 400, "{envelope}");
        assert_eq!(error_of(&envelope), error);
    }
    assert_eq!(queued(&app).await, 0);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn wrong_or_missing_api_key_is_rejected_with_401(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    let mut wrong = signal("BTCUSDT");
    wrong["apiKey"] = json!("test-webhook-keY");
    let mut missing = signal("BTCUSDT");
    missing.as_object_mut().unwrap().remove("apiKey");
    let mut number = signal("BTCUSDT");
    number["apiKey"] = json!(12345);
    for body in [wrong, missing.clone(), number] {
        let (status, envelope) = app.post(&body).await;
        assert_eq!(status, 401, "{envelope}");
        assert_eq!(error_of(&envelope), "apiKey is missing or wrong");
    }
    // Authentication comes before validation: an invalid signal with a wrong key
    // learns nothing about its fields.
    let (status, _) = app.post(&json!({"apiKey": "nope", "quantity": -1})).await;
    assert_eq!(status, 401);

    // The key may come as a header instead (producers that can set headers).
    app.ready().await;
    let (status, envelope) = app
        .post_raw(missing.to_string(), &[("x-api-key", API_KEY)])
        .await;
    assert_eq!(status, 202, "{envelope}");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn config_api_key_overrides_the_environment_key(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    app.ready().await;
    app.set_config(WEBHOOK_API_KEY, &hash_secret("rotated-key"))
        .await;
    let (status, _) = app.post(&signal("BTCUSDT")).await;
    assert_eq!(status, 401, "the old key stops working");
    let mut rotated = signal("BTCUSDT");
    rotated["apiKey"] = json!("rotated-key");
    let (status, envelope) = app.post(&rotated).await;
    assert_eq!(status, 202, "{envelope}");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn invalid_fields_are_rejected_with_400_naming_the_field(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    let cases = [
        ("quantity", json!("abc")),
        ("quantity", json!(0)),
        ("quantity", json!(true)),
        ("symbol", json!("BTC/USDT")),
        ("action", json!("HOLD")),
        ("exchange", json!("kraken")),
        ("leverage", json!(500)),
        ("orderType", json!("stop")),
    ];
    for (field, value) in cases {
        let mut body = signal("BTCUSDT");
        body[field] = value.clone();
        let (status, envelope) = app.post(&body).await;
        assert_eq!(status, 400, "{field}={value} gave {envelope}");
        assert!(
            error_of(&envelope).starts_with(&format!("invalid signal: {field}:")),
            "{envelope}"
        );
    }
    let mut limit_without_price = signal("BTCUSDT");
    limit_without_price["orderType"] = json!("limit");
    limit_without_price.as_object_mut().unwrap().remove("price");
    let (status, envelope) = app.post(&limit_without_price).await;
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&envelope),
        "invalid signal: price: required for a limit order"
    );
    assert_eq!(queued(&app).await, 0, "nothing refused was remembered");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn kill_switch_answers_503_to_authenticated_valid_signals_only(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    app.ready().await;
    app.set_config(KILL_SWITCH, "true").await;
    let (status, envelope) = app.post(&signal("BTCUSDT")).await;
    assert_eq!(status, 503, "{envelope}");
    assert!(error_of(&envelope).contains("kill switch"));
    // Before authentication, the switch's state is not revealed.
    let mut wrong = signal("BTCUSDT");
    wrong["apiKey"] = json!("wrong");
    assert_eq!(app.post(&wrong).await.0, 401);

    app.set_config(KILL_SWITCH, "false").await;
    let (status, envelope) = app.post(&signal("BTCUSDT")).await;
    assert_eq!(
        status, 202,
        "the producer's resend goes through: {envelope}"
    );
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn identical_signal_within_the_window_is_a_409_with_the_first_request_id(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    app.ready().await;
    let (status, first) = app.post(&signal("BTCUSDT")).await;
    assert_eq!(status, 202);
    // Same signal, spelled differently: same fingerprint.
    let mut respelled = signal("BYBIT:btcusdt.p");
    respelled["quantity"] = json!("0.0050");
    let (status, dup) = app.post(&respelled).await;
    assert_eq!(status, 409, "{dup}");
    assert_eq!(dup["result"]["requestId"], first["result"]["requestId"]);
    // A different signal is not a duplicate.
    assert_eq!(app.post(&signal("ETHUSDT")).await.0, 202);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn explicit_idempotency_keys_decide_duplicates(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    app.ready().await;
    let mut keyed = signal("BTCUSDT");
    keyed["idempotencyKey"] = json!("alert-1");
    let (status, first) = app.post(&keyed).await;
    assert_eq!(status, 202);
    // Same key, different content: still the same alert.
    keyed["quantity"] = json!(1);
    let (status, dup) = app.post(&keyed).await;
    assert_eq!(status, 409);
    assert_eq!(dup["result"]["requestId"], first["result"]["requestId"]);
    // The header form of the same key.
    let plain = signal("SOLUSDT");
    let (status, dup) = app
        .post_raw(plain.to_string(), &[("idempotency-key", "alert-1")])
        .await;
    assert_eq!(status, 409, "{dup}");
    // Same content, another key: a second, deliberate order.
    keyed["idempotencyKey"] = json!("alert-2");
    assert_eq!(app.post(&keyed).await.0, 202);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn concurrent_identical_signals_are_accepted_once(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    app.ready().await;
    let body = signal("BTCUSDT");
    let answers = futures_util::future::join_all((0..10).map(|_| app.post(&body))).await;
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    let duplicates = answers.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!((accepted, duplicates), (1, 9), "{answers:?}");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn unreachable_broker_answers_503_and_releases_the_key(pool: PgPool) {
    // Nothing listens on port 9 of the loopback (discard is not running).
    let app = TestApp::with(
        pool,
        Options {
            consumer: false,
            ingest_amqp_url: "amqp://guest:guest@127.0.0.1:9/%2f".to_owned(),
            ..Options::default()
        },
    )
    .await;
    let (status, envelope) = app.post(&signal("BTCUSDT")).await;
    assert_eq!(status, 503, "{envelope}");
    assert!(error_of(&envelope).contains("resend"), "{envelope}");
    assert_eq!(queued(&app).await, 0, "the key was released");
    let ready = app
        .http
        .get(format!("http://{}/readyz", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn resend_after_a_broker_outage_is_accepted_not_called_a_duplicate(pool: PgPool) {
    let broker = "127.0.0.1:5672".parse().unwrap();
    let proxy = TcpProxy::start(broker).await;
    let app = TestApp::with(
        pool,
        Options {
            ingest_amqp_url: proxy.url(),
            ..Options::default()
        },
    )
    .await;
    app.ready().await;

    proxy.down();
    let (status, envelope) = eventually("ingest to notice the outage", || async {
        let answer = app.post(&signal("BTCUSDT")).await;
        (answer.0 != 202).then_some(answer)
    })
    .await;
    assert_eq!(status, 503, "{envelope}");

    proxy.up();
    app.ready().await;
    let (status, envelope) = app.post(&signal("BTCUSDT")).await;
    assert_eq!(status, 202, "the resend is accepted: {envelope}");
    let id = envelope["result"]["requestId"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_for_fill(&id).await, 1);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM fills").await, 1);
    app.stop().await;
}
