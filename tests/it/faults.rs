//! Processes killed under load: ingest SIGTERMed (it drains) and SIGKILLed (a resend
//! with the same key recovers), the consumer SIGKILLed at random points again and
//! again. After each, every signal ends in exactly one fill and no order is doubled.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hoox_common::runtime_config::PAPER_LATENCY_MS;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::process::Child;
use uuid::Uuid;

use crate::support::{
    assert_exactly_once, broker, count, eventually, signal, spawn_hoox, spawn_hoox_at, TestApp,
    DEADLINE,
};

/// What a producer saw for one webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 202 with this requestId.
    Queued(Uuid),
    /// 409: already accepted under this requestId.
    Duplicate(Uuid),
    /// Any other status (503 while shutting down or reconnecting).
    Refused(u16),
    /// No answer: the connection was refused or cut.
    Unanswered,
}

impl Answer {
    fn request_id(self) -> Option<Uuid> {
        match self {
            Self::Queued(id) | Self::Duplicate(id) => Some(id),
            Self::Refused(_) | Self::Unanswered => None,
        }
    }
}

fn keyed(key: &str) -> Value {
    let mut body = signal("BTCUSDT");
    body["idempotencyKey"] = json!(key);
    body
}

async fn post(http: &reqwest::Client, url: &str, key: &str) -> Answer {
    let sent = http
        .post(url)
        .timeout(Duration::from_secs(10))
        .body(keyed(key).to_string())
        .send()
        .await;
    let Ok(response) = sent else {
        return Answer::Unanswered;
    };
    let status = response.status().as_u16();
    let Ok(envelope) = response.json::<Value>().await else {
        return Answer::Unanswered;
    };
    let id = || {
        envelope["result"]["requestId"]
            .as_str()
            .and_then(|s| s.parse().ok())
    };
    match (status, id()) {
        (202, Some(id)) => Answer::Queued(id),
        (409, Some(id)) => Answer::Duplicate(id),
        _ => Answer::Refused(status),
    }
}

/// Posts one webhook per key from 32 concurrent producers; `answered` counts answers.
async fn load(
    url: String,
    keys: Vec<String>,
    answered: Arc<AtomicUsize>,
) -> HashMap<String, Answer> {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let keys = Arc::new(keys);
    let producers = (0..32).map(|_| {
        let (http, url, next, keys, answered) = (
            http.clone(),
            url.clone(),
            next.clone(),
            keys.clone(),
            answered.clone(),
        );
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(key) = keys.get(next.fetch_add(1, Ordering::SeqCst)) {
                let answer = post(&http, &url, key).await;
                answered.fetch_add(1, Ordering::SeqCst);
                seen.push((key.clone(), answer));
            }
            seen
        })
    });
    let mut answers = HashMap::new();
    for producer in producers {
        answers.extend(producer.await.expect("producer"));
    }
    answers
}

/// Resends `key` until it is answered 202 or 409, as a producer would.
async fn resend(http: &reqwest::Client, url: &str, key: &str) -> Answer {
    eventually("a resend answered 202 or 409", || async {
        let answer = post(http, url, key).await;
        answer.request_id().map(|_| answer)
    })
    .await
}

