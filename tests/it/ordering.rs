//! Per-symbol order across consumers, retries and crashes: two signals of one symbol
//! reach the exchange in the order the queue received them, the second only after the
//! first has reached its outcome, while other symbols go on meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hoox_common::retry::RetryPolicy;
use hoox_common::runtime_config::PAPER_LATENCY_MS;
use hoox_common::signal::{ExchangeName, Leverage};
use hoox_consumer::exchange::{ErrorClass, Exchange, ExchangeError, OrderAck, OrderRequest};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::overlaps::SymbolOverlaps;
use crate::support::{
    accepted, broker, count, dead_letters, eventually, filled, signal, spawn_hoox, Options, TestApp,
};

const SYMBOLS: [&str; 6] = [
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT",
];

/// What the exchange saw of one order, when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Arrival {
    symbol: String,
    request_id: Uuid,
    /// Whether it was accepted (or refused as rate-limited).
    accepted: bool,
}

/// An exchange that records each order as it arrives, answers after a latency, and
/// refuses the first order of a chosen symbol as rate-limited (retryable).
#[derive(Default)]
struct Arrivals {
    latency: Duration,
    rate_limit_first_of: Mutex<Option<String>>,
    arrivals: Mutex<Vec<Arrival>>,
    overlaps: SymbolOverlaps,
}

impl Arrivals {
    fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    fn rate_limit_first_of(&self, symbol: &str) {
        *self.rate_limit_first_of.lock().unwrap() = Some(symbol.to_owned());
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    /// The request ids that reached the exchange for `symbol`, accepted, in order.
    fn accepted_for(&self, symbol: &str) -> Vec<Uuid> {
        self.arrivals()
            .into_iter()
            .filter(|a| a.symbol == symbol && a.accepted)
            .map(|a| a.request_id)
            .collect()
    }
}

#[async_trait]
impl Exchange for Arrivals {
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
        self.overlaps.enter(&symbol);
        let refuse = {
            let mut first_of = self.rate_limit_first_of.lock().unwrap();
            let refuse = first_of.as_deref() == Some(symbol.as_str());
            if refuse {
                *first_of = None;
            }
            refuse
        };
        self.arrivals.lock().unwrap().push(Arrival {
            symbol: symbol.clone(),
            request_id: order.request_id,
            accepted: !refuse,
        });
        tokio::time::sleep(self.latency).await;
        self.overlaps.leave(&symbol);
        if refuse {
            return Err(ExchangeError::new(
                ErrorClass::Retryable,
                "rate limited: too many requests",
            ));
        }
        Ok(filled(
            order,
            format!("arrival-{}", order.request_id.simple()),
        ))
    }

    async fn order_by_client_id(
        &self,
        order: &OrderRequest,
    ) -> Result<Option<OrderAck>, ExchangeError> {
        let known = self
            .arrivals()
            .iter()
            .any(|a| a.request_id == order.request_id && a.accepted);
        Ok(known.then(|| filled(order, format!("arrival-{}", order.request_id.simple()))))
    }
}

/// An app with six partitions and no consumer yet.
async fn app_with(pool: &PgPool, retry: RetryPolicy) -> TestApp {
    let app = TestApp::with(
        pool.clone(),
        Options {
            consumer: false,
            partitions: 6,
            retry,
            ..Options::default()
        },
    )
    .await;
    app.ready().await;
    app
}

/// How many partitions each live consumer of the app's queue holds.
async fn shares(app: &TestApp) -> Vec<usize> {
    let mut connection = app.pool.acquire().await.unwrap();
    hoox_consumer::leases::shares(&mut connection, app.topology.queue())
        .await
        .unwrap()
}

/// How many consumers hold at least one partition lease.
async fn lease_holders(app: &TestApp) -> usize {
    shares(app).await.into_iter().filter(|&n| n > 0).count()
}

/// Posts `rounds` signals per symbol, interleaved (one of each symbol, then again);
/// returns each symbol's request ids in the order they were accepted.
async fn post_interleaved(
    app: &TestApp,
    symbols: &[&str],
    rounds: usize,
) -> HashMap<String, Vec<Uuid>> {
    let mut sent: HashMap<String, Vec<Uuid>> = HashMap::new();
    for round in 0..rounds {
        for symbol in symbols {
            let mut body = signal(symbol);
            body["idempotencyKey"] = json!(format!("{symbol}-{round}"));
            let id = accepted(app, &body).await;
            sent.entry((*symbol).to_owned())
                .or_default()
                .push(id.parse().unwrap());
        }
    }
    sent
}

