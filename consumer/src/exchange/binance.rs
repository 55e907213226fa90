//! Binance: USD-M futures by default, spot when the deployment says so.
//!
//! A signed request sends its parameters, then `recvWindow` and `timestamp`, then
//! `signature` ([`signing::binance_query`]); the API key goes in `X-MBX-APIKEY`.
//! MEXC's spot API signs and answers the same way, so [`QuerySigned`] serves both.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hoox_common::signal::{ExchangeName, Leverage, OrderType, Side, Symbol};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::Value;

use super::rules::{plain, InstrumentRules, RulesCache, Sized, SymbolRules};
use super::signing;
use super::transport::{
    decimal, exchange_symbol, integer, price_at, status_name, text, unreadable, Environment, Http,
    Reply, TimeSource, Venue, Venues, Write,
};
use super::{
    Balance, ErrorClass, ErrorCode, Exchange, ExchangeError, Holdings, KeyCheck, MarketTraits,
    OrderAck, OrderRequest, Position,
};

/// Binance USD-M futures' live host.
pub const FUTURES_LIVE_URL: &str = "https://fapi.binance.com";
/// Binance USD-M futures' testnet (demo trading) host.
pub const FUTURES_TESTNET_URL: &str = "https://demo-fapi.binance.com";
/// Binance spot's live host.
pub const SPOT_LIVE_URL: &str = "https://api.binance.com";
/// Binance spot's testnet host.
pub const SPOT_TESTNET_URL: &str = "https://testnet.binance.vision";
/// Where Binance's wallet API (`/sapi`) is: the spot host, whichever market hoox trades.
/// Only the live exchange has one; the testnets do not serve `/sapi`.
pub const WALLET_URL: &str = SPOT_LIVE_URL;

/// Which Binance market orders go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Market {
    /// USD-M perpetual futures (`/fapi/v1`).
    Usdm,
    /// Spot (`/api/v3`): no leverage, no reduce-only.
    Spot,
}

impl Market {
    fn prefix(self) -> &'static str {
        match self {
            Self::Usdm => "/fapi/v1",
            Self::Spot => "/api/v3",
        }
    }

    fn traits(self) -> MarketTraits {
        match self {
            // Stops are separate algo orders on Binance, which hoox does not place.
            Self::Usdm => MarketTraits::futures("USD-M futures").without_attached_stops(),
            Self::Spot => MarketTraits::spot(),
        }
    }

    /// The default live and testnet hosts of this market.
    pub fn default_urls(self) -> (&'static str, &'static str) {
        match self {
            Self::Usdm => (FUTURES_LIVE_URL, FUTURES_TESTNET_URL),
            Self::Spot => (SPOT_LIVE_URL, SPOT_TESTNET_URL),
        }
    }
}

/// Binance's signed-query scheme, shared with MEXC spot: which exchange, and the header
/// that carries the API key.
#[derive(Debug, Clone, Copy)]
pub struct QuerySigned {
    /// The exchange, for messages.
    pub exchange: ExchangeName,
    /// `X-MBX-APIKEY` or `X-MEXC-APIKEY`.
    pub key_header: &'static str,
    /// The code that means the timestamp was refused (`-1021`, `700003`).
    pub timestamp_code: i64,
    /// Whether a POST sends its parameters as a form body (Binance) rather than in the
    /// query string (MEXC, as its examples do).
    pub post_body: bool,
    /// How long a request stays valid after its timestamp, in ms.
    pub recv_window: u64,
}

impl QuerySigned {
    /// Sends `params` signed, in the query string or (for a POST, when `post_body`) as a
    /// form body.
    pub async fn send(
        &self,
        http: &Http,
        venue: &Venue,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        write: Write,
    ) -> Result<Reply, ExchangeError> {
        let url = venue.url(path)?;
        self.send_to(http, venue, method, &url, params, write).await
    }

