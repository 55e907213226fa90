//! Fills: filtered by exchange, symbol and UTC days, newest first, paged by keyset
//! (`(executed_at, id)` below the last row shown, never OFFSET), and as CSV.

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::auth::Session;
use super::overview::when;
use super::page::html;
use super::{Dashboard, PageError, PageResult};
use crate::commands::report::{csv_field, parse_day};

/// Rows on a page.
const PAGE: i64 = 50;
/// Rows read per query while writing the CSV.
const CSV_CHUNK: i64 = 1000;

/// The filters and the page, as the form and the links send them.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Params {
    exchange: Option<String>,
    symbol: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before_at: Option<String>,
    before_id: Option<i64>,
}

/// The filters, checked.
#[derive(Debug, Clone, Default)]
struct Filter {
    exchange: Option<String>,
    symbol: Option<String>,
    after: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
}

fn given(text: &Option<String>) -> Option<String> {
    text.as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

impl Params {
    fn filter(&self) -> Result<Filter, String> {
        let from = given(&self.from).map(|d| parse_day(&d)).transpose()?;
        let to = given(&self.to).map(|d| parse_day(&d)).transpose()?;
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                return Err(format!("from {from} is after to {to}"));
            }
        }
        Ok(Filter {
            exchange: given(&self.exchange).map(|e| e.to_ascii_lowercase()),
            symbol: given(&self.symbol).map(|s| s.to_ascii_uppercase()),
            after: from.map(start_of),
            before: to.and_then(|d| d.succ_opt()).map(start_of),
        })
    }

    fn cursor(&self) -> Result<Option<(DateTime<Utc>, i64)>, String> {
        match (given(&self.before_at), self.before_id) {
            (Some(at), Some(id)) => DateTime::parse_from_rfc3339(&at)
                .map(|at| Some((at.with_timezone(&Utc), id)))
                .map_err(|_| format!("`{at}` is not a page position")),
            _ => Ok(None),
        }
    }

    /// The query string of these filters, for links.
    fn query(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("exchange", &self.exchange),
            ("symbol", &self.symbol),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if let Some(value) = given(value) {
                out.append_pair(name, &value);
            }
        }
        out.finish()
    }
}

/// One fill as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
struct FillRow {
    id: i64,
    request_id: Uuid,
    executed_at: DateTime<Utc>,
    exchange: String,
    testnet: bool,
    symbol: String,
    side: String,
    quantity: Decimal,
    fill_quantity: Option<Decimal>,
    fill_price: Option<Decimal>,
    fee: Option<Decimal>,
    realized_pnl: Option<Decimal>,
    status: String,
    exchange_order_id: Option<String>,
}

/// Up to `limit` fills matching `filter` before `cursor`, newest first. Only the given
/// filters reach the SQL, so the planner picks the index that fits them.
async fn load(
    pool: &PgPool,
    filter: &Filter,
    cursor: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<FillRow>, sqlx::Error> {
    let mut query: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT id, request_id, executed_at, exchange, testnet, symbol, side, quantity, fill_quantity, \
         fill_price, fee, realized_pnl, status, exchange_order_id FROM fills WHERE TRUE",
    );
    if let Some(exchange) = &filter.exchange {
        query.push(" AND exchange = ").push_bind(exchange.clone());
    }
    if let Some(symbol) = &filter.symbol {
        query.push(" AND symbol = ").push_bind(symbol.clone());
    }
    if let Some(after) = filter.after {
        query.push(" AND executed_at >= ").push_bind(after);
    }
    if let Some(before) = filter.before {
        query.push(" AND executed_at < ").push_bind(before);
    }
    if let Some((at, id)) = cursor {
        query
            .push(" AND (executed_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    query
        .push(" ORDER BY executed_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    query.build_query_as().fetch_all(pool).await
}

fn decimal(value: Option<Decimal>) -> String {
    value.map_or_else(String::new, |v| v.normalize().to_string())
}

/// A row's cells, in the table's and the CSV's order.
fn cells(row: &FillRow) -> [String; 13] {
    [
        when(row.executed_at),
        row.request_id.to_string(),
        row.exchange.clone(),
        if row.testnet { "testnet" } else { "live" }.to_owned(),
        row.symbol.clone(),
        row.side.clone(),
        row.quantity.normalize().to_string(),
        decimal(row.fill_quantity),
        decimal(row.fill_price),
        decimal(row.fee),
        decimal(row.realized_pnl),
        row.status.clone(),
        row.exchange_order_id.clone().unwrap_or_default(),
    ]
}

#[derive(Template)]
#[template(path = "fills.html")]
struct FillsPage {
    csrf: String,
    active: &'static str,
    params: Params,
    error: Option<String>,
    rows: Vec<[String; 13]>,
    /// The filters as a query string.
    query: String,
    /// The next page's link, when there may be one.
    next: Option<String>,
}

/// `GET /fills`.
pub(super) async fn page(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Query(params): Query<Params>,
) -> PageResult {
    let mut page = FillsPage {
        csrf: session.csrf,
        active: "fills",
        query: params.query(),
        params: params.clone(),
        error: None,
        rows: Vec::new(),
        next: None,
    };
    let (filter, cursor) = match params.filter().and_then(|f| Ok((f, params.cursor()?))) {
        Ok(checked) => checked,
        Err(error) => {
            page.error = Some(error);
            return Ok((StatusCode::BAD_REQUEST, html(&page)).into_response());
        }
    };
    let rows = load(dashboard.pool(), &filter, cursor, PAGE).await?;
    if rows.len() as i64 == PAGE {
        if let Some(last) = rows.last() {
            let mut link = url::form_urlencoded::Serializer::new(page.query.clone());
            link.append_pair(
                "before_at",
                &last
                    .executed_at
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            );
            link.append_pair("before_id", &last.id.to_string());
            page.next = Some(format!("/fills?{}", link.finish()));
        }
    }
    page.rows = rows.iter().map(cells).collect();
    Ok(html(&page))
}

/// The CSV's header row.
const CSV_HEADER: &str = "executed_at,request_id,exchange,environment,symbol,side,quantity,fill_quantity,fill_price,fee,realized_pnl,status,exchange_order_id\r\n";

/// `GET /fills.csv`: every fill the filters match, newest first, as RFC 4180 CSV,
/// streamed a thousand rows at a time.
pub(super) async fn csv(
    State(dashboard): State<Dashboard>,
    Query(params): Query<Params>,
) -> PageResult {
    let filter = params.filter().map_err(PageError::bad_request)?;
    let pool = dashboard.pool().clone();
    let start = futures_util::stream::once(async { Ok(Bytes::from_static(CSV_HEADER.as_bytes())) });
    let rows = futures_util::stream::try_unfold(
        (pool, filter, None, false),
        |(pool, filter, cursor, done)| async move {
            if done {
                return Ok(None);
            }
            let rows = load(&pool, &filter, cursor, CSV_CHUNK).await?;
            let done = (rows.len() as i64) < CSV_CHUNK;
            let cursor = rows.last().map(|r| (r.executed_at, r.id));
            let mut chunk = String::new();
            for row in &rows {
                let line: Vec<String> = cells(row).iter().map(|c| csv_field(c)).collect();
                chunk.push_str(&line.join(","));
                chunk.push_str("\r\n");
            }
            Ok::<_, sqlx::Error>(Some((Bytes::from(chunk), (pool, filter, cursor, done))))
        },
    );
    let body = Body::from_stream(futures_util::StreamExt::chain(start, rows));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"fills.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}
