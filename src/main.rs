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
            let exit = err.downcast_ref::<hoox::commands::Exit>();
            if exit.is_none_or(|exit| exit.message.is_some()) {
                // An error can quote the broker, the database or the operator's input.
                eprintln!("error: {}", hoox::terminal::escape(&format!("{err:#}")));
            }
            exit.map_or(std::process::ExitCode::FAILURE, |exit| {
                std::process::ExitCode::from(exit.code)
            })
        }
    }
}
