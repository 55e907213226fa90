//! Local stand-ins for Bybit, Binance and MEXC: HTTP servers that check each request the
//! way the real service does (API key header, timestamp window, HMAC-SHA256 signature
//! over the exact bytes sent, parameter names and values, the instrument's step and
//! minimum) and answer in the real response shapes and error codes. Orders are kept by
//! client order id and a repeated id is refused, as the exchanges do. The signature
//! check is written here from the exchanges' documentation, not with hoox's code, and is
//! itself tested against the exchanges' published examples.

#![expect(
    clippy::result_large_err,
    reason = "a refused request is answered at once with its response; its size costs nothing"
)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;

/// The API key every mock accepts.
pub const KEY: &str = "mock-api-key-7Hq2";
/// The secret every mock signs with.
pub const SECRET: &str = "mock-api-secret-Xv93kLw0";
/// The price market orders fill at.
pub const MARK: &str = "68000";

/// Which exchange a mock stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bybit V5, linear.
    Bybit,
    /// Binance USD-M futures.
    Binance,
    /// MEXC spot v3.
    MexcSpot,
    /// MEXC futures (contract API).
    MexcFutures,
}

/// What the next order request meets instead of a normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The exchange's rate-limit answer.
    RateLimit,
    /// The exchange's insufficient-balance rejection.
    Reject,
    /// The order is taken, and the answer never comes.
    TakeAndHang,
    /// The order is taken, and answered after this many milliseconds.
    TakeSlowly(u64),
    /// Not taken: a 200 whose body is not JSON.
    Garbage,
    /// Not taken: a gateway's HTML error page with a 502.
    HtmlError,
    /// Not taken: the connection is reset in the middle of the answer.
    Reset,
    /// The order is taken, then the answer is garbage.
    TakeThenGarbage,
    /// The order is taken, then a gateway's HTML 502 comes back.
    TakeThenHtmlError,
    /// The order is taken, then the connection is reset mid-answer.
    TakeThenReset,
}

impl Fault {
    /// Every fault of the network and the gateway, for tests that try them all.
    pub const TRANSPORT: [Fault; 8] = [
        Fault::TakeAndHang,
        Fault::TakeSlowly(300),
        Fault::Garbage,
        Fault::HtmlError,
        Fault::Reset,
        Fault::TakeThenGarbage,
        Fault::TakeThenHtmlError,
        Fault::TakeThenReset,
    ];
}

/// An order the mock accepted.
#[derive(Debug, Clone)]
pub struct Order {
    /// The exchange's order id.
    pub id: String,
    /// The client order id sent.
    pub client_id: String,
    /// The symbol as sent.
    pub symbol: String,
    /// The side as sent.
    pub side: String,
    /// The quantity as sent (contracts for MEXC futures).
    pub quantity: String,
    /// The limit price as sent.
    pub price: Option<String>,
    /// Whether it may only reduce a position.
    pub reduce_only: bool,
    /// Every parameter, as sent.
    pub params: Value,
    /// When it was taken, by the mock's clock.
    pub time: i64,
}

/// What the mock says its key may do when asked (Bybit `query-api`, Binance
/// `account` and `apiRestrictions`, MEXC `account`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    /// The key may trade.
    pub trade: bool,
    /// The key may withdraw.
    pub withdraw: bool,
}

impl Default for Permissions {
    /// A key set up as hoox asks: trading, no withdrawals.
    fn default() -> Self {
        Self {
            trade: true,
            withdraw: false,
        }
    }
}

/// A futures position the mock's account holds, as the exchange counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The contract as the exchange names it (`BTCUSDT`; MEXC futures `BTC_USDT`).
    pub symbol: String,
    /// The signed size, negative short: base coin, or contracts on MEXC futures.
    pub size: String,
    /// The average entry price.
    pub entry: String,
}

impl Held {
    /// A position of `size` in `symbol` entered at `entry`.
    pub fn new(symbol: &str, size: &str, entry: &str) -> Self {
        Self {
            symbol: symbol.to_owned(),
            size: size.to_owned(),
            entry: entry.to_owned(),
        }
    }

    fn signed(&self) -> Decimal {
        self.size.parse().expect("a decimal size")
    }
}

/// A spot balance the mock's account holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coin {
    /// The asset (`BTC`).
    pub asset: String,
    /// Free to trade.
    pub free: String,
    /// Held by open orders.
    pub locked: String,
}

impl Coin {
    /// `free` and `locked` of `asset`.
    pub fn new(asset: &str, free: &str, locked: &str) -> Self {
        Self {
            asset: asset.to_owned(),
            free: free.to_owned(),
            locked: locked.to_owned(),
        }
    }

    fn total(&self) -> Decimal {
        self.free.parse::<Decimal>().expect("decimal")
            + self.locked.parse::<Decimal>().expect("decimal")
    }
}

#[derive(Default)]
struct Book {
    permissions: Permissions,
    held: Vec<Held>,
    coins: Vec<Coin>,
    position_cursors: Vec<Option<String>>,
    orders: Vec<Order>,
    leverage: Vec<(String, u32)>,
    faults: VecDeque<Fault>,
    lookups_down: usize,
    lagging: bool,
    hidden: std::collections::HashSet<String>,
    refused: Vec<String>,
}

struct Inner {
    kind: Kind,
    key: String,
    secret: String,
    skew_ms: i64,
    book: Mutex<Book>,
}

/// A running mock exchange.
pub struct MockExchange {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockExchange {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How far ahead of ours every mock's clock runs: far outside any receive window, so
/// a client that does not measure the exchange's clock is refused.
pub const SKEW_MS: i64 = 20_000;

impl MockExchange {
    /// A mock of `kind` on a free local port, its clock [`SKEW_MS`] ahead, taking
    /// [`KEY`] and [`SECRET`].
    pub async fn start(kind: Kind) -> Self {
        Self::with_keys(kind, KEY, SECRET).await
    }

