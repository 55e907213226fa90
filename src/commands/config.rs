//! `hoox config list|get|set|delete`: the live settings in the `config` table. Values
//! are checked per key before they are written; every change is recorded in
//! `system_logs` in the same transaction, and running services see it within a second.

use anyhow::{bail, Context};
use hoox_common::config::DatabaseArgs;
use hoox_common::event::Event;
use hoox_common::kill_switch;
use hoox_common::logs::{insert_logs, LogEntry, Worker};
use hoox_common::runtime_config::{
    self, is_on, normalise_key, validate, KILL_SWITCH, KNOWN_KEYS, WEBHOOK_API_KEY,
};
use sqlx::PgPool;

use crate::terminal::escape;

/// Arguments of `hoox config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// The config subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print every setting.
    List,
    /// Print one setting's value.
    Get {
        /// The key, e.g. `exchanges:default_routing`.
        key: String,
    },
    /// Set a value after checking it.
    ///
    /// Keys: trade:kill_switch (true|false), webhooks:api_key (stored as its SHA-256
    /// digest), exchanges:default_routing and exchanges:routing:<SYMBOL> (bybit, binance,
    /// mexc or paper), paper:price:<SYMBOL>, paper:latency_ms, risk:allowed_symbols,
    /// risk:max_quantity, risk:max_leverage, risk:max_notional and risk:max_position
    /// (each also per symbol, as risk:max_quantity:<SYMBOL>), and risk:max_daily_loss.
    Set {
        /// The key.
        key: String,
        /// The value; `-` reads it from standard input, so a webhook key stays out of
        /// the shell history and the process list.
        value: String,
    },
    /// Remove a setting, so its default applies again.
    Delete {
        /// The key.
        key: String,
    },
}

/// How a stored value is shown, control characters escaped: a webhook key's digest is
/// not the key, but it is shown as what it is.
pub fn shown(key: &str, value: &str) -> String {
    let value = escape(value);
    if key == WEBHOOK_API_KEY {
        format!("{value} (digest; the key itself is not stored)")
    } else {
        value.into_owned()
    }
}

/// The value recorded in the audit row: never a webhook key, not even its digest.
fn audited(key: &str, value: &str) -> String {
    if key == WEBHOOK_API_KEY {
        "[redacted]".to_owned()
    } else {
        value.to_owned()
    }
}

/// Every setting, by key.
pub async fn list(pool: &PgPool) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT key, value FROM config ORDER BY key")
        .fetch_all(pool)
        .await
}

/// The value of `key`, when set.
pub async fn get(pool: &PgPool, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM config WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// Writes `value` under `key` (or removes `key` when `None`) and records the change as
/// an event of `worker` in `system_logs`, in one transaction; gives the previous value.
pub async fn write(
    pool: &PgPool,
    worker: Worker,
    key: &str,
    value: Option<&str>,
) -> Result<Option<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let previous: Option<String> =
        sqlx::query_scalar("SELECT value FROM config WHERE key = $1 FOR UPDATE")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
    match value {
        // An operator's change of the switch also removes the reason hoox gave for it.
        Some(value) if key == KILL_SWITCH => {
            kill_switch::store(&mut tx, is_on(value), None).await?;
        }
        None if key == KILL_SWITCH => {
            runtime_config::put(&mut tx, kill_switch::REASON, None).await?;
            runtime_config::put(&mut tx, key, None).await?;
        }
        value => runtime_config::put(&mut tx, key, value).await?,
    }
    let event = if key == KILL_SWITCH {
        Event::KillSwitchChanged {
            on: value.is_some_and(is_on),
            reason: None,
        }
    } else {
        Event::ConfigChanged {
            key: key.to_owned(),
            value: value.map(|v| audited(key, v)),
            previous: previous.as_deref().map(|v| audited(key, v)),
        }
    };
    let entry = LogEntry::now(worker, None, event);
    insert_logs(&mut *tx, &[entry]).await?;
    tx.commit().await?;
    Ok(previous)
}

/// Runs `hoox config`.
pub async fn run(mut args: ConfigArgs) -> anyhow::Result<()> {
    if let ConfigCommand::Set { value, .. } = &mut args.command {
        if value == "-" {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the value from standard input")?;
            *value = line.trim_end_matches(['\r', '\n']).to_owned();
        }
    }
    // Keys and values are checked before the database is opened.
    let key = match &args.command {
        ConfigCommand::List => String::new(),
        ConfigCommand::Get { key } => normalise_key(key).map_err(anyhow::Error::msg)?,
        // A key hoox no longer knows can still be removed.
        ConfigCommand::Delete { key } => {
            normalise_key(key).unwrap_or_else(|_| key.trim().to_owned())
        }
        ConfigCommand::Set { key, value } => validate(key, value).map_err(anyhow::Error::msg)?.key,
    };
    let pool = hoox_common::db::connect_existing(&args.database.database_url, 1)
        .await
        .context("cannot open the database")?;
    match args.command {
        ConfigCommand::List => {
            let settings = list(&pool).await?;
            if settings.is_empty() {
                println!(
                    "no settings: every default applies (known keys: {})",
                    KNOWN_KEYS.join(", ")
                );
            }
            for (key, value) in settings {
                println!("{} = {}", escape(&key), shown(&key, &value));
            }
        }
        ConfigCommand::Get { .. } => match get(&pool, &key).await? {
            Some(value) => println!("{}", shown(&key, &value)),
            None => bail!("{key} is not set"),
        },
        ConfigCommand::Set { key: raw, value } => {
            let setting = validate(&raw, &value).map_err(anyhow::Error::msg)?;
            write(&pool, Worker::Cli, &setting.key, Some(&setting.value)).await?;
            println!(
                "{} = {}",
                escape(&setting.key),
                shown(&setting.key, &setting.value)
            );
        }
        ConfigCommand::Delete { .. } => {
            if get(&pool, &key).await?.is_none() {
                bail!("{key} is not set");
            }
            write(&pool, Worker::Cli, &key, None).await?;
            println!("{} deleted; its default applies", escape(&key));
        }
    }
    Ok(())
}
