//! The consumer's writes: the claim on each request id before its order is sent, and
//! one transaction per batch for its fills, the positions they move, audit rows and
//! execution outcomes.
//!
//! A claim is two things. A PostgreSQL advisory lock, held on the consumer's lease
//! connection from the claim until the outcome is committed, keeps two consumers from
//! executing the same request id at once; if the consumer dies, the server drops its
//! connection and the locks with it. And a
//! row in `executions`, written before the order is sent, tells every later delivery
//! of that request id whether its attempt already ran, so a copy is never executed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use hoox_common::logs::{bind_entries, LogEntry, INSERT_ENTRIES};
use hoox_common::signal::Side;
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::ledger::{Position, Trade};

/// One `fills` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Fill {
    /// The signal's id.
    pub request_id: Uuid,
    /// Exchange name.
    pub exchange: String,
    /// The market the exchange trades (`linear`, `usdm`, `spot`, `futures`, `paper`).
    pub market: String,
    /// Whether the exchange was `paper`.
    pub paper: bool,
    /// Whether the testnet was used.
    pub testnet: bool,
    /// Instrument.
    pub symbol: String,
    /// Signal action.
    pub action: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Reduce-only.
    pub reduce_only: bool,
    /// Requested quantity.
    pub quantity: Decimal,
    /// Requested leverage.
    pub leverage: Option<i32>,
    /// `market` or `limit`.
    pub order_type: String,
    /// Requested price.
    pub requested_price: Option<Decimal>,
    /// Client order id sent.
    pub client_order_id: String,
    /// The exchange's order id.
    pub exchange_order_id: Option<String>,
    /// The exchange's order status.
    pub status: String,
    /// Average fill price.
    pub fill_price: Option<Decimal>,
    /// Filled quantity.
    pub fill_quantity: Option<Decimal>,
    /// The fee in the quote currency, when the exchange reported one.
    pub fee: Option<Decimal>,
    /// The exchange's raw answer.
    pub raw_response: Value,
    /// When ingest accepted the signal.
    pub received_at: DateTime<Utc>,
    /// When the exchange took the order.
    pub executed_at: DateTime<Utc>,
}

/// How an attempt at executing a request id ended, as `executions.state` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionState {
    /// Started; its outcome is not recorded (in flight, or its consumer died).
    Running,
    /// Failed retryably; the next attempt waits in a delay tier.
    Retrying,
    /// Its fill is recorded.
    Filled,
    /// Dead-lettered.
    Dead,
}

impl ExecutionState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Filled => "filled",
            Self::Dead => "dead",
        }
    }

    fn parse(stored: &str) -> Result<Self, sqlx::Error> {
        match stored {
            "running" => Ok(Self::Running),
            "retrying" => Ok(Self::Retrying),
            "filled" => Ok(Self::Filled),
            "dead" => Ok(Self::Dead),
            other => Err(sqlx::Error::Decode(
                format!("unknown execution state `{other}`").into(),
            )),
        }
    }
}

/// One delivery's request id, generation, attempt and place, as the claim needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The signal's id.
    pub request_id: Uuid,
    /// Operator replays so far.
    pub replays: u32,
    /// The attempt this delivery carries, 1 for the first.
    pub attempt: u32,
    /// The main queue it came through.
    pub queue: String,
    /// Its symbol, which a retry holds.
    pub symbol: String,
    /// Since when its age counts.
    pub age_origin: DateTime<Utc>,
}

/// What the claim says about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours to execute. `resumed` when this very attempt was started before and its
    /// outcome never recorded: its order may exist, so look it up before placing.
    Run {
        /// The attempt was started before.
        resumed: bool,
    },
    /// Another consumer holds this request id right now.
    Busy,
    /// A copy: this attempt (or a later one, or a later generation) already ended in
    /// `state`, so executing it would trade a second time.
    Copy {
        /// How the request id's latest attempt ended.
        state: ExecutionState,
    },
}

/// The recorded execution of a request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recorded {
    replays: u32,
    attempt: u32,
    state: ExecutionState,
}

/// Decides a delivery's claim from what `executions` holds for its request id.
fn decide(recorded: Option<Recorded>, delivery: &Attempt) -> Claim {
    let Some(recorded) = recorded else {
        return Claim::Run { resumed: false };
    };
    let copy = Claim::Copy {
        state: recorded.state,
    };
    if delivery.replays != recorded.replays {
        // Only `hoox dlq replay` makes a newer generation.
        return if delivery.replays > recorded.replays {
            Claim::Run { resumed: false }
        } else {
            copy
        };
    }
    match recorded.state {
        ExecutionState::Filled | ExecutionState::Dead => copy,
        ExecutionState::Retrying if delivery.attempt > recorded.attempt => {
            Claim::Run { resumed: false }
        }
        ExecutionState::Retrying => copy,
        ExecutionState::Running if delivery.attempt < recorded.attempt => copy,
        ExecutionState::Running => Claim::Run { resumed: true },
    }
}

