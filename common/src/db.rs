//! PostgreSQL: the embedded migrations, and two ways to a pool. The services and
//! `hoox migrate` create and migrate a missing database, so they start on a fresh
//! server; every other command only opens one that exists and is migrated, so a
//! mistyped `DATABASE_URL` is refused instead of answered from a new, empty database.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::{MigrateDatabase, MigrateError, Migration, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::retry::{sleep_unless_cancelled, Reconnect};

/// The schema, from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The server probes an idle connection after 10 s, every 5 s, three times: a process
/// that died without closing its connection (power loss, a cut network) loses its
/// session, and the consumer's advisory locks with it, within about 25 s.
///
/// Every statement is planned for its own parameters: a prepared statement otherwise
/// switches to one generic plan after five runs, and a plan made while a table was
/// small (a fresh deployment, the first seconds of a burst) went on scanning it whole
/// once it held tens of thousands of keys. hoox's batched statements bind arrays whose
/// length the planner only sees in a custom plan; planning costs far less than a scan.
const SESSION_SETTINGS: [(&str, &str); 4] = [
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
    ("plan_cache_mode", "force_custom_plan"),
];

/// Why the database could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Connecting, or creating the database, failed.
    #[error("database unavailable: {0}")]
    Connect(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] MigrateError),
    /// The database does not exist, and this command does not create one.
    #[error("database `{database}` does not exist; run `hoox migrate` to create it")]
    Missing {
        /// The database's name.
        database: String,
    },
    /// The database's schema is not the one this build expects, and this command does
    /// not migrate.
    #[error("database `{database}` is not ready for this hoox: {problem}")]
    Unmigrated {
        /// The database's name.
        database: String,
        /// How its schema differs.
        problem: SchemaProblem,
    },
}

/// How a database's applied migrations differ from [`MIGRATOR`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaProblem {
    /// Migrations of this build are not applied (all of them on a new database).
    #[error("{pending} of {total} migrations are not applied; run `hoox migrate`")]
    Behind {
        /// How many are not applied.
        pending: usize,
        /// How many this build has.
        total: usize,
    },
    /// A migration started and did not finish.
    #[error("migration {0} failed part-way; repair it, then run `hoox migrate`")]
    Failed(i64),
    /// An applied migration is not the one of the same version in this build.
    #[error("migration {0} differs from this build's; the schema was changed elsewhere")]
    Changed(i64),
    /// The database has a migration this build does not know: a newer hoox migrated it.
    #[error("it has migration {0}, which this hoox does not know; use a newer hoox")]
    Unknown(i64),
}

/// A row of `_sqlx_migrations`: a migration the database has run.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct MigrationRow {
    version: i64,
    /// Whether it finished.
    success: bool,
    /// The checksum of its SQL when it was applied.
    checksum: Vec<u8>,
}

/// How `applied` differs from the up-migrations in `expected`, if it does; a failed or
/// foreign migration is named before missing ones, since migrating would not fix it.
fn schema_problem<'a>(
    expected: impl IntoIterator<Item = &'a Migration>,
    applied: &[MigrationRow],
) -> Option<SchemaProblem> {
    let expected: Vec<&Migration> = expected
        .into_iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    if let Some(failed) = applied.iter().find(|a| !a.success) {
        return Some(SchemaProblem::Failed(failed.version));
    }
    for done in applied {
        match expected.iter().find(|m| m.version == done.version) {
            None => return Some(SchemaProblem::Unknown(done.version)),
            Some(m) if *m.checksum != *done.checksum => {
                return Some(SchemaProblem::Changed(done.version))
            }
            Some(_) => {}
        }
    }
    let pending = expected
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .count();
    (pending > 0).then_some(SchemaProblem::Behind {
        pending,
        total: expected.len(),
    })
}

/// PostgreSQL's code for "database does not exist" (`invalid_catalog_name`).
const UNDEFINED_DATABASE: &str = "3D000";
/// PostgreSQL's code for "relation does not exist" (`undefined_table`).
const UNDEFINED_TABLE: &str = "42P01";

