//! Configuration from the environment, shared by every binary. Each variable is also a
//! flag of the binary that reads it; `.env` is loaded first when present.
//!
//! | variable | default |
//! | --- | --- |
//! | `DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/hoox` |
//! | `AMQP_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` (a cluster: full URLs, comma-separated) |
//! | `HOOX_QUEUE` | `trade-execution` |
//! | `HOOX_PARTITIONS` | `16` (the same for every process of a deployment) |
//! | `HOOX_INTERNAL_KEY` | none: required by ingest and consumer |
//! | `HOOX_RETRY_BASE_MS` / `HOOX_RETRY_MAX_ATTEMPTS` / `HOOX_RETRY_MAX_DELAY_MS` | `30000` / `5` / `480000` |
//! | `HOOX_LOG_FORMAT` / `RUST_LOG` | `text` / `info` |

use std::time::Duration;

use secrecy::SecretString;

use crate::amqp::{Nodes, Topology, DEFAULT_PARTITIONS, MAX_PARTITIONS};
use crate::retry::RetryPolicy;
use crate::telemetry::LogArgs;

/// Default `DATABASE_URL`.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/hoox";
/// Default `AMQP_URL`.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default `HOOX_QUEUE`.
pub const DEFAULT_QUEUE: &str = "trade-execution";

/// Parses a flag value into a secret, so it never shows in `Debug` output.
pub fn parse_secret(value: &str) -> Result<SecretString, String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(SecretString::from(value.to_owned()))
}

/// Reads `AMQP_URL` as a secret once it is a list of broker nodes. A bad list is refused
/// at start with an error naming the entry by host: clap's own message would echo the
/// value, password included.
#[derive(Debug, Clone, Copy)]
pub struct AmqpUrlParser;

impl clap::builder::TypedValueParser for AmqpUrlParser {
    type Value = SecretString;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<SecretString, clap::Error> {
        let refuse = |why: String| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{why}\n"))
                .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refuse("AMQP_URL is not valid UTF-8".to_owned()))?;
        Nodes::parse(text).map_err(|err| refuse(err.to_string()))?;
        Ok(SecretString::from(text.to_owned()))
    }
}

/// Where PostgreSQL is.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL; only `hoox migrate` and the services create or migrate the database [default: postgres://postgres@127.0.0.1:5432/hoox]
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        value_parser = parse_secret,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub database_url: SecretString,
}

/// Where RabbitMQ is, and which queues to use.
#[derive(Debug, Clone, clap::Args)]
pub struct AmqpArgs {
    /// RabbitMQ URL, or a cluster's nodes as comma-separated full URLs tried in order [default: amqp://guest:guest@127.0.0.1:5672/%2f]
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = DEFAULT_AMQP_URL,
        value_parser = AmqpUrlParser,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub amqp_url: SecretString,

    /// Main queue; the delay tiers `<queue>.retry.<ms>` and `<queue>.dlq` are named from it.
    #[arg(long, env = "HOOX_QUEUE", default_value = DEFAULT_QUEUE, value_parser = parse_queue_name)]
    pub queue: String,

    /// Partition queues `<queue>.pNN` that signals are spread over by symbol; every
    /// process of a deployment must use the same number (checked against the database).
    #[arg(long, env = "HOOX_PARTITIONS", default_value_t = DEFAULT_PARTITIONS, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_PARTITIONS)))]
    pub partitions: u16,

    #[command(flatten)]
    pub retry: RetryArgs,
}

impl AmqpArgs {
    /// The queues these settings name.
    pub fn topology(&self) -> Topology {
        Topology::new(self.queue.clone(), self.retry.policy()).with_partitions(self.partitions)
    }
}

/// The retry schedule of retryable exchange failures.
#[derive(Debug, Clone, clap::Args)]
pub struct RetryArgs {
    /// Wait after the first failed attempt, in ms; each later wait doubles.
    #[arg(long, env = "HOOX_RETRY_BASE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_base_ms: u64,

    /// Attempts in all, the first one included; then the signal is dead-lettered.
    #[arg(long, env = "HOOX_RETRY_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub retry_max_attempts: u32,

    /// Longest wait between two attempts, in ms.
    #[arg(long, env = "HOOX_RETRY_MAX_DELAY_MS", default_value_t = 480_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_max_delay_ms: u64,
}

impl RetryArgs {
    /// The schedule these settings describe.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(self.retry_base_ms),
            max_attempts: self.retry_max_attempts,
            max_delay: Duration::from_millis(self.retry_max_delay_ms.max(self.retry_base_ms)),
        }
    }
}

/// The key that signs queue messages between ingest and consumer.
#[derive(Debug, Clone, clap::Args)]
pub struct InternalKeyArgs {
    /// Secret shared by ingest and consumer to sign queue messages.
    #[arg(long, env = "HOOX_INTERNAL_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub internal_key: Option<SecretString>,
}

fn parse_queue_name(value: &str) -> Result<String, String> {
    // AMQP names are at most 255 bytes; leave room for the `.retry.<ms>` and `.pNN`
    // suffixes.
    if value.is_empty() || value.len() > 200 {
        return Err("must be 1 to 200 characters".to_owned());
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err("may hold only letters, digits, `-`, `_`, `.` and `:`".to_owned());
    }
    Ok(value.to_owned())
}

/// The settings every service shares: database, broker, signing key, logging.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub amqp: AmqpArgs,

    #[command(flatten)]
    pub internal_key: InternalKeyArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        amqp: AmqpArgs,
    }

    #[test]
    fn a_malformed_amqp_url_list_is_refused_at_start_without_its_password() {
        let list = "amqp://hoox:sesame@rabbit-a:5672/%2f,hoox:sesame@rabbit-b:5672";
        let err = Cli::try_parse_from(["hoox", "--amqp-url", list]).unwrap_err();
        let message = err.to_string();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(message.contains("entry 2 (rabbit-b:5672)"), "{message}");
        assert!(!message.contains("sesame"), "{message}");

        let good = "amqp://hoox:sesame@rabbit-a:5672/%2f,amqp://hoox:sesame@rabbit-b:5672/%2f";
        assert!(Cli::try_parse_from(["hoox", "--amqp-url", good]).is_ok());
    }
}
