//! `hoox positions reconcile [--exchange X] [--adopt] [--json]`: the ledger against
//! what each exchange holds, read with one signed read-only call per environment.
//!
//! - Futures: per symbol, the net quantity decides; entry prices are shown side by
//!   side, and an entry that differs while the quantity matches is reported but is not
//!   a difference (quantity is what a later reduce-only order relies on).
//! - Spot: balances are per asset, the ledger per symbol: a symbol's base asset is the
//!   symbol less its quote currency ([`QUOTE_CURRENCIES`], longest suffix first), and
//!   the ledger's symbols of one asset are summed. Quote currencies are cash, not
//!   positions: their balances are compared only when the ledger trades them as a base.
//!   An asset held with no ledger row is held outside hoox: a difference.
//! - Paper keeps no book apart from the ledger: ledger only, never a difference.
//! - An exchange that cannot be read is reported as such, never as flat.
//!
//! `--adopt` writes the exchange's figures in one transaction per environment, with a
//! `position_adopted` audit event per row changed. The ledger is read before the
//! exchange, and re-read under row locks before writing: a row that a fill moved in
//! between is left alone and reported, so an adoption never overwrites a fill.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::join_all;
use hoox_common::config::DatabaseArgs;
use hoox_common::event::{Event, PositionFigures};
use hoox_common::logs::{insert_logs, LogEntry, Worker};
use hoox_common::runtime_config::RuntimeConfig;
use hoox_common::signal::ExchangeName;
use hoox_consumer::config::ExchangeArgs;
use hoox_consumer::exchange::paper::Paper;
use hoox_consumer::exchange::{Balance, ErrorClass, Exchange, ExchangeError, Holdings, Position};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

use super::{load, PositionRow};
use crate::commands::Exit;
use crate::terminal::{self, escape};

/// Quote currencies, most preferred first: stripped from a spot symbol (the longest
/// that ends it) to find its base asset, and not compared as holdings unless the ledger
/// trades them as a base. An adopted asset without a ledger row gets a row for its
/// first quote, `USDT`.
pub const QUOTE_CURRENCIES: [&str; 13] = [
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI", "USD", "EUR", "GBP", "TRY", "BRL", "BTC", "ETH",
];

/// How long one environment may take to answer, clock sync and pages included.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments of `hoox positions reconcile`.
#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Reconcile one exchange only: `bybit`, `binance`, `mexc` or `paper`; it must have
    /// keys (paper needs none).
    #[arg(long)]
    pub exchange: Option<ExchangeName>,

    /// Take the exchange's figures for every row that differs, with an audit event per
    /// row; never from an exchange that could not be read.
    #[arg(long)]
    pub adopt: bool,

    /// Print JSON for scripts instead of tables.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub keys: ExchangeArgs,
}

/// One exchange environment to reconcile: a provider, live or testnet.
#[derive(Clone)]
pub struct Venue {
    /// The exchange's provider.
    pub provider: Arc<dyn Exchange>,
    /// Its test environment rather than the live one.
    pub testnet: bool,
}

/// The providers `keys` sets up, and paper's.
pub fn providers(keys: &ExchangeArgs, pool: &PgPool) -> Vec<Arc<dyn Exchange>> {
    let mut providers = keys.providers();
    // The paper exchange answers from no book: its config is never read.
    providers.push(Arc::new(Paper::new(
        pool.clone(),
        RuntimeConfig::fixed(Default::default()),
    )));
    providers
}

/// The environments of `providers` that have keys (paper needs none); with `only`,
/// those of that exchange, which is an error when it has no keys at all.
pub fn venues(
    providers: &[Arc<dyn Exchange>],
    only: Option<ExchangeName>,
) -> Result<Vec<Venue>, String> {
    let mut venues = Vec::new();
    for provider in providers {
        if only.is_some_and(|name| name != provider.name()) {
            continue;
        }
        for testnet in [false, true] {
            if provider.has_credentials(testnet) {
                venues.push(Venue {
                    provider: Arc::clone(provider),
                    testnet,
                });
            }
        }
    }
    match only {
        Some(name) if venues.is_empty() => {
            let var = name.as_str().to_ascii_uppercase();
            Err(format!(
                "{name} has no API keys, live or testnet: set {var}_API_KEY and {var}_API_SECRET (or {var}_TESTNET_API_KEY and {var}_TESTNET_API_SECRET) to reconcile it"
            ))
        }
        _ => Ok(venues),
    }
}