    /// A mock taking another key pair (a testnet's).
    pub async fn with_keys(kind: Kind, key: &str, secret: &str) -> Self {
        let inner = Arc::new(Inner {
            kind,
            key: key.to_owned(),
            secret: secret.to_owned(),
            skew_ms: SKEW_MS,
            book: Mutex::new(Book::default()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner, task }
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes the next order requests meet `faults`, in order.
    pub fn fail_next(&self, faults: &[Fault]) {
        self.book().faults.extend(faults.iter().copied());
    }

    /// Makes the next `n` order lookups answer 503.
    pub fn fail_next_lookups(&self, n: usize) {
        self.book().lookups_down += n;
    }

    /// Makes lookups lag: an order taken from now on is not found by client order id
    /// until a second order with the same id arrives (which the exchange refuses as a
    /// duplicate), as an exchange's read side can trail its matching engine.
    pub fn lag_lookups(&self) {
        self.book().lagging = true;
    }

    /// Makes the key report `permissions` from now on.
    pub fn grant(&self, permissions: Permissions) {
        self.book().permissions = permissions;
    }

    /// Makes the account hold `positions` (futures) from now on.
    pub fn hold(&self, positions: Vec<Held>) {
        self.book().held = positions;
    }

    /// Makes the account hold `coins` (spot) from now on.
    pub fn fund(&self, coins: Vec<Coin>) {
        self.book().coins = coins;
    }

    /// The page cursor of every position-list request, in order (`None`: the first page).
    pub fn position_cursors(&self) -> Vec<Option<String>> {
        self.book().position_cursors.clone()
    }

    /// The orders taken.
    pub fn orders(&self) -> Vec<Order> {
        self.book().orders.clone()
    }

    /// The leverage changes made, as (symbol, leverage).
    pub fn leverage_calls(&self) -> Vec<(String, u32)> {
        self.book().leverage.clone()
    }

    /// Why requests were refused (bad key, signature or timestamp).
    pub fn refused(&self) -> Vec<String> {
        self.book().refused.clone()
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.book.lock().expect("mock book")
    }
}

impl Inner {
    fn now(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.skew_ms
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("mock book")
    }

    fn refuse(&self, why: String) {
        self.book().refused.push(why);
    }

    fn next_fault(&self) -> Option<Fault> {
        self.book().faults.pop_front()
    }

    /// A 503 when a lookup outage was asked for.
    fn lookup_down(&self) -> Option<Response> {
        let mut book = self.book();
        if book.lookups_down == 0 {
            return None;
        }
        book.lookups_down -= 1;
        Some((StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response())
    }
}

/// A request as received.
struct Request {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn query_params(&self) -> Vec<(String, String)> {
        parse_form(&self.query)
    }
}

fn parse_form(text: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Lowercase hex HMAC-SHA256, as every one of these exchanges signs.
pub fn hmac_hex(secret: &str, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Request {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    match inner.kind {
        Kind::Bybit => bybit::handle(&inner, request).await,
        Kind::Binance | Kind::MexcSpot => binance_style::handle(&inner, request).await,
        Kind::MexcFutures => mexc_futures::handle(&inner, request).await,
    }
}

/// An instrument's rules, in the units orders are sent in.
struct Instrument {
    step: Decimal,
    min: Decimal,
    tick: Decimal,
}

fn instrument(symbol: &str) -> Option<Instrument> {
    let d = |s: &str| s.parse::<Decimal>().expect("literal");
    match symbol {
        "BTCUSDT" => Some(Instrument {
            step: d("0.001"),
            min: d("0.001"),
            tick: d("0.1"),
        }),
        "ETHUSDT" => Some(Instrument {
            step: d("0.01"),
            min: d("0.01"),
            tick: d("0.01"),
        }),
        // MEXC futures: contracts of 0.0001 BTC, 0.01 ETH.
        "BTC_USDT" => Some(Instrument {
            step: d("1"),
            min: d("1"),
            tick: d("0.1"),
        }),
        "ETH_USDT" => Some(Instrument {
            step: d("1"),
            min: d("1"),
            tick: d("0.01"),
        }),
        _ => None,
    }
}

/// Why a quantity or price does not fit the instrument, if it does not.
fn misfit(rules: &Instrument, quantity: &str, price: Option<&str>) -> Option<String> {
    let Ok(q) = quantity.parse::<Decimal>() else {
        return Some(format!("quantity `{quantity}` is not a decimal"));
    };
    if q < rules.min || !(q % rules.step).is_zero() {
        return Some(format!(
            "quantity {q} breaks step {} / min {}",
            rules.step, rules.min
        ));
    }
    if let Some(price) = price {
        let Ok(p) = price.parse::<Decimal>() else {
            return Some(format!("price `{price}` is not a decimal"));
        };
        if !(p % rules.tick).is_zero() {
            return Some(format!(
                "price {p} is not a multiple of tick {}",
                rules.tick
            ));
        }
    }
    None
}

/// What an order request meets: a fault's answer instead of the order, or the order
/// and then what follows it.
enum Taken {
    Answer(Response),
    Then(After),
}

/// What follows a taken order.
enum After {
    /// The exchange's own answer.
    Answer,
    /// The exchange's own answer, late.
    Delay(Duration),
    /// This instead of the exchange's answer.
    Instead(Response),
    /// Nothing, ever.
    Hang,
}

fn garbage() -> Response {
    (StatusCode::OK, "{\"retCode\":0,\"result\":{\"orderId\"").into_response()
}

fn html_error() -> Response {
    let page = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>";
    (
        StatusCode::BAD_GATEWAY,
        [("content-type", "text/html")],
        page,
    )
        .into_response()
}

/// A 200 that promises more body than it sends, then fails: the server drops the
/// connection in the middle of the answer.
fn reset() -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"retCode\":0,\"res")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )),
    ];
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("content-length", "4096")
        .body(axum::body::Body::from_stream(futures_util::stream::iter(
            chunks,
        )))
        .expect("a valid response")
}

fn take_fault(inner: &Inner, rate_limited: Response, rejected: Response) -> Taken {
    match inner.next_fault() {
        Some(Fault::RateLimit) => Taken::Answer(rate_limited),
        Some(Fault::Reject) => Taken::Answer(rejected),
        Some(Fault::Garbage) => Taken::Answer(garbage()),
        Some(Fault::HtmlError) => Taken::Answer(html_error()),
        Some(Fault::Reset) => Taken::Answer(reset()),
        Some(Fault::TakeAndHang) => Taken::Then(After::Hang),
        Some(Fault::TakeSlowly(ms)) => Taken::Then(After::Delay(Duration::from_millis(ms))),
        Some(Fault::TakeThenGarbage) => Taken::Then(After::Instead(garbage())),
        Some(Fault::TakeThenHtmlError) => Taken::Then(After::Instead(html_error())),
        Some(Fault::TakeThenReset) => Taken::Then(After::Instead(reset())),
        None => Taken::Then(After::Answer),
    }
}

/// Records `order`, then does what `after` says; `Some` is the answer to give instead
/// of the exchange's own.
async fn record(inner: &Inner, order: Order, after: After) -> Option<Response> {
    {
        let mut book = inner.book();
        if book.lagging {
            book.hidden.insert(order.client_id.clone());
        }
        book.orders.push(order);
    }
    match after {
        After::Answer => None,
        After::Delay(delay) => {
            tokio::time::sleep(delay).await;
            None
        }
        After::Instead(response) => Some(response),
        After::Hang => std::future::pending().await,
    }
}

/// The order with `client_id` as a lookup sees it (lagging lookups miss it).
fn visible(inner: &Inner, client_id: &str) -> Option<Order> {
    let hidden = inner.book().hidden.contains(client_id);
    existing(inner, client_id).filter(|_| !hidden)
}

/// A second order with `client_id` arrived: the exchange knows it, and so do lookups.
fn resent(inner: &Inner, client_id: &str) -> Option<Order> {
    let order = existing(inner, client_id)?;
    inner.book().hidden.remove(client_id);
    Some(order)
}

fn existing(inner: &Inner, client_id: &str) -> Option<Order> {
    inner
        .book()
        .orders
        .iter()
        .find(|o| o.client_id == client_id)
        .cloned()
}

mod bybit {
    //! <https://bybit-exchange.github.io/docs/v5/guide>

    use super::*;

    fn envelope(inner: &Inner, code: i64, message: &str, result: Value) -> Response {
        Json(json!({
            "retCode": code,
            "retMsg": message,
            "result": result,
            "retExtInfo": {},
            "time": inner.now(),
        }))
        .into_response()
    }

    fn error(inner: &Inner, code: i64, message: &str) -> Response {
        envelope(inner, code, message, json!({}))
    }

