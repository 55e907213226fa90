//! `hoox positions [--json]`: the positions ledger, per exchange, market, environment
//! and symbol, as the consumers keep it from every fill; `hoox positions reconcile`
//! compares it with what the exchanges hold.

pub mod reconcile;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use hoox_common::config::DatabaseArgs;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

use crate::terminal;

/// Arguments of `hoox positions`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PositionsArgs {
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(subcommand)]
    pub command: Option<PositionsCommand>,
}

/// The subcommands of `hoox positions`.
#[derive(Debug, clap::Subcommand)]
pub enum PositionsCommand {
    /// Compare the ledger with what each exchange holds (open futures positions, spot
    /// balances), read with signed read-only calls; `--adopt` takes the exchange's
    /// figures.
    ///
    /// Exits 0 when everything matches, 1 when a quantity differs, 2 when an exchange
    /// could not be read (or reconcile could not run), whatever else it found.
    Reconcile(Box<reconcile::ReconcileArgs>),
}

/// One position of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct PositionRow {
    /// Exchange name.
    pub exchange: String,
    /// The exchange's market (`linear`, `usdm`, `spot`, `futures`, `paper`).
    pub market: String,
    /// Whether it is the testnet's.
    pub testnet: bool,
    /// Instrument.
    pub symbol: String,
    /// `long`, `short` or `flat`.
    pub side: String,
    /// Signed net quantity: positive long, negative short.
    pub quantity: Decimal,
    /// Average entry price; `None` when flat or unknown (a fill without a price).
    pub avg_entry_price: Option<Decimal>,
    /// Realized PnL in the quote currency, reported fees subtracted.
    pub realized_pnl: Decimal,
    /// Reported fees in the quote currency.
    pub fees: Decimal,
    /// False once a fill closed something that could not be priced.
    pub complete: bool,
    /// Fills recorded in the position.
    pub fills: i64,
    /// When a fill last changed it.
    pub updated_at: DateTime<Utc>,
}

/// Reads the ledger, ordered by exchange, market, environment and symbol.
pub async fn load(pool: &PgPool) -> Result<Vec<PositionRow>, sqlx::Error> {
    let mut rows: Vec<PositionRow> = sqlx::query_as(
        r#"
        SELECT exchange, market, testnet, symbol,
               CASE WHEN quantity > 0 THEN 'long' WHEN quantity < 0 THEN 'short' ELSE 'flat' END AS side,
               quantity, avg_entry_price, realized_pnl, fees, complete, fills, updated_at
        FROM positions
        ORDER BY exchange, market, testnet, symbol
        "#,
    )
    .fetch_all(pool)
    .await?;
    for row in &mut rows {
        row.quantity = row.quantity.normalize();
        row.avg_entry_price = row.avg_entry_price.map(|p| p.normalize());
        row.realized_pnl = row.realized_pnl.normalize();
        row.fees = row.fees.normalize();
    }
    Ok(rows)
}

/// The ledger as a table for people.
pub fn render(rows: &[PositionRow]) -> String {
    if rows.is_empty() {
        return "no positions recorded yet\n".to_owned();
    }
    let header = [
        "EXCHANGE",
        "MARKET",
        "ENV",
        "SYMBOL",
        "SIDE",
        "NET QTY",
        "AVG ENTRY",
        "REALIZED PNL",
        "FEES",
        "FILLS",
        "UPDATED",
    ];
    let right = [
        false, false, false, false, false, true, true, true, true, true, false,
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let entry = match row.avg_entry_price {
                Some(price) => price.to_string(),
                None if row.quantity.is_zero() => "-".to_owned(),
                None => "unknown".to_owned(),
            };
            // An asterisk: a closed part could not be priced and is missing.
            let realized = if row.complete {
                row.realized_pnl.to_string()
            } else {
                format!("{}*", row.realized_pnl)
            };
            vec![
                row.exchange.clone(),
                row.market.clone(),
                if row.testnet { "testnet" } else { "live" }.to_owned(),
                row.symbol.clone(),
                row.side.clone(),
                row.quantity.to_string(),
                entry,
                realized,
                row.fees.to_string(),
                row.fills.to_string(),
                row.updated_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            ]
        })
        .collect();
    let mut out = terminal::table(&header, &cells, &right);
    if rows.iter().any(|row| !row.complete) {
        out.push_str("* incomplete: a fill without a price closed part of the position\n");
    }
    out
}

/// Runs `hoox positions` or its subcommand.
pub async fn run(args: PositionsArgs) -> anyhow::Result<()> {
    if let Some(PositionsCommand::Reconcile(args)) = args.command {
        return reconcile::run(*args).await;
    }
    let pool = hoox_common::db::connect_existing(&args.database.database_url, 1)
        .await
        .context("cannot open the database")?;
    let rows = load(&pool).await.context("cannot read the positions")?;
    if args.json {
        println!("{}", terminal::json(&rows)?);
    } else {
        print!("{}", render(&rows));
    }
    Ok(())
}