async fn wait_for_fills(pool: &PgPool, n: i64) {
    eventually("every fill", || async {
        (count(pool, "SELECT count(*) FROM fills").await == n).then_some(())
    })
    .await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn three_consumers_send_each_symbols_signals_in_publish_order_one_at_a_time(pool: PgPool) {
    let exchange = Arc::new(Arrivals::with_latency(Duration::from_millis(10)));
    let mut app = app_with(&pool, Options::default().retry).await;
    for _ in 0..3 {
        app.start_consumer(vec![exchange.clone() as Arc<dyn Exchange>]);
    }
    // The partitions spread over all three.
    eventually("three consumers holding partitions", || async {
        (lease_holders(&app).await == 3).then_some(())
    })
    .await;

    let sent = post_interleaved(&app, &SYMBOLS, 8).await;
    wait_for_fills(&pool, 48).await;

    for symbol in SYMBOLS {
        assert_eq!(
            exchange.accepted_for(symbol),
            sent[symbol],
            "{symbol} reached the exchange in publish order"
        );
    }
    assert_eq!(
        exchange.overlaps.count(),
        0,
        "a symbol's next order never went out before the previous one was answered"
    );
    assert_eq!(exchange.arrivals().len(), 48, "each signal sent once");
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_rate_limited_signal_holds_its_symbol_while_other_symbols_complete(pool: PgPool) {
    let exchange = Arc::new(Arrivals::with_latency(Duration::from_millis(5)));
    // The retry waits 3 s in its delay tier: long enough for the others to finish.
    let retry = RetryPolicy {
        base: Duration::from_millis(3000),
        max_attempts: 3,
        max_delay: Duration::from_millis(3000),
    };
    let mut app = app_with(&pool, retry).await;
    for _ in 0..3 {
        app.start_consumer(vec![exchange.clone() as Arc<dyn Exchange>]);
    }
    eventually("three consumers holding partitions", || async {
        (lease_holders(&app).await == 3).then_some(())
    })
    .await;

    // The first BTC signal is refused once as rate-limited.
    exchange.rate_limit_first_of("BTCUSDT");
    let others = ["ETHUSDT", "SOLUSDT", "XRPUSDT"];
    let mut symbols = vec!["BTCUSDT"];
    symbols.extend(others);
    let sent = post_interleaved(&app, &symbols, 3).await;
    let held = sent["BTCUSDT"][0];
    wait_for_fills(&pool, 12).await;

    let arrivals = exchange.arrivals();
    let refused = arrivals
        .iter()
        .position(|a| a.request_id == held && !a.accepted)
        .expect("the first attempt was refused");
    let retried = arrivals
        .iter()
        .position(|a| a.request_id == held && a.accepted)
        .expect("the retry was accepted");
    assert!(refused < retried);
    // Every later BTC signal waited for the held one to fill.
    assert_eq!(exchange.accepted_for("BTCUSDT"), sent["BTCUSDT"]);
    let btc_between = arrivals[refused + 1..retried]
        .iter()
        .filter(|a| a.symbol == "BTCUSDT")
        .count();
    assert_eq!(
        btc_between, 0,
        "no BTC order while its first signal was held"
    );
    // The other symbols did not wait: all of them reached the exchange meanwhile.
    for symbol in others {
        assert_eq!(exchange.accepted_for(symbol), sent[symbol], "{symbol}");
        let last = arrivals.iter().rposition(|a| a.symbol == symbol).unwrap();
        assert!(last < retried, "{symbol} completed while BTC was held");
    }
    let attempt: i32 = sqlx::query_scalar("SELECT attempt FROM executions WHERE request_id = $1")
        .bind(held)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempt, 2, "filled on its retry");
    let connection = broker().await;
    assert!(dead_letters(&app, &connection).await.is_empty());
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_consumer_killed_mid_run_changes_neither_order_nor_count(pool: PgPool) {
    let app = app_with(&pool, Options::default().retry).await;
    // Paper orders take 20 ms each; the paper book records them as they are taken.
    app.set_config(PAPER_LATENCY_MS, "20").await;
    let mut consumers: Vec<_> = (0..3).map(|_| spawn_hoox(&app)).collect();
    eventually("three consumers holding partitions", || async {
        (lease_holders(&app).await == 3).then_some(())
    })
    .await;

    let posting = {
        let (url, http) = (app.webhook_url(), app.http.clone());
        tokio::spawn(async move {
            let mut sent: Vec<(String, Uuid)> = Vec::new();
            for round in 0..10 {
                for symbol in SYMBOLS {
                    let mut body = signal(symbol);
                    body["idempotencyKey"] = json!(format!("{symbol}-{round}"));
                    let answer: serde_json::Value = http
                        .post(&url)
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let id = answer["result"]["requestId"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    sent.push((symbol.to_owned(), id));
                }
            }
            sent
        })
    };
    // Kill one consumer once orders flow, while signals are still arriving.
    eventually("orders flowing", || async {
        (count(&pool, "SELECT count(*) FROM paper_orders").await >= 10).then_some(())
    })
    .await;
    let mut killed = consumers.remove(0);
    killed.kill().await.expect("SIGKILL");
    let sent = posting.await.unwrap();
    wait_for_fills(&pool, 60).await;
    // The survivors took the dead consumer's share over.
    eventually("two consumers holding every partition", || async {
        let shares = shares(&app).await;
        (shares == [3, 3]).then_some(())
    })
    .await;

    let booked: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT symbol, request_id FROM paper_orders ORDER BY created_at, client_order_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(booked.len(), 60, "each signal traded once");
    for symbol in SYMBOLS {
        let published: Vec<Uuid> = sent
            .iter()
            .filter(|(s, _)| s == symbol)
            .map(|(_, id)| *id)
            .collect();
        let traded: Vec<Uuid> = booked
            .iter()
            .filter(|(s, _)| s == symbol)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(traded, published, "{symbol} traded in publish order");
    }
    let connection = broker().await;
    assert!(dead_letters(&app, &connection).await.is_empty());
    let _ = connection.close(200, "done".into()).await;
    for mut consumer in consumers {
        consumer.kill().await.expect("stop");
    }
    app.stop().await;
}

/// An exchange whose answer to a new order is an acknowledgement only, like Bybit's and
/// MEXC's: the order's state comes from a read-back, which for the first order is held
/// until the test opens its gate.
#[derive(Default)]
struct AcknowledgesOnly {
    arrivals: Mutex<Vec<Uuid>>,
    /// Read-backs under way when each order arrived, in arrival order.
    reading_at_arrival: Mutex<Vec<usize>>,
    reading: Mutex<usize>,
    first: Mutex<Option<Uuid>>,
    gate: tokio::sync::Notify,
    overlaps: SymbolOverlaps,
}

/// The fill price the read-back reports; the acknowledgement has none.
const READ_BACK_PRICE: &str = "123.45";

#[async_trait]
impl Exchange for AcknowledgesOnly {
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
        self.overlaps.enter(&symbol);
        self.first.lock().unwrap().get_or_insert(order.request_id);
        let reading = *self.reading.lock().unwrap();
        self.reading_at_arrival.lock().unwrap().push(reading);
        self.arrivals.lock().unwrap().push(order.request_id);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.overlaps.leave(&symbol);
        Ok(OrderAck {
            status: "accepted".to_owned(),
            fill_price: None,
            fill_quantity: None,
            ..filled(order, format!("ack-{}", order.request_id.simple()))
        })
    }

    async fn read_back(&self, order: &OrderRequest, placed: OrderAck) -> OrderAck {
        *self.reading.lock().unwrap() += 1;
        if *self.first.lock().unwrap() == Some(order.request_id) {
            self.gate.notified().await;
        }
        *self.reading.lock().unwrap() -= 1;
        OrderAck {
            status: "filled".to_owned(),
            fill_price: Some(READ_BACK_PRICE.parse().unwrap()),
            fill_quantity: Some(order.quantity),
            ..placed
        }
    }

    async fn order_by_client_id(
        &self,
        order: &OrderRequest,
    ) -> Result<Option<OrderAck>, ExchangeError> {
        let known = self.arrivals.lock().unwrap().contains(&order.request_id);
        Ok(known.then(|| filled(order, format!("ack-{}", order.request_id.simple()))))
    }
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn a_placed_orders_read_back_does_not_hold_its_symbol_and_completes_its_fill(pool: PgPool) {
    let exchange = Arc::new(AcknowledgesOnly::default());
    let mut app = app_with(&pool, Options::default().retry).await;
    app.start_consumer(vec![exchange.clone() as Arc<dyn Exchange>]);

    let sent = post_interleaved(&app, &["BTCUSDT"], 2).await;
    let sent = &sent["BTCUSDT"];
    // The second order goes out while the first one's state is still being read.
    eventually("both orders at the exchange", || async {
        (exchange.arrivals.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    assert_eq!(*exchange.arrivals.lock().unwrap(), *sent, "publish order");
    assert_eq!(
        *exchange.reading_at_arrival.lock().unwrap(),
        vec![0, 1],
        "the second order arrived during the first one's read-back"
    );
    assert_eq!(
        exchange.overlaps.count(),
        0,
        "never two orders being placed"
    );
    // The second fill commits; the first waits for its read-back.
    eventually("the second fill", || async {
        (count(&pool, "SELECT count(*) FROM fills").await == 1).then_some(())
    })
    .await;
    let recorded: Uuid = sqlx::query_scalar("SELECT request_id FROM fills")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, sent[1]);

    exchange.gate.notify_one();
    wait_for_fills(&pool, 2).await;
    let (status, price): (String, Option<rust_decimal::Decimal>) =
        sqlx::query_as("SELECT status, fill_price FROM fills WHERE request_id = $1")
            .bind(sent[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        status, "filled",
        "the read-back's state, not the acknowledgement's"
    );
    assert_eq!(price, Some(READ_BACK_PRICE.parse().unwrap()));
    app.stop().await;
}
