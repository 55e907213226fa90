//! `hoox-consumer`: the batch consumer on its own.

use anyhow::Context;
use clap::Parser;
use hoox_consumer::config::ConsumerArgs;

/// Executes queued trading signals on the exchanges, in batches.
#[derive(Debug, Parser)]
#[command(name = "hoox-consumer", version)]
struct Cli {
    #[command(flatten)]
    service: hoox_common::config::ServiceArgs,

    #[command(flatten)]
    args: ConsumerArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    hoox_common::telemetry::init(cli.service.log.log_format);
    let token = tokio_util::sync::CancellationToken::new();
    hoox_common::shutdown::cancel_on_signal(token.clone());
    let internal_key = cli
        .service
        .internal_key
        .internal_key
        .clone()
        .context("HOOX_INTERNAL_KEY is required: the key shared with ingest")?;
    hoox_consumer::run(&cli.args, &cli.service, internal_key, token).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