async fn ready(http: &reqwest::Client, addr: &str) {
    let url = format!("http://{addr}/readyz");
    eventually("hoox run ready", || async {
        let response = http.get(&url).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}

async fn exits(child: &mut Child) -> std::process::ExitStatus {
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("hoox run exits")
        .expect("wait")
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("still running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// After a kill: a fresh `hoox run` takes every producer's resend; each key ends with
/// one request id, one fill, its ingest audit row, and one paper order.
async fn resends_recover_every_key(app: &TestApp, answers: &HashMap<String, Answer>) {
    let http = reqwest::Client::new();
    let (mut second, addr) = spawn_hoox_at(app);
    ready(&http, &addr).await;
    let url = format!("http://{addr}/webhook");
    let mut final_ids = HashMap::new();
    for (key, first) in answers {
        let again = resend(&http, &url, key).await;
        if let Some(id) = first.request_id() {
            // An accepted signal stays accepted, under its first id.
            assert_eq!(again, Answer::Duplicate(id), "{key}: first {first:?}");
        }
        final_ids.insert(key.clone(), again.request_id().expect("settled"));
    }
    let ids: HashSet<Uuid> = final_ids.values().copied().collect();
    assert_eq!(ids.len(), answers.len(), "one request id per key");
    let pool = &app.pool;
    let n = i64::try_from(answers.len()).unwrap();
    eventually("every key filled", || async {
        (count(pool, "SELECT count(*) FROM fills").await == n).then_some(())
    })
    .await;
    let filled: HashSet<Uuid> = sqlx::query_scalar("SELECT request_id FROM fills")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(filled, ids, "the fills are the accepted request ids");
    let unaudited = count(
        pool,
        "SELECT count(*) FROM fills f WHERE NOT EXISTS (SELECT 1 FROM system_logs l WHERE l.request_id = f.request_id AND l.worker = 'ingest')",
    )
    .await;
    assert_eq!(unaudited, 0, "every queued signal has its ingest audit row");
    let ids: Vec<Uuid> = ids.into_iter().collect();
    assert_paper_exactly_once(app, &ids).await;
    second.kill().await.expect("stop");
}

/// [`assert_exactly_once`] with the paper book as the exchange's ledger.
async fn assert_paper_exactly_once(app: &TestApp, ids: &[Uuid]) {
    let orders: Vec<String> = sqlx::query_scalar("SELECT client_order_id FROM paper_orders")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let connection = broker().await;
    assert_exactly_once(app, &connection, &orders, ids).await;
    let _ = connection.close(200, "done".into()).await;
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn ingest_sigtermed_under_load_drains_and_resends_neither_lose_nor_double(pool: PgPool) {
    let app = TestApp::ingest_only(pool.clone()).await;
    let http = reqwest::Client::new();
    let (mut first, addr) = spawn_hoox_at(&app);
    ready(&http, &addr).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let producers = tokio::spawn(load(
        format!("http://{addr}/webhook"),
        keys("term", 400),
        answered.clone(),
    ));
    eventually("load under way", || async {
        (answered.load(Ordering::SeqCst) >= 100).then_some(())
    })
    .await;
    sigterm(&first);
    let answers = producers.await.expect("load");
    assert!(
        exits(&mut first).await.success(),
        "a drained shutdown exits 0"
    );
    assert!(answers.values().any(|a| a.request_id().is_some()));
    resends_recover_every_key(&app, &answers).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn ingest_sigkilled_under_load_then_resent_with_the_same_keys_neither_loses_nor_doubles(
    pool: PgPool,
) {
    let app = TestApp::ingest_only(pool.clone()).await;
    let http = reqwest::Client::new();
    let mut answers = HashMap::new();
    for round in 0..3 {
        let (mut victim, addr) = spawn_hoox_at(&app);
        ready(&http, &addr).await;
        let answered = Arc::new(AtomicUsize::new(0));
        let producers = tokio::spawn(load(
            format!("http://{addr}/webhook"),
            keys(&format!("kill{round}"), 150),
            answered.clone(),
        ));
        eventually("load under way", || async {
            (answered.load(Ordering::SeqCst) >= 40 + 20 * round).then_some(())
        })
        .await;
        victim.kill().await.expect("SIGKILL");
        answers.extend(producers.await.expect("load"));
    }
    resends_recover_every_key(&app, &answers).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn consumer_sigkilled_twenty_times_over_five_hundred_signals_trades_each_once(pool: PgPool) {
    let app = TestApp::ingest_only(pool.clone()).await;
    app.ready().await;
    app.set_config(PAPER_LATENCY_MS, "2").await;
    let answers = load(
        app.webhook_url(),
        keys("crash", 500),
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    let ids: Vec<Uuid> = answers
        .values()
        .map(|a| match a {
            Answer::Queued(id) => *id,
            other => panic!("in-process ingest refused a signal: {other:?}"),
        })
        .collect();

    for kill in 0..20u32 {
        let before = count(&pool, "SELECT count(*) FROM fills").await;
        if before == 500 {
            break;
        }
        let mut consumer = spawn_hoox(&app);
        // Let it get somewhere, then kill it at a point that differs from run to run:
        // after a varying number of new fills, or while orders wait for their commit.
        let progress = 1 + i64::from(Uuid::new_v4().as_bytes()[0] % 8) + i64::from(kill % 3);
        eventually("progress before the kill", || async {
            let filled = count(&pool, "SELECT count(*) FROM fills").await;
            let placed = count(&pool, "SELECT count(*) FROM paper_orders").await;
            (filled >= (before + progress).min(500) || placed > filled + 3).then_some(())
        })
        .await;
        consumer.kill().await.expect("SIGKILL");
    }
    let mut last = spawn_hoox(&app);
    eventually("all 500 fills", || async {
        (count(&pool, "SELECT count(*) FROM fills").await == 500).then_some(())
    })
    .await;
    last.kill().await.expect("stop");

    assert_paper_exactly_once(&app, &ids).await;
    let mismatched = count(
        &pool,
        "SELECT count(*) FROM fills f JOIN paper_orders p ON p.client_order_id = f.client_order_id WHERE f.exchange_order_id <> p.order_id::text",
    )
    .await;
    assert_eq!(
        mismatched, 0,
        "each fill is the one paper order of its signal"
    );
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn consumer_sigtermed_mid_batch_settles_the_batch_before_it_exits(pool: PgPool) {
    let app = TestApp::ingest_only(pool.clone()).await;
    app.ready().await;
    // Ten signals of one symbol at 100 ms an order: one batch, in flight for a second.
    app.set_config(PAPER_LATENCY_MS, "100").await;
    let answers = load(
        app.webhook_url(),
        keys("term-consumer", 10),
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    let ids: Vec<Uuid> = answers.values().filter_map(|a| a.request_id()).collect();
    assert_eq!(ids.len(), 10);

    let mut consumer = spawn_hoox(&app);
    eventually("a batch half done", || async {
        let placed = count(&pool, "SELECT count(*) FROM paper_orders").await;
        let filled = count(&pool, "SELECT count(*) FROM fills").await;
        (placed >= 2 && filled < placed).then_some(())
    })
    .await;
    sigterm(&consumer);
    assert!(
        exits(&mut consumer).await.success(),
        "a drained shutdown exits 0"
    );
    // Every order placed before the exit has its fill: the batch was finished and
    // committed, not abandoned.
    let placed = count(&pool, "SELECT count(*) FROM paper_orders").await;
    assert_eq!(count(&pool, "SELECT count(*) FROM fills").await, placed);
    let unsettled = count(
        &pool,
        "SELECT count(*) FROM executions WHERE state = 'running'",
    )
    .await;
    assert_eq!(unsettled, 0, "no attempt was left half done");

    let mut last = spawn_hoox(&app);
    eventually("all 10 fills", || async {
        (count(&pool, "SELECT count(*) FROM fills").await == 10).then_some(())
    })
    .await;
    last.kill().await.expect("stop");
    assert_paper_exactly_once(&app, &ids).await;
    app.stop().await;
}
