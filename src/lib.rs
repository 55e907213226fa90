//! The operator CLI of hoox: run the pipeline on a laptop, migrate the database, and
//! follow a signal through the system.

pub mod commands;
pub mod dashboard;
pub mod terminal;

use clap::{Parser, Subcommand};
use hoox_common::telemetry::LogArgs;

/// hoox turns trading signals (TradingView alerts, scripts, any webhook producer) into
/// orders on Bybit, Binance, MEXC or the built-in paper exchange.
///
/// Settings come from flags, the environment, or a `.env` file in the current folder.
#[derive(Debug, Parser)]
#[command(name = "hoox", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub log: LogArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run ingest, consumer and the dashboard (and the Telegram bot, when configured) in
    /// one process, on local defaults (paper trading).
    ///
    /// Prints the webhook URL and a ready-to-paste curl command. Stops on Ctrl-C after
    /// finishing the batch in flight.
    Run(Box<commands::run::RunArgs>),
    /// Create the database if needed and apply pending migrations.
    Migrate(commands::migrate::MigrateArgs),
    /// Show the life of one signal, from webhook to fill or dead letter.
    Trace(commands::trace::TraceArgs),
    /// Read and change live settings: routing, kill switch, webhook key, paper prices.
    ///
    /// Values are checked per key; running services see a change within a second.
    Config(commands::config::ConfigArgs),
    /// Inspect, replay or purge dead letters (signals that could not be executed).
    Dlq(commands::dlq::DlqArgs),
    /// Halt or resume all trading; running services see the change within a second.
    KillSwitch(commands::kill_switch::KillSwitchArgs),
    /// Read the `system_logs` audit stream, newest last; `tail --follow` keeps printing
    /// new rows until Ctrl-C.
    Logs(commands::logs::LogsArgs),
    /// The positions ledger: net quantity, average entry, realized PnL and fees per
    /// exchange, market, environment and symbol, kept from every fill.
    Positions(commands::positions::PositionsArgs),
    /// Fills, traded volume and realized PnL per UTC day, exchange and symbol, as a
    /// table, CSV for spreadsheets, or JSON.
    Report(commands::report::ReportArgs),
    /// Check broker, database, queues, dead letters, kill switch and exchange keys.
    ///
    /// Exits 0 when healthy, 1 when not, with one line per problem. Read-only: creates
    /// no queue and no database.
    Health(Box<commands::health::HealthArgs>),
    /// The Telegram bot: answers /status, /kill_on, /kill_off, /dlq and /trace from
    /// TELEGRAM_CHAT_ID alone, and tells it about kill switch changes.
    ///
    /// Run exactly one (or `hoox run` with Telegram configured, which runs it inside).
    /// Stops on Ctrl-C or SIGTERM.
    Bot(Box<commands::bot::BotArgs>),
    /// The web dashboard (Command Center) on HOOX_DASHBOARD_ADDR: health, kill switch,
    /// signals, fills, positions, dead letters, config and live logs.
    ///
    /// Needs HOOX_DASHBOARD_PASSWORD on an address beyond loopback. Stops on Ctrl-C or
    /// SIGTERM.
    Dashboard(Box<dashboard::DashboardArgs>),
    /// Measure this machine's ceilings and how much of them hoox gets: ingest's
    /// webhooks/s and latency, signal-to-order latency, the consumer's orders/s with 1,
    /// 2 and 4 consumers, and peak memory.
    ///
    /// Runs `hoox-ingest` and `hoox-consumer` from this hoox's folder against the local
    /// RabbitMQ and PostgreSQL, on a database and queues of its own that it removes at
    /// the end. `--quick` takes under a minute, the full run under ten.
    Bench(Box<commands::bench::BenchArgs>),
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