    /// The V5 rules: key, `timestamp - recvWindow <= server < timestamp + 1000`... as the
    /// guide puts it, `server_time - recv_window <= timestamp < server_time + 1000`, and
    /// the signature over `timestamp + key + recvWindow + (query | body)`.
    fn authenticate(inner: &Inner, request: &Request) -> Result<(), Response> {
        let (Some(key), Some(timestamp), Some(sign)) = (
            request.header("X-BAPI-API-KEY"),
            request.header("X-BAPI-TIMESTAMP"),
            request.header("X-BAPI-SIGN"),
        ) else {
            inner.refuse("missing auth headers".into());
            return Err((StatusCode::UNAUTHORIZED, "missing auth headers").into_response());
        };
        if key != inner.key {
            inner.refuse("bad key".into());
            return Err(error(inner, 10003, "API key is invalid."));
        }
        let recv_window = request.header("X-BAPI-RECV-WINDOW").unwrap_or("5000");
        let (Ok(ts), Ok(window)) = (timestamp.parse::<i64>(), recv_window.parse::<i64>()) else {
            return Err(error(inner, 10001, "params error: timestamp"));
        };
        let server = inner.now();
        if !(server - window <= ts && ts < server + 1000) {
            inner.refuse(format!("timestamp {ts} outside window at {server}"));
            return Err(error(
                inner,
                10002,
                "invalid request, please check your server timestamp or recv_window param",
            ));
        }
        let payload = if request.method == Method::GET {
            &request.query
        } else {
            if request.header("Content-Type") != Some("application/json") {
                return Err(error(inner, 10001, "Content-Type must be application/json"));
            }
            &request.body
        };
        let expected = hmac_hex(
            &inner.secret,
            &format!("{timestamp}{key}{recv_window}{payload}"),
        );
        if sign != expected {
            inner.refuse("bad signature".into());
            return Err(error(inner, 10004, "error sign! origin_string[...]"));
        }
        Ok(())
    }

    fn order_item(order: &Order) -> Value {
        json!({
            "orderId": order.id,
            "orderLinkId": order.client_id,
            "symbol": order.symbol,
            "price": order.price.clone().unwrap_or_else(|| "0".into()),
            "qty": order.quantity,
            "side": order.side,
            "orderStatus": if order.price.is_some() { "New" } else { "Filled" },
            "avgPrice": if order.price.is_some() { "" } else { MARK },
            "cumExecQty": if order.price.is_some() { "0" } else { order.quantity.as_str() },
            "reduceOnly": order.reduce_only,
            "createdTime": order.time.to_string(),
            "updatedTime": order.time.to_string(),
        })
    }

    pub(super) async fn handle(inner: &Inner, request: Request) -> Response {
        let query = request.query_params();
        match (request.method.clone(), request.path.as_str()) {
            (Method::GET, "/v5/market/time") => {
                let now = inner.now();
                envelope(
                    inner,
                    0,
                    "OK",
                    json!({"timeSecond": (now / 1000).to_string(), "timeNano": (now * 1_000_000).to_string()}),
                )
            }
            (Method::GET, "/v5/market/instruments-info") => {
                let symbol = param(&query, "symbol").unwrap_or_default();
                let list: Vec<Value> = instrument(symbol)
                    .filter(|_| param(&query, "category") == Some("linear"))
                    .map(|rules| {
                        json!({
                            "symbol": symbol,
                            "status": "Trading",
                            "lotSizeFilter": {
                                "maxOrderQty": "1190.000",
                                "minOrderQty": rules.min.to_string(),
                                "qtyStep": rules.step.to_string(),
                                "maxMktOrderQty": "500.000",
                                "minNotionalValue": "5",
                            },
                            "priceFilter": {"minPrice": "0.10", "maxPrice": "199999.80", "tickSize": rules.tick.to_string()},
                        })
                    })
                    .into_iter()
                    .collect();
                envelope(inner, 0, "OK", json!({"category": "linear", "list": list}))
            }
            // Bybit answers a symbol it does not list with an empty list.
            (Method::GET, "/v5/market/tickers") => {
                let symbol = param(&query, "symbol").unwrap_or_default();
                let category = param(&query, "category").unwrap_or_default().to_owned();
                let list: Vec<Value> = instrument(symbol)
                    .map(|_| json!({"symbol": symbol, "lastPrice": MARK, "bid1Price": MARK, "ask1Price": MARK}))
                    .into_iter()
                    .collect();
                envelope(inner, 0, "OK", json!({"category": category, "list": list}))
            }
            (method, path) => {
                if let Err(refused) = authenticate(inner, &request) {
                    return refused;
                }
                match (method, path) {
                    (Method::GET, "/v5/user/query-api") => api_key_info(inner),
                    (Method::GET, "/v5/position/list") => position_list(inner, &query),
                    (Method::GET, "/v5/account/wallet-balance") => wallet_balance(inner, &query),
                    (Method::POST, "/v5/order/create") => create(inner, &request).await,
                    (Method::POST, "/v5/position/set-leverage") => leverage(inner, &request),
                    (Method::GET, "/v5/order/realtime" | "/v5/order/history") => {
                        if let Some(down) = inner.lookup_down() {
                            return down;
                        }
                        let link = param(&query, "orderLinkId").unwrap_or_default();
                        let list: Vec<Value> =
                            visible(inner, link).iter().map(order_item).collect();
                        envelope(
                            inner,
                            0,
                            "OK",
                            json!({"category": "linear", "list": list, "nextPageCursor": ""}),
                        )
                    }
                    _ => (StatusCode::NOT_FOUND, "no such route").into_response(),
                }
            }
        }
    }

    /// `GET /v5/position/list` (<https://bybit-exchange.github.io/docs/v5/position>):
    /// `category=linear` with `symbol` or `settleCoin`, at most `limit` (1-200, default
    /// 20) positions a page, `nextPageCursor` empty on the last.
    fn position_list(inner: &Inner, query: &[(String, String)]) -> Response {
        if param(query, "category") != Some("linear") {
            return error(
                inner,
                10001,
                "params error: category only support linear here",
            );
        }
        if param(query, "symbol").is_none() && param(query, "settleCoin").is_none() {
            return error(
                inner,
                10001,
                "params error: symbol or settleCoin is required",
            );
        }
        let Some(limit) = param(query, "limit")
            .map_or(Some(20), |l| l.parse::<usize>().ok())
            .filter(|l| (1..=200).contains(l))
        else {
            return error(inner, 10001, "params error: limit");
        };
        let cursor = param(query, "cursor").map(str::to_owned);
        // Bybit's cursors are opaque and carry characters a query string must encode.
        let start = match &cursor {
            None => 0,
            Some(cursor) => match cursor
                .strip_prefix("page%2C")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(start) => start,
                None => return error(inner, 10001, "params error: cursor invalid"),
            },
        };
        let mut book = inner.book();
        book.position_cursors.push(cursor);
        let settle = param(query, "settleCoin");
        let held: Vec<&Held> = book
            .held
            .iter()
            .filter(|h| settle.is_none_or(|coin| h.symbol.ends_with(coin)))
            .filter(|h| param(query, "symbol").is_none_or(|s| s == h.symbol))
            .collect();
        let page: Vec<Value> = held
            .iter()
            .skip(start)
            .take(limit)
            .map(|h| {
                let size = h.signed();
                json!({
                    "positionIdx": 0,
                    "riskId": 1,
                    "riskLimitValue": "2000000",
                    "symbol": h.symbol,
                    "side": if size.is_sign_negative() { "Sell" } else { "Buy" },
                    "size": size.abs().to_string(),
                    "avgPrice": h.entry,
                    "positionValue": (size.abs() * h.entry.parse::<Decimal>().expect("decimal")).to_string(),
                    "tradeMode": 0,
                    "autoAddMargin": 0,
                    "positionStatus": "Normal",
                    "leverage": "5",
                    "markPrice": MARK,
                    "liqPrice": "",
                    "bustPrice": "",
                    "positionIM": "0",
                    "positionMM": "0",
                    "tpslMode": "Full",
                    "takeProfit": "0",
                    "stopLoss": "0",
                    "trailingStop": "0",
                    "unrealisedPnl": "0",
                    "curRealisedPnl": "0",
                    "cumRealisedPnl": "0",
                    "adlRankIndicator": 2,
                    "isReduceOnly": false,
                    "createdTime": "1676538056258",
                    "updatedTime": "1697673600012",
                    "seq": 4_688_002_127_i64,
                })
            })
            .collect();
        let next = if start + limit < held.len() {
            format!("page%2C{}", start + limit)
        } else {
            String::new()
        };
        drop(book);
        envelope(
            inner,
            0,
            "OK",
            json!({"category": "linear", "list": page, "nextPageCursor": next}),
        )
    }