/// What one environment holds: futures positions or spot balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Book {
    /// Open positions, compared per symbol.
    Futures,
    /// Balances, compared per asset.
    Spot,
}

/// Why an exchange could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Not reached, no answer in time, a 5xx, a rate limit or an unreadable answer:
    /// trying again later may work.
    Unavailable,
    /// The exchange refused the call: keys, permissions, IP allowlist, missing keys.
    Refused,
}

/// How one line of the comparison came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineStatus {
    /// Same quantity, and for futures the same entry.
    Match,
    /// Same quantity, another entry price: shown, not a difference.
    EntryDiffers,
    /// The quantities differ.
    QuantityDiffers,
    /// The exchange holds it and the ledger has no row for it.
    OutsideHoox,
}

impl LineStatus {
    /// Whether it is a difference (it fails the exit status).
    pub fn is_difference(self) -> bool {
        matches!(self, Self::QuantityDiffers | Self::OutsideHoox)
    }
}

/// What `--adopt` did with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Adoption {
    /// The ledger now holds the exchange's figures.
    Adopted,
    /// A fill moved the ledger's rows after they were read: left alone.
    ChangedMeanwhile,
}

/// One symbol (futures) or asset (spot), ledger beside exchange.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// The symbol (futures) or the asset (spot).
    pub instrument: String,
    /// The ledger's symbols counted in it (spot: every symbol of the asset).
    pub symbols: Vec<String>,
    /// The ledger's net quantity (spot: summed over `symbols`).
    pub ledger_quantity: Decimal,
    /// The exchange's quantity (spot: free plus locked).
    pub exchange_quantity: Decimal,
    /// The ledger's average entry (spot: when one symbol holds the asset).
    pub ledger_entry_price: Option<Decimal>,
    /// The exchange's entry price (futures only).
    pub exchange_entry_price: Option<Decimal>,
    /// How it compares.
    pub status: LineStatus,
    /// What `--adopt` did; `None` without it or when nothing was to adopt.
    pub adoption: Option<Adoption>,
}

/// What reconcile found for one exchange environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(
    tag = "status",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Outcome {
    /// The exchange was read and compared with the ledger.
    Compared {
        /// Futures or spot.
        book: Book,
        /// One per symbol or asset either side holds, by name.
        lines: Vec<Line>,
        /// Spot ledger symbols with no known quote currency: not compared.
        not_compared: Vec<String>,
    },
    /// The exchange keeps no book apart from the ledger (paper): nothing to compare.
    LedgerOnly {
        /// The ledger's rows there.
        ledger_rows: usize,
    },
    /// The exchange could not be read: nothing compared, nothing adopted.
    Unreadable {
        /// Why, in short.
        failure: Failure,
        /// The error's class (`retryable`, `fatal`).
        class: String,
        /// The exchange's own code, when it gave one.
        code: Option<String>,
        /// What went wrong.
        error: String,
    },
    /// The ledger holds open positions where no keys (or another market) are
    /// configured: not checked.
    NotChecked {
        /// The ledger's non-flat rows there.
        open_rows: usize,
    },
}

/// One exchange environment's reconciliation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeReport {
    /// The exchange.
    pub exchange: ExchangeName,
    /// The market the ledger rows belong to.
    pub market: String,
    /// Whether it is the testnet.
    pub testnet: bool,
    /// What was found.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The counts behind the verdict and the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Quantity differences left in the ledger (not adopted).
    pub differences: usize,
    /// Entry prices that differ where quantities match.
    pub entry_differences: usize,
    /// Lines whose exchange figures were adopted.
    pub adopted: usize,
    /// Lines left alone because a fill moved them meanwhile.
    pub changed_meanwhile: usize,
    /// Environments that could not be read.
    pub unreadable: usize,
    /// Ledger groups with open positions that were not checked.
    pub not_checked: usize,
}

