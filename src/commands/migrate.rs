//! `hoox migrate`: create the database when missing and apply pending migrations.

use anyhow::Context;
use hoox_common::config::DatabaseArgs;
use hoox_common::db::{connect_and_migrate, MIGRATOR};

use crate::terminal::escape;

/// Arguments of `hoox migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Migrates and prints the schema version.
pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let pool = connect_and_migrate(&args.database.database_url, 1)
        .await
        .context("cannot migrate the database")?;
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await?;
    println!(
        "database is up to date: {} of {} migrations applied",
        applied.len(),
        MIGRATOR.iter().count()
    );
    for (version, description) in applied {
        println!("  {version}  {}", escape(&description));
    }
    Ok(())
}