/// The advisory-lock key of a request id (a namespace of its own via the seed).
const LOCK_SEED: i64 = 0x686f_6f78;

/// Claims `attempts` (distinct request ids) on `connection`, the consumer's lease
/// connection: locks each request id that no other consumer holds, reads what was
/// recorded of it, and records the attempts it may run as `running` before any order is
/// sent. The locks of the request ids not answered [`Claim::Busy`] stay held on the
/// connection until [`unclaim`]; if the consumer dies, its connection and they go.
pub async fn claim(
    connection: &mut PgConnection,
    attempts: &[Attempt],
) -> Result<Vec<Claim>, sqlx::Error> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = attempts.iter().map(|a| a.request_id).collect();
    let locked: HashMap<Uuid, bool> = sqlx::query_as(
        "SELECT id, pg_try_advisory_lock(hashtextextended(id::text, $2)) FROM unnest($1::uuid[]) AS t(id)",
    )
    .bind(&ids)
    .bind(LOCK_SEED)
    .fetch_all(&mut *connection)
    .await?
    .into_iter()
    .collect();
    // Read after locking, in a statement of its own: its snapshot then includes what
    // the previous holder committed before it let go.
    let rows: Vec<(Uuid, i32, i32, String)> = sqlx::query_as(
        "SELECT request_id, replays, attempt, state FROM executions WHERE request_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *connection)
    .await?;
    let mut recorded = HashMap::with_capacity(rows.len());
    for (id, replays, attempt, state) in rows {
        recorded.insert(
            id,
            Recorded {
                replays: u32::try_from(replays).unwrap_or_default(),
                attempt: u32::try_from(attempt).unwrap_or_default(),
                state: ExecutionState::parse(&state)?,
            },
        );
    }
    let claims: Vec<Claim> = attempts
        .iter()
        .map(|a| match locked.get(&a.request_id) {
            Some(true) => decide(recorded.get(&a.request_id).copied(), a),
            _ => Claim::Busy,
        })
        .collect();
    let running: Vec<&Attempt> = attempts
        .iter()
        .zip(&claims)
        .filter(|(_, c)| matches!(c, Claim::Run { .. }))
        .map(|(a, _)| a)
        .collect();
    if !running.is_empty() {
        let ids: Vec<Uuid> = running.iter().map(|a| a.request_id).collect();
        let replays: Vec<i64> = running.iter().map(|a| i64::from(a.replays)).collect();
        let attempt: Vec<i64> = running.iter().map(|a| i64::from(a.attempt)).collect();
        let queues: Vec<&str> = running.iter().map(|a| a.queue.as_str()).collect();
        let symbols: Vec<&str> = running.iter().map(|a| a.symbol.as_str()).collect();
        let origins: Vec<DateTime<Utc>> = running.iter().map(|a| a.age_origin).collect();
        sqlx::query(
            r#"
            INSERT INTO executions (request_id, replays, attempt, state, queue, symbol, age_origin)
            SELECT id, replays, attempt, 'running', queue, symbol, age_origin
            FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::timestamptz[])
                AS t(id, replays, attempt, queue, symbol, age_origin)
            ON CONFLICT (request_id) DO UPDATE
                SET replays = EXCLUDED.replays, attempt = EXCLUDED.attempt,
                    state = 'running', queue = EXCLUDED.queue, symbol = EXCLUDED.symbol,
                    age_origin = EXCLUDED.age_origin, updated_at = now()
            "#,
        )
        .bind(&ids)
        .bind(&replays)
        .bind(&attempt)
        .bind(&queues)
        .bind(&symbols)
        .bind(&origins)
        .execute(&mut *connection)
        .await?;
    }
    Ok(claims)
}

/// Lets go of the claims on `request_ids` taken by [`claim`] on `connection`, once their
/// outcomes are committed.
pub async fn unclaim(
    connection: &mut PgConnection,
    request_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    if request_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_unlock(hashtextextended(id::text, $2)) FROM unnest($1::uuid[]) AS t(id)",
    )
    .bind(request_ids)
    .bind(LOCK_SEED)
    .execute(connection)
    .await
    .map(drop)
}