    /// `GET /v5/account/wallet-balance`
    /// (<https://bybit-exchange.github.io/docs/v5/account/wallet-balance>): a unified
    /// account's coins, `walletBalance` including what orders hold (`locked`); coins
    /// of zero balance are not listed.
    fn wallet_balance(inner: &Inner, query: &[(String, String)]) -> Response {
        if param(query, "accountType") != Some("UNIFIED") {
            return error(inner, 10001, "accountType only support UNIFIED.");
        }
        let coins: Vec<Value> = inner
            .book()
            .coins
            .iter()
            .filter(|c| !c.total().is_zero())
            .map(|c| {
                json!({
                    "coin": c.asset,
                    "equity": c.total().to_string(),
                    "usdValue": "0",
                    "walletBalance": c.total().to_string(),
                    "free": "",
                    "locked": c.locked,
                    "spotHedgingQty": "0",
                    "borrowAmount": "0",
                    "accruedInterest": "0",
                    "totalOrderIM": "0",
                    "totalPositionIM": "0",
                    "totalPositionMM": "0",
                    "unrealisedPnl": "0",
                    "cumRealisedPnl": "0",
                    "bonus": "0",
                    "marginCollateral": true,
                    "collateralSwitch": true,
                    "availableToWithdraw": "",
                })
            })
            .collect();
        envelope(
            inner,
            0,
            "OK",
            json!({"list": [{
                "accountType": "UNIFIED",
                "accountIMRate": "0",
                "accountMMRate": "0",
                "totalEquity": "0",
                "totalWalletBalance": "0",
                "totalMarginBalance": "0",
                "totalAvailableBalance": "0",
                "totalPerpUPL": "0",
                "totalInitialMargin": "0",
                "totalMaintenanceMargin": "0",
                "accountLTV": "0",
                "coin": coins,
            }]}),
        )
    }

    /// `GET /v5/user/query-api`, in the documented shape
    /// (<https://bybit-exchange.github.io/docs/v5/user/apikey-info>).
    fn api_key_info(inner: &Inner) -> Response {
        let Permissions { trade, withdraw } = inner.book().permissions;
        let contract: Vec<&str> = if trade {
            vec!["Order", "Position"]
        } else {
            Vec::new()
        };
        let mut wallet = vec!["AccountTransfer"];
        if withdraw {
            wallet.push("Withdraw");
        }
        envelope(
            inner,
            0,
            "",
            json!({
                "id": "13770661",
                "note": "hoox",
                "apiKey": inner.key,
                "readOnly": if trade { 0 } else { 1 },
                "secret": "",
                "permissions": {
                    "ContractTrade": contract,
                    "Spot": if trade { vec!["SpotTrade"] } else { Vec::new() },
                    "Wallet": wallet,
                    "Options": [],
                    "Derivatives": [],
                    "Exchange": [],
                },
                "ips": ["*"],
                "type": 1,
                "uta": 1,
            }),
        )
    }

    async fn create(inner: &Inner, request: &Request) -> Response {
        let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
            return error(inner, 10001, "params error: body is not JSON");
        };
        let text = |name: &str| body[name].as_str().map(str::to_owned);
        let (Some(category), Some(symbol), Some(side), Some(order_type), Some(qty)) = (
            text("category"),
            text("symbol"),
            text("side"),
            text("orderType"),
            text("qty"),
        ) else {
            return error(
                inner,
                10001,
                "params error: category, symbol, side, orderType and qty (string) are required",
            );
        };
        if category != "linear" || !matches!(side.as_str(), "Buy" | "Sell") {
            return error(inner, 10001, "params error: category or side");
        }
        let price = text("price");
        match (order_type.as_str(), &price) {
            ("Limit", Some(_)) | ("Market", None) => {}
            _ => return error(inner, 10001, "params error: orderType and price"),
        }
        let Some(rules) = instrument(&symbol) else {
            return error(inner, 10001, "params error: symbol invalid");
        };
        if let Some(why) = misfit(&rules, &qty, price.as_deref()) {
            return error(inner, 10001, &format!("params error: {why}"));
        }
        let link = text("orderLinkId").unwrap_or_default();
        if link.is_empty()
            || link.len() > 36
            || !link
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return error(inner, 10001, "params error: orderLinkId");
        }
        let after = match take_fault(
            inner,
            error(
                inner,
                10006,
                "Too many visits. Exceeded the API Rate Limit.",
            ),
            error(inner, 110007, "ab not enough for new order"),
        ) {
            Taken::Answer(answer) => return answer,
            Taken::Then(after) => after,
        };
        if resent(inner, &link).is_some() {
            return error(inner, 110072, "OrderLinkedID is duplicate");
        }
        let order = Order {
            id: uuid::Uuid::new_v4().to_string(),
            client_id: link.clone(),
            symbol,
            side,
            quantity: qty,
            price,
            reduce_only: body["reduceOnly"] == json!(true),
            params: body.clone(),
            time: inner.now(),
        };
        let id = order.id.clone();
        if let Some(instead) = record(inner, order, after).await {
            return instead;
        }
        envelope(inner, 0, "OK", json!({"orderId": id, "orderLinkId": link}))
    }

