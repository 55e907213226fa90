//! `hoox report [--from DATE] [--to DATE] [--format table|csv|json]`: fills, traded
//! volume and realized PnL per UTC day, exchange, environment and symbol.

use std::fmt::Write as _;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use hoox_common::config::DatabaseArgs;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

use crate::terminal;

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// RFC 4180 CSV with a header row, for spreadsheets.
    Csv,
    /// A JSON array, for scripts.
    Json,
}

/// Arguments of `hoox report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// First UTC day included, as YYYY-MM-DD [default: the first fill].
    #[arg(long, value_parser = parse_day)]
    pub from: Option<NaiveDate>,

    /// Last UTC day included, as YYYY-MM-DD [default: the last fill].
    #[arg(long, value_parser = parse_day)]
    pub to: Option<NaiveDate>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// A UTC day written as YYYY-MM-DD.
pub fn parse_day(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|err| format!("`{text}` is not a date as YYYY-MM-DD (a UTC day): {err}"))
}

/// One day's fills of one symbol on one exchange and environment.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ReportRow {
    /// The UTC day the fills executed.
    pub day: NaiveDate,
    /// Exchange name.
    pub exchange: String,
    /// Whether they were on the testnet.
    pub testnet: bool,
    /// Instrument.
    pub symbol: String,
    /// How many fills.
    pub fills: i64,
    /// Quote volume of the priced fills: Σ price × filled quantity.
    pub volume: Decimal,
    /// Realized PnL in the quote currency, reported fees subtracted.
    pub realized_pnl: Decimal,
    /// Reported fees in the quote currency; `None` when no fill reported one.
    pub fees: Option<Decimal>,
    /// Fills whose volume or realized PnL is unknown (no price, or recorded before the
    /// ledger), so missing from those columns.
    pub incomplete: i64,
}

/// The instant a UTC day starts.
fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

/// The report's rows between `from` and `to` (UTC days, both included), by day,
/// exchange, environment and symbol. Fails when `from` is after `to`.
pub async fn load(
    pool: &PgPool,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> anyhow::Result<Vec<ReportRow>> {
    if let (Some(from), Some(to)) = (from, to) {
        anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
    }
    let after = from.map(start_of);
    let before = to
        .map(|to| {
            to.succ_opt()
                .map(start_of)
                .context("--to is the last day chrono knows")
        })
        .transpose()?;
    let mut rows: Vec<ReportRow> = sqlx::query_as(
        r#"
        SELECT (executed_at AT TIME ZONE 'UTC')::date AS day, exchange, testnet, symbol,
               count(*) AS fills,
               coalesce(sum(fill_price * coalesce(
                   fill_quantity, CASE WHEN order_type = 'market' THEN quantity END)), 0) AS volume,
               coalesce(sum(realized_pnl), 0) AS realized_pnl,
               sum(fee) AS fees,
               count(*) FILTER (WHERE fill_price IS NULL OR realized_pnl IS NULL) AS incomplete
        FROM fills
        WHERE ($1::timestamptz IS NULL OR executed_at >= $1)
          AND ($2::timestamptz IS NULL OR executed_at < $2)
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
        "#,
    )
    .bind(after)
    .bind(before)
    .fetch_all(pool)
    .await
    .context("cannot read the fills")?;
    for row in &mut rows {
        row.volume = row.volume.normalize();
        row.realized_pnl = row.realized_pnl.normalize();
        row.fees = row.fees.map(|f| f.normalize());
    }
    Ok(rows)
}

fn environment(testnet: bool) -> &'static str {
    if testnet {
        "testnet"
    } else {
        "live"
    }
}

/// The report as a table for people.
pub fn render_table(rows: &[ReportRow]) -> String {
    if rows.is_empty() {
        return "no fills in this period\n".to_owned();
    }
    let header = [
        "DAY",
        "EXCHANGE",
        "ENV",
        "SYMBOL",
        "FILLS",
        "VOLUME",
        "REALIZED PNL",
        "FEES",
        "INCOMPLETE",
    ];
    let right = [false, false, false, false, true, true, true, true, true];
    let cells: Vec<Vec<String>> = rows.iter().map(|row| fields(row, "-").to_vec()).collect();
    terminal::table(&header, &cells, &right)
}

/// A row's columns in the report's order; `no_fee` where no fee was reported.
fn fields(row: &ReportRow, no_fee: &str) -> [String; 9] {
    [
        row.day.to_string(),
        row.exchange.clone(),
        environment(row.testnet).to_owned(),
        row.symbol.clone(),
        row.fills.to_string(),
        row.volume.to_string(),
        row.realized_pnl.to_string(),
        row.fees
            .map_or_else(|| no_fee.to_owned(), |f| f.to_string()),
        row.incomplete.to_string(),
    ]
}

/// One CSV field, quoted as RFC 4180 says when it holds a comma, a quote or a line
/// break (a quote inside is doubled).
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The report as RFC 4180 CSV: a header row, CRLF line ends, ISO dates, plain
/// decimals, and an empty field for fees nobody reported.
pub fn render_csv(rows: &[ReportRow]) -> String {
    let mut out =
        "date,exchange,environment,symbol,fills,volume,realized_pnl,fees,incomplete_fills\r\n"
            .to_owned();
    for row in rows {
        let line: Vec<String> = fields(row, "").iter().map(|f| csv_field(f)).collect();
        let _ = write!(out, "{}\r\n", line.join(","));
    }
    out
}

/// Runs `hoox report`.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let pool = hoox_common::db::connect_existing(&args.database.database_url, 1)
        .await
        .context("cannot open the database")?;
    let rows = load(&pool, args.from, args.to).await?;
    match args.format {
        Format::Table => print!("{}", render_table(&rows)),
        Format::Csv => print!("{}", render_csv(&rows)),
        Format::Json => println!("{}", terminal::json(&rows)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_yyyy_mm_dd_and_anything_else_is_named_in_the_error() {
        assert_eq!(
            parse_day("2026-12-18"),
            Ok(NaiveDate::from_ymd_opt(2026, 12, 18).unwrap())
        );
        for bad in ["2026-13-01", "18/12/2026", "yesterday", ""] {
            let err = parse_day(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
            assert!(err.contains("YYYY-MM-DD"), "{err}");
        }
    }

    #[test]
    fn csv_fields_are_quoted_as_rfc_4180_says() {
        assert_eq!(csv_field("BTCUSDT"), "BTCUSDT");
        assert_eq!(csv_field("-12.5"), "-12.5");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
