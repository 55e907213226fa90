//! `hoox`: the operator CLI.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = dotenvy::dotenv();
    let cli = hoox::Cli::parse();
    hoox_common::telemetry::init(cli.log.log_format);
    match hoox::commands::dispatch(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // An error can quote the broker, the database or the operator's input.
            eprintln!("error: {}", hoox::terminal::escape(&format!("{err:#}")));
            match err.downcast_ref::<hoox::commands::Exit>() {
                Some(exit) => std::process::ExitCode::from(exit.code),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}
