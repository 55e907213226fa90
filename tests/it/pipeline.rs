//! Webhook to fill: exactly once, in batches, in order per symbol, and never for a
//! message the consumer cannot verify.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures_util::StreamExt;
use hoox_common::message::{QueueMessage, HEADER_REASON, HEADER_SIGNATURE};
use hoox_common::signal::{ExchangeName, Leverage, WebhookSignal};
use hoox_consumer::exchange::{Exchange, ExchangeError, OrderAck, OrderRequest};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::overlaps::SymbolOverlaps;
use crate::support::{
    amqp_url, broker, count, eventually, filled, publish_signed, signal, Options, TestApp,
    INTERNAL_KEY,
};

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn webhook_becomes_exactly_one_fill_and_trace_shows_its_life(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    app.ready().await;
    let (status, envelope) = app.post(&signal("BYBIT:BTCUSDT.P")).await;
    assert_eq!(status, 202, "{envelope}");
    let id = envelope["result"]["requestId"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_for_fill(&id).await, 1);

    let (quantity, price, symbol, exchange, paper): (String, String, String, String, bool) = sqlx::query_as(
        "SELECT quantity::text, fill_price::text, symbol, exchange, paper FROM fills WHERE request_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (quantity.as_str(), price.as_str()),
        ("0.005", "68000"),
        "exact decimals"
    );
    assert_eq!(
        (symbol.as_str(), exchange.as_str(), paper),
        ("BTCUSDT", "paper", true)
    );
    let client_order_id: String = sqlx::query_scalar("SELECT client_order_id FROM paper_orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        client_order_id,
        id.replace('-', ""),
        "client order id is the request id's hex"
    );

    let output = app
        .hoox()
        .args(["trace", &id])
        .output()
        .await
        .expect("hoox trace runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let steps = [
        "ingest    info   webhook accepted: LONG 0.005 BTCUSDT",
        "consumer  info   dequeued: attempt 1",
        "consumer  info   routed to paper by config",
        "consumer  info   order placed on paper",
        "consumer  info   fill recorded",
        "fill: paper buy 0.005 BTCUSDT @ 68000",
    ];
    let mut from = 0;
    for step in steps {
        let at = printed[from..]
            .find(step)
            .unwrap_or_else(|| panic!("`{step}` missing or out of order in:\n{printed}"));
        from += at + step.len();
    }
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn fifty_signals_at_once_are_filled_exactly_once_in_batches_of_at_most_ten(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    app.ready().await;
    let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"];
    let bodies: Vec<_> = (0..50)
        .map(|i| {
            let mut body = signal(symbols[i % symbols.len()]);
            body["idempotencyKey"] = json!(format!("burst-{i}"));
            body
        })
        .collect();
    let answers = futures_util::future::join_all(bodies.iter().map(|b| app.post(b))).await;
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");

    eventually("50 fills", || async {
        (count(&pool, "SELECT count(*) FROM fills").await == 50).then_some(())
    })
    .await;
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT request_id) FROM fills").await,
        50
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM paper_orders").await,
        50,
        "one order per signal"
    );
    let largest_batch = count(
        &pool,
        r#"SELECT max(n) FROM (
               SELECT count(*) AS n FROM system_logs
               WHERE kind = 'dequeued' GROUP BY context->>'batch'
           ) batches"#,
    )
    .await;
    assert!(
        (1..=10).contains(&largest_batch),
        "largest batch was {largest_batch}"
    );
    let declared = count(
        &pool,
        "SELECT max((context->>'batchSize')::bigint) FROM system_logs WHERE kind = 'dequeued'",
    )
    .await;
    assert!(declared <= 10, "a batch of {declared}");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn forged_or_unsigned_messages_are_dead_lettered_and_never_executed(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    app.ready().await;
    let connection = hoox_common::amqp::connect(&SecretString::from(amqp_url()), "hoox-test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    let parsed = WebhookSignal::from_json(signal("BTCUSDT").as_object().unwrap()).unwrap();
    let message = QueueMessage::new(Uuid::new_v4(), Utc::now(), parsed.signal);
    let (body, _) = message.encode(&SecretString::from(INTERNAL_KEY.to_owned()));
    let (_, forged_signature) = message.encode(&SecretString::from("attacker-key".to_owned()));
    for signature in [Some(forged_signature), None] {
        let mut headers = FieldTable::default();
        if let Some(signature) = signature {
            headers.insert(
                HEADER_SIGNATURE.into(),
                AMQPValue::LongString(signature.into()),
            );
        }
        channel
            .basic_publish(
                "".into(),
                app.topology.queue().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let mut dead = channel
        .basic_consume(
            app.topology.dlq().as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        let delivery = tokio::time::timeout(crate::support::DEADLINE, dead.next())
            .await
            .expect("a dead letter arrives")
            .unwrap()
            .unwrap();
        let reason = delivery
            .properties
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .get(HEADER_REASON)
            .cloned();
        assert_eq!(reason, Some(AMQPValue::LongString("unverified".into())));
        assert_eq!(
            delivery.data, body,
            "the dead letter keeps the original body"
        );
    }
    // A genuine signal after them still trades: the forged ones did not block the queue.
    let (_, envelope) = app.post(&signal("ETHUSDT")).await;
    app.wait_for_fill(envelope["result"]["requestId"].as_str().unwrap())
        .await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM paper_orders").await,
        1,
        "only the genuine one traded"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM system_logs WHERE kind = 'dead_lettered' AND context->>'reason' = 'unverified' AND request_id IS NULL").await,
        2
    );
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

/// An exchange that records the order of calls per symbol and how many run at once.
#[derive(Default)]
struct Probe {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    overlaps_within_symbol: SymbolOverlaps,
    calls: Mutex<Vec<(String, Uuid)>>,
}

#[async_trait]
impl Exchange for Probe {
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
        let symbol = order.symbol.to_string();
        self.overlaps_within_symbol.enter(&symbol);
        self.calls
            .lock()
            .unwrap()
            .push((symbol.clone(), order.request_id));
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        // Wait (bounded) for a second symbol's call to overlap this one: a worker that
        // ran symbols one after another would never get here twice at once.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.max_in_flight.load(Ordering::SeqCst) < 2
            && tokio::time::Instant::now() < deadline
        {
            tokio::task::yield_now().await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.overlaps_within_symbol.leave(&symbol);
        Ok(filled(order, order.client_order_id.as_str().to_owned()))
    }

    async fn order_by_client_id(
        &self,
        _: &OrderRequest,
    ) -> Result<Option<OrderAck>, ExchangeError> {
        Ok(None)
    }
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn one_symbol_keeps_its_order_while_different_symbols_run_concurrently(pool: PgPool) {
    let probe = Arc::new(Probe::default());
    let mut app = TestApp::with(
        pool.clone(),
        Options {
            consumer: false,
            ..Options::default()
        },
    )
    .await;
    let order = ["BTCUSDT", "ETHUSDT", "BTCUSDT", "ETHUSDT", "BTCUSDT"];
    let messages: Vec<QueueMessage> = order
        .iter()
        .map(|symbol| {
            let parsed = WebhookSignal::from_json(signal(symbol).as_object().unwrap()).unwrap();
            QueueMessage::new(Uuid::new_v4(), Utc::now(), parsed.signal)
        })
        .collect();
    let connection = broker().await;
    for message in &messages {
        publish_signed(&app, &connection, message).await;
    }
    app.start_consumer(vec![probe.clone() as Arc<dyn Exchange>]);
    eventually("five fills", || async {
        (count(&pool, "SELECT count(*) FROM fills").await == 5).then_some(())
    })
    .await;

    assert_eq!(
        probe.max_in_flight.load(Ordering::SeqCst),
        2,
        "BTC and ETH overlapped"
    );
    assert_eq!(
        probe.overlaps_within_symbol.count(),
        0,
        "one symbol never overlapped itself"
    );
    let calls = probe.calls.lock().unwrap().clone();
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let called: Vec<Uuid> = calls
            .iter()
            .filter(|(s, _)| s == symbol)
            .map(|(_, id)| *id)
            .collect();
        let sent: Vec<Uuid> = messages
            .iter()
            .filter(|m| m.signal.symbol.as_str() == symbol)
            .map(|m| m.request_id)
            .collect();
        assert_eq!(called, sent, "{symbol} in arrival order");
    }
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}
