//! PostgreSQL: the embedded migrations, and a pool to a database that is created and
//! migrated when it is missing, so every binary can start on a fresh server.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::{MigrateDatabase, MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::retry::{sleep_unless_cancelled, Reconnect};

/// The schema, from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The server probes an idle connection after 10 s, every 5 s, three times: a process
/// that died without closing its connection (power loss, a cut network) loses its
/// session, and the consumer's advisory locks with it, within about 25 s.
const DEAD_PEER_PROBES: [(&str, &str); 3] = [
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
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
}

/// Creates the database when missing, connects a pool of `max_connections`, and
/// applies pending migrations (concurrent starters serialise on sqlx's migration lock).
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
        .connect_with(PgConnectOptions::from_str(url)?.options(DEAD_PEER_PROBES))
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
