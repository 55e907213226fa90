//! The dashboard over HTTP, against the real database and broker: no session gets the
//! sign-in page and never data; a wrong password is refused and counted, and too many
//! attempts are throttled; a POST without its CSRF token (or from another site) gets
//! 403 and changes nothing; and every page and action does what it says, recorded with
//! worker `dashboard`.

use chrono::Utc;
use hoox_common::logs::Worker;
use hoox_common::runtime_config::{hash_secret, KILL_SWITCH, WEBHOOK_API_KEY};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::dashboard::{csrf_of, is_login, set_cookie, Signed, TestDashboard, PASSWORD};
use crate::support::{
    accepted, broker, count, dead_letters, eventually, message_for, publish_signed, signal,
    wait_for_dead_letters, TestApp,
};

/// Every page and endpoint that shows data.
const PAGES: [&str; 14] = [
    "/",
    "/events/overview",
    "/kill-switch?on=true",
    "/signals",
    "/fills",
    "/fills.csv",
    "/positions",
    "/dead-letters",
    "/dead-letters/purge",
    "/config",
    "/config/edit?key=trade:kill_switch",
    "/logs",
    "/events/logs",
    "/signals?request_id=00000000-0000-0000-0000-000000000001",
];

async fn events(pool: &PgPool, kind: &str) -> i64 {
    count(
        pool,
        &format!("SELECT count(*) FROM system_logs WHERE worker = 'dashboard' AND kind = '{kind}'"),
    )
    .await
}

