//! Retries through the broker's delay tiers, dead letters, and the operator's tools.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hoox::commands::dlq;
use hoox_common::logs::Worker;
use hoox_common::retry::RetryPolicy;
use hoox_common::runtime_config::KILL_SWITCH;
use hoox_common::signal::{ExchangeName, Leverage};
use hoox_consumer::exchange::{
    ErrorClass, ErrorCode, Exchange, ExchangeError, OrderAck, OrderRequest,
};
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;

use crate::support::{
    accepted, broker, count, dead_letter_ids, dead_letters, eventually, filled, message_for,
    publish_signed, signal, wait_for_dead_letters, Options, TestApp, INTERNAL_KEY,
};

/// An exchange whose answers a test scripts: queued answers first, then the default.
struct Scripted {
    queued: Mutex<VecDeque<Option<ExchangeError>>>,
    default: Mutex<Option<ExchangeError>>,
    calls: AtomicUsize,
    placed: AtomicUsize,
}

impl Scripted {
    fn new(queued: Vec<Option<ExchangeError>>, default: Option<ExchangeError>) -> Arc<Self> {
        Arc::new(Self {
            queued: Mutex::new(queued.into()),
            default: Mutex::new(default),
            calls: AtomicUsize::new(0),
            placed: AtomicUsize::new(0),
        })
    }

    fn set_default(&self, answer: Option<ExchangeError>) {
        *self.default.lock().unwrap() = answer;
    }

    fn as_exchanges(self: &Arc<Self>) -> Vec<Arc<dyn Exchange>> {
        vec![Arc::clone(self) as Arc<dyn Exchange>]
    }
}

fn rate_limited() -> Option<ExchangeError> {
    Some(ExchangeError {
        class: ErrorClass::Retryable,
        code: Some(ErrorCode::Exchange(10006)),
        message: "Too many visits. Exceeded the API Rate Limit.".to_owned(),
    })
}

fn insufficient_balance() -> Option<ExchangeError> {
    Some(ExchangeError {
        class: ErrorClass::Fatal,
        code: Some(ErrorCode::Exchange(110007)),
        message: "ab not enough for new order".to_owned(),
    })
}

#[async_trait]
impl Exchange for Scripted {
    fn name(&self) -> ExchangeName {
        ExchangeName::Paper
    }

    fn has_credentials(&self, _: bool) -> bool {
        true
    }

    async fn set_leverage(&self, _: &OrderRequest, _: Leverage) -> Result<(), ExchangeError> {
        Ok(())
    }

    async fn place_order(&self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self
            .queued
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.lock().unwrap().clone());
        if let Some(err) = answer {
            return Err(err);
        }
        self.placed.fetch_add(1, Ordering::SeqCst);
        Ok(filled(
            order,
            format!("scripted-{}", order.client_order_id.as_str()),
        ))
    }

    async fn order_by_client_id(
        &self,
        _: &OrderRequest,
    ) -> Result<Option<OrderAck>, ExchangeError> {
        Ok(None)
    }
}

/// A running ingest and consumer trading on `exchange`, retrying on `retry`.
async fn trading_on(pool: &PgPool, exchange: &Arc<Scripted>, retry: RetryPolicy) -> TestApp {
    let app = TestApp::with(
        pool.clone(),
        Options {
            exchanges: exchange.as_exchanges(),
            retry,
            ..Options::default()
        },
    )
    .await;
    app.ready().await;
    app
}

fn policy(base_ms: u64, max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(base_ms),
        max_attempts,
        max_delay: Duration::from_millis(base_ms * 8),
    }
}

