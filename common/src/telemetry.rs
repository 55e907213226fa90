//! Logging setup: `RUST_LOG` filters, `HOOX_LOG_FORMAT` picks text for people or JSON
//! for machines.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Log settings shared by every binary.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "HOOX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Whether a log line or span may be written whatever `RUST_LOG` says: not lapin's
/// TRACE, which writes every AMQP frame whole, and the connection's first frame carries
/// the broker login's password (`response: LongString([0, …])`).
fn never_secret(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    let lapin = target == "lapin" || target.starts_with("lapin::");
    !(lapin && *metadata.level() == Level::TRACE)
}

/// Installs the global subscriber, writing to stderr. `RUST_LOG` defaults to `info`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, `hoox run`) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.finish().with(filter_fn(never_secret)).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(filter_fn(never_secret))
            .try_init(),
    };
}