impl Summary {
    /// The counts of `reports`.
    pub fn of(reports: &[ExchangeReport]) -> Self {
        let mut summary = Self::default();
        for report in reports {
            match &report.outcome {
                Outcome::Compared { lines, .. } => {
                    for line in lines {
                        match line.adoption {
                            Some(Adoption::Adopted) => summary.adopted += 1,
                            Some(Adoption::ChangedMeanwhile) => {
                                summary.changed_meanwhile += 1;
                            }
                            None => {}
                        }
                        let left = line.adoption != Some(Adoption::Adopted);
                        if left && line.status.is_difference() {
                            summary.differences += 1;
                        } else if left && line.status == LineStatus::EntryDiffers {
                            summary.entry_differences += 1;
                        }
                    }
                }
                Outcome::Unreadable { .. } => summary.unreadable += 1,
                Outcome::NotChecked { .. } => summary.not_checked += 1,
                Outcome::LedgerOnly { .. } => {}
            }
        }
        summary
    }

    /// 0 when everything read matches, 1 when a quantity differs, 2 when an exchange
    /// could not be read (whatever else was found).
    pub fn exit_code(&self) -> u8 {
        if self.unreadable > 0 {
            2
        } else if self.differences > 0 {
            1
        } else {
            0
        }
    }

    /// One line for people.
    pub fn verdict(&self) -> String {
        let mut parts = Vec::new();
        if self.unreadable > 0 {
            parts.push(format!(
                "{} exchange environment(s) could not be read",
                self.unreadable
            ));
        }
        if self.differences > 0 {
            parts.push(format!("{} difference(s)", self.differences));
        }
        if self.adopted > 0 {
            parts.push(format!("{} adopted", self.adopted));
        }
        if self.changed_meanwhile > 0 {
            parts.push(format!(
                "{} not adopted: a fill moved the ledger meanwhile, run again",
                self.changed_meanwhile
            ));
        }
        if self.entry_differences > 0 {
            parts.push(format!(
                "{} entry price difference(s) with matching quantities",
                self.entry_differences
            ));
        }
        if self.not_checked > 0 {
            parts.push(format!(
                "{} ledger group(s) with open positions not checked",
                self.not_checked
            ));
        }
        let head = match self.exit_code() {
            0 => "MATCH",
            1 => "DIFFERENCES",
            _ => "INCOMPLETE",
        };
        if parts.is_empty() {
            format!("{head}: the ledger matches every exchange read")
        } else {
            format!("{head}: {}", parts.join("; "))
        }
    }
}

/// The ledger's figures of one row, as read before the exchange and re-read under lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    quantity: Decimal,
    avg_entry_price: Option<Decimal>,
    fills: i64,
}

