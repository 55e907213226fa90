//! `hoox logs tail`: the `system_logs` stream, newest last, for people or as JSONL; with
//! `--follow`, the rows written from then on until Ctrl-C. Following waits on the
//! table's `hoox_logs` NOTIFY instead of polling, and reads by writing transaction
//! rather than by id, because ids commit out of order when several processes write
//! (see the migration `notify_system_logs`).

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{self, Write as _};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::ValueEnum;
use hoox_common::config::DatabaseArgs;
use hoox_common::logs::{Severity, Worker};
use hoox_common::retry::Reconnect;
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::terminal::{self, escape};

/// The channel the `system_logs` insert trigger notifies.
const CHANNEL: &str = "hoox_logs";

/// Arguments of `hoox logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(subcommand)]
    pub command: LogsCommand,
}

/// What to do with the logs.
#[derive(Debug, clap::Subcommand)]
pub enum LogsCommand {
    /// Print the newest `system_logs` rows, oldest first; with --follow, keep printing
    /// rows as they are written until Ctrl-C.
    Tail(TailArgs),
}

/// Arguments of `hoox logs tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Keep printing rows as they are written, until Ctrl-C.
    #[arg(long)]
    pub follow: bool,

    /// Only rows written by this part of hoox.
    #[arg(long, value_enum)]
    pub worker: Option<Worker>,

    /// Only rows of this severity or above (debug < info < warn < error): `warn` shows
    /// warn and error.
    #[arg(long, value_enum)]
    pub severity: Option<Severity>,

    /// Only rows of this signal (the `requestId` ingest answered with).
    #[arg(long)]
    pub request_id: Option<Uuid>,

    /// Only events from this long ago or later, e.g. `10m`, `2h`, `1d`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,

    /// How many of the newest matching rows to print first.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,

    /// Print one JSON object per line (JSONL) for scripts.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// One `system_logs` row as shown. Queries select every column (`l.*`), so showing a
/// new column in `--json` takes only its field here.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct LogRow {
    /// The row's id: the order rows were drawn in.
    pub id: i64,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// The signal it belongs to, if any.
    pub request_id: Option<Uuid>,
    /// `ingest`, `consumer` or `cli`.
    pub worker: String,
    /// The event's kind; `None` for rows written before events existed.
    pub kind: Option<String>,
    /// `debug` … `error`.
    pub severity: String,
    /// What happened.
    pub message: String,
    /// Structured detail.
    pub context: Value,
}

/// The rows an operator asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only this writer.
    pub worker: Option<Worker>,
    /// Only this severity or above.
    pub severity: Option<Severity>,
    /// Only this signal.
    pub request_id: Option<Uuid>,
    /// Only events at or after this moment.
    pub since: Option<DateTime<Utc>>,
}

/// The [`Filter`] as SQL over `system_logs l`; its values are bound as `$1` to `$4`.
const FILTER_SQL: &str = "($1::text IS NULL OR l.worker = $1)
    AND ($2::text[] IS NULL OR l.severity = ANY($2))
    AND ($3::uuid IS NULL OR l.request_id = $3)
    AND ($4::timestamptz IS NULL OR l.created_at >= $4)";

impl Filter {
    /// Binds the filter's values as `$1` to `$4` of a query built on [`FILTER_SQL`].
    fn bind<'q, O>(
        &self,
        query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
        let severities = self.severity.map(|least| {
            Severity::value_variants()
                .iter()
                .filter(|s| **s >= least)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
        });
        query
            .bind(self.worker.map(Worker::as_str))
            .bind(severities)
            .bind(self.request_id)
            .bind(self.since)
    }
}

/// Where a follow has got to. Every row not yet read was written by a transaction
/// still running at the last read, whose id is at least that read's snapshot xmin: the
/// `horizon`. Rows of transactions from the horizon on that were already read are
/// remembered, so none is printed twice; older ones can no longer appear.
#[derive(Debug)]
pub struct Cursor {
    /// The snapshot xmin of the last read, as a number (`xid8` fits in a bigint).
    horizon: i64,
    /// `(writing transaction, id)` of the rows read whose transaction is at or past the
    /// horizon.
    read: BTreeSet<(i64, i64)>,
}

