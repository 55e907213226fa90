//! Telegram against a local mock of the Bot API: the consumer's notifications of fills,
//! dead letters and broker outages, a 429's `retry_after` honoured, and `hoox bot` (on
//! its own and inside `hoox run`) obeying only its configured chat.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoox::commands::kill_switch;
use hoox_common::amqp::Topology;
use hoox_common::event::Event;
use hoox_common::runtime_config::{RuntimeConfig, KILL_SWITCH};
use hoox_common::signal::{ExchangeName, Side};
use hoox_common::telegram::{BotApi, Notifier};
use hoox_consumer::exchange::paper::Paper;
use hoox_consumer::exchange::router::ExchangeRouter;
use hoox_consumer::exchange::Exchange;
use hoox_consumer::worker::{Worker, WorkerSettings};
use hoox_consumer::Consumer;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::support::telegram::{MockTelegram, Sent, CHAT, TOKEN};
use crate::support::{self, eventually, Options, TestApp};

fn api(mock: &MockTelegram) -> BotApi {
    BotApi::new(&mock.url(), SecretString::from(TOKEN.to_owned()), CHAT)
}

/// Sends Ctrl-C to `child` and asserts that it exits with status 0.
async fn interrupt(mut child: tokio::process::Child) {
    let pid = child.id().expect("still running");
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = tokio::time::timeout(support::DEADLINE, child.wait())
        .await
        .expect("it exits after Ctrl-C")
        .expect("wait");
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

/// Waits until the mock has a message to `chat` mentioning `needle`.
async fn message_mentioning(mock: &MockTelegram, chat: i64, needle: &str) -> Sent {
    eventually(
        &format!("a Telegram message mentioning {needle}"),
        || async {
            mock.sent()
                .into_iter()
                .find(|m| m.chat_id == chat && m.text.contains(needle))
        },
    )
    .await
}

/// `command` configured for the mock Bot API and the test chat, its output discarded.
fn with_telegram(
    mut command: tokio::process::Command,
    mock: &MockTelegram,
) -> tokio::process::Command {
    command
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("TELEGRAM_CHAT_ID", CHAT.to_string())
        .env("TELEGRAM_API_URL", mock.url())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn fills_and_dead_letters_are_sent_to_the_configured_chat(pool: PgPool) {
    let mock = MockTelegram::start().await;
    let token = CancellationToken::new();
    let (notifier, _sender) = Notifier::start(api(&mock), token.clone());
    let app = TestApp::with(
        pool,
        Options {
            notifier: Some(notifier),
            ..Options::default()
        },
    )
    .await;
    app.ready().await;

    let filled = support::accepted(&app, &support::signal("BTCUSDT")).await;
    app.wait_for_fill(&filled).await;
    let sent = message_mentioning(&mock, CHAT, &filled).await;
    assert!(sent.text.contains("filled"), "{}", sent.text);

    app.set_config(KILL_SWITCH, "true").await;
    let connection = support::broker().await;
    let message = support::message_for("ETHUSDT", chrono::Utc::now());
    support::publish_signed(&app, &connection, &message).await;
    let dead = message.request_id.to_string();
    let sent = message_mentioning(&mock, CHAT, &dead).await;
    assert!(sent.text.contains("kill_switch"), "{}", sent.text);

    assert_eq!(mock.refused_token(), 0);
    let _ = connection.close(200, "done".into()).await;
    token.cancel();
    app.stop().await;
}

#[tokio::test]
async fn a_rate_limited_message_is_sent_once_after_retry_after() {
    let mock = MockTelegram::start().await;
    mock.rate_limit_next(1);
    let token = CancellationToken::new();
    let (notifier, _sender) = Notifier::start(api(&mock), token.clone());
    let request_id = uuid::Uuid::new_v4();
    notifier.notify(
        &Event::Filled {
            exchange: ExchangeName::Paper,
            side: Side::Buy,
            fill_quantity: None,
            fill_price: None,
            signal_to_order_seconds: 0.1,
        },
        Some(request_id),
    );

    let sent = message_mentioning(&mock, CHAT, &request_id.to_string()).await;
    let limited = mock.rate_limited_at();
    assert_eq!(limited.len(), 1, "one 429 answered");
    assert!(
        sent.at.duration_since(limited[0]) >= Duration::from_secs(1),
        "resent only after retry_after"
    );
    // A later message goes through: the one sent is not followed by a copy of it.
    notifier.send("after".to_owned());
    message_mentioning(&mock, CHAT, "after").await;
    let copies = mock
        .sent()
        .iter()
        .filter(|m| m.text.contains(&request_id.to_string()))
        .count();
    assert_eq!(copies, 1);
    token.cancel();
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_nothing_is_sent() {
    let mock = MockTelegram::start().await;
    let wrong = BotApi::new(&mock.url(), SecretString::from("1:wrong".to_owned()), CHAT);
    let err = wrong
        .send_message(CHAT, "hello")
        .await
        .expect_err("a wrong token is refused");
    assert!(err.to_string().contains("401"), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "the token is not in {err}"
    );
    assert_eq!(mock.refused_token(), 1);
    assert!(mock.sent().is_empty());
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn the_bot_obeys_commands_from_its_chat_alone(pool: PgPool) {
    let mock = MockTelegram::start().await;
    let app = TestApp::ingest_only(pool).await;
    app.ready().await;
    let bot = with_telegram(app.hoox(), &mock)
        .arg("bot")
        .spawn()
        .expect("hoox bot starts");

    let stranger = CHAT + 1;
    let ignored = mock.queue_message(stranger, "/kill_on");
    // Polling past an update means the bot has handled it.
    eventually("the bot handling the stranger's command", || async {
        (mock.highest_offset() > ignored).then_some(())
    })
    .await;
    assert!(!kill_switch::state(&app.pool).await.unwrap());
    assert!(mock.sent().iter().all(|m| m.chat_id != stranger));

    mock.queue_message(CHAT, "/kill_on");
    eventually("the kill switch on", || async {
        kill_switch::state(&app.pool).await.unwrap().then_some(())
    })
    .await;
    message_mentioning(&mock, CHAT, "kill switch ON").await;
    // The change is told as well, by the bot's watch of the config table.
    message_mentioning(&mock, CHAT, "kill switch turned on").await;

    mock.queue_message(CHAT, "/status@hoox_bot");
    message_mentioning(&mock, CHAT, "kill switch: ON").await;
    mock.queue_message(CHAT, "/dlq");
    message_mentioning(&mock, CHAT, "dead letters: 0").await;
    let unknown = uuid::Uuid::new_v4();
    mock.queue_message(CHAT, &format!("/trace {unknown}"));
    message_mentioning(&mock, CHAT, &format!("nothing is recorded for {unknown}")).await;
    assert!(mock.sent().iter().all(|m| m.chat_id == CHAT));
    assert_eq!(mock.refused_token(), 0);

    interrupt(bot).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn hoox_run_with_telegram_notifies_fills_and_answers_the_chat(pool: PgPool) {
    let mock = MockTelegram::start().await;
    let app = TestApp::ingest_only(pool).await;
    let ingest_addr = support::free_addr();
    let run = with_telegram(app.hoox(), &mock)
        .arg("run")
        .env("HOOX_INGEST_ADDR", &ingest_addr)
        .env("HOOX_CONSUMER_ADDR", support::free_addr())
        .env("HOOX_DASHBOARD_ADDR", support::free_addr())
        .spawn()
        .expect("hoox run starts");
    app.ready().await;

    // The test app's ingest queues it; hoox run's consumer fills it and tells the chat.
    let filled = support::accepted(&app, &support::signal("BTCUSDT")).await;
    app.wait_for_fill(&filled).await;
    message_mentioning(&mock, CHAT, &filled).await;
    mock.queue_message(CHAT, "/status");
    message_mentioning(&mock, CHAT, "kill switch: off").await;

    interrupt(run).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_consumer_without_its_broker_tells_the_chat_once(pool: PgPool) {
    let mock = MockTelegram::start().await;
    let token = CancellationToken::new();
    let (notifier, _sender) = Notifier::start(api(&mock), token.clone());
    let config = RuntimeConfig::fixed(HashMap::new());
    let paper: Arc<dyn Exchange> = Arc::new(Paper::new(pool.clone(), config.clone()));
    let worker = Worker::new(
        pool,
        config.clone(),
        Arc::new(ExchangeRouter::new(vec![paper], config)),
        WorkerSettings {
            internal_key: SecretString::from(support::INTERNAL_KEY.to_owned()),
            signal_max_age: Duration::from_secs(600),
            retry: Options::default().retry,
        },
    );
    // A port that takes each connection and drops it at once: the broker is out of
    // reach from the start, and each reconnect attempt is counted.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_broker = format!("amqp://guest:guest@{}/%2f", listener.local_addr().unwrap());
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(connection);
        }
    });
    let consumer = Consumer::new(
        worker,
        Topology::new(support::unique_queue(), Options::default().retry),
        SecretString::from(dead_broker),
        Options::default().bounds,
    )
    .with_notifier(Some(notifier))
    .with_outage_alert_after(Duration::from_millis(500));
    let started = Instant::now();
    let running = tokio::spawn(consumer.run(token.clone()));

    let sent = message_mentioning(&mock, CHAT, "without its message broker").await;
    assert!(sent.at.duration_since(started) >= Duration::from_millis(500));
    // Told once per outage: the alert is checked after each failed reconnect, so two
    // more failures past the first alert would have sent a second one.
    let seen = attempts.load(Ordering::SeqCst);
    support::eventually("two more failed reconnects", || async {
        (attempts.load(Ordering::SeqCst) >= seen + 2).then_some(())
    })
    .await;
    let alerts = mock
        .sent()
        .iter()
        .filter(|m| m.text.contains("without its message broker"))
        .count();
    assert_eq!(alerts, 1);
    token.cancel();
    running.await.expect("the consumer stops");
}

/// The cells of the line of `text` that names `symbol`.
fn row_of(text: &str, symbol: &str) -> Vec<String> {
    text.lines()
        .find(|line| line.split_whitespace().any(|cell| cell == symbol))
        .unwrap_or_else(|| panic!("no {symbol} line in {text}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn the_bot_answers_positions_and_todays_pnl_from_the_ledger(pool: PgPool) {
    let mock = MockTelegram::start().await;
    let app = TestApp::start(pool).await;
    app.ready().await;
    // A paper long of 0.005 at 68000, closed at 69000: 5 realized.
    let long = support::accepted(&app, &support::signal("BTCUSDT")).await;
    app.wait_for_fill(&long).await;
    let mut close = support::signal("BTCUSDT");
    close["action"] = serde_json::json!("CLOSE_LONG");
    close["price"] = serde_json::json!(69000);
    let closed = support::accepted(&app, &close).await;
    app.wait_for_fill(&closed).await;

    let bot = with_telegram(app.hoox(), &mock)
        .arg("bot")
        .spawn()
        .expect("hoox bot starts");
    mock.queue_message(CHAT, "/positions");
    let positions = message_mentioning(&mock, CHAT, "REALIZED PNL").await;
    // EXCHANGE MARKET ENV SYMBOL SIDE NET QTY AVG ENTRY REALIZED PNL FEES FILLS UPDATED
    let row = row_of(&positions.text, "BTCUSDT");
    assert_eq!(row[0], "paper");
    assert_eq!(row[4], "flat");
    assert_eq!(row[5], "0", "net quantity");
    assert_eq!(row[7], "5", "realized PnL");

    mock.queue_message(CHAT, "/pnl");
    let pnl = message_mentioning(&mock, CHAT, "today (").await;
    // DAY EXCHANGE ENV SYMBOL FILLS VOLUME REALIZED PNL FEES INCOMPLETE
    let row = row_of(&pnl.text, "BTCUSDT");
    assert_eq!(row[4], "2", "fills");
    assert_eq!(row[5], "685", "volume: 0.005 × 68000 + 0.005 × 69000");
    assert_eq!(row[6], "5", "realized PnL");

    interrupt(bot).await;
    app.stop().await;
}