/// Reconciles the ledger in `pool` with every venue, taking the exchanges' figures
/// with `adopt`; prints nothing. Ledger groups with open positions that no venue covers
/// (of `only`, when given) are reported as not checked. An error is the database's.
pub async fn reconcile(
    pool: &PgPool,
    venues: &[Venue],
    only: Option<ExchangeName>,
    adopt: bool,
) -> Result<Vec<ExchangeReport>, sqlx::Error> {
    // The ledger first: a fill landing before the exchange answers then shows as a
    // change under lock, never as a figure to overwrite.
    let ledger = load(pool).await?;
    let reads = join_all(venues.iter().map(|venue| async {
        let answer =
            tokio::time::timeout(READ_TIMEOUT, venue.provider.positions(venue.testnet)).await;
        answer.unwrap_or_else(|_| {
            Err(ExchangeError::new(
                ErrorClass::Retryable,
                format!("no answer within {READ_TIMEOUT:?}"),
            ))
        })
    }))
    .await;

    let mut reports = Vec::new();
    for (venue, read) in venues.iter().zip(reads) {
        let exchange = venue.provider.name();
        let market = venue.provider.market();
        let rows: Vec<&PositionRow> = ledger
            .iter()
            .filter(|row| {
                row.exchange == exchange.as_str()
                    && row.market == market
                    && row.testnet == venue.testnet
            })
            .collect();
        let mut outcome = match read {
            Ok(Holdings::Positions(positions)) => compare_futures(&rows, &positions),
            Ok(Holdings::Balances(balances)) => compare_spot(&rows, &balances),
            Ok(Holdings::LedgerOnly) => Outcome::LedgerOnly {
                ledger_rows: rows.len(),
            },
            Err(err) => unreadable(&err),
        };
        if venue.testnet && outcome == (Outcome::LedgerOnly { ledger_rows: 0 }) {
            // Paper's test environment, never traded: nothing to say.
            continue;
        }
        if adopt {
            if let Outcome::Compared { book, lines, .. } = &mut outcome {
                let place = Place {
                    exchange,
                    market,
                    testnet: venue.testnet,
                };
                adopt_lines(pool, &place, *book, &rows, lines).await?;
            }
        }
        reports.push(ExchangeReport {
            exchange,
            market: market.to_owned(),
            testnet: venue.testnet,
            outcome,
        });
    }

    let mut uncovered: BTreeMap<(&str, &str, bool), usize> = BTreeMap::new();
    for row in &ledger {
        let covered = venues.iter().any(|venue| {
            venue.provider.name().as_str() == row.exchange
                && venue.provider.market() == row.market
                && venue.testnet == row.testnet
        });
        let wanted = only.is_none_or(|name| name.as_str() == row.exchange);
        if !covered && wanted && !row.quantity.is_zero() {
            *uncovered
                .entry((&row.exchange, &row.market, row.testnet))
                .or_default() += 1;
        }
    }
    for ((exchange, market, testnet), open_rows) in uncovered {
        // Only names of exchanges hoox knows are ever written to the ledger.
        let Ok(exchange) = exchange.parse::<ExchangeName>() else {
            continue;
        };
        reports.push(ExchangeReport {
            exchange,
            market: market.to_owned(),
            testnet,
            outcome: Outcome::NotChecked { open_rows },
        });
    }
    Ok(reports)
}

fn unreadable(err: &ExchangeError) -> Outcome {
    let failure = match err.class {
        ErrorClass::Retryable | ErrorClass::Ambiguous => Failure::Unavailable,
        ErrorClass::Fatal | ErrorClass::Duplicate => Failure::Refused,
    };
    Outcome::Unreadable {
        failure,
        class: err.class.as_str().to_owned(),
        code: err.code.map(|code| code.to_string()),
        error: err.message.clone(),
    }
}

fn compare_futures(rows: &[&PositionRow], positions: &[Position]) -> Outcome {
    // A hedge-mode account can report a symbol twice (long and short side): the net
    // quantity is their sum, and no single entry price describes it.
    let mut held: BTreeMap<String, (Decimal, Option<Decimal>)> = BTreeMap::new();
    for position in positions {
        let entry = (position.entry_price > Decimal::ZERO).then_some(position.entry_price);
        held.entry(position.symbol.as_str().to_owned())
            .and_modify(|(quantity, price)| {
                *quantity += position.quantity;
                *price = None;
            })
            .or_insert((position.quantity, entry));
    }
    let symbols: BTreeSet<String> = rows
        .iter()
        .map(|row| row.symbol.clone())
        .chain(held.keys().cloned())
        .collect();
    let lines = symbols
        .into_iter()
        .map(|symbol| {
            let row = rows.iter().find(|row| row.symbol == symbol);
            let (exchange_quantity, exchange_entry_price) =
                held.get(&symbol).map_or((Decimal::ZERO, None), |(q, p)| {
                    (q.normalize(), p.map(|p| p.normalize()))
                });
            let exchange_entry_price =
                exchange_entry_price.filter(|_| !exchange_quantity.is_zero());
            let ledger_quantity = row.map_or(Decimal::ZERO, |row| row.quantity);
            let ledger_entry_price = row.and_then(|row| row.avg_entry_price);
            let status = if ledger_quantity != exchange_quantity {
                if row.is_none() {
                    LineStatus::OutsideHoox
                } else {
                    LineStatus::QuantityDiffers
                }
            } else if !exchange_quantity.is_zero() && ledger_entry_price != exchange_entry_price {
                LineStatus::EntryDiffers
            } else {
                LineStatus::Match
            };
            Line {
                symbols: row.map(|row| vec![row.symbol.clone()]).unwrap_or_default(),
                instrument: symbol,
                ledger_quantity,
                exchange_quantity,
                ledger_entry_price,
                exchange_entry_price,
                status,
                adoption: None,
            }
        })
        .collect();
    Outcome::Compared {
        book: Book::Futures,
        lines,
        not_compared: Vec::new(),
    }
}