/// Connects a pool of `max_connections` to a database that exists and has exactly
/// this build's migrations; creates and changes nothing, so the error tells the
/// operator to run `hoox migrate` (or which problem that would not fix).
pub async fn connect_existing(url: &SecretString, max_connections: u32) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url.expose_secret())?;
    // Without a database in the URL, PostgreSQL uses the one named like the user.
    let database = options
        .get_database()
        .unwrap_or(options.get_username())
        .to_owned();
    let connecting = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await;
    let pool = match connecting {
        Ok(pool) => pool,
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some(UNDEFINED_DATABASE) => {
            return Err(DbError::Missing { database })
        }
        Err(err) => return Err(err.into()),
    };
    let applied: Vec<MigrationRow> = match sqlx::query_as(
        "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&pool)
    .await
    {
        Ok(applied) => applied,
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some(UNDEFINED_TABLE) => {
            Vec::new()
        }
        Err(err) => return Err(err.into()),
    };
    match schema_problem(MIGRATOR.iter(), &applied) {
        None => Ok(pool),
        Some(problem) => Err(DbError::Unmigrated { database, problem }),
    }
}

/// Creates the database when missing, connects a pool of `max_connections`, and
/// applies pending migrations (concurrent starters serialise on sqlx's migration lock).
/// Only `hoox migrate` and the services call it; other commands use [`connect_existing`].
pub async fn connect_and_migrate(
    url: &SecretString,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    let url = url.expose_secret();
    if !Postgres::database_exists(url).await? {
        if let Err(err) = Postgres::create_database(url).await {
            // Another process may have created it between the check and now.
            if !Postgres::database_exists(url).await? {
                return Err(err.into());
            }
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(PgConnectOptions::from_str(url)?.options(SESSION_SETTINGS))
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// [`connect_and_migrate`], retried with backoff until it succeeds or `token` is
/// cancelled (`None`): a service started before its database waits for it.
pub async fn connect_with_retry(
    url: &SecretString,
    max_connections: u32,
    token: &tokio_util::sync::CancellationToken,
) -> Option<PgPool> {
    let mut reconnect = Reconnect::new();
    loop {
        let delay = reconnect.next_delay();
        match connect_and_migrate(url, max_connections).await {
            Ok(pool) => return Some(pool),
            Err(DbError::Migrate(err)) => {
                tracing::error!(error = %err, "database migration failed; retrying");
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "database unavailable; retrying")
            }
        }
        if !sleep_unless_cancelled(delay, token).await {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(migrations: &[&Migration]) -> Vec<MigrationRow> {
        migrations
            .iter()
            .map(|m| MigrationRow {
                version: m.version,
                success: true,
                checksum: m.checksum.to_vec(),
            })
            .collect()
    }

    #[test]
    fn a_database_with_every_migration_of_this_build_has_no_problem() {
        let all: Vec<&Migration> = MIGRATOR.iter().collect();
        assert!(all.len() > 1, "the test needs at least two migrations");
        assert_eq!(schema_problem(MIGRATOR.iter(), &applied(&all)), None);
    }

    #[test]
    fn missing_failed_changed_and_foreign_migrations_are_each_named() {
        let all: Vec<&Migration> = MIGRATOR.iter().collect();
        let total = all.len();
        let problem = |rows: &[MigrationRow]| schema_problem(MIGRATOR.iter(), rows);

        assert_eq!(
            problem(&[]),
            Some(SchemaProblem::Behind {
                pending: total,
                total
            })
        );
        let behind = applied(&all[..total - 1]);
        assert_eq!(
            problem(&behind),
            Some(SchemaProblem::Behind { pending: 1, total })
        );

        let mut failed = applied(&all);
        failed[total - 1].success = false;
        let last = all[total - 1].version;
        assert_eq!(problem(&failed), Some(SchemaProblem::Failed(last)));

        let mut changed = applied(&all);
        changed[0].checksum = vec![0; 48];
        assert_eq!(
            problem(&changed),
            Some(SchemaProblem::Changed(all[0].version))
        );

        let mut newer = applied(&all);
        newer.push(MigrationRow {
            version: last + 1,
            success: true,
            checksum: vec![0; 48],
        });
        assert_eq!(problem(&newer), Some(SchemaProblem::Unknown(last + 1)));
    }
}
