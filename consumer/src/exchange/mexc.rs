//! MEXC: spot v3 by default; USDT-margined futures for deployments whose keys may trade
//! them.
//!
//! Spot signs and answers like Binance (see [`super::binance::QuerySigned`]) with the
//! key in `X-MEXC-APIKEY`. Futures ("contract") requests carry `ApiKey`, `Request-Time`
//! and `Signature` ([`signing::mexc_futures`]).
//!
//! Spot is the default because MEXC's futures docs have marked order placement "under
//! maintenance" for ordinary API keys since 2022.

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hoox_common::signal::{ExchangeName, Leverage, OrderType, Side, Symbol};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Map, Number, Value};

use super::binance::{ack_from_order, is_unknown_order, order_params, spot_balances, QuerySigned};
use super::rules::{plain, step_from_places, InstrumentRules, RulesCache, SymbolRules};
use super::signing;
use super::transport::{
    decimal, exchange_symbol, integer, price_at, query_string, text, unreadable, Environment, Http,
    Reply, TimeSource, Venues, Write,
};
use super::{
    ErrorClass, ErrorCode, Exchange, ExchangeError, Holdings, KeyCheck, MarketTraits, OrderAck,
    OrderRequest, Position,
};

/// MEXC spot's host.
pub const SPOT_URL: &str = "https://api.mexc.com";
/// MEXC futures' documented host.
pub const FUTURES_URL: &str = "https://contract.mexc.com";
/// The futures order path ccxt uses since MEXC reopened API orders;
/// `/api/v1/private/order/submit` is the documented one.
pub const FUTURES_ORDER_PATH: &str = "/api/v1/private/order/create";

/// Which MEXC market orders go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Market {
    /// Spot v3: no leverage, no reduce-only.
    Spot,
    /// USDT-margined perpetual futures (`BTC_USDT`, volume in contracts).
    Futures,
}

impl Market {
    fn traits(self) -> MarketTraits {
        match self {
            Self::Spot => MarketTraits::spot(),
            Self::Futures => MarketTraits::futures("futures"),
        }
    }
}

/// `BTCUSDT` → `BTC_USDT`, the futures symbol.
pub fn futures_symbol(symbol: &Symbol) -> Result<String, ExchangeError> {
    ["USDT", "USDC", "USD"]
        .iter()
        .find_map(|quote| {
            let base = symbol.as_str().strip_suffix(quote)?;
            (!base.is_empty()).then(|| format!("{base}_{quote}"))
        })
        .ok_or_else(|| {
            ExchangeError::new(
                ErrorClass::Fatal,
                format!("{symbol} has no USDT, USDC or USD quote to name a MEXC futures contract"),
            )
        })
}

/// The MEXC provider.
pub struct Mexc {
    http: Http,
    venues: Venues,
    market: Market,
    spot: QuerySigned,
    order_path: String,
    rules: RulesCache,
}

impl Mexc {
    /// MEXC trading on `market`; futures orders go to `order_path`.
    pub fn new(
        http: Http,
        live: Environment,
        testnet: Environment,
        market: Market,
        recv_window: u64,
        order_path: String,
    ) -> Self {
        let time = match market {
            Market::Spot => TimeSource {
                path: "/api/v3/time",
                pointer: "/serverTime",
            },
            Market::Futures => TimeSource {
                path: "/api/v1/contract/ping",
                pointer: "/data",
            },
        };
        Self {
            http,
            venues: Venues::new(ExchangeName::Mexc, live, testnet, time),
            market,
            spot: QuerySigned {
                exchange: ExchangeName::Mexc,
                key_header: "X-MEXC-APIKEY",
                timestamp_code: 700_003,
                post_body: false,
                recv_window,
            },
            order_path,
            rules: RulesCache::default(),
        }
    }