/// The base asset of a spot `symbol`: the symbol less the longest quote currency that
/// ends it; `None` when none does (or nothing is left before it).
pub fn base_asset(symbol: &str) -> Option<&str> {
    QUOTE_CURRENCIES
        .iter()
        .filter(|quote| symbol.len() > quote.len() && symbol.ends_with(*quote))
        .max_by_key(|quote| quote.len())
        .map(|quote| &symbol[..symbol.len() - quote.len()])
}

fn compare_spot(rows: &[&PositionRow], balances: &[Balance]) -> Outcome {
    let mut by_asset: BTreeMap<String, Vec<&PositionRow>> = BTreeMap::new();
    let mut not_compared = Vec::new();
    for row in rows {
        match base_asset(&row.symbol) {
            Some(asset) => by_asset.entry(asset.to_owned()).or_default().push(row),
            None => not_compared.push(row.symbol.clone()),
        }
    }
    let mut held: BTreeMap<String, Decimal> = BTreeMap::new();
    for balance in balances {
        *held.entry(balance.asset.to_ascii_uppercase()).or_default() += balance.total;
    }
    let assets: BTreeSet<String> = by_asset
        .keys()
        .cloned()
        .chain(
            held.keys()
                .filter(|asset| !QUOTE_CURRENCIES.contains(&asset.as_str()))
                .cloned(),
        )
        .collect();
    let lines = assets
        .into_iter()
        .map(|asset| {
            let rows = by_asset.get(&asset).map(Vec::as_slice).unwrap_or_default();
            let ledger_quantity: Decimal = rows.iter().map(|row| row.quantity).sum();
            let exchange_quantity = held.get(&asset).copied().unwrap_or_default().normalize();
            let status = if ledger_quantity == exchange_quantity {
                LineStatus::Match
            } else if rows.is_empty() {
                LineStatus::OutsideHoox
            } else {
                LineStatus::QuantityDiffers
            };
            Line {
                symbols: rows.iter().map(|row| row.symbol.clone()).collect(),
                ledger_quantity: ledger_quantity.normalize(),
                exchange_quantity,
                ledger_entry_price: match rows {
                    [row] => row.avg_entry_price,
                    _ => None,
                },
                exchange_entry_price: None,
                status,
                adoption: None,
                instrument: asset,
            }
        })
        .collect();
    Outcome::Compared {
        book: Book::Spot,
        lines,
        not_compared,
    }
}

/// Which ledger rows an adoption writes.
struct Place {
    exchange: ExchangeName,
    market: &'static str,
    testnet: bool,
}

/// What adopting one line writes: the row of `symbol`, and the rows whose figures
/// must be as read for it to be written.
struct Write {
    line: usize,
    symbol: String,
    guarded: Vec<String>,
    figures: PositionFigures,
}

/// The write that takes the exchange's figures for `line`, read against `rows`.
fn plan(book: Book, index: usize, line: &Line, rows: &[&PositionRow]) -> Write {
    let find = |symbol: &str| rows.iter().find(|row| row.symbol == symbol);
    match book {
        Book::Futures => Write {
            line: index,
            symbol: line.instrument.clone(),
            guarded: vec![line.instrument.clone()],
            figures: PositionFigures {
                quantity: line.exchange_quantity,
                avg_entry_price: line.exchange_entry_price,
            },
        },
        Book::Spot => {
            // One row takes the difference: the asset's row for the most preferred
            // quote, else a new row for USDT.
            let symbol = QUOTE_CURRENCIES
                .iter()
                .map(|quote| format!("{}{quote}", line.instrument))
                .find(|symbol| line.symbols.contains(symbol))
                .unwrap_or_else(|| format!("{}{}", line.instrument, QUOTE_CURRENCIES[0]));
            let target = find(&symbol);
            let held = target.map_or(Decimal::ZERO, |row| row.quantity);
            let quantity = (line.exchange_quantity - (line.ledger_quantity - held)).normalize();
            // The entry survives only where the row keeps its side.
            let same_side = !quantity.is_zero()
                && !held.is_zero()
                && quantity.is_sign_positive() == held.is_sign_positive();
            let mut guarded = line.symbols.clone();
            if !guarded.contains(&symbol) {
                guarded.push(symbol.clone());
            }
            Write {
                line: index,
                figures: PositionFigures {
                    quantity,
                    avg_entry_price: target
                        .and_then(|row| row.avg_entry_price)
                        .filter(|_| same_side),
                },
                symbol,
                guarded,
            }
        }
    }
}

