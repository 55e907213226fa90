//! `hoox trace <requestId>`: a signal's `system_logs` rows in order, and its fill.

use std::fmt::Write as _;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use hoox_common::config::DatabaseArgs;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::terminal::{self, escape};

/// Arguments of `hoox trace`.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// The `requestId` ingest answered with (202 or 409).
    pub request_id: Uuid,

    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// One row of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct TraceRow {
    /// When it happened.
    pub created_at: DateTime<Utc>,
    /// `ingest`, `consumer` or `cli`.
    pub worker: String,
    /// The event's kind (`accepted`, `order_placed`, …); `None` for rows written before
    /// events existed.
    pub kind: Option<String>,
    /// `debug` … `error`.
    pub severity: String,
    /// What happened.
    pub message: String,
    /// Structured detail.
    pub context: Value,
}

/// The fill of a traced signal.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct TraceFill {
    /// Exchange name.
    pub exchange: String,
    /// Instrument.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Requested quantity.
    pub quantity: Decimal,
    /// Exchange order id.
    pub exchange_order_id: Option<String>,
    /// Exchange status.
    pub status: String,
    /// Fill price.
    pub fill_price: Option<Decimal>,
}

/// Everything recorded about one signal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    /// The signal.
    pub request_id: Uuid,
    /// Its audit rows, oldest first.
    pub events: Vec<TraceRow>,
    /// Its fill, when it has one.
    pub fill: Option<TraceFill>,
}

/// Reads the trace of `request_id`.
pub async fn load(pool: &PgPool, request_id: Uuid) -> Result<Trace, sqlx::Error> {
    let events = sqlx::query_as(
        r#"
        SELECT created_at, worker, kind, severity, message, context
        FROM system_logs WHERE request_id = $1 ORDER BY created_at, id
        "#,
    )
    .bind(request_id)
    .fetch_all(pool)
    .await?;
    let fill = sqlx::query_as(
        r#"
        SELECT exchange, symbol, side, quantity, exchange_order_id, status, fill_price
        FROM fills WHERE request_id = $1
        "#,
    )
    .bind(request_id)
    .fetch_optional(pool)
    .await?;
    Ok(Trace {
        request_id,
        events,
        fill,
    })
}

/// The trace as a table for people.
pub fn render(trace: &Trace) -> String {
    let mut out = format!("signal {}\n", trace.request_id);
    for event in &trace.events {
        let _ = writeln!(
            out,
            "{}  {:<8}  {:<5}  {}",
            event
                .created_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            escape(&event.worker),
            escape(&event.severity),
            escape(&event.message)
        );
    }
    match &trace.fill {
        Some(fill) => {
            let _ = writeln!(
                out,
                "fill: {} {} {} {}{} — order {}, status {}",
                escape(&fill.exchange),
                escape(&fill.side),
                fill.quantity,
                escape(&fill.symbol),
                fill.fill_price
                    .map(|p| format!(" @ {p}"))
                    .unwrap_or_default(),
                escape(fill.exchange_order_id.as_deref().unwrap_or("-")),
                escape(&fill.status),
            );
        }
        None => out.push_str("fill: none recorded\n"),
    }
    out
}

/// Prints the trace; fails when nothing is known about the request id.
pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let pool = hoox_common::db::connect_existing(&args.database.database_url, 1)
        .await
        .context("cannot open the database")?;
    let trace = load(&pool, args.request_id).await?;
    if trace.events.is_empty() && trace.fill.is_none() {
        anyhow::bail!("nothing is recorded for request id {}", args.request_id);
    }
    if args.json {
        println!("{}", terminal::json(&trace)?);
    } else {
        print!("{}", render(&trace));
    }
    Ok(())
}