    async fn spot(
        &self,
        order: &OrderRequest,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        write: Write,
    ) -> Result<Value, ExchangeError> {
        let venue = self.venues.get(order.testnet);
        let reply = self
            .spot
            .send(&self.http, venue, method, path, params, write)
            .await?;
        Ok(reply.json.unwrap_or(Value::Null))
    }

    async fn spot_rules(&self, order: &OrderRequest) -> Result<SymbolRules, ExchangeError> {
        let venue = self.venues.get(order.testnet);
        let url = venue.url(&format!("/api/v3/exchangeInfo?symbol={}", order.symbol))?;
        let reply = self
            .http
            .send(ExchangeName::Mexc, self.http.get(&url), Write::No)
            .await?;
        let not_listed = || {
            ExchangeError::new(
                ErrorClass::Fatal,
                format!("{} is not a MEXC spot instrument", order.symbol),
            )
        };
        if !reply.status.is_success() {
            return Err(match reply.status_class(Write::No) {
                Some(class) => ExchangeError::new(class, format!("mexc: {}", reply.excerpt())),
                None => not_listed(),
            });
        }
        let item = reply
            .json
            .as_ref()
            .and_then(|b| b["symbols"].as_array())
            .and_then(|list| {
                list.iter()
                    .find(|s| s["symbol"].as_str() == Some(order.symbol.as_str()))
            })
            .ok_or_else(not_listed)?;
        let online = matches!(text(&item["status"]).as_deref(), Some("1" | "ENABLED"));
        if !online || item["isSpotTradingAllowed"] == json!(false) {
            return Err(ExchangeError::new(
                ErrorClass::Fatal,
                format!(
                    "MEXC spot {} does not take API orders now (status {}, isSpotTradingAllowed {})",
                    order.symbol, item["status"], item["isSpotTradingAllowed"]
                ),
            ));
        }
        let places = |field: &str| integer(&item[field]).and_then(|p| u32::try_from(p).ok());
        Ok(SymbolRules::same(InstrumentRules {
            qty_step: places("baseAssetPrecision").map_or(Decimal::ZERO, step_from_places),
            min_qty: decimal(&item["baseSizePrecision"]).unwrap_or_default(),
            max_qty: None,
            tick_size: places("quoteAssetPrecision")
                .or_else(|| places("quotePrecision"))
                .map(step_from_places),
            min_notional: decimal(&item["quoteAmountPrecision"]).filter(|d| !d.is_zero()),
            contract_size: None,
        }))
    }

    async fn place_spot(&self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        Market::Spot
            .traits()
            .check_order(ExchangeName::Mexc, order)?;
        let rules = self
            .rules
            .get_or_fetch(order, || self.spot_rules(order))
            .await?;
        let sized = rules.size(
            ExchangeName::Mexc,
            &order.symbol,
            order.quantity,
            order.price,
            order.reduce_only,
        )?;
        let mut params = order_params(order, &sized, false);
        params.push((
            "newClientOrderId",
            order.client_order_id.as_str().to_owned(),
        ));
        let answer = self
            .spot(order, Method::POST, "/api/v3/order", &params, Write::Order)
            .await?;
        // The answer says nothing of fills: `read_back` gets the state.
        ack_from_order(ExchangeName::Mexc, answer, Write::Order)
    }