/// Takes the exchange's figures for every line that does not match, in one
/// transaction with their audit events; a line whose rows a fill moved since `rows`
/// were read is left alone and marked so.
async fn adopt_lines(
    pool: &PgPool,
    place: &Place,
    book: Book,
    rows: &[&PositionRow],
    lines: &mut [Line],
) -> Result<(), sqlx::Error> {
    let writes: Vec<Write> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.status != LineStatus::Match)
        .map(|(index, line)| plan(book, index, line, rows))
        .collect();
    if writes.is_empty() {
        return Ok(());
    }
    let read: BTreeMap<&str, Snapshot> = rows
        .iter()
        .map(|row| {
            (
                row.symbol.as_str(),
                Snapshot {
                    quantity: row.quantity,
                    avg_entry_price: row.avg_entry_price,
                    fills: row.fills,
                },
            )
        })
        .collect();

    let mut tx = pool.begin().await?;
    // Every row of the environment, locked in key order as the consumers lock them: a
    // fill committed since the first read shows here, one not yet committed waits.
    let locked: Vec<(String, Decimal, Option<Decimal>, i64)> = sqlx::query_as(
        r#"
        SELECT symbol, quantity, avg_entry_price, fills FROM positions
        WHERE exchange = $1 AND market = $2 AND testnet = $3
        ORDER BY symbol
        FOR UPDATE
        "#,
    )
    .bind(place.exchange.as_str())
    .bind(place.market)
    .bind(place.testnet)
    .fetch_all(&mut *tx)
    .await?;
    let now: BTreeMap<&str, Snapshot> = locked
        .iter()
        .map(|(symbol, quantity, avg_entry_price, fills)| {
            (
                symbol.as_str(),
                Snapshot {
                    quantity: *quantity,
                    avg_entry_price: *avg_entry_price,
                    fills: *fills,
                },
            )
        })
        .collect();

    let mut entries = Vec::new();
    let mut outcomes = Vec::new();
    for write in &writes {
        // Spot: a row of the asset created since the first read also moved it.
        let appeared = book == Book::Spot
            && now.keys().any(|symbol| {
                !read.contains_key(symbol)
                    && base_asset(symbol) == Some(lines[write.line].instrument.as_str())
            });
        let unchanged = !appeared
            && write
                .guarded
                .iter()
                .all(|symbol| read.get(symbol.as_str()) == now.get(symbol.as_str()));
        if !unchanged {
            outcomes.push((write.line, Adoption::ChangedMeanwhile));
            continue;
        }
        let previous = now.get(write.symbol.as_str()).map(|row| PositionFigures {
            quantity: row.quantity.normalize(),
            avg_entry_price: row.avg_entry_price.map(|p| p.normalize()),
        });
        let statement = if previous.is_some() {
            r#"
            UPDATE positions SET quantity = $5, avg_entry_price = $6, updated_at = now()
            WHERE exchange = $1 AND market = $2 AND testnet = $3 AND symbol = $4
            "#
        } else {
            // A fill may create the row meanwhile: it is then left to the fill.
            r#"
            INSERT INTO positions (exchange, market, testnet, symbol, quantity, avg_entry_price)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT DO NOTHING
            "#
        };
        let written = sqlx::query(statement)
            .bind(place.exchange.as_str())
            .bind(place.market)
            .bind(place.testnet)
            .bind(&write.symbol)
            .bind(write.figures.quantity)
            .bind(write.figures.avg_entry_price)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if written == 0 {
            outcomes.push((write.line, Adoption::ChangedMeanwhile));
            continue;
        }
        entries.push(LogEntry::now(
            Worker::Cli,
            None,
            Event::PositionAdopted {
                exchange: place.exchange,
                market: place.market.to_owned(),
                testnet: place.testnet,
                symbol: write.symbol.clone(),
                previous,
                adopted: write.figures,
            },
        ));
        outcomes.push((write.line, Adoption::Adopted));
    }
    insert_logs(&mut *tx, &entries).await?;
    tx.commit().await?;
    for (line, adoption) in outcomes {
        lines[line].adoption = Some(adoption);
    }
    Ok(())
}