    fn leverage(inner: &Inner, request: &Request) -> Response {
        let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
            return error(inner, 10001, "params error: body is not JSON");
        };
        let (Some(symbol), Some(buy), Some(sell)) = (
            body["symbol"].as_str(),
            body["buyLeverage"].as_str(),
            body["sellLeverage"].as_str(),
        ) else {
            return error(
                inner,
                10001,
                "params error: symbol, buyLeverage, sellLeverage (strings)",
            );
        };
        let Ok(value) = buy.parse::<u32>() else {
            return error(inner, 10001, "params error: buyLeverage");
        };
        if buy != sell || body["category"] != json!("linear") {
            return error(
                inner,
                110027,
                "buy leverage must equal sell leverage in one-way mode",
            );
        }
        let mut book = inner.book();
        let current = book
            .leverage
            .iter()
            .rev()
            .find(|(s, _)| s == symbol)
            .map(|(_, l)| *l);
        if current == Some(value) {
            drop(book);
            return error(inner, 110043, "Set leverage has not been modified.");
        }
        book.leverage.push((symbol.to_owned(), value));
        drop(book);
        envelope(inner, 0, "OK", json!({}))
    }
}

mod binance_style {
    //! Binance USD-M futures and MEXC spot v3, which sign alike: HMAC-SHA256 of
    //! `query + body` with `signature` as the last parameter.

    use super::*;

    struct Dialect {
        key_header: &'static str,
        bad_key: (StatusCode, i64, &'static str),
        bad_signature: i64,
        bad_timestamp: i64,
        order_path: &'static str,
        account_path: &'static str,
        /// The futures positions call.
        positions_path: Option<&'static str>,
        /// Binance's wallet API, served by the same mock as its futures API.
        restrictions_path: Option<&'static str>,
        time_path: &'static str,
        info_path: &'static str,
        leverage_path: Option<&'static str>,
        order_params: &'static [&'static str],
        rate_limited: (i64, &'static str),
        rejected: (i64, &'static str),
        /// MEXC documents no duplicate code; the mock answers with an undocumented
        /// one, so hoox cannot rely on recognising it.
        duplicate: (i64, &'static str),
    }

    const BINANCE: Dialect = Dialect {
        key_header: "X-MBX-APIKEY",
        bad_key: (
            StatusCode::UNAUTHORIZED,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        ),
        bad_signature: -1022,
        bad_timestamp: -1021,
        order_path: "/fapi/v1/order",
        account_path: "/fapi/v2/account",
        positions_path: Some("/fapi/v3/positionRisk"),
        restrictions_path: Some("/sapi/v1/account/apiRestrictions"),
        time_path: "/fapi/v1/time",
        info_path: "/fapi/v1/exchangeInfo",
        leverage_path: Some("/fapi/v1/leverage"),
        order_params: &[
            "symbol",
            "side",
            "positionSide",
            "type",
            "timeInForce",
            "quantity",
            "reduceOnly",
            "price",
            "newClientOrderId",
            "newOrderRespType",
            "recvWindow",
            "timestamp",
            "signature",
        ],
        rate_limited: (
            -1003,
            "Too many requests; current limit is 1200 requests per minute.",
        ),
        rejected: (-2019, "Margin is insufficient."),
        duplicate: (-4116, "ClientOrderId is duplicated."),
    };

    const MEXC: Dialect = Dialect {
        key_header: "X-MEXC-APIKEY",
        bad_key: (StatusCode::BAD_REQUEST, 10072, "Api key info invalid"),
        bad_signature: 700_002,
        bad_timestamp: 700_003,
        order_path: "/api/v3/order",
        account_path: "/api/v3/account",
        positions_path: None,
        restrictions_path: None,
        time_path: "/api/v3/time",
        info_path: "/api/v3/exchangeInfo",
        leverage_path: None,
        order_params: &[
            "symbol",
            "side",
            "type",
            "quantity",
            "quoteOrderQty",
            "price",
            "newClientOrderId",
            "recvWindow",
            "timestamp",
            "signature",
        ],
        rate_limited: (429, "Too Many Requests"),
        rejected: (10101, "Insufficient balance"),
        duplicate: (30_099, "order rejected"),
    };

    /// The spot account call: MEXC spot's own, and Binance's spot host's.
    const SPOT_ACCOUNT: &str = "/api/v3/account";
    /// The spot host's time.
    const SPOT_TIME: &str = "/api/v3/time";

    /// `GET /api/v3/account`: the key's flags and the balances, each `free` and
    /// `locked` (Binance spot rest-api.md "Account information"; MEXC spot v3
    /// "Account Information"). Binance's `omitZeroBalances=true` leaves out zeros.
    fn spot_account(inner: &Inner, params: &[(String, String)]) -> Response {
        let book = inner.book();
        let Permissions { trade, withdraw } = book.permissions;
        let omit_zeros = param(params, "omitZeroBalances") == Some("true");
        let balances: Vec<Value> = book
            .coins
            .iter()
            .filter(|c| !omit_zeros || !c.total().is_zero())
            .map(|c| json!({"asset": c.asset, "free": c.free, "locked": c.locked}))
            .collect();
        Json(json!({
            "makerCommission": 15,
            "takerCommission": 15,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "canTrade": trade,
            "canWithdraw": withdraw,
            "canDeposit": true,
            "updateTime": 123_456_789,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
        }))
        .into_response()
    }

    /// `GET /fapi/v3/positionRisk`: symbols with a position (one-way mode,
    /// `positionSide` BOTH, `positionAmt` signed), in the documented shape.
    fn position_risk(inner: &Inner) -> Response {
        let list: Vec<Value> = inner
            .book()
            .held
            .iter()
            .map(|h| {
                json!({
                    "symbol": h.symbol,
                    "positionSide": "BOTH",
                    "positionAmt": h.size,
                    "entryPrice": h.entry,
                    "breakEvenPrice": h.entry,
                    "markPrice": MARK,
                    "unRealizedProfit": "0.00000000",
                    "liquidationPrice": "0",
                    "isolatedMargin": "0",
                    "notional": "0",
                    "marginAsset": "USDT",
                    "isolatedWallet": "0",
                    "initialMargin": "0",
                    "maintMargin": "0",
                    "positionInitialMargin": "0",
                    "openOrderInitialMargin": "0",
                    "adl": 2,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": 1_720_736_417_660_i64,
                })
            })
            .collect();
        Json(list).into_response()
    }

    fn dialect(kind: Kind) -> &'static Dialect {
        match kind {
            Kind::MexcSpot => &MEXC,
            _ => &BINANCE,
        }
    }

    fn error(status: StatusCode, code: i64, message: &str) -> Response {
        (status, Json(json!({"code": code, "msg": message}))).into_response()
    }

    /// Strips `&signature=…` (or `signature=…`) from the end of `part`.
    fn split_signature(part: &str) -> Option<(&str, &str)> {
        let (rest, signature) = part.rsplit_once("signature=")?;
        let rest = match rest.strip_suffix('&') {
            Some(rest) => rest,
            None if rest.is_empty() => rest,
            None => return None,
        };
        (!signature.contains('&')).then_some((rest, signature))
    }

    /// The payload a signature covers, and the signature: `totalParams` is the query
    /// string concatenated with the body, the signature being the last parameter.
    pub fn signed_payload(query: &str, body: &str) -> Option<(String, String)> {
        if let Some((rest, signature)) = split_signature(body) {
            return Some((format!("{query}{rest}"), signature.to_owned()));
        }
        let (rest, signature) = split_signature(query)?;
        Some((format!("{rest}{body}"), signature.to_owned()))
    }

    fn authenticate(
        inner: &Inner,
        dialect: &Dialect,
        request: &Request,
    ) -> Result<Vec<(String, String)>, Response> {
        if request.header(dialect.key_header) != Some(inner.key.as_str()) {
            inner.refuse("bad key".into());
            let (status, code, message) = dialect.bad_key;
            return Err(error(status, code, message));
        }
        let Some((payload, signature)) = signed_payload(&request.query, &request.body) else {
            inner.refuse("no signature".into());
            return Err(error(
                StatusCode::BAD_REQUEST,
                dialect.bad_signature,
                "Signature for this request is not valid.",
            ));
        };
        if hmac_hex(&inner.secret, &payload) != signature {
            inner.refuse("bad signature".into());
            return Err(error(
                StatusCode::BAD_REQUEST,
                dialect.bad_signature,
                "Signature for this request is not valid.",
            ));
        }
        let params = parse_form(&payload);
        let timestamp = param(&params, "timestamp").and_then(|t| t.parse::<i64>().ok());
        let window = param(&params, "recvWindow").map_or(Some(5000), |w| w.parse::<i64>().ok());
        let server = inner.now();
        match (timestamp, window) {
            (Some(ts), Some(window))
                if window <= 60_000 && ts < server + 1000 && server - ts <= window =>
            {
                Ok(params)
            }
            _ => {
                inner.refuse(format!(
                    "timestamp {timestamp:?} outside window at {server}"
                ));
                Err(error(
                    StatusCode::BAD_REQUEST,
                    dialect.bad_timestamp,
                    "Timestamp for this request is outside of the recvWindow.",
                ))
            }
        }
    }

    fn order_json(kind: Kind, order: &Order) -> Value {
        let filled = order.price.is_none();
        let mut item = json!({
            "symbol": order.symbol,
            "orderId": order.id,
            "clientOrderId": order.client_id,
            "price": order.price.clone().unwrap_or_else(|| "0".into()),
            "origQty": order.quantity,
            "executedQty": if filled { order.quantity.as_str() } else { "0" },
            "status": if filled { "FILLED" } else { "NEW" },
            "type": order.params["type"],
            "side": order.side,
            "time": order.time,
            "updateTime": order.time,
        });
        let quantity: Decimal = order.quantity.parse().expect("validated");
        let mark: Decimal = MARK.parse().expect("literal");
        let quote = if filled {
            (quantity * mark).to_string()
        } else {
            "0".into()
        };
        match kind {
            Kind::Binance => {
                // USD-M futures: numeric order ids, `avgPrice` and `cumQuote`.
                item["orderId"] = json!(order.id.parse::<i64>().expect("numeric id"));
                item["avgPrice"] = json!(if filled { MARK } else { "0.00000" });
                item["cumQuote"] = json!(quote);
                item["reduceOnly"] = json!(order.reduce_only);
                item["positionSide"] = json!("BOTH");
            }
            _ => {
                item["cummulativeQuoteQty"] = json!(quote);
            }
        }
        item
    }

    pub(super) async fn handle(inner: &Inner, request: Request) -> Response {
        let dialect = dialect(inner.kind);
        let path = request.path.as_str();
        // The Binance mock serves its spot host's time and account calls too.
        if request.method == Method::GET && (path == dialect.time_path || path == SPOT_TIME) {
            return Json(json!({"serverTime": inner.now()})).into_response();
        }
        if request.method == Method::GET && path == dialect.info_path {
            return exchange_info(inner, &request);
        }
        // The Binance mock serves its spot host's ticker too.
        if request.method == Method::GET
            && (path == "/api/v3/ticker/price"
                || (inner.kind == Kind::Binance && path == "/fapi/v1/ticker/price"))
        {
            let query = request.query_params();
            let symbol = param(&query, "symbol").unwrap_or_default();
            if instrument(symbol).is_none() {
                return error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.");
            }
            return Json(json!({"symbol": symbol, "price": MARK})).into_response();
        }
        let params = match authenticate(inner, dialect, &request) {
            Ok(params) => params,
            Err(refused) => return refused,
        };
        if request.method == Method::GET && path == SPOT_ACCOUNT {
            return spot_account(inner, &params);
        }
        if request.method == Method::GET && path == dialect.account_path {
            let Permissions { trade, withdraw } = inner.book().permissions;
            // Binance USD-M answers with these flags, among others.
            return Json(json!({
                "canTrade": trade,
                "canDeposit": true,
                "canWithdraw": withdraw,
                "updateTime": 0,
                "assets": [],
                "positions": [],
            }))
            .into_response();
        }
        if request.method == Method::GET && Some(path) == dialect.positions_path {
            return position_risk(inner);
        }
        if request.method == Method::GET && Some(path) == dialect.restrictions_path {
            let Permissions { trade, withdraw } = inner.book().permissions;
            return Json(json!({
                "ipRestrict": false,
                "createTime": 1_623_840_271_000_i64,
                "enableReading": true,
                "enableWithdrawals": withdraw,
                "enableInternalTransfer": false,
                "enableMargin": false,
                "enableFutures": trade,
                "permitsUniversalTransfer": false,
                "enableVanillaOptions": false,
                "enableSpotAndMarginTrading": trade,
            }))
            .into_response();
        }
        if Some(path) == dialect.leverage_path && request.method == Method::POST {
            let (Some(symbol), Some(leverage)) = (
                param(&params, "symbol"),
                param(&params, "leverage")
                    .and_then(|l| l.parse::<u32>().ok())
                    .filter(|l| (1..=125).contains(l)),
            ) else {
                return error(StatusCode::BAD_REQUEST, -4028, "Leverage is not valid");
            };
            inner.book().leverage.push((symbol.to_owned(), leverage));
            return Json(
                json!({"leverage": leverage, "maxNotionalValue": "1000000", "symbol": symbol}),
            )
            .into_response();
        }
        if path != dialect.order_path {
            return error(StatusCode::NOT_FOUND, -1000, "no such route");
        }
        if request.method == Method::GET {
            if let Some(down) = inner.lookup_down() {
                return down;
            }
            let client_id = param(&params, "origClientOrderId").unwrap_or_default();
            return match visible(inner, client_id) {
                Some(order) => Json(order_json(inner.kind, &order)).into_response(),
                None => error(StatusCode::BAD_REQUEST, -2013, "Order does not exist."),
            };
        }
        if request.method != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, -1000, "method");
        }
        new_order(inner, dialect, params).await
    }