/// A signal waiting for its retry, which holds its symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The waiting signal.
    pub request_id: Uuid,
    /// The symbol it holds.
    pub symbol: String,
    /// Since when its age counts.
    pub age_origin: DateTime<Utc>,
}

/// The holds recorded for main queue `queue`: every signal of it waiting for a retry.
pub async fn holds(pool: &PgPool, queue: &str) -> Result<Vec<Hold>, sqlx::Error> {
    let rows: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        r#"
        SELECT request_id, symbol, age_origin FROM executions
        WHERE queue = $1 AND state = 'retrying' AND symbol IS NOT NULL AND age_origin IS NOT NULL
        "#,
    )
    .bind(queue)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(request_id, symbol, age_origin)| Hold {
            request_id,
            symbol,
            age_origin,
        })
        .collect())
}

/// The outcomes and audit rows of a batch, after `$1`…`$7` (the log columns) and the
/// statement's own parameters from `$n`: appended to each batch statement.
fn settle_and_log(first: usize) -> String {
    let (ids, states) = (first, first + 1);
    format!(
        r#"
        settled AS (
            UPDATE executions e SET state = t.state, updated_at = now()
            FROM UNNEST(${ids}::uuid[], ${states}::text[]) AS t(id, state)
            WHERE e.request_id = ANY(${ids}::uuid[]) AND e.request_id = t.id
        )
        {INSERT_ENTRIES}
        "#
    )
}

/// A batch without fills: its outcomes and audit rows in one statement.
static SETTLE: LazyLock<String> = LazyLock::new(|| format!("WITH {}", settle_and_log(8)));

/// Inserts a batch's fills (a request id already recorded keeps its row: the unique
/// key, not hope, makes this idempotent), makes sure the position of every fill
/// inserted has a row, in key order, and returns the request ids inserted.
const INSERT_FILLS: &str = r#"
    WITH filled AS (
        INSERT INTO fills (
            request_id, exchange, market, paper, testnet, symbol, action, side, reduce_only,
            quantity, leverage, order_type, requested_price, client_order_id,
            exchange_order_id, status, fill_price, fill_quantity, fee, raw_response,
            received_at, executed_at
        )
        SELECT * FROM UNNEST(
            $1::uuid[], $2::text[], $3::text[], $4::bool[], $5::bool[], $6::text[], $7::text[],
            $8::text[], $9::bool[], $10::numeric[], $11::int4[], $12::text[], $13::numeric[],
            $14::text[], $15::text[], $16::text[], $17::numeric[], $18::numeric[],
            $19::numeric[], $20::jsonb[], $21::timestamptz[], $22::timestamptz[]
        )
        ON CONFLICT (request_id) DO NOTHING
        RETURNING request_id, exchange, market, testnet, symbol
    ),
    opened AS (
        INSERT INTO positions (exchange, market, testnet, symbol)
        SELECT DISTINCT exchange, market, testnet, symbol FROM filled
        ORDER BY exchange, market, testnet, symbol
        ON CONFLICT DO NOTHING
    )
    SELECT request_id FROM filled
"#;

/// Locks the positions named by the key columns `$1`…`$4`, in key order (so two
/// consumers never wait on each other crosswise), and reads them.
const LOCK_POSITIONS: &str = r#"
    SELECT p.exchange, p.market, p.testnet, p.symbol, p.quantity, p.avg_entry_price,
           p.realized_pnl, p.fees, p.complete
    FROM positions p
    JOIN UNNEST($1::text[], $2::text[], $3::bool[], $4::text[]) AS k(exchange, market, testnet, symbol)
        USING (exchange, market, testnet, symbol)
    ORDER BY p.exchange, p.market, p.testnet, p.symbol
    FOR UPDATE OF p
"#;

/// Records what each inserted fill realized, the positions they moved, the outcomes and
/// the audit rows: one statement.
static COMMIT_LEDGER: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
        WITH priced AS (
            UPDATE fills f SET realized_pnl = t.pnl
            FROM UNNEST($8::uuid[], $9::numeric[]) AS t(id, pnl)
            WHERE f.request_id = ANY($8::uuid[]) AND f.request_id = t.id
        ),
        moved AS (
            INSERT INTO positions (
                exchange, market, testnet, symbol, quantity, avg_entry_price, realized_pnl,
                fees, complete, fills, updated_at
            )
            SELECT *, now() FROM UNNEST(
                $10::text[], $11::text[], $12::bool[], $13::text[], $14::numeric[],
                $15::numeric[], $16::numeric[], $17::numeric[], $18::bool[], $19::int8[]
            )
            ON CONFLICT (exchange, market, testnet, symbol) DO UPDATE SET
                quantity = EXCLUDED.quantity, avg_entry_price = EXCLUDED.avg_entry_price,
                realized_pnl = EXCLUDED.realized_pnl, fees = EXCLUDED.fees,
                complete = EXCLUDED.complete, fills = positions.fills + EXCLUDED.fills,
                updated_at = EXCLUDED.updated_at
        ),
        {}
        "#,
        settle_and_log(20)
    )
});