    /// [`Self::send`] to `url`, which may be on another host of the same exchange (one
    /// clock, one key), such as Binance's wallet API beside its futures API.
    pub async fn send_to(
        &self,
        http: &Http,
        venue: &Venue,
        method: Method,
        url: &str,
        params: &[(&str, String)],
        write: Write,
    ) -> Result<Reply, ExchangeError> {
        let base = url;
        let refused = |err: &ExchangeError| err.is_exchange_code(self.timestamp_code);
        venue
            .signed(http, refused, |credentials, timestamp| {
                let signed =
                    signing::binance_query(credentials, params, self.recv_window, timestamp);
                let request = if method == Method::POST && self.post_body {
                    http.request(Method::POST, base)
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body(signed)
                } else {
                    http.request(method.clone(), &format!("{base}?{signed}"))
                };
                let request = request.header(self.key_header, credentials.api_key());
                async move {
                    let reply = http.send(self.exchange, request, write).await?;
                    match error_of(self.exchange, &reply, write) {
                        Some(err) => Err(err),
                        None => Ok(reply),
                    }
                }
            })
            .await
    }
}

/// The error a Binance-style answer carries, classified; `None` for success.
fn error_of(exchange: ExchangeName, reply: &Reply, write: Write) -> Option<ExchangeError> {
    let body = reply.json.as_ref();
    let code = body.and_then(|b| integer(&b["code"]));
    // MEXC answers some successes with `{"code": 0}` or `{"code": 200}`. A 2xx that is
    // not JSON (a proxy's page, a cut answer) says nothing: not a success.
    if reply.status.is_success() && body.is_some() && code.is_none_or(|c| c == 0 || c == 200) {
        return None;
    }
    let message = body
        .and_then(|b| b["msg"].as_str())
        .map_or_else(|| reply.excerpt(), str::to_owned);
    let class = match code {
        Some(code) => classify(code, &message, write)
            .or_else(|| reply.status_class(write))
            .unwrap_or(ErrorClass::Fatal),
        None => reply.status_class(write).unwrap_or(write.unknown_outcome()),
    };
    Some(ExchangeError::with_code(
        class,
        code.map_or(ErrorCode::Http(reply.status.as_u16()), ErrorCode::Exchange),
        format!("{exchange}: {message}"),
    ))
}

/// What a Binance (or MEXC spot) error code means; `None` leaves it to the HTTP status.
/// Sources: Binance USD-M and spot error-code pages, MEXC spot v3 "Error Code".
fn classify(code: i64, message: &str, write: Write) -> Option<ErrorClass> {
    Some(match code {
        // DUPLICATED_CLIENT_ORDER_ID (futures); spot's "Duplicate order sent."
        -4116 => ErrorClass::Duplicate,
        -2010 if message.to_ascii_lowercase().contains("duplicate") => ErrorClass::Duplicate,
        // UNKNOWN, DISCONNECTED, UNEXPECTED_RESP, TIMEOUT: "execution status unknown".
        -1000 | -1001 | -1006 | -1007 => write.unknown_outcome(),
        // Rate limits; timestamp outside recvWindow (Binance, MEXC); MEXC's own 429.
        -1003 | -1008 | -1015 | -1021 | 429 | 700_003 => ErrorClass::Retryable,
        _ => return None,
    })
}

/// Whether an error says the order does not exist.
pub fn is_unknown_order(err: &ExchangeError) -> bool {
    err.is_exchange_code(-2013)
}

/// The Binance provider.
pub struct Binance {
    http: Http,
    venues: Venues,
    market: Market,
    scheme: QuerySigned,
    rules: RulesCache,
    wallet_url: Option<String>,
}

impl Binance {
    /// Binance trading on `market`, with requests valid for `recv_window` ms.
    pub fn new(
        http: Http,
        live: Environment,
        testnet: Environment,
        market: Market,
        recv_window: u64,
    ) -> Self {
        let time = match market {
            Market::Usdm => TimeSource {
                path: "/fapi/v1/time",
                pointer: "/serverTime",
            },
            Market::Spot => TimeSource {
                path: "/api/v3/time",
                pointer: "/serverTime",
            },
        };
        Self {
            http,
            venues: Venues::new(ExchangeName::Binance, live, testnet, time),
            market,
            scheme: QuerySigned {
                exchange: ExchangeName::Binance,
                key_header: "X-MBX-APIKEY",
                timestamp_code: -1021,
                post_body: true,
                recv_window,
            },
            rules: RulesCache::default(),
            wallet_url: None,
        }
    }

