//! `hoox-ingest`: the webhook service on its own.

use anyhow::Context;
use clap::Parser;
use hoox_ingest::config::IngestArgs;

/// Receives trading signals on `POST /webhook` and queues them for the consumer.
#[derive(Debug, Parser)]
#[command(name = "hoox-ingest", version)]
struct Cli {
    #[command(flatten)]
    service: hoox_common::config::ServiceArgs,

    #[command(flatten)]
    args: IngestArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    hoox_common::telemetry::init(cli.service.log.log_format);
    let token = tokio_util::sync::CancellationToken::new();
    hoox_common::shutdown::cancel_on_signal(token.clone());
    let api_key = cli
        .args
        .webhook_api_key
        .clone()
        .context("HOOX_WEBHOOK_API_KEY is required: the key webhook producers must send")?;
    hoox_common::runtime_config::check_api_key(secrecy::ExposeSecret::expose_secret(&api_key))
        .context("HOOX_WEBHOOK_API_KEY is too weak")?;
    let internal_key = cli
        .service
        .internal_key
        .internal_key
        .clone()
        .context("HOOX_INTERNAL_KEY is required: the key shared with the consumer")?;
    hoox_ingest::run(&cli.args, &cli.service, api_key, internal_key, token).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