/// Which position a fill belongs to.
type PositionKey = (String, String, bool, String);

/// A position row as [`LOCK_POSITIONS`] reads it.
type LockedRow = (
    String,
    String,
    bool,
    String,
    Decimal,
    Option<Decimal>,
    Decimal,
    Decimal,
    bool,
);

/// A position read under its lock, and how many fills moved it in this batch.
struct Held {
    position: Position,
    fills: i64,
}

/// What the ledger applies of `fill`, or `None` when how much it executed is unknown
/// (a limit order whose answer gave no filled quantity). A market order whose answer
/// gave none executed what it asked: market orders fill at once.
fn trade_of(fill: &Fill) -> Option<Trade> {
    let quantity = match (fill.fill_quantity, fill.order_type.as_str()) {
        (Some(quantity), _) => quantity,
        (None, "market") => fill.quantity,
        (None, _) => return None,
    };
    Some(Trade {
        side: if fill.side == "sell" {
            Side::Sell
        } else {
            Side::Buy
        },
        quantity,
        price: fill.fill_price,
        fee: fill.fee,
    })
}

/// Writes a batch's fills, audit rows and execution outcomes, and moves the positions
/// of the fills it inserted, in one transaction.
///
/// A batch without fills is one statement. With fills: BEGIN; insert the fills (a
/// request id already recorded changes nothing) and the rows of new positions; lock the
/// positions of the fills inserted, in key order; apply the fills in batch order; write
/// the positions, each fill's realized PnL, the outcomes and the audit rows in one
/// statement; COMMIT. A deadlock or a lost connection rolls it all back, and the
/// caller's retry starts over.
pub async fn commit_batch(
    pool: &PgPool,
    fills: &[Fill],
    logs: &[LogEntry],
    outcomes: &[(Uuid, ExecutionState)],
) -> Result<(), sqlx::Error> {
    fn column<'a, T, I: 'a>(
        items: impl IntoIterator<Item = &'a I>,
        field: impl Fn(&'a I) -> T,
    ) -> Vec<T> {
        items.into_iter().map(field).collect()
    }
    let ids: Vec<Uuid> = outcomes.iter().map(|(id, _)| *id).collect();
    let states: Vec<&str> = outcomes.iter().map(|(_, s)| s.as_str()).collect();
    if fills.is_empty() {
        return bind_entries(sqlx::query(&SETTLE), logs)
            .bind(ids)
            .bind(states)
            .execute(pool)
            .await
            .map(drop);
    }

    let mut tx = pool.begin().await?;
    let inserted: HashSet<Uuid> = sqlx::query_scalar(INSERT_FILLS)
        .bind(column(fills, |f| f.request_id))
        .bind(column(fills, |f| f.exchange.as_str()))
        .bind(column(fills, |f| f.market.as_str()))
        .bind(column(fills, |f| f.paper))
        .bind(column(fills, |f| f.testnet))
        .bind(column(fills, |f| f.symbol.as_str()))
        .bind(column(fills, |f| f.action.as_str()))
        .bind(column(fills, |f| f.side.as_str()))
        .bind(column(fills, |f| f.reduce_only))
        .bind(column(fills, |f| f.quantity))
        .bind(column(fills, |f| f.leverage))
        .bind(column(fills, |f| f.order_type.as_str()))
        .bind(column(fills, |f| f.requested_price))
        .bind(column(fills, |f| f.client_order_id.as_str()))
        .bind(column(fills, |f| f.exchange_order_id.as_deref()))
        .bind(column(fills, |f| f.status.as_str()))
        .bind(column(fills, |f| f.fill_price))
        .bind(column(fills, |f| f.fill_quantity))
        .bind(column(fills, |f| f.fee))
        .bind(column(fills, |f| f.raw_response.clone()))
        .bind(column(fills, |f| f.received_at))
        .bind(column(fills, |f| f.executed_at))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let new: Vec<&Fill> = fills
        .iter()
        .filter(|f| inserted.contains(&f.request_id))
        .collect();

    let keys: BTreeSet<PositionKey> = new.iter().map(|f| key(f)).collect();
    let rows: Vec<LockedRow> = if keys.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(LOCK_POSITIONS)
            .bind(column(&keys, |k| k.0.as_str()))
            .bind(column(&keys, |k| k.1.as_str()))
            .bind(column(&keys, |k| k.2))
            .bind(column(&keys, |k| k.3.as_str()))
            .fetch_all(&mut *tx)
            .await?
    };
    let mut held: BTreeMap<PositionKey, Held> = rows
        .into_iter()
        .map(
            |(
                exchange,
                market,
                testnet,
                symbol,
                quantity,
                avg_entry_price,
                realized_pnl,
                fees,
                complete,
            )| {
                let position = Position {
                    quantity,
                    avg_entry_price,
                    realized_pnl,
                    fees,
                    complete,
                };
                (
                    (exchange, market, testnet, symbol),
                    Held { position, fills: 0 },
                )
            },
        )
        .collect();
    let mut realized = Vec::with_capacity(new.len());
    for fill in &new {
        let entry = held.entry(key(fill)).or_insert_with(|| Held {
            position: Position::flat(),
            fills: 0,
        });
        entry.fills += 1;
        realized.push(match trade_of(fill) {
            Some(trade) => entry.position.apply(&trade),
            None => {
                entry.position.complete = false;
                None
            }
        });
    }

    let positions: Vec<(&PositionKey, &Held)> = held.iter().collect();
    bind_entries(sqlx::query(&COMMIT_LEDGER), logs)
        .bind(column(&new, |f| f.request_id))
        .bind(realized)
        .bind(column(&positions, |(k, _)| k.0.as_str()))
        .bind(column(&positions, |(k, _)| k.1.as_str()))
        .bind(column(&positions, |(k, _)| k.2))
        .bind(column(&positions, |(k, _)| k.3.as_str()))
        .bind(column(&positions, |(_, h)| h.position.quantity))
        .bind(column(&positions, |(_, h)| h.position.avg_entry_price))
        .bind(column(&positions, |(_, h)| h.position.realized_pnl))
        .bind(column(&positions, |(_, h)| h.position.fees))
        .bind(column(&positions, |(_, h)| h.position.complete))
        .bind(column(&positions, |(_, h)| h.fills))
        .bind(ids)
        .bind(states)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// The position `fill` belongs to.
fn key(fill: &Fill) -> PositionKey {
    (
        fill.exchange.clone(),
        fill.market.clone(),
        fill.testnet,
        fill.symbol.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(replays: u32, attempt: u32) -> Attempt {
        Attempt {
            request_id: Uuid::nil(),
            replays,
            attempt,
            queue: "q".to_owned(),
            symbol: "BTCUSDT".to_owned(),
            age_origin: Utc::now(),
        }
    }

    fn recorded(replays: u32, attempt: u32, state: ExecutionState) -> Option<Recorded> {
        Some(Recorded {
            replays,
            attempt,
            state,
        })
    }

    #[test]
    fn a_request_id_runs_once_per_attempt_and_generation() {
        use ExecutionState::*;
        let fresh = Claim::Run { resumed: false };
        let resumed = Claim::Run { resumed: true };
        let cases = [
            (None, attempt(0, 1), fresh),
            // A copy of an attempt that ended, whichever way.
            (
                recorded(0, 1, Filled),
                attempt(0, 1),
                Claim::Copy { state: Filled },
            ),
            (
                recorded(0, 2, Dead),
                attempt(0, 3),
                Claim::Copy { state: Dead },
            ),
            (
                recorded(0, 1, Retrying),
                attempt(0, 1),
                Claim::Copy { state: Retrying },
            ),
            // The retry that the failed attempt scheduled.
            (recorded(0, 1, Retrying), attempt(0, 2), fresh),
            // An attempt whose consumer died: its order may exist.
            (recorded(0, 2, Running), attempt(0, 2), resumed),
            (
                recorded(0, 2, Running),
                attempt(0, 1),
                Claim::Copy { state: Running },
            ),
            // Only a replay (a newer generation) runs a dead letter again.
            (recorded(1, 1, Dead), attempt(2, 1), fresh),
            (
                recorded(1, 1, Running),
                attempt(0, 5),
                Claim::Copy { state: Running },
            ),
        ];
        for (recorded, delivery, expected) in cases {
            assert_eq!(
                decide(recorded, &delivery),
                expected,
                "{recorded:?} {delivery:?}"
            );
        }
    }
}