    /// Asks the wallet API at `url` (normally [`WALLET_URL`]) what the live key may do,
    /// when its keys are checked; without one, withdrawal permission is not known.
    pub fn with_wallet_url(mut self, url: Option<String>) -> Self {
        self.wallet_url = url.map(|url| url.trim_end_matches('/').to_owned());
        self
    }

    fn path(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.market.prefix())
    }

    async fn signed(
        &self,
        order: &OrderRequest,
        method: Method,
        endpoint: &str,
        params: &[(&str, String)],
        write: Write,
    ) -> Result<Value, ExchangeError> {
        let venue = self.venues.get(order.testnet);
        let path = self.path(endpoint);
        let reply = self
            .scheme
            .send(&self.http, venue, method, &path, params, write)
            .await?;
        Ok(reply.json.unwrap_or(Value::Null))
    }

    /// The answer to a public market-data `endpoint` of this market (with its query),
    /// or the exchange's error.
    async fn market_data(&self, endpoint: &str, testnet: bool) -> Result<Value, ExchangeError> {
        let url = self.venues.get(testnet).url(&self.path(endpoint))?;
        let reply = self
            .http
            .send(ExchangeName::Binance, self.http.get(&url), Write::No)
            .await?;
        match error_of(ExchangeName::Binance, &reply, Write::No) {
            // Spot answers an unknown symbol with -1121 "Invalid symbol."
            Some(err) => Err(err),
            None => Ok(reply.json.unwrap_or(Value::Null)),
        }
    }

    async fn instrument(&self, order: &OrderRequest) -> Result<SymbolRules, ExchangeError> {
        // USD-M's exchangeInfo lists every symbol; spot's can be asked for one.
        let endpoint = match self.market {
            Market::Usdm => "exchangeInfo".to_owned(),
            Market::Spot => format!("exchangeInfo?symbol={}", order.symbol),
        };
        let info = self.market_data(&endpoint, order.testnet).await?;
        let symbols = info["symbols"].as_array();
        let item = symbols
            .and_then(|list| {
                list.iter()
                    .find(|s| s["symbol"].as_str() == Some(order.symbol.as_str()))
            })
            .ok_or_else(|| {
                ExchangeError::new(
                    ErrorClass::Fatal,
                    format!(
                        "{} is not a binance {} instrument",
                        order.symbol,
                        self.market_name()
                    ),
                )
            })?;
        binance_rules(item, order)
    }

    fn market_name(&self) -> &'static str {
        match self.market {
            Market::Usdm => "USD-M futures",
            Market::Spot => "spot",
        }
    }

    fn order_params(
        &self,
        order: &OrderRequest,
        rules: &InstrumentRules,
    ) -> Result<Vec<(&'static str, String)>, ExchangeError> {
        self.market
            .traits()
            .check_order(ExchangeName::Binance, order)?;
        let sized = rules.size(
            ExchangeName::Binance,
            &order.symbol,
            order.quantity,
            order.price,
            order.reduce_only,
        )?;
        let mut params = order_params(order, &sized, true);
        if self.market.traits().sends_reduce_only(order) {
            params.push(("reduceOnly", "true".to_owned()));
        }
        params.push((
            "newClientOrderId",
            order.client_order_id.as_str().to_owned(),
        ));
        params.push(("newOrderRespType", "RESULT".to_owned()));
        Ok(params)
    }
}