    async fn find_spot(&self, order: &OrderRequest) -> Result<Option<OrderAck>, ExchangeError> {
        let params = [
            ("symbol", order.symbol.to_string()),
            (
                "origClientOrderId",
                order.client_order_id.as_str().to_owned(),
            ),
        ];
        match self
            .spot(order, Method::GET, "/api/v3/order", &params, Write::No)
            .await
        {
            Ok(answer) => ack_from_order(ExchangeName::Mexc, answer, Write::No).map(Some),
            Err(err) if is_unknown_order(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// A signed futures call; gives the envelope's `data`.
    async fn futures(
        &self,
        testnet: bool,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        write: Write,
    ) -> Result<Value, ExchangeError> {
        let venue = self.venues.get(testnet);
        let mut sorted = query.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let query = query_string(&sorted);
        let body = body.map(Value::to_string);
        let signed = body.clone().unwrap_or_else(|| query.clone());
        let url = if query.is_empty() {
            venue.url(path)?
        } else {
            venue.url(&format!("{path}?{query}"))?
        };
        venue
            .signed(
                &self.http,
                |err| err.is_exchange_code(513),
                |credentials, timestamp| {
                    let mut request = self
                        .http
                        .request(method.clone(), &url)
                        .header("ApiKey", credentials.api_key())
                        .header("Request-Time", timestamp.to_string())
                        .header(
                            "Signature",
                            signing::mexc_futures(credentials, timestamp, &signed),
                        )
                        .header("Content-Type", "application/json");
                    if let Some(body) = &body {
                        request = request.body(body.clone());
                    }
                    async move {
                        let reply = self.http.send(ExchangeName::Mexc, request, write).await?;
                        futures_data(reply, write)
                    }
                },
            )
            .await
    }

    /// The public `GET /api/v1/contract/detail` of one contract
    /// (<https://mexcdevelop.github.io/apidocs/contract_v1_en/#get-the-contract-information>).
    async fn contract_detail(&self, testnet: bool, symbol: &str) -> Result<Value, ExchangeError> {
        let venue = self.venues.get(testnet);
        let url = venue.url(&format!("/api/v1/contract/detail?symbol={symbol}"))?;
        let reply = self
            .http
            .send(ExchangeName::Mexc, self.http.get(&url), Write::No)
            .await?;
        let data = futures_data(reply, Write::No)?;
        match &data {
            Value::Array(list) => list
                .iter()
                .find(|d| d["symbol"].as_str() == Some(symbol))
                .cloned(),
            Value::Object(_) => Some(data),
            _ => None,
        }
        .ok_or_else(|| {
            ExchangeError::new(
                ErrorClass::Fatal,
                format!("{symbol} is not a MEXC futures contract"),
            )
        })
    }

    async fn contract(
        &self,
        order: &OrderRequest,
    ) -> Result<(InstrumentRules, Decimal), ExchangeError> {
        let symbol = futures_symbol(&order.symbol)?;
        let rules = self
            .rules
            .get_or_fetch(order, || async {
                let detail = self.contract_detail(order.testnet, &symbol).await?;
                if detail["apiAllowed"] == json!(false) || integer(&detail["state"]).is_some_and(|s| s != 0) {
                    return Err(ExchangeError::new(
                        ErrorClass::Fatal,
                        format!(
                            "MEXC futures {symbol} does not take API orders now (state {}, apiAllowed {})",
                            detail["state"], detail["apiAllowed"]
                        ),
                    ));
                }
                let contract_size = contract_size(&detail, &symbol)?;
                Ok(SymbolRules::same(InstrumentRules {
                    qty_step: decimal(&detail["volUnit"]).unwrap_or(Decimal::ONE),
                    min_qty: decimal(&detail["minVol"]).unwrap_or(Decimal::ONE),
                    max_qty: decimal(&detail["maxVol"]),
                    tick_size: decimal(&detail["priceUnit"]).filter(|d| !d.is_zero()),
                    min_notional: None,
                    contract_size: Some(contract_size),
                }))
            })
            .await?;
        let contract_size = rules.contract_size.unwrap_or(Decimal::ONE);
        Ok((rules, contract_size))
    }

    async fn place_futures(&self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        Market::Futures
            .traits()
            .check_order(ExchangeName::Mexc, order)?;
        let (rules, contract_size) = self.contract(order).await?;
        let contracts = order.quantity.checked_div(contract_size).ok_or_else(|| {
            ExchangeError::new(
                ErrorClass::Fatal,
                format!(
                    "quantity {} {} cannot be converted to contracts of {contract_size}",
                    order.quantity, order.symbol
                ),
            )
        })?;
        let sized = rules
            .size(
                ExchangeName::Mexc,
                &order.symbol,
                contracts,
                order.price,
                order.reduce_only,
            )
            .map_err(|err| ExchangeError {
                message: format!(
                    "{} {} is {} contracts of {}: {}",
                    plain(order.quantity),
                    order.symbol,
                    plain(contracts),
                    plain(contract_size),
                    err.message
                ),
                ..err
            })?;
        let number = |d: Decimal| {
            Value::Number(Number::from_str(&plain(d)).expect("a plain decimal is a JSON number"))
        };
        let mut body = Map::new();
        body.insert("symbol".into(), json!(futures_symbol(&order.symbol)?));
        if let Some(price) = sized.price {
            body.insert("price".into(), number(price));
        }
        body.insert("vol".into(), number(sized.quantity));
        // Open long 1, close short 2, open short 3, close long 4: a reduce-only order
        // closes what its side reduces.
        body.insert(
            "side".into(),
            json!(match (
                order.side,
                Market::Futures.traits().sends_reduce_only(order)
            ) {
                (Side::Buy, false) => 1,
                (Side::Buy, true) => 2,
                (Side::Sell, false) => 3,
                (Side::Sell, true) => 4,
            }),
        );
        body.insert(
            "type".into(),
            json!(match order.order_type {
                OrderType::Limit => 1,
                OrderType::Market => 5,
            }),
        );
        // Cross margin: the account's balance backs every position.
        body.insert("openType".into(), json!(2));
        if let Some(stop_loss) = order.stop_loss {
            body.insert("stopLossPrice".into(), number(rules.tick(stop_loss)?));
        }
        if let Some(take_profit) = order.take_profit {
            body.insert("takeProfitPrice".into(), number(rules.tick(take_profit)?));
        }
        body.insert("externalOid".into(), json!(order.client_order_id.as_str()));
        let data = self
            .futures(
                order.testnet,
                Method::POST,
                &self.order_path,
                &[],
                Some(&Value::Object(body)),
                Write::Order,
            )
            .await?;
        // `data` is the order id, or `{orderId, ts}` on the newer path.
        let order_id = text(&data)
            .or_else(|| text(&data["orderId"]))
            .unwrap_or_default();
        Ok(OrderAck::accepted(order_id, data))
    }

    /// The spot account, `GET /api/v3/account`: its permissions and balances.
    async fn spot_account(&self, testnet: bool) -> Result<Value, ExchangeError> {
        Ok(self
            .spot
            .send(
                &self.http,
                self.venues.get(testnet),
                Method::GET,
                "/api/v3/account",
                &[],
                Write::No,
            )
            .await?
            .json
            .unwrap_or(Value::Null))
    }

    /// The futures order with `order`'s client id; its filled contracts are converted to
    /// base coin with `contract_size`.
    async fn find_futures(
        &self,
        order: &OrderRequest,
        contract_size: Decimal,
    ) -> Result<Option<OrderAck>, ExchangeError> {
        let symbol = futures_symbol(&order.symbol)?;
        let path = format!(
            "/api/v1/private/order/external/{symbol}/{}",
            order.client_order_id.as_str()
        );
        let data = match self
            .futures(order.testnet, Method::GET, &path, &[], None, Write::No)
            .await
        {
            Ok(data) => data,
            // "order not exist"
            Err(err) if err.is_exchange_code(2040) => return Ok(None),
            Err(err) => return Err(err),
        };
        if data.is_null() {
            return Ok(None);
        }
        let status = match integer(&data["state"]) {
            Some(1) => "uninformed",
            Some(2) => "new",
            Some(3) => "filled",
            Some(4) => "cancelled",
            Some(5) => "invalid",
            _ => "unknown",
        };
        Ok(Some(OrderAck {
            exchange_order_id: text(&data["orderId"]).unwrap_or_default(),
            status: status.to_owned(),
            fill_price: decimal(&data["dealAvgPrice"]).filter(|p| !p.is_zero()),
            fill_quantity: decimal(&data["dealVol"])
                .and_then(|contracts| contracts.checked_mul(contract_size))
                .map(|quantity| quantity.normalize()),
            // The documented fee fields are rates, not what this order was charged.
            fee: None,
            placed_at: integer(&data["createTime"])
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or_else(Utc::now),
            raw: data,
        }))
    }
}

/// A contract's size in base coin, from its detail.
fn contract_size(detail: &Value, symbol: &str) -> Result<Decimal, ExchangeError> {
    decimal(&detail["contractSize"])
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            ExchangeError::new(
                ErrorClass::Retryable,
                format!("MEXC futures {symbol} has no readable contractSize"),
            )
        })
}

/// One open position of `open_positions`: its contract, its signed contracts (`holdVol`
/// long for `positionType` 1, short for 2) and its `holdAvgPrice`; `None` when it holds
/// nothing.
fn futures_position(item: &Value) -> Result<Option<(String, Decimal, Decimal)>, ExchangeError> {
    let unreadable_item = || unreadable(ExchangeName::Mexc, "position", item);
    let contracts = decimal(&item["holdVol"]).ok_or_else(unreadable_item)?;
    if contracts.is_zero() {
        return Ok(None);
    }
    let signed = match integer(&item["positionType"]) {
        Some(1) => contracts,
        Some(2) => -contracts,
        _ => return Err(unreadable_item()),
    };
    let symbol = item["symbol"].as_str().ok_or_else(unreadable_item)?;
    let price = decimal(&item["holdAvgPrice"]).ok_or_else(unreadable_item)?;
    Ok(Some((symbol.to_owned(), signed, price)))
}

/// The `data` of a successful futures answer, or the classified error.
fn futures_data(reply: Reply, write: Write) -> Result<Value, ExchangeError> {
    let body = reply.json.as_ref().filter(|b| b.get("success").is_some());
    let Some(body) = body else {
        let class = reply.status_class(write).unwrap_or(write.unknown_outcome());
        return Err(ExchangeError::with_code(
            class,
            ErrorCode::Http(reply.status.as_u16()),
            format!("mexc answered {}", reply.excerpt()),
        ));
    };
    let code = integer(&body["code"]).unwrap_or(0);
    if body["success"] == json!(true) && code == 0 {
        return Ok(body.get("data").cloned().unwrap_or(Value::Null));
    }
    let message = body["message"].as_str().unwrap_or_default();
    Err(ExchangeError::with_code(
        classify_futures(code, write),
        ErrorCode::Exchange(code),
        format!("mexc: {message}"),
    ))
}

/// What a MEXC futures error code means
/// (<https://mexcdevelop.github.io/apidocs/contract_v1_en/#error-code-example>).
fn classify_futures(code: i64, write: Write) -> ErrorClass {
    match code {
        // "Repeated request": this externalOid was seen.
        603 => ErrorClass::Duplicate,
        // Internal error: an order's fate is unknown.
        500 => write.unknown_outcome(),
        // "Excessive frequency of requests", request time out of range.
        510 | 513 => ErrorClass::Retryable,
        _ => ErrorClass::Fatal,
    }
}

#[async_trait]
impl Exchange for Mexc {
    fn name(&self) -> ExchangeName {
        ExchangeName::Mexc
    }

