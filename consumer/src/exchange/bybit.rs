//! Bybit V5: linear USDT perpetuals by default, spot when the deployment says so.
//!
//! Every private request carries `X-BAPI-API-KEY`, `X-BAPI-TIMESTAMP`,
//! `X-BAPI-RECV-WINDOW` and `X-BAPI-SIGN` ([`signing::bybit`]).

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hoox_common::signal::{ExchangeName, Leverage, OrderType, Side, Symbol};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use super::rules::{plain, InstrumentRules, RulesCache, SymbolRules};
use super::signing;
use super::transport::{
    amount, decimal, exchange_symbol, integer, price_at, query_string, status_name, text,
    unreadable, Environment, Http, Reply, TimeSource, Venue, Venues, Write,
};
use super::{
    Balance, ErrorClass, ErrorCode, Exchange, ExchangeError, Holdings, KeyCheck, MarketTraits,
    OrderAck, OrderRequest, Position,
};

/// Bybit's live host.
pub const LIVE_URL: &str = "https://api.bybit.com";
/// Bybit's testnet host.
pub const TESTNET_URL: &str = "https://api-testnet.bybit.com";

/// Open and recently closed orders.
const REALTIME: &str = "/v5/order/realtime";

const TIME: TimeSource = TimeSource {
    path: "/v5/market/time",
    pointer: "/time",
};

/// Which Bybit market orders go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Category {
    /// USDT perpetuals (`category=linear`).
    Linear,
    /// Spot (`category=spot`): no leverage, no reduce-only.
    Spot,
}

impl Category {
    fn as_str(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Spot => "spot",
        }
    }

    fn traits(self) -> MarketTraits {
        match self {
            Self::Linear => MarketTraits::futures("linear"),
            Self::Spot => MarketTraits::spot(),
        }
    }
}

/// The Bybit provider.
pub struct Bybit {
    http: Http,
    venues: Venues,
    category: Category,
    recv_window: u64,
    rules: RulesCache,
}