/// Rules from one `exchangeInfo` symbol: LOT_SIZE (MARKET_LOT_SIZE for market orders
/// when it is stricter), PRICE_FILTER, and the minimum notional.
fn binance_rules(item: &Value, order: &OrderRequest) -> Result<SymbolRules, ExchangeError> {
    if item["status"].as_str().is_some_and(|s| s != "TRADING") {
        return Err(ExchangeError::new(
            ErrorClass::Fatal,
            format!(
                "binance {} is not trading (status {})",
                order.symbol, item["status"]
            ),
        ));
    }
    let filters = item["filters"].as_array().cloned().unwrap_or_default();
    let filter = |kind: &str| {
        filters
            .iter()
            .find(|f| f["filterType"].as_str() == Some(kind))
    };
    let lot = filter("LOT_SIZE").ok_or_else(|| {
        ExchangeError::new(
            ErrorClass::Retryable,
            format!("binance {} has no LOT_SIZE filter", order.symbol),
        )
    })?;
    let min_notional = filter("MIN_NOTIONAL")
        .and_then(|f| decimal(&f["notional"]).or_else(|| decimal(&f["minNotional"])))
        .or_else(|| filter("NOTIONAL").and_then(|f| decimal(&f["minNotional"])));
    let tick_size = filter("PRICE_FILTER")
        .and_then(|f| decimal(&f["tickSize"]))
        .filter(|t| !t.is_zero());
    let rules = |market_lot: Option<&Value>| {
        let pick = |field: &str| {
            let lot_value = decimal(&lot[field]);
            let market_value = market_lot
                .and_then(|m| decimal(&m[field]))
                .filter(|d| !d.is_zero());
            (lot_value, market_value)
        };
        let (step, market_step) = pick("stepSize");
        let (min, market_min) = pick("minQty");
        let (max, market_max) = pick("maxQty");
        InstrumentRules {
            qty_step: step
                .into_iter()
                .chain(market_step)
                .max()
                .unwrap_or_default(),
            min_qty: min.into_iter().chain(market_min).max().unwrap_or_default(),
            max_qty: match (max, market_max) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            tick_size,
            min_notional,
            contract_size: None,
        }
    };
    Ok(SymbolRules {
        limit: rules(None),
        market: rules(filter("MARKET_LOT_SIZE")),
    })
}

/// The parameters a Binance-style new order starts with: symbol, side, type, quantity
/// and, for a limit order, price (and `timeInForce=GTC` when `time_in_force`).
pub fn order_params(
    order: &OrderRequest,
    sized: &Sized,
    time_in_force: bool,
) -> Vec<(&'static str, String)> {
    let side = match order.side {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    };
    let mut params = vec![
        ("symbol", order.symbol.to_string()),
        ("side", side.to_owned()),
    ];
    match (order.order_type, sized.price) {
        (OrderType::Limit, Some(price)) => {
            params.push(("type", "LIMIT".to_owned()));
            if time_in_force {
                params.push(("timeInForce", "GTC".to_owned()));
            }
            params.push(("quantity", plain(sized.quantity)));
            params.push(("price", plain(price)));
        }
        _ => {
            params.push(("type", "MARKET".to_owned()));
            params.push(("quantity", plain(sized.quantity)));
        }
    }
    params
}

/// An order as Binance or MEXC spot describes it (new-order or query answer). An
/// answer without an order id does not show an order: its outcome is unknown.
pub fn ack_from_order(
    exchange: ExchangeName,
    item: Value,
    write: Write,
) -> Result<OrderAck, ExchangeError> {
    let Some(exchange_order_id) = text(&item["orderId"]) else {
        return Err(ExchangeError::new(
            write.unknown_outcome(),
            format!("{exchange} answered without an order id"),
        ));
    };
    let executed = decimal(&item["executedQty"]);
    // Futures give `avgPrice`; spot gives the quote spent, so the average is computed.
    let average = decimal(&item["avgPrice"])
        .filter(|p| !p.is_zero())
        .or_else(|| {
            let quote = decimal(&item["cummulativeQuoteQty"])?;
            let executed = executed.filter(|e| !e.is_zero())?;
            Some(quote.checked_div(executed)?.normalize())
        });
    let time = ["updateTime", "transactTime", "time"]
        .iter()
        .find_map(|k| integer(&item[*k]))
        .and_then(DateTime::from_timestamp_millis);
    Ok(OrderAck {
        exchange_order_id,
        status: item["status"]
            .as_str()
            .map_or_else(|| "accepted".to_owned(), status_name),
        fill_price: average,
        fill_quantity: executed,
        // A RESULT answer, a query and a USD-M answer carry no commission.
        fee: None,
        placed_at: time.unwrap_or_else(Utc::now),
        raw: item,
    })
}