    fn market(&self) -> &'static str {
        match self.market {
            Market::Spot => "spot",
            Market::Futures => "futures",
        }
    }

    fn has_credentials(&self, testnet: bool) -> bool {
        self.venues.get(testnet).is_usable()
    }

    async fn set_leverage(
        &self,
        order: &OrderRequest,
        leverage: Leverage,
    ) -> Result<(), ExchangeError> {
        self.market
            .traits()
            .check_leverage(ExchangeName::Mexc, leverage)?;
        if self.market == Market::Spot {
            return Ok(());
        }
        let symbol = futures_symbol(&order.symbol)?;
        // Without a position, leverage is set per side: long (1) and short (2).
        for position_type in [1, 2] {
            let body = json!({
                "openType": 2,
                "leverage": leverage.get(),
                "symbol": symbol,
                "positionType": position_type,
            });
            self.futures(
                order.testnet,
                Method::POST,
                "/api/v1/private/position/change_leverage",
                &[],
                Some(&body),
                Write::No,
            )
            .await?;
        }
        Ok(())
    }

    async fn place_order(&self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        match self.market {
            Market::Spot => self.place_spot(order).await,
            Market::Futures => self.place_futures(order).await,
        }
    }

    async fn read_back(&self, order: &OrderRequest, placed: OrderAck) -> OrderAck {
        // Neither market's answer to a new order says anything of fills.
        placed
            .read_back(ExchangeName::Mexc, self.order_by_client_id(order))
            .await
    }

