//! The bench's stand-in for Bybit V5: every endpoint the consumer calls (server time,
//! instrument info, set leverage, order create, order lookup), answered in Bybit's
//! envelope after a fixed latency, with each signed request checked. It counts orders
//! and records when each arrived and when it was answered, keyed by `orderLinkId`
//! (the request id's 32 hex digits), so the bench can match an order to its webhook.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The API key the consumer is given for the mock.
pub(super) const API_KEY: &str = "hoox-bench-key";
/// The API secret the consumer is given for the mock; it protects nothing.
pub(super) const API_SECRET: &str = "hoox-bench-secret";

/// When one order reached the mock, and when the mock answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OrderTimes {
    /// The create request arrived.
    pub(super) arrived: Instant,
    /// The answer left, one exchange latency later: the order is placed.
    pub(super) placed: Instant,
}

#[derive(Default)]
struct Book {
    orders: HashMap<String, OrderTimes>,
    /// Requests refused (bad signature, bad body): a consumer bug, shown by the bench.
    refused: u64,
}

struct Inner {
    latency: Duration,
    book: Mutex<Book>,
    /// Orders placed so far; waiters watch it change.
    placed: watch::Sender<u64>,
}

impl Inner {
    fn book(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock cannot leave the map half-written.
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running mock exchange.
#[derive(Clone)]
pub(super) struct MockExchange {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl MockExchange {
    /// Serves on a free local port, answering every request after `latency`, until
    /// `token` is cancelled.
    pub(super) async fn start(latency: Duration, token: CancellationToken) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            latency,
            book: Mutex::default(),
            placed: watch::Sender::new(0),
        });
        let router = Router::new()
            .route("/v5/market/time", get(time))
            .route("/v5/market/instruments-info", get(instrument))
            .route("/v5/position/set-leverage", post(leverage))
            .route("/v5/order/create", post(create))
            .route("/v5/order/realtime", get(lookup))
            .route("/v5/order/history", get(lookup))
            .fallback(|| async { (StatusCode::NOT_FOUND, "no such route") })
            .with_state(Arc::clone(&inner));
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::warn!(error = %err, "mock exchange stopped");
            }
        });
        Ok(Self { inner, addr })
    }

    /// The base URL to give the consumer as `BYBIT_BASE_URL`.
    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Orders placed so far.
    #[cfg(test)]
    pub(super) fn order_count(&self) -> u64 {
        *self.inner.placed.borrow()
    }

    /// Requests refused so far.
    pub(super) fn refused(&self) -> u64 {
        self.inner.book().refused
    }

    /// The times of the order with client order id `link`, if it was placed.
    #[cfg(test)]
    pub(super) fn order(&self, link: &str) -> Option<OrderTimes> {
        self.inner.book().orders.get(link).copied()
    }

    /// Waits until every order of `links` is placed, or `deadline` passes; gives the
    /// times of those placed, in the order of `links` (`None` for the missing).
    pub(super) async fn wait_for(
        &self,
        links: &[String],
        deadline: Instant,
    ) -> Vec<Option<OrderTimes>> {
        let mut changes = self.inner.placed.subscribe();
        loop {
            let times: Vec<Option<OrderTimes>> = {
                let book = self.inner.book();
                links.iter().map(|l| book.orders.get(l).copied()).collect()
            };
            if times.iter().all(Option::is_some) {
                return times;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let changed = tokio::time::timeout(left, changes.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return times;
            }
        }
    }
}

/// Bybit's envelope around `result`.
fn envelope(code: i64, message: &str, result: Value) -> Response {
    let time = chrono::Utc::now().timestamp_millis();
    Json(json!({
        "retCode": code,
        "retMsg": message,
        "result": result,
        "retExtInfo": {},
        "time": time,
    }))
    .into_response()
}

fn refuse(inner: &Inner, code: i64, message: &str) -> Response {
    inner.book().refused += 1;
    envelope(code, message, json!({}))
}

