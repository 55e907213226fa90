//! The source checks: `HOOX_IP_ALLOWLIST` (403), `HOOX_TRUSTED_PROXIES` (who may set
//! `X-Forwarded-For`) and `HOOX_RATE_LIMIT_PER_MIN` (429), each from real connections
//! on different loopback addresses.

use hoox_ingest::source::{IpNets, RatePerMinute, Sources};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::{client_from, signal, Options, TestApp};

async fn app_with(pool: PgPool, sources: Sources) -> TestApp {
    TestApp::with(
        pool,
        Options {
            consumer: false,
            sources,
            ..Options::default()
        },
    )
    .await
}

fn nets(list: &str) -> IpNets {
    IpNets::parse(list).unwrap()
}

fn assert_refused(answer: &(u16, Value), status: u16, what: &str) {
    assert_eq!(answer.0, status, "{what}: {}", answer.1);
    assert_eq!(answer.1["success"], false, "{what}");
    assert_eq!(answer.1["result"], Value::Null, "{what}");
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_source_outside_the_allowlist_gets_403_and_forwarded_for_cannot_bypass_it(pool: PgPool) {
    let sources = Sources::new(nets("127.0.0.2/32"), nets(""), RatePerMinute(None));
    let app = app_with(pool, sources).await;
    app.ready().await;
    let stranger = client_from("127.0.0.1");
    let body = signal("BTCUSDT").to_string();

    let refused = app.post_with(&stranger, body.clone(), &[]).await;
    assert_refused(&refused, 403, "from outside the allowlist");
    // Checked before the body is parsed: a stranger learns nothing about it.
    let refused = app.post_with(&stranger, "not json", &[]).await;
    assert_refused(&refused, 403, "not JSON from outside the allowlist");
    // 127.0.0.1 is no trusted proxy, so its X-Forwarded-For is ignored.
    let spoofed = app
        .post_with(&stranger, body.clone(), &[("x-forwarded-for", "127.0.0.2")])
        .await;
    assert_refused(&spoofed, 403, "spoofed X-Forwarded-For");

    let allowed = app.post_with(&client_from("127.0.0.2"), body, &[]).await;
    assert_eq!(allowed.0, 202, "{}", allowed.1);
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn behind_a_trusted_proxy_forwarded_for_sets_the_source(pool: PgPool) {
    let sources = Sources::new(nets("127.0.0.2"), nets("127.0.0.3"), RatePerMinute(None));
    let app = app_with(pool, sources).await;
    app.ready().await;
    let proxy = client_from("127.0.0.3");

    let forwarded = app
        .post_with(
            &proxy,
            signal("BTCUSDT").to_string(),
            &[("x-forwarded-for", "127.0.0.2")],
        )
        .await;
    assert_eq!(forwarded.0, 202, "{}", forwarded.1);

    // The right-most untrusted hop is the source; the client wrote what is left of it.
    let prepended = app
        .post_with(
            &proxy,
            signal("ETHUSDT").to_string(),
            &[("x-forwarded-for", "127.0.0.2, 198.51.100.7")],
        )
        .await;
    assert_refused(&prepended, 403, "a client's own X-Forwarded-For");

    // Without the header, the proxy itself is the source, and it is not allowed.
    let direct = app
        .post_with(&proxy, signal("SOLUSDT").to_string(), &[])
        .await;
    assert_refused(&direct, 403, "the proxy itself");
    let garbled = app
        .post_with(
            &proxy,
            signal("SOLUSDT").to_string(),
            &[("x-forwarded-for", "not-an-address")],
        )
        .await;
    assert_refused(&garbled, 403, "an unreadable hop");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn over_the_rate_limit_a_source_gets_429_and_other_sources_do_not(pool: PgPool) {
    let sources = Sources::new(
        nets(""),
        nets("127.0.0.1"),
        RatePerMinute::parse("3").unwrap(),
    );
    let app = app_with(pool, sources).await;
    // Authenticated but invalid: the answer is a 400 that needs no broker, and it
    // counts against the limit like any authenticated webhook.
    let mut invalid = signal("BTCUSDT");
    invalid["quantity"] = json!(0);
    let invalid = invalid.to_string();
    let from = |source: &'static str| [("x-forwarded-for", source)];

    for n in 1..=3 {
        let answer = app.post_raw(invalid.clone(), &from("192.0.2.1")).await;
        assert_eq!(answer.0, 400, "webhook {n}: {}", answer.1);
    }
    let limited = app.post_raw(invalid.clone(), &from("192.0.2.1")).await;
    assert_refused(&limited, 429, "the fourth in a minute");
    assert!(limited.1["error"].as_str().unwrap().contains('3'));

    // Authentication comes first: a caller without the key learns nothing of the limit.
    let unauthenticated = app
        .post_raw(json!({"apiKey": "wrong"}).to_string(), &from("192.0.2.1"))
        .await;
    assert_refused(&unauthenticated, 401, "without the key");

    let other = app.post_raw(invalid, &from("192.0.2.2")).await;
    assert_eq!(other.0, 400, "another source is not limited: {}", other.1);
    app.stop().await;
}