    /// Spot: `GET /api/v3/ticker/price`, `price`
    /// (<https://mexcdevelop.github.io/apidocs/spot_v3_en/#symbol-price-ticker>).
    /// Futures: `GET /api/v1/contract/ticker`, `data.lastPrice`
    /// (<https://mexcdevelop.github.io/apidocs/contract_v1_en/#get-contract-trend-data>).
    async fn last_price(&self, symbol: &Symbol, testnet: bool) -> Result<Decimal, ExchangeError> {
        let venue = self.venues.get(testnet);
        match self.market {
            Market::Spot => {
                let url = venue.url(&format!("/api/v3/ticker/price?symbol={symbol}"))?;
                let reply = self
                    .http
                    .send(ExchangeName::Mexc, self.http.get(&url), Write::No)
                    .await?;
                if !reply.status.is_success() {
                    let class = reply.status_class(Write::No).unwrap_or(ErrorClass::Fatal);
                    return Err(ExchangeError::new(
                        class,
                        format!("mexc has no spot price for {symbol}: {}", reply.excerpt()),
                    ));
                }
                price_at(
                    ExchangeName::Mexc,
                    reply.json.as_ref().unwrap_or(&Value::Null),
                    "/price",
                )
            }
            Market::Futures => {
                let contract = futures_symbol(symbol)?;
                let url = venue.url(&format!("/api/v1/contract/ticker?symbol={contract}"))?;
                let reply = self
                    .http
                    .send(ExchangeName::Mexc, self.http.get(&url), Write::No)
                    .await?;
                let data = futures_data(reply, Write::No)?;
                price_at(ExchangeName::Mexc, &data, "/lastPrice")
            }
        }
    }