async fn dequeue_times(pool: &PgPool, id: &str) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar(
        "SELECT created_at FROM system_logs WHERE request_id = $1::uuid AND kind = 'dequeued' ORDER BY created_at",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn rate_limited_twice_then_filled_places_one_order_after_growing_waits(pool: PgPool) {
    let exchange = Scripted::new(vec![rate_limited(), rate_limited()], None);
    let app = trading_on(&pool, &exchange, policy(50, 5)).await;
    let id = accepted(&app, &signal("BTCUSDT")).await;
    assert_eq!(app.wait_for_fill(&id).await, 1);
    assert_eq!(exchange.calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        exchange.placed.load(Ordering::SeqCst),
        1,
        "one order at the exchange"
    );

    let times = dequeue_times(&pool, &id).await;
    assert_eq!(times.len(), 3, "three attempts: {times:?}");
    let gaps: Vec<i64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .collect();
    // The broker holds a retry at least its tier's TTL: 50 ms, then 100 ms.
    assert!(gaps[0] >= 50 && gaps[1] >= 100, "gaps {gaps:?}");
    let failures = count(
        &pool,
        "SELECT count(*) FROM system_logs WHERE kind = 'attempt_failed' AND context->>'class' = 'retryable' AND context->>'code' = '10006'",
    )
    .await;
    assert_eq!(failures, 2, "the exchange's code is kept in the log rows");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn always_failing_signal_is_dead_lettered_after_the_last_attempt_with_its_history(
    pool: PgPool,
) {
    let exchange = Scripted::new(vec![], rate_limited());
    let app = trading_on(&pool, &exchange, policy(5, 3)).await;
    let id = accepted(&app, &signal("BTCUSDT")).await;
    let connection = broker().await;
    let letters = wait_for_dead_letters(&app, &connection, 1).await;
    let letter = &letters[0];
    assert_eq!(letter.request_id.unwrap().to_string(), id);
    assert_eq!(letter.reason, "exhausted");
    assert_eq!(letter.attempts, 3);
    assert!(letter
        .error
        .as_deref()
        .unwrap()
        .contains("gave up after 3 attempts"));
    let history = letter.message.as_ref().unwrap()["history"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|h| h["code"] == "10006"), "{history:?}");
    assert_eq!(exchange.placed.load(Ordering::SeqCst), 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM fills").await, 0);
    let logged = count(
        &pool,
        "SELECT count(*) FROM system_logs WHERE kind = 'dead_lettered' AND context->>'reason' = 'exhausted'",
    )
    .await;
    assert_eq!(logged, 1, "the reason is in system_logs too");
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn fatal_reject_is_dead_lettered_at_once_and_replay_after_the_fix_fills_it(pool: PgPool) {
    let exchange = Scripted::new(vec![], insufficient_balance());
    let app = trading_on(&pool, &exchange, Options::default().retry).await;
    let id = accepted(&app, &signal("BTCUSDT")).await;
    let connection = broker().await;
    let letters = wait_for_dead_letters(&app, &connection, 1).await;
    assert_eq!(
        (letters[0].reason.as_str(), letters[0].attempts),
        ("fatal", 1)
    );
    assert!(letters[0].error.as_deref().unwrap().contains("[110007]"));
    assert_eq!(
        exchange.calls.load(Ordering::SeqCst),
        1,
        "a fatal reject is not retried"
    );

    // The operator tops up the account, then replays.
    exchange.set_default(None);
    let key = SecretString::from(INTERNAL_KEY.to_owned());
    let (replayed, _) = dlq::replay(
        &connection,
        &app.topology,
        &key,
        &pool,
        Worker::Cli,
        Some(id.parse().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].attempts, 0, "a fresh attempt count");
    assert_eq!(app.wait_for_fill(&id).await, 1);
    assert_eq!(exchange.placed.load(Ordering::SeqCst), 1);
    assert!(dead_letters(&app, &connection).await.is_empty());
    let replay_logged = count(
        &pool,
        "SELECT count(*) FROM system_logs WHERE worker = 'cli' AND kind = 'replayed'",
    )
    .await;
    assert_eq!(replay_logged, 1);
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_consumer_restarted_while_a_retry_waits_in_its_delay_tier_still_retries_it(pool: PgPool) {
    let first = Scripted::new(vec![rate_limited()], None);
    let mut app = trading_on(&pool, &first, policy(1_000, 3)).await;
    let id = accepted(&app, &signal("BTCUSDT")).await;
    eventually("the first attempt to fail", || async {
        let failed = count(
            &pool,
            "SELECT count(*) FROM system_logs WHERE kind = 'attempt_failed' AND (context->>'attempt')::int = 1",
        )
        .await;
        (failed == 1).then_some(())
    })
    .await;
    // Waits for the failed batch to be settled: the retry is in the broker's tier.
    app.stop_consumer().await;
    assert_eq!(count(&pool, "SELECT count(*) FROM fills").await, 0);

    let second = Scripted::new(vec![], None);
    app.start_consumer(second.as_exchanges());
    assert_eq!(app.wait_for_fill(&id).await, 1);
    assert_eq!(
        (
            first.calls.load(Ordering::SeqCst),
            second.placed.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn stale_and_kill_switch_signals_are_dead_lettered_and_never_sent(pool: PgPool) {
    let exchange = Scripted::new(vec![], None);
    let app = trading_on(&pool, &exchange, Options::default().retry).await;
    let connection = broker().await;
    let stale = message_for("BTCUSDT", Utc::now() - chrono::Duration::hours(1));
    publish_signed(&app, &connection, &stale).await;
    let letters = wait_for_dead_letters(&app, &connection, 1).await;
    assert_eq!(letters[0].reason, "expired");
    assert_eq!(letters[0].request_id, Some(stale.request_id));

    app.set_config(KILL_SWITCH, "on").await;
    let queued_while_halted = message_for("ETHUSDT", Utc::now());
    publish_signed(&app, &connection, &queued_while_halted).await;
    let letters = wait_for_dead_letters(&app, &connection, 2).await;
    assert_eq!(letters[1].reason, "kill_switch");
    assert_eq!(letters[1].request_id, Some(queued_while_halted.request_id));
    assert_eq!(
        exchange.calls.load(Ordering::SeqCst),
        0,
        "nothing reached the exchange"
    );
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn dlq_list_show_replay_and_purge_work_while_a_consumer_runs(pool: PgPool) {
    let exchange = Scripted::new(vec![], insufficient_balance());
    let app = trading_on(&pool, &exchange, Options::default().retry).await;
    let connection = broker().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut body = signal("BTCUSDT");
        body["idempotencyKey"] = json!(format!("dlq-{i}"));
        ids.push(accepted(&app, &body).await);
        wait_for_dead_letters(&app, &connection, i + 1).await;
    }
    let listed: Vec<String> = dead_letter_ids(&app, &connection).await;
    assert_eq!(listed, ids, "oldest first");
    let again: Vec<String> = dead_letter_ids(&app, &connection).await;
    assert_eq!(again, ids, "listing neither loses nor reorders");

    // `hoox dlq show --json` through the real binary.
    let output = app
        .hoox()
        .args(["dlq", "show", &ids[1], "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["requestId"], ids[1].as_str());
    assert_eq!(shown["reason"], "fatal");
    assert_eq!(shown["verified"], true);
    assert_eq!(shown["message"]["history"][0]["code"], "110007");

    exchange.set_default(None);
    let key = SecretString::from(INTERNAL_KEY.to_owned());
    dlq::replay(
        &connection,
        &app.topology,
        &key,
        &pool,
        Worker::Cli,
        Some(ids[1].parse().unwrap()),
    )
    .await
    .unwrap();
    app.wait_for_fill(&ids[1]).await;
    let left: Vec<String> = dead_letter_ids(&app, &connection).await;
    assert_eq!(left, vec![ids[0].clone(), ids[2].clone()]);

    let fresh_only = dlq::purge(
        &connection,
        &app.topology,
        &pool,
        Worker::Cli,
        Some(Duration::from_secs(3600)),
        |_| true,
    )
    .await
    .unwrap();
    assert_eq!(fresh_only, 0, "nothing is an hour old");
    let declined = dlq::purge(&connection, &app.topology, &pool, Worker::Cli, None, |_| {
        false
    })
    .await
    .unwrap();
    assert_eq!(declined, 0, "answering no deletes nothing");
    assert_eq!(dead_letters(&app, &connection).await.len(), 2);
    let purged = dlq::purge(
        &connection,
        &app.topology,
        &pool,
        Worker::Cli,
        None,
        |letters| letters.len() == 2,
    )
    .await
    .unwrap();
    assert_eq!(purged, 2);
    assert!(dead_letters(&app, &connection).await.is_empty());
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM system_logs WHERE kind = 'purged'"
        )
        .await,
        2
    );
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn kill_switch_cli_halts_a_running_ingest_within_a_second_and_is_audited(pool: PgPool) {
    let app = TestApp::ingest_only(pool.clone()).await;
    app.ready().await;
    let hoox = |arg: &'static str| {
        let mut command = app.hoox();
        async move {
            let output = command.args(["kill-switch", arg]).output().await.unwrap();
            assert!(output.status.success());
            String::from_utf8(output.stdout).unwrap()
        }
    };
    // Each post is a new signal: one accepted before ingest sees the switch must not
    // make the posts after it duplicates (409), which would hide the resume.
    let fresh = || {
        let mut body = signal("BTCUSDT");
        body["idempotencyKey"] = json!(uuid::Uuid::new_v4().to_string());
        body
    };
    assert!(hoox("on").await.contains("ON"));
    eventually("ingest to halt", || async {
        (app.post(&fresh()).await.0 == 503).then_some(())
    })
    .await;
    assert!(hoox("show").await.contains("ON"));
    assert!(hoox("off").await.contains("off"));
    eventually("ingest to resume", || async {
        (app.post(&fresh()).await.0 == 202).then_some(())
    })
    .await;
    let audited = count(
        &pool,
        "SELECT count(*) FROM system_logs WHERE worker = 'cli' AND kind = 'kill_switch_changed'",
    )
    .await;
    assert_eq!(audited, 2);
    app.stop().await;
}