    fn exchange_info(inner: &Inner, request: &Request) -> Response {
        let query = request.query_params();
        let symbols: Vec<&str> = match param(&query, "symbol") {
            Some(symbol) => vec![symbol],
            None => vec!["BTCUSDT", "ETHUSDT"],
        };
        let mut list = Vec::new();
        for symbol in symbols {
            let Some(rules) = instrument(symbol) else {
                return error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.");
            };
            list.push(match inner.kind {
                Kind::MexcSpot => json!({
                    "symbol": symbol,
                    "status": "1",
                    "baseAssetPrecision": rules.step.scale(),
                    "quoteAssetPrecision": rules.tick.scale(),
                    "quotePrecision": rules.tick.scale(),
                    "baseSizePrecision": rules.min.to_string(),
                    "quoteAmountPrecision": "1",
                    "isSpotTradingAllowed": true,
                    "filters": [],
                }),
                _ => json!({
                    "symbol": symbol,
                    "status": "TRADING",
                    "filters": [
                        {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": rules.tick.to_string()},
                        {"filterType": "LOT_SIZE", "minQty": rules.min.to_string(), "maxQty": "1000", "stepSize": rules.step.to_string()},
                        {"filterType": "MARKET_LOT_SIZE", "minQty": rules.min.to_string(), "maxQty": "120", "stepSize": rules.step.to_string()},
                        {"filterType": "MIN_NOTIONAL", "notional": "100"},
                    ],
                }),
            });
        }
        Json(json!({"timezone": "UTC", "serverTime": inner.now(), "symbols": list})).into_response()
    }

    async fn new_order(
        inner: &Inner,
        dialect: &Dialect,
        params: Vec<(String, String)>,
    ) -> Response {
        if let Some((unknown, _)) = params
            .iter()
            .find(|(k, _)| !dialect.order_params.contains(&k.as_str()))
        {
            return error(
                StatusCode::BAD_REQUEST,
                -1104,
                &format!("Not all sent parameters were read; unknown `{unknown}`"),
            );
        }
        let get = |name: &str| param(&params, name).map(str::to_owned);
        let (Some(symbol), Some(side), Some(order_type), Some(quantity)) =
            (get("symbol"), get("side"), get("type"), get("quantity"))
        else {
            return error(
                StatusCode::BAD_REQUEST,
                -1102,
                "Mandatory parameter was not sent, was empty/null, or malformed.",
            );
        };
        if !matches!(side.as_str(), "BUY" | "SELL") {
            return error(StatusCode::BAD_REQUEST, -1117, "Invalid side.");
        }
        let price = get("price");
        match (order_type.as_str(), &price) {
            ("LIMIT", Some(_)) | ("MARKET", None) => {}
            _ => return error(StatusCode::BAD_REQUEST, -1116, "Invalid orderType."),
        }
        if order_type == "LIMIT"
            && dialect.leverage_path.is_some()
            && get("timeInForce").as_deref() != Some("GTC")
        {
            return error(
                StatusCode::BAD_REQUEST,
                -1102,
                "Mandatory parameter 'timeInForce' was not sent.",
            );
        }
        let Some(rules) = instrument(&symbol) else {
            return error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.");
        };
        if let Some(why) = misfit(&rules, &quantity, price.as_deref()) {
            return error(
                StatusCode::BAD_REQUEST,
                -1013,
                &format!("Filter failure: LOT_SIZE ({why})"),
            );
        }
        let reduce_only = match get("reduceOnly").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    -1102,
                    "reduceOnly must be \"true\" or \"false\"",
                )
            }
        };
        let client_id = get("newClientOrderId").unwrap_or_default();
        let valid_id = !client_id.is_empty()
            && client_id.len() <= 36
            && client_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
        if !valid_id {
            return error(
                StatusCode::BAD_REQUEST,
                -4015,
                "Client order id is not valid.",
            );
        }
        let after = match take_fault(
            inner,
            error(
                StatusCode::TOO_MANY_REQUESTS,
                dialect.rate_limited.0,
                dialect.rate_limited.1,
            ),
            error(
                StatusCode::BAD_REQUEST,
                dialect.rejected.0,
                dialect.rejected.1,
            ),
        ) {
            Taken::Answer(answer) => return answer,
            Taken::Then(after) => after,
        };
        if resent(inner, &client_id).is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                dialect.duplicate.0,
                dialect.duplicate.1,
            );
        }
        let order = Order {
            id: match inner.kind {
                Kind::Binance => (inner.book().orders.len() as i64 + 22_542_179).to_string(),
                _ => uuid::Uuid::new_v4().simple().to_string(),
            },
            client_id,
            symbol,
            side,
            quantity,
            price,
            reduce_only,
            params: json!(params
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<_, _>>()),
            time: inner.now(),
        };
        let answer = match inner.kind {
            Kind::Binance => order_json(inner.kind, &order),
            // MEXC's new-order answer says nothing of fills or status.
            _ => json!({
                "symbol": order.symbol,
                "orderId": order.id,
                "orderListId": -1,
                "price": order.price.clone().unwrap_or_else(|| "0".into()),
                "origQty": order.quantity,
                "type": order_type,
                "side": order.side,
                "transactTime": order.time,
            }),
        };
        if let Some(instead) = record(inner, order, after).await {
            return instead;
        }
        Json(answer).into_response()
    }
}