/// A request's parameters: a query string for GET, a JSON body for POST.
enum Payload {
    Query(Vec<(&'static str, String)>),
    Body(Value),
}

impl Bybit {
    /// Bybit trading in `category`, with requests valid for `recv_window` ms.
    pub fn new(
        http: Http,
        live: Environment,
        testnet: Environment,
        category: Category,
        recv_window: u64,
    ) -> Self {
        Self {
            http,
            venues: Venues::new(ExchangeName::Bybit, live, testnet, TIME),
            category,
            recv_window,
            rules: RulesCache::default(),
        }
    }

    /// Sends a signed request and gives the `result` of a `retCode: 0` answer.
    async fn private(
        &self,
        venue: &Venue,
        path: &str,
        payload: Payload,
        write: Write,
    ) -> Result<Value, ExchangeError> {
        let (method, url, signed) = match &payload {
            Payload::Query(params) => {
                let query = query_string(params);
                let url = if query.is_empty() {
                    venue.url(path)?
                } else {
                    venue.url(&format!("{path}?{query}"))?
                };
                (Method::GET, url, query)
            }
            Payload::Body(body) => (Method::POST, venue.url(path)?, body.to_string()),
        };
        venue
            .signed(&self.http, refused_timestamp, |credentials, timestamp| {
                let mut request = self
                    .http
                    .request(method.clone(), &url)
                    .header("X-BAPI-API-KEY", credentials.api_key())
                    .header("X-BAPI-TIMESTAMP", timestamp.to_string())
                    .header("X-BAPI-RECV-WINDOW", self.recv_window.to_string())
                    .header(
                        "X-BAPI-SIGN",
                        signing::bybit(credentials, timestamp, self.recv_window, &signed),
                    );
                if method == Method::POST {
                    request = request
                        .header("Content-Type", "application/json")
                        .body(signed.clone());
                }
                async move {
                    let reply = self.http.send(ExchangeName::Bybit, request, write).await?;
                    result(reply, write)
                }
            })
            .await
    }

    /// The `result` of a public market-data `path` about `symbol`, in this category.
    async fn market_data(
        &self,
        path: &str,
        symbol: &Symbol,
        testnet: bool,
    ) -> Result<Value, ExchangeError> {
        let url = self.venues.get(testnet).url(&format!(
            "{path}?{}",
            query_string(&[
                ("category", self.category.as_str().to_owned()),
                ("symbol", symbol.to_string()),
            ])
        ))?;
        let reply = self
            .http
            .send(ExchangeName::Bybit, self.http.get(&url), Write::No)
            .await?;
        result(reply, Write::No)
    }

    async fn instrument(&self, order: &OrderRequest) -> Result<SymbolRules, ExchangeError> {
        let result = self
            .market_data("/v5/market/instruments-info", &order.symbol, order.testnet)
            .await?;
        let item = result
            .pointer("/list/0")
            .ok_or_else(|| unknown_symbol(self.category, order))?;
        if item["status"].as_str().is_some_and(|s| s != "Trading") {
            return Err(ExchangeError::new(
                ErrorClass::Fatal,
                format!(
                    "bybit {} {} is not trading (status {})",
                    self.category.as_str(),
                    order.symbol,
                    item["status"]
                ),
            ));
        }
        let lot = &item["lotSizeFilter"];
        let field = |value: &Value, name: &str| {
            decimal(value).ok_or_else(|| {
                ExchangeError::new(
                    ErrorClass::Retryable,
                    format!("bybit instrument {} has no readable {name}", order.symbol),
                )
            })
        };
        let (limit, (market_max, limit_max)) = match self.category {
            Category::Linear => (
                InstrumentRules {
                    qty_step: field(&lot["qtyStep"], "qtyStep")?,
                    min_qty: field(&lot["minOrderQty"], "minOrderQty")?,
                    max_qty: None,
                    tick_size: decimal(&item["priceFilter"]["tickSize"]),
                    min_notional: decimal(&lot["minNotionalValue"]),
                    contract_size: None,
                },
                ("maxMktOrderQty", "maxOrderQty"),
            ),
            Category::Spot => (
                InstrumentRules {
                    qty_step: field(&lot["basePrecision"], "basePrecision")?,
                    min_qty: decimal(&lot["minOrderQty"]).unwrap_or_default(),
                    max_qty: None,
                    tick_size: decimal(&item["priceFilter"]["tickSize"]),
                    min_notional: decimal(&lot["minOrderAmt"]),
                    contract_size: None,
                },
                ("maxMarketOrderQty", "maxLimitOrderQty"),
            ),
        };
        Ok(SymbolRules {
            market: InstrumentRules {
                max_qty: decimal(&lot[market_max]),
                ..limit.clone()
            },
            limit: InstrumentRules {
                max_qty: decimal(&lot[limit_max]),
                ..limit
            },
        })
    }

    /// The `/v5/order/create` body of `order`.
    fn order_body(
        &self,
        order: &OrderRequest,
        rules: &InstrumentRules,
    ) -> Result<Value, ExchangeError> {
        let sized = rules.size(
            ExchangeName::Bybit,
            &order.symbol,
            order.quantity,
            order.price,
            order.reduce_only,
        )?;
        let mut body = Map::new();
        body.insert("category".into(), json!(self.category.as_str()));
        body.insert("symbol".into(), json!(order.symbol.as_str()));
        body.insert(
            "side".into(),
            json!(match order.side {
                Side::Buy => "Buy",
                Side::Sell => "Sell",
            }),
        );
        match (order.order_type, sized.price) {
            (OrderType::Limit, Some(price)) => {
                body.insert("orderType".into(), json!("Limit"));
                body.insert("price".into(), json!(plain(price)));
                body.insert("timeInForce".into(), json!("GTC"));
            }
            _ => {
                body.insert("orderType".into(), json!("Market"));
                if self.category == Category::Spot {
                    // Spot market buys are sized in the quote coin unless told otherwise.
                    body.insert("marketUnit".into(), json!("baseCoin"));
                }
            }
        }
        body.insert("qty".into(), json!(plain(sized.quantity)));
        if self.category.traits().sends_reduce_only(order) {
            body.insert("reduceOnly".into(), json!(true));
        }
        // Spot orders carrying stops were refused before sizing.
        if let Some(stop_loss) = order.stop_loss {
            body.insert("stopLoss".into(), json!(plain(rules.tick(stop_loss)?)));
        }
        if let Some(take_profit) = order.take_profit {
            body.insert("takeProfit".into(), json!(plain(rules.tick(take_profit)?)));
        }
        body.insert("orderLinkId".into(), json!(order.client_order_id.as_str()));
        Ok(Value::Object(body))
    }

    /// The order with `order`'s client id, searched in `paths`.
    async fn find(
        &self,
        order: &OrderRequest,
        paths: &[&str],
    ) -> Result<Option<OrderAck>, ExchangeError> {
        let venue = self.venues.get(order.testnet);
        for path in paths {
            let params = vec![
                ("category", self.category.as_str().to_owned()),
                ("orderLinkId", order.client_order_id.as_str().to_owned()),
            ];
            let result = self
                .private(venue, path, Payload::Query(params), Write::No)
                .await?;
            if let Some(item) = result.pointer("/list/0") {
                return Ok(Some(ack_from_order(item, self.category)));
            }
        }
        Ok(None)
    }
}

impl Bybit {
    /// Every open USDT perpetual position: `GET /v5/position/list` with
    /// `category=linear&settleCoin=USDT` lists only positions of non-zero size, up to
    /// 200 a page, and the answer's `nextPageCursor` asks for the next page until it is
    /// empty (<https://bybit-exchange.github.io/docs/v5/position>).
    async fn linear_positions(&self, venue: &Venue) -> Result<Vec<Position>, ExchangeError> {
        let mut positions = Vec::new();
        let mut cursors = HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut params = vec![
                ("category", "linear".to_owned()),
                ("settleCoin", "USDT".to_owned()),
                ("limit", "200".to_owned()),
            ];
            if let Some(cursor) = &cursor {
                params.push(("cursor", cursor.clone()));
            }
            let result = self
                .private(
                    venue,
                    "/v5/position/list",
                    Payload::Query(params),
                    Write::No,
                )
                .await?;
            let list = result["list"]
                .as_array()
                .ok_or_else(|| unreadable(ExchangeName::Bybit, "position list", &result))?;
            for item in list {
                positions.extend(linear_position(item)?);
            }
            match result["nextPageCursor"].as_str().filter(|c| !c.is_empty()) {
                None => return Ok(positions),
                Some(next) if !cursors.insert(next.to_owned()) => {
                    return Err(ExchangeError::new(
                        ErrorClass::Retryable,
                        format!("bybit gave the position page cursor `{next}` twice"),
                    ))
                }
                Some(next) => cursor = Some(next.to_owned()),
            }
        }
    }

    /// The unified account's non-zero coin balances: `GET /v5/account/wallet-balance`
    /// with `accountType=UNIFIED`. A coin's `walletBalance` includes what its spot
    /// orders hold (`locked`), so free is `walletBalance - locked`
    /// (<https://bybit-exchange.github.io/docs/v5/account/wallet-balance>).
    async fn wallet_balances(&self, venue: &Venue) -> Result<Vec<Balance>, ExchangeError> {
        let params = vec![("accountType", "UNIFIED".to_owned())];
        let result = self
            .private(
                venue,
                "/v5/account/wallet-balance",
                Payload::Query(params),
                Write::No,
            )
            .await?;
        let accounts = result["list"]
            .as_array()
            .ok_or_else(|| unreadable(ExchangeName::Bybit, "wallet balance", &result))?;
        let mut balances = Vec::new();
        for account in accounts {
            let coins = account["coin"]
                .as_array()
                .ok_or_else(|| unreadable(ExchangeName::Bybit, "wallet balance", account))?;
            for coin in coins {
                let unreadable_coin = || unreadable(ExchangeName::Bybit, "coin balance", coin);
                let asset = coin["coin"].as_str().ok_or_else(unreadable_coin)?;
                let total = amount(&coin["walletBalance"]).ok_or_else(unreadable_coin)?;
                let locked = amount(&coin["locked"]).ok_or_else(unreadable_coin)?;
                if total.is_zero() {
                    continue;
                }
                let free = total.checked_sub(locked).ok_or_else(unreadable_coin)?;
                balances.push(Balance::new(asset, free, locked).ok_or_else(unreadable_coin)?);
            }
        }
        Ok(balances)
    }
}

/// One `/v5/position/list` item: `size` is unsigned and `side` gives its sign (`Buy`
/// long, `Sell` short); an empty position (size 0, side `""` or `None`) is none.
fn linear_position(item: &Value) -> Result<Option<Position>, ExchangeError> {
    let unreadable_item = || unreadable(ExchangeName::Bybit, "position", item);
    let size = decimal(&item["size"]).ok_or_else(unreadable_item)?;
    if size.is_zero() {
        return Ok(None);
    }
    let quantity = match item["side"].as_str() {
        Some("Buy") => size,
        Some("Sell") => -size,
        _ => return Err(unreadable_item()),
    };
    let symbol = item["symbol"].as_str().ok_or_else(unreadable_item)?;
    Ok(Some(Position {
        symbol: exchange_symbol(ExchangeName::Bybit, symbol)?,
        quantity,
        entry_price: decimal(&item["avgPrice"]).ok_or_else(unreadable_item)?,
    }))
}

fn unknown_symbol(category: Category, order: &OrderRequest) -> ExchangeError {
    ExchangeError::new(
        ErrorClass::Fatal,
        format!(
            "{} is not a bybit {} instrument",
            order.symbol,
            category.as_str()
        ),
    )
}

/// An order as `/v5/order/realtime` or `/v5/order/history` lists it. `cumExecFee` is
/// in the settle coin (the quote) for linear contracts only: spot charges buys in the
/// base coin, so a spot order records no fee.
fn ack_from_order(item: &Value, category: Category) -> OrderAck {
    let positive = |value: &Value| decimal(value).filter(|d| !d.is_zero());
    OrderAck {
        exchange_order_id: text(&item["orderId"]).unwrap_or_default(),
        status: item["orderStatus"]
            .as_str()
            .map_or_else(|| "unknown".to_owned(), status_name),
        fill_price: positive(&item["avgPrice"]),
        fill_quantity: decimal(&item["cumExecQty"]),
        fee: match category {
            Category::Linear => decimal(&item["cumExecFee"]),
            Category::Spot => None,
        },
        placed_at: integer(&item["createdTime"])
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or_else(Utc::now),
        raw: item.clone(),
    }
}

/// What `/v5/user/query-api` says a key may do
/// (<https://bybit-exchange.github.io/docs/v5/user/apikey-info>): a `readOnly: 1` key
/// trades nothing; otherwise it trades linear contracts with `ContractTrade: Order` (or
/// a unified account's `Derivatives: DerivativesTrade`) and spot with `Spot: SpotTrade`;
/// it withdraws with `Wallet: Withdraw`.
fn key_check(info: &Value, category: Category) -> KeyCheck {
    let listed = |group: &str, permission: &str| {
        info["permissions"][group]
            .as_array()
            .map(|granted| granted.iter().any(|p| p.as_str() == Some(permission)))
    };
    let trade = match category {
        Category::Linear => match (
            listed("ContractTrade", "Order"),
            listed("Derivatives", "DerivativesTrade"),
        ) {
            (None, None) => None,
            (contract, derivatives) => {
                Some(contract.unwrap_or(false) || derivatives.unwrap_or(false))
            }
        },
        Category::Spot => listed("Spot", "SpotTrade"),
    };
    let read_only = integer(&info["readOnly"]).map(|flag| flag == 1);
    KeyCheck {
        can_trade: if read_only == Some(true) {
            Some(false)
        } else {
            trade
        },
        can_withdraw: listed("Wallet", "Withdraw"),
    }
}

/// Whether Bybit refused the request's timestamp (`10002`).
fn refused_timestamp(err: &ExchangeError) -> bool {
    err.is_exchange_code(10_002)
}

/// The `result` of a successful answer, or the classified error.
fn result(reply: Reply, write: Write) -> Result<Value, ExchangeError> {
    let envelope = reply
        .json
        .as_ref()
        .filter(|body| body.get("retCode").is_some());
    let Some(body) = envelope else {
        let class = reply
            .status_class(write)
            .unwrap_or(match reply.status.as_u16() {
                // 403 is Bybit's IP rate limit (or a forbidden region, which waiting will not fix,
                // but retries end in the dead-letter queue with this message).
                403 => ErrorClass::Retryable,
                401 => ErrorClass::Fatal,
                _ => write.unknown_outcome(),
            });
        return Err(ExchangeError::with_code(
            class,
            ErrorCode::Http(reply.status.as_u16()),
            format!("bybit answered {}", reply.excerpt()),
        ));
    };
    let code = integer(&body["retCode"]).unwrap_or(-1);
    if code == 0 {
        return Ok(body.get("result").cloned().unwrap_or(Value::Null));
    }
    let message = body["retMsg"].as_str().unwrap_or_default().to_owned();
    Err(ExchangeError::with_code(
        classify(code, write),
        ErrorCode::Exchange(code),
        format!("bybit: {message}"),
    ))
}

/// What a Bybit `retCode` means (<https://bybit-exchange.github.io/docs/v5/error>).
fn classify(code: i64, write: Write) -> ErrorClass {
    match code {
        // Duplicate orderLinkId: derivatives, spot; a repeated request.
        110_072 | 170_141 | 10_014 => ErrorClass::Duplicate,
        // Server timeout / internal error: an order's fate is unknown.
        10_000 | 10_016 => write.unknown_outcome(),
        // Timestamp window, rate limits.
        10_002 | 10_006 | 10_018 | 10_429 => ErrorClass::Retryable,
        _ => ErrorClass::Fatal,
    }
}

#[async_trait]
impl Exchange for Bybit {
    fn name(&self) -> ExchangeName {
        ExchangeName::Bybit
    }