    async fn order_by_client_id(
        &self,
        order: &OrderRequest,
    ) -> Result<Option<OrderAck>, ExchangeError> {
        match self.market {
            Market::Spot => self.find_spot(order).await,
            Market::Futures => {
                let (_, contract_size) = self.contract(order).await?;
                self.find_futures(order, contract_size).await
            }
        }
    }

    /// Spot: `GET /api/v3/account` gives `canTrade` and `canWithdraw`. Futures: the
    /// contract API has no permissions call, so `GET /api/v1/private/account/assets`
    /// only proves the key works.
    async fn check_keys(&self, testnet: bool) -> Result<KeyCheck, ExchangeError> {
        match self.market {
            Market::Spot => {
                let account = self.spot_account(testnet).await?;
                Ok(KeyCheck {
                    can_trade: account["canTrade"].as_bool(),
                    can_withdraw: account["canWithdraw"].as_bool(),
                })
            }
            Market::Futures => {
                self.futures(
                    testnet,
                    Method::GET,
                    "/api/v1/private/account/assets",
                    &[],
                    None,
                    Write::No,
                )
                .await?;
                Ok(KeyCheck::default())
            }
        }
    }

    /// Spot: `GET /api/v3/account`, each balance `free` and `locked`
    /// (<https://mexcdevelop.github.io/apidocs/spot_v3_en/#account-information>).
    /// Futures: `GET /api/v1/private/position/open_positions`, whose `holdVol` counts
    /// contracts, converted to base coin with each contract's size
    /// (<https://mexcdevelop.github.io/apidocs/contract_v1_en/#get-the-user-39-s-current-holding-position>).
    async fn positions(&self, testnet: bool) -> Result<Holdings, ExchangeError> {
        let holdings = match self.market {
            Market::Spot => self
                .spot_account(testnet)
                .await
                .and_then(|account| spot_balances(ExchangeName::Mexc, &account))
                .map(Holdings::Balances),
            Market::Futures => self
                .futures_positions(testnet)
                .await
                .map(Holdings::Positions),
        };
        let market = match self.market {
            Market::Spot => "spot",
            Market::Futures => "futures",
        };
        holdings.map_err(|err| err.context(format!("cannot read mexc {market} holdings")))
    }
}

