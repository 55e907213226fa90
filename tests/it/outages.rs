//! The broker and the database go away while signals flow, behind a TCP proxy that
//! cuts every connection: ingest answers 503 during the gap and never 202 for a
//! message the broker did not confirm, both services reconnect by themselves, and
//! every signal ends in exactly one order and one fill.

use std::sync::Arc;
use std::time::Duration;

use hoox_consumer::exchange::Exchange;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::support::ledger::Ledger;
use crate::support::proxy::TcpProxy;
use crate::support::{
    amqp_url, assert_exactly_once, broker, count, database_url, eventually, signal, Options,
    TestApp,
};

/// Every answer a producer got, in order: (key, status, requestId).
type Answers = Arc<Mutex<Vec<(String, u16, Option<Uuid>)>>>;

fn keyed(key: &str, symbol: &str) -> Value {
    let mut body = signal(symbol);
    body["idempotencyKey"] = json!(key);
    body
}

/// Posts `key` until it is answered 202 or 409, as TradingView resends after a 5xx,
/// recording every answer.
async fn post_until_accepted(app: &TestApp, key: String, symbol: &str, answers: Answers) -> Uuid {
    let body = keyed(&key, symbol).to_string();
    eventually("the signal accepted", || async {
        let (status, envelope) = app.post_raw(body.clone(), &[]).await;
        let id = envelope["result"]["requestId"]
            .as_str()
            .and_then(|s| s.parse().ok());
        answers.lock().await.push((key.clone(), status, id));
        if matches!(status, 202 | 409) {
            return id;
        }
        assert_eq!(status, 503, "only 503 while something is down: {envelope}");
        // Pace the resends, as a producer would.
        tokio::time::sleep(Duration::from_millis(20)).await;
        None
    })
    .await
}

async fn statuses(answers: &Answers, status: u16) -> usize {
    answers
        .lock()
        .await
        .iter()
        .filter(|(_, s, _)| *s == status)
        .count()
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn broker_cut_while_signals_flow_gives_503_never_an_unconfirmed_202_and_both_reconnect(
    pool: PgPool,
) {
    let target = amqp_url();
    let broker_addr = url::Url::parse(&target).unwrap();
    let proxy = TcpProxy::start(
        format!(
            "{}:{}",
            broker_addr.host_str().unwrap(),
            broker_addr.port().unwrap_or(5672)
        )
        .parse()
        .unwrap(),
    )
    .await;
    let ledger = Arc::new(Ledger::default());
    let app = Arc::new(
        TestApp::with(
            pool.clone(),
            Options {
                ingest_amqp_url: proxy.url(),
                consumer_amqp_url: proxy.url(),
                exchanges: vec![ledger.clone() as Arc<dyn Exchange>],
                ..Options::default()
            },
        )
        .await,
    );
    app.ready().await;
    let answers: Answers = Arc::default();
    let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];
    let producers: Vec<_> = (0..8)
        .map(|p| {
            let (app, answers) = (app.clone(), answers.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..25 {
                    let key = format!("cut-{p}-{i}");
                    ids.push(post_until_accepted(&app, key, symbols[p % 4], answers.clone()).await);
                }
                ids
            })
        })
        .collect();

    eventually("signals flowing", || async {
        (count(&pool, "SELECT count(*) FROM fills").await >= 20).then_some(())
    })
    .await;
    proxy.down();
    eventually("503s while the broker is away", || async {
        (statuses(&answers, 503).await >= 5).then_some(())
    })
    .await;
    let fills_during_gap = count(&pool, "SELECT count(*) FROM fills").await;
    proxy.up();

    let mut ids = Vec::new();
    for producer in producers {
        ids.extend(producer.await.expect("producer"));
    }
    eventually("all 200 fills", || async {
        (count(&pool, "SELECT count(*) FROM fills").await == 200).then_some(())
    })
    .await;
    assert!(fills_during_gap < 200, "the gap came while signals flowed");
    // Every 202 was for a message the broker had: each one ended in a fill.
    let filled: Vec<Uuid> = sqlx::query_scalar("SELECT request_id FROM fills")
        .fetch_all(&pool)
        .await
        .unwrap();
    for (key, status, id) in answers.lock().await.iter() {
        if *status == 202 {
            assert!(filled.contains(&id.unwrap()), "{key}: a 202 without a fill");
        }
    }
    let connection = broker().await;
    assert_exactly_once(&app, &connection, &ledger.accepted(), &ids).await;
    let _ = connection.close(200, "done".into()).await;
    Arc::into_inner(app)
        .expect("producers are done")
        .stop()
        .await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn database_cut_during_ingest_and_a_batch_loses_nothing_and_trades_nothing_twice(
    pool: PgPool,
) {
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let direct = url::Url::parse(&database_url(&pool)).unwrap();
    let mut through = direct.clone();
    through.set_port(Some(proxy.addr().port())).unwrap();
    // The services reach PostgreSQL only through the proxy; the test reads directly.
    let proxied = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(2))
        .connect(through.as_str())
        .await
        .unwrap();
    // Slow orders of one symbol keep a batch in flight long enough to cut it.
    let ledger = Arc::new(Ledger::with_latency(Duration::from_millis(50)));
    let app = TestApp::with(
        proxied,
        Options {
            exchanges: vec![ledger.clone() as Arc<dyn Exchange>],
            ..Options::default()
        },
    )
    .await;
    app.ready().await;
    let answers: Answers = Arc::default();
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(post_until_accepted(&app, format!("db-{i}"), "BTCUSDT", answers.clone()).await);
    }
    eventually("a batch in flight", || async {
        let filled = count(&pool, "SELECT count(*) FROM fills").await;
        (ledger.accepted().len() >= 2 && filled < 30).then_some(())
    })
    .await;
    proxy.down();
    // Ingest cannot claim a key without its database: 503, never 202.
    let body = keyed("db-during-outage", "ETHUSDT").to_string();
    eventually("ingest refusing while the database is away", || async {
        let (status, _) = app.post_raw(body.clone(), &[]).await;
        assert_ne!(status, 202, "accepted with no database to claim its key in");
        (status == 503).then_some(())
    })
    .await;
    let placed_during_outage = ledger.accepted().len();
    proxy.up();

    ids.push(post_until_accepted(&app, "db-during-outage".to_owned(), "ETHUSDT", answers).await);
    eventually("all 31 fills", || async {
        (count(&pool, "SELECT count(*) FROM fills").await == 31).then_some(())
    })
    .await;
    assert!(placed_during_outage < 31, "the cut came mid-flight");
    let connection = broker().await;
    assert_exactly_once(&app, &connection, &ledger.accepted(), &ids).await;
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}