/// Bybit's check of a private request: the key, and the signature over
/// `timestamp + key + recvWindow + payload`.
fn authentic(headers: &HeaderMap, payload: &str) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(key), Some(timestamp), Some(sign)) = (
        header("X-BAPI-API-KEY"),
        header("X-BAPI-TIMESTAMP"),
        header("X-BAPI-SIGN"),
    ) else {
        return false;
    };
    let window = header("X-BAPI-RECV-WINDOW").unwrap_or("5000");
    let signed = format!("{timestamp}{key}{window}{payload}");
    key == API_KEY
        && hoox_common::signing::verify_hmac_sha256_hex(
            API_SECRET.as_bytes(),
            signed.as_bytes(),
            sign,
        )
}

async fn time(State(inner): State<Arc<Inner>>) -> Response {
    tokio::time::sleep(inner.latency).await;
    let now = chrono::Utc::now().timestamp_millis();
    envelope(
        0,
        "OK",
        json!({"timeSecond": (now / 1000).to_string(), "timeNano": (now * 1_000_000).to_string()}),
    )
}

/// Every symbol trades, in steps of 0.001 with a tick of 0.1.
async fn instrument(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    tokio::time::sleep(inner.latency).await;
    let (Some(category), Some(symbol)) = (query.get("category"), query.get("symbol")) else {
        return refuse(
            &inner,
            10001,
            "params error: category and symbol are required",
        );
    };
    envelope(
        0,
        "OK",
        json!({"category": category, "list": [{
            "symbol": symbol,
            "status": "Trading",
            "lotSizeFilter": {
                "maxOrderQty": "1000000",
                "minOrderQty": "0.001",
                "qtyStep": "0.001",
                "maxMktOrderQty": "1000000",
            },
            "priceFilter": {"minPrice": "0.1", "maxPrice": "1000000", "tickSize": "0.1"},
        }]}),
    )
}

async fn leverage(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    tokio::time::sleep(inner.latency).await;
    if !authentic(&headers, &body) {
        return refuse(&inner, 10004, "error sign!");
    }
    envelope(0, "OK", json!({}))
}

async fn create(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    let arrived = Instant::now();
    tokio::time::sleep(inner.latency).await;
    if !authentic(&headers, &body) {
        return refuse(&inner, 10004, "error sign!");
    }
    let Ok(order) = serde_json::from_str::<Value>(&body) else {
        return refuse(&inner, 10001, "params error: body is not JSON");
    };
    let fields = [
        "category",
        "symbol",
        "side",
        "orderType",
        "qty",
        "orderLinkId",
    ];
    if fields.iter().any(|f| !order[f].is_string()) {
        return refuse(
            &inner,
            10001,
            "params error: category, symbol, side, orderType, qty and orderLinkId are required",
        );
    }
    let link = order["orderLinkId"].as_str().unwrap_or_default().to_owned();
    let placed = Instant::now();
    {
        let mut book = inner.book();
        if book.orders.contains_key(&link) {
            drop(book);
            return envelope(110_072, "OrderLinkedID is duplicate", json!({}));
        }
        book.orders
            .insert(link.clone(), OrderTimes { arrived, placed });
    }
    inner.placed.send_modify(|n| *n += 1);
    envelope(0, "OK", json!({"orderId": link, "orderLinkId": link}))
}