/// Opens a read-only transaction whose one snapshot serves every query in it, so the
/// rows read and the horizon recorded agree.
async fn snapshot(pool: &PgPool) -> Result<(Transaction<'static, Postgres>, i64), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let horizon =
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .fetch_one(&mut *tx)
            .await?;
    Ok((tx, horizon))
}

/// The rows visible in `tx` written by transactions from `horizon` on.
async fn written_since(
    tx: &mut Transaction<'static, Postgres>,
    horizon: i64,
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT written_by::text::bigint, id FROM system_logs WHERE written_by >= $1::text::xid8",
    )
    .bind(horizon.to_string())
    .fetch_all(&mut **tx)
    .await
}

/// The newest `limit` rows matching `filter`, oldest first, and the cursor a follow
/// continues from: everything committed now counts as read.
pub async fn newest(
    pool: &PgPool,
    filter: &Filter,
    limit: u32,
) -> Result<(Vec<LogRow>, Cursor), sqlx::Error> {
    let (mut tx, horizon) = snapshot(pool).await?;
    let sql = format!(
        "SELECT * FROM (SELECT l.* FROM system_logs l WHERE {FILTER_SQL} ORDER BY l.id DESC LIMIT $5) newest ORDER BY id"
    );
    let rows = filter
        .bind(sqlx::query_as(&sql))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
    let read = written_since(&mut tx, horizon).await?.into_iter().collect();
    tx.commit().await?;
    Ok((rows, Cursor { horizon, read }))
}

/// The rows matching `filter` committed since `cursor` last read, in id order, and the
/// cursor moved past them.
pub async fn next(
    pool: &PgPool,
    filter: &Filter,
    cursor: &mut Cursor,
) -> Result<Vec<LogRow>, sqlx::Error> {
    let (mut tx, horizon) = snapshot(pool).await?;
    let sql = format!(
        "SELECT l.*, l.written_by::text::bigint AS writer FROM system_logs l
         WHERE l.written_by >= $5::text::xid8 AND {FILTER_SQL} ORDER BY l.id"
    );
    let candidates: Vec<(i64, LogRow)> = filter
        .bind(sqlx::query_as::<_, Candidate>(&sql))
        .bind(cursor.horizon.to_string())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|c| (c.writer, c.row))
        .collect();
    let written = written_since(&mut tx, cursor.horizon).await?;
    tx.commit().await?;
    let fresh = candidates
        .into_iter()
        .filter(|(writer, row)| !cursor.read.contains(&(*writer, row.id)))
        .map(|(_, row)| row)
        .collect();
    cursor.read.extend(written);
    cursor.read = cursor.read.split_off(&(horizon, i64::MIN));
    cursor.horizon = horizon;
    Ok(fresh)
}

/// Up to `limit` rows matching `filter` with an id below `before`, newest first: the
/// page after one that ended at `before`.
pub async fn older(
    pool: &PgPool,
    filter: &Filter,
    before: i64,
    limit: u32,
) -> Result<Vec<LogRow>, sqlx::Error> {
    let sql = format!(
        "SELECT l.* FROM system_logs l WHERE l.id < $5 AND {FILTER_SQL} ORDER BY l.id DESC LIMIT $6"
    );
    filter
        .bind(sqlx::query_as(&sql))
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
}

/// A row and the transaction that wrote it.
#[derive(sqlx::FromRow)]
struct Candidate {
    writer: i64,
    #[sqlx(flatten)]
    row: LogRow,
}

/// One row as a line for people, like `hoox trace`.
pub fn render(row: &LogRow) -> String {
    let request_id = row
        .request_id
        .map_or_else(|| "-".to_owned(), |id| id.to_string());
    format!(
        "{}  {:<8}  {:<5}  {:<36}  {}",
        row.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        escape(&row.worker),
        escape(&row.severity),
        request_id,
        escape(&row.message)
    )
}

