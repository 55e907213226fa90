//! The dashboard in headless Chromium: sign in, turn the kill switch on and see a
//! webhook answered 503, replay a dead letter and see its fill appear, sign out. With
//! JavaScript on, the log view and the overview follow changes made elsewhere. With
//! `HOOX_SCREENSHOTS=1` it saves a screenshot of each page in `docs/dashboard/`.

use chrono::Utc;
use hoox::commands::{config, kill_switch};
use hoox_common::logs::Worker;
use sqlx::PgPool;

use crate::support::browser::Browser;
use crate::support::dashboard::{TestDashboard, PASSWORD};
use crate::support::{
    accepted, broker, eventually, message_for, publish_signed, signal, wait_for_dead_letters,
    TestApp,
};

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn an_operator_halts_trading_replays_a_dead_letter_and_signs_out(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    app.ready().await;
    let filled = accepted(&app, &signal("BTCUSDT")).await;
    app.wait_for_fill(&filled).await;
    let dashboard = TestDashboard::start(&app).await;
    let browser = Browser::start().await;

    // Sign in.
    browser.goto(&format!("{}/", dashboard.url)).await;
    browser.wait_for("#login").await;
    browser.screenshot("login").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("#sign-in").await;
    browser.wait_for("#kill-switch[data-on=\"false\"]").await;
    browser.screenshot("overview").await;

    // Halt trading: confirmed, and ingest answers 503.
    browser.click("#kill-switch-toggle").await;
    browser.wait_for("#confirm").await;
    browser.screenshot("confirm").await;
    browser.click("#confirm-button").await;
    browser.wait_for("#kill-switch[data-on=\"true\"]").await;
    eventually("ingest to see the kill switch", || async {
        app.config.kill_switch().then_some(())
    })
    .await;
    let (status, _) = app.post(&signal("BTCUSDT")).await;
    assert_eq!(status, 503);

    // A signal queued meanwhile is dead-lettered; trading resumes; the operator replays it.
    let connection = broker().await;
    let message = message_for("ETHUSDT", Utc::now());
    publish_signed(&app, &connection, &message).await;
    wait_for_dead_letters(&app, &connection, 1).await;
    browser.click("#kill-switch-toggle").await;
    browser.click("#confirm-button").await;
    browser.wait_for("#kill-switch[data-on=\"false\"]").await;
    eventually("ingest to see the kill switch off", || async {
        (!app.config.kill_switch()).then_some(())
    })
    .await;
    browser
        .goto(&format!("{}/dead-letters", dashboard.url))
        .await;
    let row = format!("tr[data-request-id=\"{}\"] a.replay", message.request_id);
    browser.wait_for(&row).await;
    browser.screenshot("dead-letters").await;
    browser.click(&row).await;
    browser.click("#confirm-button").await;
    browser.wait_for("#timeline").await;
    app.wait_for_fill(&message.request_id.to_string()).await;
    browser
        .goto(&format!(
            "{}/signals?request_id={}",
            dashboard.url, message.request_id
        ))
        .await;
    browser.wait_for("#fill").await;
    browser.wait_for("tr[data-kind=\"replayed\"]").await;
    browser.screenshot("signals").await;

    // The other pages, for the screenshots and to see each renders in a browser.
    for (path, ready, name) in [
        ("/fills", "#fills tr.fill", "fills"),
        ("/positions", "#positions tr.position", "positions"),
        ("/config", "#known-keys", "config"),
        ("/logs", "#log-rows tr.log", "logs"),
    ] {
        browser.goto(&format!("{}{path}", dashboard.url)).await;
        browser.wait_for(ready).await;
        browser.screenshot(name).await;
    }
    let source = browser.source().await;
    assert!(
        source.contains("kill_switch_changed"),
        "the log view shows the audit trail"
    );

    // With JavaScript, the log view and the overview update live: a change made
    // elsewhere (the CLI) shows up without reloading.
    config::write(&pool, Worker::Cli, "paper:latency_ms", Some("1"))
        .await
        .unwrap();
    browser
        .wait_for("#log-rows tr[data-kind=\"config_changed\"]")
        .await;
    browser.goto(&format!("{}/", dashboard.url)).await;
    browser.wait_for("#kill-switch[data-on=\"false\"]").await;
    kill_switch::set(&pool, Worker::Cli, true).await.unwrap();
    browser.wait_for("#kill-switch[data-on=\"true\"]").await;

    // Sign out: back to the sign-in page, and the overview is no longer reachable.
    browser.click("#logout button").await;
    browser.wait_for("#login").await;
    browser.goto(&format!("{}/", dashboard.url)).await;
    browser.wait_for("#login").await;
    assert!(browser.url().await.ends_with('/'));
    browser.stop().await;
    let _ = connection.close(200, "done".into()).await;
    dashboard.stop().await;
    app.stop().await;
}