    fn market(&self) -> &'static str {
        self.category.as_str()
    }

    fn has_credentials(&self, testnet: bool) -> bool {
        self.venues.get(testnet).is_usable()
    }

    async fn set_leverage(
        &self,
        order: &OrderRequest,
        leverage: Leverage,
    ) -> Result<(), ExchangeError> {
        self.category
            .traits()
            .check_leverage(ExchangeName::Bybit, leverage)?;
        if self.category == Category::Spot {
            return Ok(());
        }
        let body = json!({
            "category": self.category.as_str(),
            "symbol": order.symbol.as_str(),
            "buyLeverage": leverage.get().to_string(),
            "sellLeverage": leverage.get().to_string(),
        });
        let venue = self.venues.get(order.testnet);
        match self
            .private(
                venue,
                "/v5/position/set-leverage",
                Payload::Body(body),
                Write::No,
            )
            .await
        {
            // "Set leverage has not been modified": it already is what we want.
            Err(err) if err.is_exchange_code(110_043) => Ok(()),
            other => other.map(drop),
        }
    }

    async fn place_order(&self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        self.category
            .traits()
            .check_order(ExchangeName::Bybit, order)?;
        let rules = self
            .rules
            .get_or_fetch(order, || self.instrument(order))
            .await?;
        let body = self.order_body(order, &rules)?;
        let venue = self.venues.get(order.testnet);
        let result = self
            .private(venue, "/v5/order/create", Payload::Body(body), Write::Order)
            .await?;
        // The create answer is an acknowledgement only: `read_back` gets the state.
        Ok(OrderAck::accepted(
            text(&result["orderId"]).unwrap_or_default(),
            result,
        ))
    }