async fn lookup(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    raw: axum::extract::RawQuery,
) -> Response {
    tokio::time::sleep(inner.latency).await;
    let query = raw.0.unwrap_or_default();
    if !authentic(&headers, &query) {
        return refuse(&inner, 10004, "error sign!");
    }
    let link = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "orderLinkId")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let list: Vec<Value> = inner
        .book()
        .orders
        .contains_key(&link)
        .then(|| {
            json!({
                "orderId": link,
                "orderLinkId": link,
                "orderStatus": "Filled",
                "avgPrice": "100",
                "cumExecQty": "0.001",
                "createdTime": chrono::Utc::now().timestamp_millis().to_string(),
            })
        })
        .into_iter()
        .collect();
    envelope(0, "OK", json!({"category": "linear", "list": list}))
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use hoox_consumer::config::ExchangeArgs;
    use hoox_consumer::exchange::{Exchange, OrderRequest};

    use super::*;

    const LATENCY: Duration = Duration::from_millis(20);

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        exchanges: ExchangeArgs,
    }

    /// The consumer's own Bybit provider, pointed at `mock`.
    fn bybit(mock: &MockExchange) -> Arc<dyn Exchange> {
        let cli = Cli::try_parse_from([
            "consumer",
            "--bybit-api-key",
            API_KEY,
            "--bybit-api-secret",
            API_SECRET,
            "--bybit-base-url",
            &mock.url(),
        ])
        .unwrap();
        cli.exchanges
            .providers()
            .into_iter()
            .find(|p| p.name() == hoox_common::signal::ExchangeName::Bybit)
            .unwrap()
    }

    fn order(symbol: &str) -> OrderRequest {
        let body = json!({"action": "LONG", "symbol": symbol, "quantity": "0.001"});
        let signal = hoox_common::signal::WebhookSignal::from_json(body.as_object().unwrap())
            .unwrap()
            .signal;
        let message = hoox_common::message::QueueMessage::new(
            uuid::Uuid::new_v4(),
            chrono::Utc::now(),
            signal,
        );
        OrderRequest::from_message(&message)
    }

    #[tokio::test]
    async fn the_mock_counts_each_order_the_consumers_provider_places_once_by_its_link_id() {
        let token = CancellationToken::new();
        let mock = MockExchange::start(LATENCY, token.clone()).await.unwrap();
        let provider = bybit(&mock);
        let (first, second) = (order("BENCH01USDT"), order("BENCH02USDT"));

        let placed = provider.place_order(&first).await.unwrap();
        let ack = provider.read_back(&first, placed).await;
        provider.place_order(&second).await.unwrap();

        assert_eq!(ack.status, "filled");
        assert_eq!(mock.order_count(), 2);
        assert_eq!(mock.refused(), 0);
        let link = first.client_order_id.as_str().to_owned();
        let times = mock.order(&link).unwrap();
        assert!(times.placed - times.arrived >= LATENCY, "{times:?}");

        // A resend of the same order is Bybit's duplicate, not a second order.
        let again = provider.place_order(&first).await;
        assert!(again.is_err(), "{again:?}");
        assert_eq!(mock.order_count(), 2);

        let links = [link, second.client_order_id.as_str().to_owned()];
        let waited = mock.wait_for(&links, Instant::now()).await;
        assert!(waited.iter().all(Option::is_some), "{waited:?}");
        let missing = mock
            .wait_for(&["0".repeat(32)], Instant::now() + LATENCY)
            .await;
        assert_eq!(missing, [None]);
        token.cancel();
    }

    #[tokio::test]
    async fn the_mock_refuses_unknown_paths_bad_signatures_and_bad_bodies() {
        let token = CancellationToken::new();
        let mock = MockExchange::start(Duration::ZERO, token.clone())
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let create = format!("{}/v5/order/create", mock.url());
        let signed = |body: &str| {
            let sign = hoox_common::signing::hmac_sha256_hex(
                API_SECRET.as_bytes(),
                format!("1{API_KEY}5000{body}").as_bytes(),
            );
            http.post(&create)
                .header("X-BAPI-API-KEY", API_KEY)
                .header("X-BAPI-TIMESTAMP", "1")
                .header("X-BAPI-RECV-WINDOW", "5000")
                .header("X-BAPI-SIGN", sign)
                .body(body.to_owned())
        };
        let ret_code = |response: reqwest::Response| async move {
            response.json::<Value>().await.unwrap()["retCode"].clone()
        };

        let unknown = http
            .get(format!("{}/v5/nope", mock.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

        let forged = http
            .post(&create)
            .header("X-BAPI-API-KEY", API_KEY)
            .header("X-BAPI-TIMESTAMP", "1")
            .header("X-BAPI-SIGN", "00")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(ret_code(forged).await, json!(10004));

        let not_json = signed("not json").send().await.unwrap();
        assert_eq!(ret_code(not_json).await, json!(10001));
        let no_link = signed(
            r#"{"category":"linear","symbol":"X","side":"Buy","orderType":"Market","qty":"1"}"#,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(ret_code(no_link).await, json!(10001));

        assert_eq!(mock.refused(), 3);
        assert_eq!(mock.order_count(), 0);

        let good = signed(r#"{"category":"linear","symbol":"X","side":"Buy","orderType":"Market","qty":"1","orderLinkId":"abc"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(ret_code(good).await, json!(0));
        assert_eq!(mock.order_count(), 1);
        token.cancel();
    }
}
