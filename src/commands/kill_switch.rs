//! `hoox kill-switch show|on|off`: stop or resume all trading.

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use hoox_common::config::DatabaseArgs;
use hoox_common::kill_switch;
use hoox_common::logs::Worker;
use hoox_common::runtime_config::{is_on, KILL_SWITCH};
use sqlx::PgPool;

use crate::terminal::escape;

/// Arguments of `hoox kill-switch`.
#[derive(Debug, clap::Args)]
pub struct KillSwitchArgs {
    #[command(subcommand)]
    pub command: KillSwitchCommand,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// The kill switch's subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum KillSwitchCommand {
    /// Print whether trading is halted.
    Show,
    /// Halt trading: ingest answers 503, consumers dead-letter what is queued.
    On,
    /// Resume trading.
    Off,
}

/// Whether the kill switch is on.
pub async fn state(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let value: Option<String> = sqlx::query_scalar("SELECT value FROM config WHERE key = $1")
        .bind(KILL_SWITCH)
        .fetch_optional(pool)
        .await?;
    Ok(value.is_some_and(|v| is_on(&v)))
}

/// The kill switch as `hoox kill-switch show` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Whether trading is halted.
    pub on: bool,
    /// Why hoox turned it on by itself; `None` when an operator did.
    pub reason: Option<String>,
    /// The last change: when, and by which worker (`cli`, `consumer`, …).
    pub changed: Option<(DateTime<Utc>, String)>,
}

/// Reads the switch, its reason and its last recorded change, in one snapshot.
pub async fn status(pool: &PgPool) -> Result<Status, sqlx::Error> {
    type Row = (
        Option<String>,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<String>,
    );
    let (value, reason, at, by): Row = sqlx::query_as(
        r#"
        SELECT (SELECT value FROM config WHERE key = $1),
               (SELECT value FROM config WHERE key = $2),
               last.created_at, last.worker
        FROM (SELECT 1) AS one
        LEFT JOIN LATERAL (
            SELECT created_at, worker FROM system_logs
            WHERE kind = 'kill_switch_changed'
            ORDER BY created_at DESC
            LIMIT 1
        ) AS last ON true
        "#,
    )
    .bind(KILL_SWITCH)
    .bind(kill_switch::REASON)
    .fetch_one(pool)
    .await?;
    Ok(Status {
        on: value.is_some_and(|v| is_on(&v)),
        reason,
        changed: at.zip(by),
    })
}

/// The status for people.
pub fn render(status: &Status) -> String {
    let mut out = if status.on {
        "kill switch: ON — trading is halted\n".to_owned()
    } else {
        "kill switch: off — trading is live\n".to_owned()
    };
    if let Some((at, by)) = &status.changed {
        let at = at.to_rfc3339_opts(SecondsFormat::Secs, true);
        out.push_str(&format!("  last changed {at} by {}\n", escape(by)));
    }
    if let (true, Some(reason)) = (status.on, &status.reason) {
        out.push_str(&format!("  reason: {}\n", escape(reason)));
    }
    out
}

/// Sets the kill switch and records that `worker` did it in `system_logs`, in one
/// transaction.
pub async fn set(pool: &PgPool, worker: Worker, on: bool) -> Result<(), sqlx::Error> {
    let value = if on { "true" } else { "false" };
    super::config::write(pool, worker, KILL_SWITCH, Some(value))
        .await
        .map(drop)
}

/// Runs `hoox kill-switch`.
pub async fn run(args: KillSwitchArgs) -> anyhow::Result<()> {
    let pool = hoox_common::db::connect_existing(&args.database.database_url, 1)
        .await
        .context("cannot open the database")?;
    match args.command {
        KillSwitchCommand::Show => {}
        KillSwitchCommand::On => set(&pool, Worker::Cli, true).await?,
        KillSwitchCommand::Off => set(&pool, Worker::Cli, false).await?,
    }
    print!("{}", render(&status(&pool).await?));
    Ok(())
}
