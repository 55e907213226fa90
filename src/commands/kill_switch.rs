//! `hoox kill-switch show|on|off`: stop or resume all trading.

use anyhow::Context;
use hoox_common::config::DatabaseArgs;
use hoox_common::logs::Worker;
use hoox_common::runtime_config::{is_on, KILL_SWITCH};
use sqlx::PgPool;

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
    if state(&pool).await? {
        println!("kill switch: ON — trading is halted");
    } else {
        println!("kill switch: off — trading is live");
    }
    Ok(())
}