#[async_trait]
impl Exchange for Binance {
    fn name(&self) -> ExchangeName {
        ExchangeName::Binance
    }

    fn market(&self) -> &'static str {
        match self.market {
            Market::Usdm => "usdm",
            Market::Spot => "spot",
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
            .check_leverage(ExchangeName::Binance, leverage)?;
        if self.market == Market::Spot {
            return Ok(());
        }
        let params = [
            ("symbol", order.symbol.to_string()),
            ("leverage", leverage.get().to_string()),
        ];
        self.signed(order, Method::POST, "leverage", &params, Write::No)
            .await
            .map(drop)
    }

    async fn place_order(&self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        let rules = self
            .rules
            .get_or_fetch(order, || self.instrument(order))
            .await?;
        let params = self.order_params(order, &rules)?;
        let answer = self
            .signed(order, Method::POST, "order", &params, Write::Order)
            .await?;
        ack_from_order(ExchangeName::Binance, answer, Write::Order)
    }

    /// `GET /fapi/v1/ticker/price` (USD-M) or `/api/v3/ticker/price` (spot), `price`
    /// (<https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Symbol-Price-Ticker>).
    async fn last_price(&self, symbol: &Symbol, testnet: bool) -> Result<Decimal, ExchangeError> {
        let ticker = self
            .market_data(&format!("ticker/price?symbol={symbol}"), testnet)
            .await?;
        price_at(ExchangeName::Binance, &ticker, "/price")
    }