    async fn read_back(&self, order: &OrderRequest, placed: OrderAck) -> OrderAck {
        // Only `realtime` can already show an order just placed.
        placed
            .read_back(ExchangeName::Bybit, self.find(order, &[REALTIME]))
            .await
    }

    /// `GET /v5/market/tickers`, the symbol's `lastPrice`
    /// (<https://bybit-exchange.github.io/docs/v5/market/tickers>).
    async fn last_price(&self, symbol: &Symbol, testnet: bool) -> Result<Decimal, ExchangeError> {
        let result = self
            .market_data("/v5/market/tickers", symbol, testnet)
            .await?;
        price_at(ExchangeName::Bybit, &result, "/list/0/lastPrice")
    }

    async fn order_by_client_id(
        &self,
        order: &OrderRequest,
    ) -> Result<Option<OrderAck>, ExchangeError> {
        // Open and recent orders are in `realtime`; older closed ones only in `history`.
        self.find(order, &[REALTIME, "/v5/order/history"]).await
    }

    async fn check_keys(&self, testnet: bool) -> Result<KeyCheck, ExchangeError> {
        // "Any permission can access this endpoint": a working key always answers.
        let info = self
            .private(
                self.venues.get(testnet),
                "/v5/user/query-api",
                Payload::Query(Vec::new()),
                Write::No,
            )
            .await?;
        Ok(key_check(&info, self.category))
    }