/// Writes `rows` to standard output; `false` once the reader has gone (`| head`).
fn print(rows: &[LogRow], json: bool) -> anyhow::Result<bool> {
    let mut out = io::stdout().lock();
    for row in rows {
        let line = if json {
            terminal::json_line(row)?
        } else {
            render(row)
        };
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return Ok(false),
            Err(err) => return Err(err).context("cannot write to standard output"),
        }
    }
    Ok(true)
}

/// Prints the newest rows, then with `--follow` the new ones until Ctrl-C.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let LogsCommand::Tail(args) = args.command;
    // Registered before anything is printed, so a Ctrl-C from then on ends the follow.
    let interrupted = interrupted().context("cannot watch for Ctrl-C")?;
    // One connection listens, the other reads.
    let pool = hoox_common::db::connect_existing(&args.database.database_url, 2)
        .await
        .context("cannot open the database")?;
    let filter = Filter {
        worker: args.worker,
        severity: args.severity,
        request_id: args.request_id,
        since: args.since.map(ago),
    };
    // Listening before the first read means a row committed after it is announced.
    let listener = if args.follow {
        Some(listen(&pool).await.context("cannot LISTEN for new rows")?)
    } else {
        None
    };
    let (rows, cursor) = newest(&pool, &filter, args.limit).await?;
    if !print(&rows, args.json)? {
        return Ok(());
    }
    let Some(listener) = listener else {
        return Ok(());
    };
    follow(&pool, &filter, cursor, listener, args.json, interrupted).await
}

/// The moment `duration` before now; the dawn of time for a duration longer than that.
pub fn ago(duration: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A listener on [`CHANNEL`].
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Prints each new matching row until `interrupted`. A notification only says "read
/// again"; a lost connection is re-established, then everything since the cursor is
/// read, so rows written meanwhile are printed late rather than never.
async fn follow(
    pool: &PgPool,
    filter: &Filter,
    mut cursor: Cursor,
    listener: PgListener,
    json: bool,
    interrupted: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(interrupted);
    let mut listener = Some(listener);
    let mut reconnect = Reconnect::new();
    loop {
        let mut current = match listener.take() {
            Some(current) => current,
            None => match listen(pool).await {
                Ok(current) => current,
                Err(err) => {
                    let delay = reconnect.next_delay();
                    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "cannot LISTEN for new rows; retrying");
                    tokio::select! {
                        () = &mut interrupted => return Ok(()),
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            },
        };
        // Reads until the connection fails; then round again for a new listener.
        let failure = loop {
            match next(pool, filter, &mut cursor).await {
                Ok(rows) => {
                    if !print(&rows, json)? {
                        return Ok(());
                    }
                }
                Err(err) => break err,
            }
            reconnect = Reconnect::new();
            tokio::select! {
                () = &mut interrupted => return Ok(()),
                notification = current.try_recv() => match notification {
                    // One read covers every notification already waiting.
                    Ok(Some(_)) => while current.next_buffered().is_some() {},
                    // The connection dropped and sqlx re-listened: read what was missed.
                    Ok(None) => {}
                    Err(err) => break err,
                },
            }
        };
        let delay = reconnect.next_delay();
        tracing::warn!(error = %failure, retry_in_ms = delay.as_millis() as u64, "lost the database while following; reconnecting");
        tokio::select! {
            () = &mut interrupted => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM after this call.
#[cfg(unix)]
fn interrupted() -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Resolves at the first Ctrl-C.
#[cfg(not(unix))]
fn interrupted() -> io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_the_row_with_its_outside_text_escaped() {
        let row = LogRow {
            id: 7,
            created_at: "2026-11-24T09:29:22.509Z".parse().unwrap(),
            request_id: None,
            worker: "consumer".into(),
            kind: Some("attempt_failed".into()),
            severity: "warn".into(),
            message: "rejected \x1b[2J\u{202e}LLES".into(),
            context: Value::Null,
        };
        assert_eq!(
            render(&row),
            format!(
                "2026-11-24T09:29:22.509Z  consumer  warn   {:<36}  rejected \\x1b[2J\\u{{202e}}LLES",
                "-"
            )
        );
    }
}