fn environment(testnet: bool) -> &'static str {
    if testnet {
        "testnet"
    } else {
        "live"
    }
}

fn price(price: Option<Decimal>, quantity: Decimal) -> String {
    match price {
        Some(price) => price.to_string(),
        None if quantity.is_zero() => "-".to_owned(),
        None => "unknown".to_owned(),
    }
}

fn status_text(line: &Line) -> String {
    let status = match line.status {
        LineStatus::Match => "match",
        LineStatus::EntryDiffers => "entry differs",
        LineStatus::QuantityDiffers => "QUANTITY DIFFERS",
        LineStatus::OutsideHoox => "HELD OUTSIDE HOOX",
    };
    match line.adoption {
        Some(Adoption::Adopted) => format!("{status}: adopted"),
        Some(Adoption::ChangedMeanwhile) => {
            format!("{status}: NOT ADOPTED, a fill moved the ledger meanwhile")
        }
        None => status.to_owned(),
    }
}

/// The reports for people: a heading and a table per exchange environment, then the
/// verdict.
pub fn render(reports: &[ExchangeReport]) -> String {
    let mut out = String::new();
    for report in reports {
        let heading = format!(
            "{} {} {}",
            report.exchange,
            report.market,
            environment(report.testnet)
        );
        match &report.outcome {
            Outcome::Compared {
                book,
                lines,
                not_compared,
            } => {
                let flat = lines
                    .iter()
                    .filter(|line| {
                        line.status == LineStatus::Match && line.exchange_quantity.is_zero()
                    })
                    .count();
                let shown: Vec<&Line> = lines
                    .iter()
                    .filter(|line| {
                        line.status != LineStatus::Match || !line.exchange_quantity.is_zero()
                    })
                    .collect();
                let differences = lines.iter().filter(|l| l.status.is_difference()).count();
                out.push_str(&format!(
                    "{heading} ({}): {}\n",
                    match book {
                        Book::Futures => "positions",
                        Book::Spot => "balances",
                    },
                    match differences {
                        0 => "matches".to_owned(),
                        n => format!("{n} difference(s)"),
                    }
                ));
                if !shown.is_empty() {
                    out.push_str(&match book {
                        Book::Futures => futures_table(&shown),
                        Book::Spot => spot_table(&shown),
                    });
                }
                if flat > 0 {
                    out.push_str(&format!(
                        "({flat} flat symbol(s) match and are not shown)\n"
                    ));
                }
                if !not_compared.is_empty() {
                    out.push_str(&format!(
                        "not compared (no known quote currency): {}\n",
                        escape(&not_compared.join(", "))
                    ));
                }
            }
            Outcome::LedgerOnly { ledger_rows } => out.push_str(&format!(
                "{heading}: ledger only ({ledger_rows} row(s)): the exchange keeps no book to compare with\n"
            )),
            Outcome::Unreadable {
                failure,
                class,
                code,
                error,
            } => out.push_str(&format!(
                "{heading}: {} ({class}{}), nothing compared: {}\n",
                match failure {
                    Failure::Unavailable => "UNAVAILABLE",
                    Failure::Refused => "REFUSED",
                },
                code.as_ref().map(|c| format!(", code {c}")).unwrap_or_default(),
                escape(error)
            )),
            Outcome::NotChecked { open_rows } => out.push_str(&format!(
                "{heading}: NOT CHECKED: the ledger holds {open_rows} open position(s) here, and no keys for this exchange, market and environment are configured\n"
            )),
        }
        out.push('\n');
    }
    if reports.is_empty() {
        out.push_str("no exchange to reconcile\n");
    }
    out.push_str(&Summary::of(reports).verdict());
    out.push('\n');
    out
}