impl Mexc {
    async fn futures_positions(&self, testnet: bool) -> Result<Vec<Position>, ExchangeError> {
        let data = self
            .futures(
                testnet,
                Method::GET,
                "/api/v1/private/position/open_positions",
                &[],
                None,
                Write::No,
            )
            .await?;
        let list = data
            .as_array()
            .ok_or_else(|| unreadable(ExchangeName::Mexc, "position list", &data))?;
        let mut sizes: HashMap<String, Decimal> = HashMap::new();
        let mut positions = Vec::new();
        for item in list {
            let Some((contract, contracts, entry_price)) = futures_position(item)? else {
                continue;
            };
            let size = match sizes.get(&contract) {
                Some(size) => *size,
                None => {
                    let detail = self.contract_detail(testnet, &contract).await?;
                    let size = contract_size(&detail, &contract)?;
                    sizes.insert(contract.clone(), size);
                    size
                }
            };
            let quantity = contracts
                .checked_mul(size)
                .ok_or_else(|| unreadable(ExchangeName::Mexc, "position size", item))?;
            positions.push(Position {
                symbol: exchange_symbol(ExchangeName::Mexc, &contract)?,
                quantity: quantity.normalize(),
                entry_price,
            });
        }
        Ok(positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_futures_contracts() {
        let name = |s: &str| futures_symbol(&Symbol::parse(s).unwrap());
        assert_eq!(name("BTCUSDT").unwrap(), "BTC_USDT");
        assert_eq!(name("ETHUSDC").unwrap(), "ETH_USDC");
        assert_eq!(name("BYBIT:1000PEPEUSDT.P").unwrap(), "1000PEPE_USDT");
        assert!(name("USDT").is_err());
        assert!(name("BTCEUR").unwrap_err().message.contains("BTCEUR"));
    }

    #[test]
    fn reads_a_position_signed_by_its_type() {
        let item = |kind: i64, vol: &str| {
            let vol: Value = serde_json::from_str(vol).unwrap();
            json!({"symbol": "BTC_USDT", "positionType": kind, "holdVol": vol, "holdAvgPrice": 67999.5})
        };
        let (symbol, contracts, price) = futures_position(&item(2, "1234")).unwrap().unwrap();
        assert_eq!(symbol, "BTC_USDT");
        assert_eq!(contracts, Decimal::from(-1234));
        assert_eq!(price, "67999.5".parse().unwrap());
        assert_eq!(futures_position(&item(1, "0")).unwrap(), None);
        assert!(futures_position(&item(3, "5")).is_err());
    }

    #[test]
    fn classifies_futures_codes() {
        assert_eq!(classify_futures(510, Write::Order), ErrorClass::Retryable);
        assert_eq!(classify_futures(603, Write::Order), ErrorClass::Duplicate);
        assert_eq!(classify_futures(500, Write::Order), ErrorClass::Ambiguous);
        assert_eq!(classify_futures(2005, Write::Order), ErrorClass::Fatal);
        assert_eq!(classify_futures(602, Write::No), ErrorClass::Fatal);
    }
}