mod mexc_futures {
    //! <https://mexcdevelop.github.io/apidocs/contract_v1_en/>

    use super::*;

    /// The size of one contract, in base coin (MEXC's BTC_USDT and ETH_USDT).
    fn contract_size(symbol: &str) -> &'static str {
        match symbol {
            "ETH_USDT" => "0.01",
            _ => "0.0001",
        }
    }

    fn number(text: &str) -> Value {
        Value::Number(text.parse().expect("a JSON number"))
    }

    /// `GET /api/v1/private/position/open_positions`: `holdVol` in contracts,
    /// `positionType` 1 long and 2 short, prices as numbers, in the documented shape.
    fn open_positions(inner: &Inner) -> Response {
        let list: Vec<Value> = inner
            .book()
            .held
            .iter()
            .enumerate()
            .map(|(n, h)| {
                let size = h.signed();
                json!({
                    "positionId": 1_394_650 + n,
                    "symbol": h.symbol,
                    "positionType": if size.is_sign_negative() { 2 } else { 1 },
                    "openType": 2,
                    "state": 1,
                    "holdVol": number(&size.abs().to_string()),
                    "frozenVol": 0,
                    "closeVol": 0,
                    "holdAvgPrice": number(&h.entry),
                    "openAvgPrice": number(&h.entry),
                    "closeAvgPrice": 0,
                    "liquidatePrice": 0,
                    "oim": 0,
                    "im": 0,
                    "holdFee": 0,
                    "realised": 0,
                    "leverage": 5,
                    "createTime": 1_609_991_676_000_i64,
                    "updateTime": 1_609_991_676_000_i64,
                    "autoAddIm": false,
                })
            })
            .collect();
        ok(json!(list))
    }

    fn ok(data: Value) -> Response {
        Json(json!({"success": true, "code": 0, "data": data})).into_response()
    }

    fn error(code: i64, message: &str) -> Response {
        Json(json!({"success": false, "code": code, "message": message})).into_response()
    }

    /// `ApiKey`, `Request-Time` within 10 s of server time, and `Signature` over
    /// `key + time + (body | sorted query)`.
    fn authenticate(inner: &Inner, request: &Request) -> Result<(), Response> {
        let (Some(key), Some(time), Some(signature)) = (
            request.header("ApiKey"),
            request.header("Request-Time"),
            request.header("Signature"),
        ) else {
            inner.refuse("missing auth headers".into());
            return Err(error(401, "Not logged in"));
        };
        if key != inner.key {
            inner.refuse("bad key".into());
            return Err(error(402, "Api key expired or invalid"));
        }
        let server = inner.now();
        if time
            .parse::<i64>()
            .map_or(true, |t| (server - t).abs() > 10_000)
        {
            inner.refuse(format!("request time {time} outside window at {server}"));
            return Err(error(513, "Invalid request time"));
        }
        let params = if request.method == Method::POST {
            request.body.clone()
        } else {
            let mut query = request.query_params();
            query.sort();
            query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        };
        if hmac_hex(&inner.secret, &format!("{key}{time}{params}")) != signature {
            inner.refuse("bad signature".into());
            return Err(error(602, "Signature verification failed!"));
        }
        Ok(())
    }

    fn order_json(order: &Order) -> Value {
        let filled = order.price.is_none();
        json!({
            "orderId": order.id,
            "symbol": order.symbol,
            "price": order.params["price"],
            "vol": order.params["vol"],
            "side": order.params["side"],
            "orderType": order.params["type"],
            "openType": order.params["openType"],
            "dealAvgPrice": if filled { json!(68000) } else { json!(0) },
            "dealVol": if filled { order.params["vol"].clone() } else { json!(0) },
            "state": if filled { 3 } else { 2 },
            "externalOid": order.client_id,
            "errorCode": 0,
            "createTime": order.time,
            "updateTime": order.time,
        })
    }

    pub(super) async fn handle(inner: &Inner, request: Request) -> Response {
        let path = request.path.clone();
        if request.method == Method::GET && path == "/api/v1/contract/ping" {
            return ok(json!(inner.now()));
        }
        if request.method == Method::GET && path == "/api/v1/contract/ticker" {
            let query = request.query_params();
            let symbol = param(&query, "symbol").unwrap_or_default();
            if instrument(symbol)
                .filter(|_| symbol.contains('_'))
                .is_none()
            {
                return error(1001, "contract not exist");
            }
            let mark: f64 = MARK.parse().expect("a price");
            return ok(
                json!({"symbol": symbol, "lastPrice": mark, "fairPrice": mark, "indexPrice": mark}),
            );
        }
        if request.method == Method::GET && path == "/api/v1/contract/detail" {
            let query = request.query_params();
            let symbol = param(&query, "symbol").unwrap_or_default();
            let Some(rules) = instrument(symbol).filter(|_| symbol.contains('_')) else {
                return error(1001, "contract not exist");
            };
            return ok(json!({
                "symbol": symbol,
                "contractSize": number(contract_size(symbol)),
                "volUnit": 1,
                "minVol": rules.min.to_string().parse::<i64>().expect("whole"),
                "maxVol": 1_000_000,
                "priceUnit": 0.1,
                "state": 0,
                "apiAllowed": true,
            }));
        }
        if let Err(refused) = authenticate(inner, &request) {
            return refused;
        }
        if request.method == Method::POST && path == "/api/v1/private/position/change_leverage" {
            let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
                return error(600, "Parameter error");
            };
            let (Some(symbol), Some(leverage), Some(1 | 2), Some(1 | 2)) = (
                body["symbol"].as_str(),
                body["leverage"].as_u64(),
                body["positionType"].as_i64(),
                body["openType"].as_i64(),
            ) else {
                return error(
                    600,
                    "Parameter error: symbol, leverage, positionType, openType",
                );
            };
            inner.book().leverage.push((
                format!("{symbol}/{}", body["positionType"]),
                leverage as u32,
            ));
            return Json(json!({"success": true, "code": 0})).into_response();
        }
        if request.method == Method::GET && path == "/api/v1/private/position/open_positions" {
            return open_positions(inner);
        }
        if request.method == Method::GET {
            if let Some(rest) = path.strip_prefix("/api/v1/private/order/external/") {
                if let Some(down) = inner.lookup_down() {
                    return down;
                }
                let client_id = rest.rsplit('/').next().unwrap_or_default();
                return match visible(inner, client_id) {
                    Some(order) => ok(order_json(&order)),
                    None => error(2040, "order not exist"),
                };
            }
        }
        if request.method == Method::POST && path == "/api/v1/private/order/create" {
            return create(inner, &request).await;
        }
        (StatusCode::NOT_FOUND, "no such route").into_response()
    }

    async fn create(inner: &Inner, request: &Request) -> Response {
        let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
            return error(600, "Parameter error");
        };
        let (Some(symbol), Some(vol), Some(side), Some(order_type), Some(1 | 2)) = (
            body["symbol"].as_str(),
            body["vol"].as_number().map(ToString::to_string),
            body["side"].as_i64().filter(|s| (1..=4).contains(s)),
            body["type"].as_i64().filter(|t| matches!(t, 1 | 5)),
            body["openType"].as_i64(),
        ) else {
            return error(
                600,
                "Parameter error: symbol, vol (number), side 1-4, type, openType",
            );
        };
        let price = body["price"].as_number().map(ToString::to_string);
        if order_type == 1 && price.is_none() {
            return error(600, "Parameter error: price");
        }
        let Some(rules) = instrument(symbol).filter(|_| symbol.contains('_')) else {
            return error(1001, "contract not exist");
        };
        if let Some(why) = misfit(&rules, &vol, price.as_deref()) {
            return error(2011, &format!("Order quantity error: {why}"));
        }
        let client_id = body["externalOid"].as_str().unwrap_or_default().to_owned();
        if client_id.len() > 32 {
            return error(2030, "External order ID is too long (Max. 32 bits)");
        }
        let after = match take_fault(
            inner,
            error(510, "Excessive frequency of requests"),
            error(2005, "Insufficient balance"),
        ) {
            Taken::Answer(answer) => return answer,
            Taken::Then(after) => after,
        };
        // The batch docs: an existing external id gives back the existing order.
        if let Some(order) = resent(inner, &client_id).filter(|_| !client_id.is_empty()) {
            return ok(json!({"orderId": order.id, "ts": inner.now()}));
        }
        let order = Order {
            id: (inner.book().orders.len() as i64 + 102_057_569_836_905_984).to_string(),
            client_id,
            symbol: symbol.to_owned(),
            side: side.to_string(),
            quantity: vol,
            price: if order_type == 1 { price } else { None },
            reduce_only: matches!(side, 2 | 4),
            params: body.clone(),
            time: inner.now(),
        };
        let id = order.id.clone();
        if let Some(instead) = record(inner, order, after).await {
            return instead;
        }
        ok(json!({"orderId": id, "ts": inner.now()}))
    }
}