async fn kill_switch(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar("SELECT value FROM config WHERE key = $1")
        .bind(KILL_SWITCH)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Inserts `n` fills of `symbol` on paper, a second apart, the newest now.
async fn insert_fills(pool: &PgPool, symbol: &str, n: i32) {
    sqlx::query(
        r#"
        INSERT INTO fills (request_id, exchange, paper, symbol, action, side, reduce_only, quantity,
                           order_type, client_order_id, exchange_order_id, status, fill_price,
                           fill_quantity, received_at, executed_at, market, realized_pnl)
        SELECT gen_random_uuid(), 'paper', true, $1, 'LONG', 'buy', false, 0.01, 'market',
               'c-' || i, 'o-' || i, 'filled', 100, 0.01, now() - i * interval '1 second',
               now() - i * interval '1 second', 'paper', 0
        FROM generate_series(1, $2) AS i
        "#,
    )
    .bind(symbol)
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn without_a_live_session_every_page_is_the_sign_in_page_and_never_data(pool: PgPool) {
    let app = TestApp::ingest_only(pool.clone()).await;
    let dashboard = TestDashboard::start(&app).await;
    insert_fills(&pool, "SECRETUSDT", 1).await;
    let forged = Signed {
        cookie: "0".repeat(64),
        csrf: String::new(),
    };
    for session in [None, Some(&forged)] {
        for path in PAGES {
            let (status, page) = dashboard.page(path, session).await;
            assert_eq!(status, 401, "{path}: {page}");
            assert!(is_login(&page), "{path} without a session: {page}");
            assert!(!page.contains("SECRETUSDT"), "{path} leaked data");
        }
    }

    // A live session sees the data; expired, idle or signed out, it gets the sign-in page.
    for end in [
        "UPDATE dashboard_sessions SET expires_at = now() - interval '1 second'",
        "UPDATE dashboard_sessions SET last_seen = now() - interval '31 minutes'",
    ] {
        let session = dashboard.login().await;
        let (status, page) = dashboard.page("/fills", Some(&session)).await;
        assert_eq!(status, 200);
        assert!(page.contains("SECRETUSDT"));
        sqlx::query(end).execute(&pool).await.unwrap();
        let (status, page) = dashboard.page("/fills", Some(&session)).await;
        assert_eq!((status, is_login(&page)), (401, true), "after `{end}`");
    }
    let session = dashboard.login().await;
    let response = dashboard.submit("/logout", &session, &[]).await;
    assert_eq!(response.status(), 303);
    let cleared = set_cookie(&response).expect("sign-out clears the cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let (status, page) = dashboard.page("/fills", Some(&session)).await;
    assert_eq!((status, is_login(&page)), (401, true), "after sign-out");
    assert_eq!(events(&pool, "logged_out").await, 1);
    dashboard.stop().await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_wrong_password_is_refused_and_counted_and_too_many_attempts_are_throttled(pool: PgPool) {
    let app = TestApp::ingest_only(pool.clone()).await;
    let dashboard = TestDashboard::start(&app).await;
    let response = dashboard.try_login("not the password").await;
    assert_eq!(response.status(), 401);
    assert!(
        set_cookie(&response).is_none(),
        "no session for a wrong password"
    );
    assert!(is_login(&response.text().await.unwrap()));
    assert_eq!(
        events(&pool, "login_failed").await,
        1,
        "refused and counted"
    );
    let client: String = sqlx::query_scalar(
        "SELECT context->>'client' FROM system_logs WHERE kind = 'login_failed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(client, "127.0.0.1");

    // Five attempts a minute per client: the sixth is refused unchecked, even with the
    // right password.
    for _ in 0..4 {
        assert_eq!(dashboard.try_login("still wrong").await.status(), 401);
    }
    assert_eq!(events(&pool, "login_failed").await, 5);
    let response = dashboard.try_login(PASSWORD).await;
    assert_eq!(response.status(), 429);
    assert!(set_cookie(&response).is_none());
    assert_eq!(events(&pool, "login_throttled").await, 1);
    assert_eq!(events(&pool, "logged_in").await, 0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM dashboard_sessions").await,
        0
    );
    dashboard.stop().await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn the_session_cookie_is_strict_and_http_only_and_only_its_hash_is_stored(pool: PgPool) {
    let app = TestApp::ingest_only(pool.clone()).await;
    let dashboard = TestDashboard::start(&app).await;
    let response = dashboard.try_login(PASSWORD).await;
    assert_eq!(response.status(), 303);
    let cookie = set_cookie(&response).unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let value = crate::support::dashboard::session_cookie(&response).unwrap();
    assert!(value.len() >= 64, "a long random id");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT id_hash FROM dashboard_sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, sha256(&value), "only the id's SHA-256 is stored");
    assert_eq!(events(&pool, "logged_in").await, 1);

    // Behind a TLS proxy the cookie is Secure.
    let response = dashboard
        .post("/login", None, &[("password", PASSWORD)])
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&response).unwrap().contains("; Secure"));
    dashboard.stop().await;
    app.stop().await;
}

fn sha256(text: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_post_without_its_csrf_token_is_refused_and_changes_nothing(pool: PgPool) {
    let app = TestApp::ingest_only(pool.clone()).await;
    app.ready().await;
    let dashboard = TestDashboard::start(&app).await;
    let session = dashboard.login().await;
    let other = dashboard.login().await;
    assert_ne!(session.csrf, other.csrf, "a token per session");
    let posts: [(&str, Vec<(&str, &str)>); 6] = [
        ("/kill-switch", vec![("on", "true")]),
        (
            "/config/set",
            vec![("key", "paper:latency_ms"), ("value", "5")],
        ),
        (
            "/config/set",
            vec![
                ("key", WEBHOOK_API_KEY),
                ("value", "a-new-webhook-key-0123"),
            ],
        ),
        ("/dead-letters/purge", vec![("ids", "")]),
        ("/positions/reconcile", vec![]),
        ("/logout", vec![]),
    ];
    for (path, form) in &posts {
        let missing = dashboard
            .post(path, Some(&session), form)
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 403, "{path} without a token");
        let mut wrong = form.clone();
        wrong.push(("csrf", &other.csrf));
        let stale = dashboard
            .post(path, Some(&session), &wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 403, "{path} with another session's token");
        let mut right = form.clone();
        right.push(("csrf", &session.csrf));
        for (header, value) in [
            ("Origin", "https://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ] {
            let forged = dashboard
                .post(path, Some(&session), &right)
                .header(header, value)
                .send()
                .await
                .unwrap();
            assert_eq!(forged.status(), 403, "{path} with {header}: {value}");
        }
    }
    assert_eq!(kill_switch(&pool).await, None, "nothing changed");
    assert_eq!(count(&pool, "SELECT count(*) FROM config").await, 0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM dashboard_sessions").await,
        2
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM system_logs WHERE kind IN ('kill_switch_changed', 'config_changed', 'logged_out')").await,
        0
    );

    // With its token, from this site, the change is made and recorded as the dashboard's.
    let (status, confirm) = dashboard.page("/kill-switch?on=true", Some(&session)).await;
    assert_eq!(status, 200);
    assert!(confirm.contains(r#"id="confirm""#));
    assert_eq!(
        kill_switch(&pool).await,
        None,
        "the confirmation page changes nothing"
    );
    let response = dashboard
        .post(
            "/kill-switch",
            Some(&session),
            &[("on", "true"), ("csrf", &session.csrf)],
        )
        .header("Origin", dashboard.url.as_str())
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(kill_switch(&pool).await.as_deref(), Some("true"));
    assert_eq!(events(&pool, "kill_switch_changed").await, 1);
    let on: bool = sqlx::query_scalar(
        "SELECT (context->>'on')::boolean FROM system_logs WHERE kind = 'kill_switch_changed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(on);

    // Ingest sees it: webhooks are answered 503.
    eventually("ingest to see the kill switch", || async {
        app.config.kill_switch().then_some(())
    })
    .await;
    let (status, _) = app.post(&signal("BTCUSDT")).await;
    assert_eq!(status, 503);
    let (_, overview) = dashboard.page("/", Some(&session)).await;
    assert!(overview.contains(r#"data-on="true""#), "{overview}");
    // An operator's change gives no reason; hoox's own (the daily loss) shows its own.
    assert!(
        !overview.contains(r#"id="kill-switch-reason""#),
        "{overview}"
    );
    hoox::commands::kill_switch::set(&pool, Worker::Cli, false)
        .await
        .unwrap();
    let tripped = hoox_common::kill_switch::trip(&pool, Worker::Consumer, "a daily loss", vec![])
        .await
        .unwrap();
    assert!(tripped.is_some());
    let (_, overview) = dashboard.page("/", Some(&session)).await;
    assert!(
        overview.contains(r#"<p id="kill-switch-reason">Turned on by hoox: a daily loss</p>"#),
        "{overview}"
    );
    dashboard.stop().await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn dead_letters_are_listed_shown_replayed_to_a_fill_and_purged(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let connection = broker().await;
    app.set_config(KILL_SWITCH, "true").await;
    let (first, second) = (
        message_for("BTCUSDT", Utc::now()),
        message_for("ETHUSDT", Utc::now()),
    );
    publish_signed(&app, &connection, &first).await;
    publish_signed(&app, &connection, &second).await;
    wait_for_dead_letters(&app, &connection, 2).await;
    app.set_config(KILL_SWITCH, "false").await;
    let dashboard = TestDashboard::start(&app).await;
    let session = dashboard.login().await;

    let (status, list) = dashboard.page("/dead-letters", Some(&session)).await;
    assert_eq!(status, 200);
    for message in [&first, &second] {
        assert!(list.contains(&format!(r#"data-request-id="{}""#, message.request_id)));
    }
    let (status, shown) = dashboard
        .page(
            &format!("/dead-letters/{}", first.request_id),
            Some(&session),
        )
        .await;
    assert_eq!(status, 200);
    assert!(shown.contains("kill_switch") && shown.contains("BTCUSDT"));
    let (status, _) = dashboard
        .page(&format!("/dead-letters/{}", Uuid::new_v4()), Some(&session))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        dead_letters(&app, &connection).await.len(),
        2,
        "reading hands them back"
    );

    // Replay: the confirmation changes nothing; the confirmed replay fills.
    let replay = format!("/dead-letters/{}/replay", first.request_id);
    let (status, _) = dashboard.page(&replay, Some(&session)).await;
    assert_eq!(status, 200);
    assert_eq!(dead_letters(&app, &connection).await.len(), 2);
    let response = dashboard.submit(&replay, &session, &[]).await;
    assert_eq!(response.status(), 303);
    app.wait_for_fill(&first.request_id.to_string()).await;
    assert_eq!(events(&pool, "replayed").await, 1);
    let (_, timeline) = dashboard
        .page(
            &format!("/signals?request_id={}", first.request_id),
            Some(&session),
        )
        .await;
    assert!(timeline.contains(r#"data-kind="replayed""#), "{timeline}");
    assert!(timeline.contains(r#"data-kind="filled""#), "{timeline}");

    // Purge: what was confirmed, and nothing if the queue changed since.
    let (status, confirm) = dashboard.page("/dead-letters/purge", Some(&session)).await;
    assert_eq!(status, 200);
    assert!(confirm.contains(&second.request_id.to_string()));
    let stale = dashboard
        .submit(
            "/dead-letters/purge",
            &session,
            &[("ids", &Uuid::new_v4().to_string())],
        )
        .await;
    assert_eq!(stale.status(), 409);
    assert_eq!(
        dead_letters(&app, &connection).await.len(),
        1,
        "nothing purged"
    );
    let ids = second.request_id.to_string();
    let response = dashboard
        .submit(
            "/dead-letters/purge",
            &session,
            &[("ids", &ids), ("older_than", "")],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert!(dead_letters(&app, &connection).await.is_empty());
    assert_eq!(events(&pool, "purged").await, 1);
    let _ = connection.close(200, "done".into()).await;
    dashboard.stop().await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn signals_fills_and_positions_show_what_the_database_holds(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    app.ready().await;
    let id = accepted(&app, &signal("BTCUSDT")).await;
    app.wait_for_fill(&id).await;
    let dashboard = TestDashboard::start(&app).await;
    let session = dashboard.login().await;

    let (status, timeline) = dashboard
        .page(&format!("/signals?request_id={id}"), Some(&session))
        .await;
    assert_eq!(status, 200);
    for kind in ["accepted", "order_placed", "filled"] {
        assert!(
            timeline.contains(&format!(r#"data-kind="{kind}""#)),
            "{kind}: {timeline}"
        );
    }
    assert!(timeline.contains(r#"id="fill""#));
    let (status, page) = dashboard
        .page("/signals?request_id=nope", Some(&session))
        .await;
    assert_eq!(status, 400);
    assert!(page.contains("`nope` is not a requestId"));
    let (status, _) = dashboard
        .page(
            &format!("/signals?request_id={}", Uuid::new_v4()),
            Some(&session),
        )
        .await;
    assert_eq!(status, 404);

    // Fills: filtered, paged by keyset, and as CSV.
    insert_fills(&pool, "ETHUSDT", 120).await;
    let (status, page) = dashboard
        .page("/fills?symbol=btcusdt", Some(&session))
        .await;
    assert_eq!(status, 200);
    assert_eq!(page.matches(r#"class="fill""#).count(), 1);
    assert!(page.contains(&id));
    let (_, first) = dashboard
        .page("/fills?symbol=ETHUSDT", Some(&session))
        .await;
    assert_eq!(first.matches(r#"class="fill""#).count(), 50);
    let next = link(&first, r#"id="next-page" href=""#).expect("a next page");
    let (status, second) = dashboard.page(&next, Some(&session)).await;
    assert_eq!(status, 200);
    assert_eq!(second.matches(r#"class="fill""#).count(), 50);
    assert!(
        !second.contains(">o-50<") && second.contains(">o-51<") && second.contains(">o-100<"),
        "the next fifty, newest first"
    );
    let (status, page) = dashboard
        .page("/fills?from=2026-13-01", Some(&session))
        .await;
    assert_eq!(status, 400);
    assert!(page.contains("YYYY-MM-DD"));
    let response = dashboard
        .get("/fills.csv?exchange=paper", Some(&session))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("executed_at,request_id,exchange"));
    assert_eq!(lines.len(), 1 + 121, "the header and every fill");

    // Positions: the ledger, and the reconcile button.
    let (status, positions) = dashboard.page("/positions", Some(&session)).await;
    assert_eq!(status, 200);
    assert!(
        positions.contains(r#"data-symbol="BTCUSDT""#),
        "{positions}"
    );
    let response = dashboard
        .submit("/positions/reconcile", &session, &[])
        .await;
    assert_eq!(response.status(), 200);
    let diff = response.text().await.unwrap();
    assert!(diff.contains(r#"id="reconcile-diff""#), "{diff}");
    // No exchange has keys here: paper alone is read, as the ledger only.
    assert!(diff.contains("paper paper live: ledger only"), "{diff}");
    dashboard.stop().await;
    app.stop().await;
}

/// The `href` that follows `marker` in `page`, unescaped.
fn link(page: &str, marker: &str) -> Option<String> {
    let start = page.find(marker)? + marker.len();
    let end = page[start..].find('"')? + start;
    Some(page[start..end].replace("&#38;", "&").replace("&amp;", "&"))
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn config_is_edited_with_hoox_configs_validation_and_secrets_are_never_shown(pool: PgPool) {
    let app = TestApp::ingest_only(pool.clone()).await;
    let dashboard = TestDashboard::start(&app).await;
    let session = dashboard.login().await;
    let (status, page) = dashboard.page("/config", Some(&session)).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("risk:max_notional"),
        "every key with its meaning"
    );

    // A bad value is refused with what is wrong, and nothing is written.
    let bad = dashboard
        .submit(
            "/config/confirm",
            &session,
            &[("key", "paper:latency_ms"), ("value", "soon")],
        )
        .await;
    assert_eq!(bad.status(), 400);
    assert!(bad
        .text()
        .await
        .unwrap()
        .contains("paper:latency_ms takes whole milliseconds"));
    let bad = dashboard
        .submit(
            "/config/set",
            &session,
            &[("key", "exchanges:routing:BTCUSDT"), ("value", "nasdaq")],
        )
        .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(count(&pool, "SELECT count(*) FROM config").await, 0);

    // A good one: confirmed, then written with its audit row.
    let confirm = dashboard
        .submit(
            "/config/confirm",
            &session,
            &[("key", "exchanges:routing:btcusdt"), ("value", "PAPER")],
        )
        .await;
    assert_eq!(confirm.status(), 200);
    let confirm = confirm.text().await.unwrap();
    assert!(
        confirm.contains(r#"value="exchanges:routing:BTCUSDT""#),
        "normalised: {confirm}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM config").await,
        0,
        "not yet"
    );
    let done = dashboard
        .submit(
            "/config/set",
            &session,
            &[("key", "exchanges:routing:BTCUSDT"), ("value", "paper")],
        )
        .await;
    assert_eq!(done.status(), 303);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM config WHERE key = 'exchanges:routing:BTCUSDT' AND value = 'paper'").await,
        1
    );
    assert_eq!(events(&pool, "config_changed").await, 1);

    // The webhook key: its form is its confirmation; stored as its digest, never shown.
    let key = "a-brand-new-webhook-key-42";
    let done = dashboard
        .submit(
            "/config/set",
            &session,
            &[("key", WEBHOOK_API_KEY), ("value", key)],
        )
        .await;
    assert_eq!(done.status(), 303);
    let stored: String = sqlx::query_scalar("SELECT value FROM config WHERE key = $1")
        .bind(WEBHOOK_API_KEY)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, hash_secret(key));
    for path in ["/config", "/config/edit?key=webhooks:api_key", "/logs"] {
        let (_, page) = dashboard.page(path, Some(&session)).await;
        assert!(
            !page.contains(key) && !page.contains(&stored),
            "{path} shows the key"
        );
    }
    let audited: Option<String> = sqlx::query_scalar(
        "SELECT context->>'value' FROM system_logs WHERE kind = 'config_changed' AND context->>'key' = $1",
    )
    .bind(WEBHOOK_API_KEY)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited.as_deref(), Some("[redacted]"));

    // Deleting goes through the confirmation too.
    let confirm = dashboard
        .submit(
            "/config/confirm",
            &session,
            &[("key", "exchanges:routing:BTCUSDT"), ("delete", "true")],
        )
        .await;
    assert_eq!(confirm.status(), 200);
    let done = dashboard
        .submit(
            "/config/set",
            &session,
            &[("key", "exchanges:routing:BTCUSDT"), ("delete", "true")],
        )
        .await;
    assert_eq!(done.status(), 303);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM config WHERE key = 'exchanges:routing:BTCUSDT'"
        )
        .await,
        0
    );
    dashboard.stop().await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn logs_are_filtered_like_logs_tail_and_streamed_live(pool: PgPool) {
    let app = TestApp::ingest_only(pool.clone()).await;
    let dashboard = TestDashboard::start(&app).await;
    let session = dashboard.login().await;
    let (status, page) = dashboard
        .page("/logs?worker=dashboard", Some(&session))
        .await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-kind="logged_in""#));
    let (_, page) = dashboard.page("/logs?worker=ingest", Some(&session)).await;
    assert!(!page.contains(r#"data-kind="logged_in""#));
    let (status, page) = dashboard.page("/logs?severity=loud", Some(&session)).await;
    assert_eq!(status, 400);
    assert!(page.contains("`loud` is not a severity"));

    // The live stream sends rows written after the page's newest.
    let after: i64 = sqlx::query_scalar("SELECT max(id) FROM system_logs")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut stream = dashboard
        .get(
            &format!("/events/logs?worker=dashboard&after={after}"),
            Some(&session),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let response = dashboard
        .submit("/kill-switch", &session, &[("on", "true")])
        .await;
    assert_eq!(response.status(), 303);
    let mut received = String::new();
    tokio::time::timeout(crate::support::DEADLINE, async {
        while !received.contains(r#"data-kind="kill_switch_changed""#) {
            let chunk = stream
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            received.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the new row is streamed");
    assert!(received.starts_with("event: logs") || received.contains("\nevent: logs"));

    // The overview's live part comes the same way.
    let mut overview = dashboard
        .get("/events/overview", Some(&session))
        .send()
        .await
        .unwrap();
    let mut received = String::new();
    tokio::time::timeout(crate::support::DEADLINE, async {
        while !received.contains(r#"id="kill-switch""#) {
            let chunk = overview
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            received.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the overview is streamed");
    assert!(received.contains(r#"data-on="true""#));
    assert_eq!(
        csrf_of(&dashboard.page("/", Some(&session)).await.1).as_deref(),
        Some(session.csrf.as_str())
    );
    dashboard.stop().await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn hoox_dashboard_refuses_to_listen_beyond_loopback_without_a_password(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    let port = crate::support::free_addr();
    let port = port.rsplit_once(':').unwrap().1;
    let output = app
        .hoox()
        .arg("dashboard")
        .env("HOOX_DASHBOARD_ADDR", format!("0.0.0.0:{port}"))
        .env_remove("HOOX_DASHBOARD_PASSWORD")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("HOOX_DASHBOARD_PASSWORD is required"),
        "{stderr}"
    );
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn hoox_run_without_a_password_makes_one_prints_it_and_the_dashboard_takes_it(pool: PgPool) {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let app = TestApp::ingest_only(pool).await;
    let dashboard_addr = crate::support::free_addr();
    let mut run = app
        .hoox()
        .arg("run")
        .env("HOOX_INGEST_ADDR", crate::support::free_addr())
        .env("HOOX_CONSUMER_ADDR", crate::support::free_addr())
        .env("HOOX_DASHBOARD_ADDR", &dashboard_addr)
        .env_remove("HOOX_DASHBOARD_PASSWORD")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(run.stdout.take().unwrap()).lines();
    let mut shown = Vec::new();
    let password = tokio::time::timeout(crate::support::DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            shown.push(line.clone());
            if let Some(rest) = line.trim().strip_prefix("password:") {
                return rest.split_whitespace().next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .expect("hoox run prints its dashboard")
    .expect("a password line");
    assert!(password.len() >= 32, "a long random password: {shown:?}");
    assert!(
        shown
            .iter()
            .any(|l| l.contains(&format!("http://{dashboard_addr}"))),
        "{shown:?}"
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = eventually("hoox run's dashboard to take its password", || async {
        let response = http
            .post(format!("http://{dashboard_addr}/login"))
            .form(&[("password", password.as_str())])
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    })
    .await;
    assert_eq!(signed_in, 303);
    let _ = run.kill().await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn assets_are_embedded_and_pages_forbid_framing_and_foreign_scripts(pool: PgPool) {
    let app = TestApp::ingest_only(pool).await;
    let dashboard = TestDashboard::start(&app).await;
    let (status, login) = dashboard.page("/login", None).await;
    assert_eq!(status, 200);
    let mut assets: Vec<String> = [
        "/assets/htmx-2.0.11.min.js",
        "/assets/htmx-ext-sse-2.2.4.min.js",
    ]
    .map(str::to_owned)
    .to_vec();
    let style = login
        .split('"')
        .find(|part| part.starts_with("/assets/dashboard-") && part.ends_with(".css"))
        .expect("the page links its stylesheet");
    assets.push(style.to_owned());
    for asset in &assets {
        assert!(login.contains(asset.as_str()), "{asset} linked");
        let response = dashboard.get(asset, None).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let cache = response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(cache.contains("immutable"), "{asset}: {cache}");
        assert!(!response.bytes().await.unwrap().is_empty());
    }
    let (status, _) = dashboard.page("/assets/other.js", None).await;
    assert_eq!(status, 404);

    let session = dashboard.login().await;
    let response = dashboard
        .get("/config/edit?key=paper:latency_ms", Some(&session))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
    assert!(response
        .text()
        .await
        .unwrap()
        .contains(r#"id="config-form""#));
    dashboard.stop().await;
    app.stop().await;
}
