//! One module per subcommand.

pub mod bench;
pub mod bot;
pub mod config;
pub mod dlq;
pub mod health;
pub mod kill_switch;
pub mod logs;
pub mod migrate;
pub mod positions;
pub mod report;
pub mod run;
pub mod trace;

use crate::{Cli, Command};

/// An error that sets the process's exit status: for commands whose status says more
/// than success or failure (`hoox positions reconcile`). Any other error exits 1.
#[derive(Debug)]
pub struct Exit {
    /// The exit status.
    pub code: u8,
    /// What happened, for the error line; `None` when the command's output said it.
    pub message: Option<String>,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(message) => f.write_str(message),
            None => write!(f, "exit status {}", self.code),
        }
    }
}

impl std::error::Error for Exit {}

/// A duration in seconds as people read an age: `42s`, `7m`, `3h`, `2d`.
pub fn age(secs: i64) -> String {
    match secs.max(0) {
        secs @ 0..=59 => format!("{secs}s"),
        secs @ 60..=3599 => format!("{}m", secs / 60),
        secs @ 3600..=86_399 => format!("{}h", secs / 3600),
        secs => format!("{}d", secs / 86_400),
    }
}

/// Runs the parsed command line.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(*args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Trace(args) => trace::run(args).await,
        Command::Config(args) => config::run(args).await,
        Command::Dlq(args) => dlq::run(args).await,
        Command::KillSwitch(args) => kill_switch::run(args).await,
        Command::Logs(args) => logs::run(args).await,
        Command::Positions(args) => positions::run(args).await,
        Command::Report(args) => report::run(args).await,
        Command::Health(args) => health::run(*args).await,
        Command::Bot(args) => bot::run(*args).await,
        Command::Dashboard(args) => crate::dashboard::run(*args).await,
        Command::Bench(args) => bench::run(*args).await,
    }
}