pub use binance_style::signed_payload;

#[cfg(test)]
mod tests {
    use super::*;

    /// The mocks' signature check accepts the exchanges' own published examples.
    #[test]
    fn verifier_accepts_published_examples() {
        // Binance USD-M general-info, HMAC example 2 (everything in the body).
        let body = "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943&signature=3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9";
        let (payload, signature) = signed_payload("", body).unwrap();
        assert_eq!(
            hmac_hex(
                "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9",
                &payload
            ),
            signature
        );
        // MEXC spot v3, example 3 (query plus body).
        let (payload, signature) = signed_payload(
            "symbol=BTCUSDT&side=BUY&type=LIMIT",
            "quantity=1&price=11&recvWindow=5000&timestamp=1644489390087&signature=d1a676610ceb39174c8039b3f548357994b2a34139a8addd33baadba65684592",
        )
        .unwrap();
        assert_eq!(
            hmac_hex("45d0b3c26f2644f19bfb98b07741b2f5", &payload),
            signature
        );
        // Binance spot rest-api.md, HMAC example (everything in the query).
        let (payload, signature) = signed_payload(
            "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71",
            "",
        )
        .unwrap();
        assert_eq!(
            hmac_hex(
                "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
                &payload
            ),
            signature
        );
        // A signature that is not last is not a signature.
        assert!(signed_payload("signature=ab&symbol=X", "").is_none());
    }
}