    async fn order_by_client_id(
        &self,
        order: &OrderRequest,
    ) -> Result<Option<OrderAck>, ExchangeError> {
        let params = [
            ("symbol", order.symbol.to_string()),
            (
                "origClientOrderId",
                order.client_order_id.as_str().to_owned(),
            ),
        ];
        match self
            .signed(order, Method::GET, "order", &params, Write::No)
            .await
        {
            Ok(answer) => ack_from_order(ExchangeName::Binance, answer, Write::No).map(Some),
            Err(err) if is_unknown_order(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The market's account call proves the key and says whether the account can trade
    /// (USD-M `GET /fapi/v2/account`, spot `GET /api/v3/account`). Only the wallet API
    /// knows the key's own permissions (`GET /sapi/v1/account/apiRestrictions`, on the
    /// spot host even for futures), so the live key is asked there too when a wallet
    /// URL is set; if that host does not answer, withdrawal permission stays unknown.
    async fn check_keys(&self, testnet: bool) -> Result<KeyCheck, ExchangeError> {
        let venue = self.venues.get(testnet);
        let account = self
            .scheme
            .send(
                &self.http,
                venue,
                Method::GET,
                match self.market {
                    Market::Usdm => "/fapi/v2/account",
                    Market::Spot => "/api/v3/account",
                },
                &[],
                Write::No,
            )
            .await?
            .json
            .unwrap_or(Value::Null);
        let account_trades = account["canTrade"].as_bool();
        let Some(wallet) = self.wallet_url.as_deref().filter(|_| !testnet) else {
            return Ok(KeyCheck {
                can_trade: account_trades,
                can_withdraw: None,
            });
        };
        let url = format!("{wallet}/sapi/v1/account/apiRestrictions");
        let restrictions = match self
            .scheme
            .send_to(&self.http, venue, Method::GET, &url, &[], Write::No)
            .await
        {
            Ok(reply) => reply.json.unwrap_or(Value::Null),
            Err(err) => {
                tracing::warn!(exchange = "binance", error = %err, "wallet API did not say what the key may do");
                Value::Null
            }
        };
        let key_trades = restrictions[match self.market {
            Market::Usdm => "enableFutures",
            Market::Spot => "enableSpotAndMarginTrading",
        }]
        .as_bool();
        Ok(KeyCheck {
            can_trade: match (account_trades, key_trades) {
                (Some(account), Some(key)) => Some(account && key),
                (account, key) => account.or(key),
            },
            can_withdraw: restrictions["enableWithdrawals"].as_bool(),
        })
    }

    /// USD-M: `GET /fapi/v3/positionRisk`, which lists only symbols with a position or
    /// an open order, `positionAmt` signed (negative short)
    /// (<https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Position-Information-V3>).
    /// Spot: `GET /api/v3/account` with `omitZeroBalances=true`, each balance `free`
    /// and `locked`
    /// (<https://developers.binance.com/docs/binance-spot-api-docs/rest-api/account-endpoints>).
    async fn positions(&self, testnet: bool) -> Result<Holdings, ExchangeError> {
        let venue = self.venues.get(testnet);
        let holdings = match self.market {
            Market::Usdm => self
                .scheme
                .send(
                    &self.http,
                    venue,
                    Method::GET,
                    "/fapi/v3/positionRisk",
                    &[],
                    Write::No,
                )
                .await
                .and_then(|reply| futures_positions(&reply.json.unwrap_or(Value::Null)))
                .map(Holdings::Positions),
            Market::Spot => self
                .scheme
                .send(
                    &self.http,
                    venue,
                    Method::GET,
                    "/api/v3/account",
                    &[("omitZeroBalances", "true".to_owned())],
                    Write::No,
                )
                .await
                .and_then(|reply| {
                    spot_balances(ExchangeName::Binance, &reply.json.unwrap_or(Value::Null))
                })
                .map(Holdings::Balances),
        };
        holdings.map_err(|err| {
            err.context(format!(
                "cannot read binance {} holdings",
                self.market_name()
            ))
        })
    }
}

/// The open positions of a `positionRisk` answer; a zero `positionAmt` is none. In
/// hedge mode each side is its own entry, as the exchange lists it.
fn futures_positions(answer: &Value) -> Result<Vec<Position>, ExchangeError> {
    let list = answer
        .as_array()
        .ok_or_else(|| unreadable(ExchangeName::Binance, "position list", answer))?;
    let mut positions = Vec::new();
    for item in list {
        let unreadable_item = || unreadable(ExchangeName::Binance, "position", item);
        let quantity = decimal(&item["positionAmt"]).ok_or_else(unreadable_item)?;
        if quantity.is_zero() {
            continue;
        }
        let symbol = item["symbol"].as_str().ok_or_else(unreadable_item)?;
        positions.push(Position {
            symbol: exchange_symbol(ExchangeName::Binance, symbol)?,
            quantity,
            entry_price: decimal(&item["entryPrice"]).ok_or_else(unreadable_item)?,
        });
    }
    Ok(positions)
}

/// The non-zero balances of a Binance-style spot `account` answer (Binance, MEXC):
/// `balances: [{asset, free, locked}]`.
pub fn spot_balances(
    exchange: ExchangeName,
    answer: &Value,
) -> Result<Vec<Balance>, ExchangeError> {
    let list = answer["balances"]
        .as_array()
        .ok_or_else(|| unreadable(exchange, "account balances", answer))?;
    let mut balances = Vec::new();
    for item in list {
        let unreadable_item = || unreadable(exchange, "balance", item);
        let asset = item["asset"].as_str().ok_or_else(unreadable_item)?;
        let free = decimal(&item["free"]).ok_or_else(unreadable_item)?;
        let locked = decimal(&item["locked"]).ok_or_else(unreadable_item)?;
        let balance = Balance::new(asset, free, locked).ok_or_else(unreadable_item)?;
        if !balance.total.is_zero() {
            balances.push(balance);
        }
    }
    Ok(balances)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_error_codes() {
        assert_eq!(
            classify(-4116, "", Write::Order),
            Some(ErrorClass::Duplicate)
        );
        assert_eq!(
            classify(-2010, "Duplicate order sent.", Write::Order),
            Some(ErrorClass::Duplicate)
        );
        assert_eq!(
            classify(-2010, "Account has insufficient balance", Write::Order),
            None
        );
        assert_eq!(
            classify(-1007, "", Write::Order),
            Some(ErrorClass::Ambiguous)
        );
        assert_eq!(
            classify(-1003, "", Write::Order),
            Some(ErrorClass::Retryable)
        );
        assert_eq!(classify(-2019, "", Write::Order), None);
    }
}
