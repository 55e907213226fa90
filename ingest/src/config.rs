//! Ingest's settings: every flag also reads its environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use hoox_common::config::parse_secret;
use secrecy::SecretString;

/// Settings of the webhook service (besides the shared [`hoox_common::config::ServiceArgs`]).
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Listen address of `/webhook`, `/healthz` and `/readyz`.
    #[arg(long, env = "HOOX_INGEST_ADDR", default_value = "127.0.0.1:8080")]
    pub ingest_addr: SocketAddr,

    /// The webhook `apiKey` producers must send (the config key `webhooks:api_key` overrides it).
    #[arg(long, env = "HOOX_WEBHOOK_API_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub webhook_api_key: Option<SecretString>,

    /// How long an explicit `idempotencyKey` is remembered, in seconds.
    #[arg(long, env = "HOOX_IDEMPOTENCY_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub idempotency_ttl_secs: u64,

    /// How long an identical signal without a key counts as a duplicate, in seconds.
    #[arg(long, env = "HOOX_DUPLICATE_WINDOW_SECS", default_value_t = 60)]
    pub duplicate_window_secs: u64,
}

impl IngestArgs {
    /// `HOOX_IDEMPOTENCY_TTL_SECS` as a duration.
    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_secs)
    }

    /// `HOOX_DUPLICATE_WINDOW_SECS` as a duration.
    pub fn duplicate_window(&self) -> Duration {
        Duration::from_secs(self.duplicate_window_secs)
    }
}