    async fn positions(&self, testnet: bool) -> Result<Holdings, ExchangeError> {
        let venue = self.venues.get(testnet);
        let holdings = match self.category {
            Category::Linear => self.linear_positions(venue).await.map(Holdings::Positions),
            Category::Spot => self.wallet_balances(venue).await.map(Holdings::Balances),
        };
        holdings.map_err(|err| {
            err.context(format!(
                "cannot read bybit {} holdings",
                self.category.as_str()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_a_key_may_do_from_its_permissions() {
        let info = |read_only: i64, contract: Value, wallet: Value| json!({"readOnly": read_only, "permissions": {"ContractTrade": contract, "Spot": [], "Wallet": wallet}});
        let trader = info(0, json!(["Order", "Position"]), json!(["AccountTransfer"]));
        assert_eq!(
            key_check(&trader, Category::Linear),
            KeyCheck {
                can_trade: Some(true),
                can_withdraw: Some(false)
            }
        );
        assert_eq!(key_check(&trader, Category::Spot).can_trade, Some(false));
        let reader = info(1, json!(["Order"]), json!(["Withdraw"]));
        assert_eq!(
            key_check(&reader, Category::Linear),
            KeyCheck {
                can_trade: Some(false),
                can_withdraw: Some(true)
            }
        );
        assert_eq!(key_check(&json!({}), Category::Linear), KeyCheck::default());
    }

    #[test]
    fn reads_a_position_signed_by_its_side() {
        let item = |side: &str, size: &str| json!({"symbol": "BTCUSDT", "side": side, "size": size, "avgPrice": "67999.123456789"});
        let short = linear_position(&item("Sell", "0.123456789"))
            .unwrap()
            .unwrap();
        assert_eq!(short.quantity, "-0.123456789".parse().unwrap());
        assert_eq!(short.entry_price, "67999.123456789".parse().unwrap());
        assert_eq!(short.symbol.as_str(), "BTCUSDT");
        let long = linear_position(&item("Buy", "2")).unwrap().unwrap();
        assert_eq!(long.quantity, "2".parse().unwrap());
        // An empty one-way position: no side, no size.
        assert_eq!(linear_position(&item("", "0")).unwrap(), None);
        // A size without a side is not guessed at.
        assert!(linear_position(&item("", "1")).is_err());
        assert!(linear_position(&json!({"symbol": "BTCUSDT"})).is_err());
    }

    #[test]
    fn classifies_ret_codes() {
        assert_eq!(classify(110_072, Write::Order), ErrorClass::Duplicate);
        assert_eq!(classify(170_141, Write::Order), ErrorClass::Duplicate);
        assert_eq!(classify(10_006, Write::Order), ErrorClass::Retryable);
        assert_eq!(classify(10_016, Write::Order), ErrorClass::Ambiguous);
        assert_eq!(classify(10_016, Write::No), ErrorClass::Retryable);
        assert_eq!(classify(110_007, Write::Order), ErrorClass::Fatal);
        assert_eq!(classify(10_004, Write::Order), ErrorClass::Fatal);
    }
}