fn futures_table(lines: &[&Line]) -> String {
    let header = [
        "SYMBOL",
        "LEDGER QTY",
        "EXCHANGE QTY",
        "LEDGER ENTRY",
        "EXCHANGE ENTRY",
        "STATUS",
    ];
    let cells: Vec<Vec<String>> = lines
        .iter()
        .map(|line| {
            vec![
                line.instrument.clone(),
                line.ledger_quantity.to_string(),
                line.exchange_quantity.to_string(),
                price(line.ledger_entry_price, line.ledger_quantity),
                price(line.exchange_entry_price, line.exchange_quantity),
                status_text(line),
            ]
        })
        .collect();
    terminal::table(&header, &cells, &[false, true, true, true, true, false])
}

fn spot_table(lines: &[&Line]) -> String {
    let header = [
        "ASSET",
        "LEDGER SYMBOLS",
        "LEDGER QTY",
        "EXCHANGE QTY",
        "STATUS",
    ];
    let cells: Vec<Vec<String>> = lines
        .iter()
        .map(|line| {
            vec![
                line.instrument.clone(),
                if line.symbols.is_empty() {
                    "-".to_owned()
                } else {
                    line.symbols.join(",")
                },
                line.ledger_quantity.to_string(),
                line.exchange_quantity.to_string(),
                status_text(line),
            ]
        })
        .collect();
    terminal::table(&header, &cells, &[false, false, true, true, false])
}

/// `--json`: the reports and the counts behind the exit status.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonReport<'a> {
    exchanges: &'a [ExchangeReport],
    summary: Summary,
    exit_code: u8,
}

/// Runs `hoox positions reconcile`: exits 0 when everything matches, 1 on a
/// difference, 2 when an exchange could not be read or reconcile could not run.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    let reports = match read(&args).await {
        Ok(reports) => reports,
        Err(err) => {
            return Err(Exit {
                code: 2,
                message: Some(format!("{err:#}")),
            }
            .into())
        }
    };
    let summary = Summary::of(&reports);
    if args.json {
        println!(
            "{}",
            terminal::json(&JsonReport {
                exchanges: &reports,
                summary,
                exit_code: summary.exit_code(),
            })?
        );
    } else {
        print!("{}", render(&reports));
    }
    // The output ends with the verdict (or holds the exit code, with --json).
    match summary.exit_code() {
        0 => Ok(()),
        code => Err(Exit {
            code,
            message: None,
        }
        .into()),
    }
}

async fn read(args: &ReconcileArgs) -> anyhow::Result<Vec<ExchangeReport>> {
    let pool = hoox_common::db::connect_existing(&args.database.database_url, 2)
        .await
        .context("cannot open the database")?;
    let venues =
        venues(&providers(&args.keys, &pool), args.exchange).map_err(anyhow::Error::msg)?;
    let reports = reconcile(&pool, &venues, args.exchange, args.adopt)
        .await
        .context("cannot read or write the positions ledger")?;
    pool.close().await;
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spot_symbol_loses_its_longest_quote() {
        assert_eq!(base_asset("BTCUSDT"), Some("BTC"));
        assert_eq!(base_asset("BTCFDUSD"), Some("BTC"));
        assert_eq!(base_asset("ETHTUSD"), Some("ETH"));
        assert_eq!(base_asset("SOLUSD"), Some("SOL"));
        assert_eq!(base_asset("ETHBTC"), Some("ETH"));
        assert_eq!(base_asset("USDCUSDT"), Some("USDC"));
        assert_eq!(base_asset("USDT"), None);
        assert_eq!(base_asset("BTCXYZ"), None);
    }

    #[test]
    fn unreadable_exchanges_win_over_differences_in_the_exit_status() {
        let summary = Summary {
            differences: 3,
            ..Summary::default()
        };
        assert_eq!(summary.exit_code(), 1);
        let summary = Summary {
            unreadable: 1,
            ..summary
        };
        assert_eq!(summary.exit_code(), 2);
        let summary = Summary {
            entry_differences: 2,
            not_checked: 1,
            ..Summary::default()
        };
        assert_eq!(summary.exit_code(), 0, "{}", summary.verdict());
    }
}
