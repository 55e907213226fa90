//! Ingest's settings: every flag also reads its environment variable.
//!
//! | variable | default |
//! | --- | --- |
//! | `HOOX_INGEST_ADDR` | `127.0.0.1:8080` |
//! | `HOOX_WEBHOOK_API_KEY` | none: required |
//! | `HOOX_IDEMPOTENCY_TTL_SECS` / `HOOX_DUPLICATE_WINDOW_SECS` | `86400` / `60` |
//! | `HOOX_HEADER_READ_TIMEOUT_MS` / `HOOX_IDLE_TIMEOUT_MS` / `HOOX_BODY_READ_TIMEOUT_MS` | `5000` / `30000` / `5000` |
//! | `HOOX_MAX_CONNECTIONS` / `HOOX_MAX_CONNECTIONS_PER_IP` | `4096` / `64` |
//! | `HOOX_IP_ALLOWLIST` / `HOOX_TRUSTED_PROXIES` | empty (everyone) / empty (no one) |
//! | `HOOX_RATE_LIMIT_PER_MIN` | empty (off) |

use std::net::SocketAddr;
use std::time::Duration;

use hoox_common::config::parse_secret;
use secrecy::SecretString;

use crate::server::{self, Limits};
use crate::source::{IpNets, RatePerMinute, Sources};

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

    /// How long a client has to send a request's whole head, counted from when the
    /// server starts waiting for it (so an idle keep-alive connection is closed after
    /// this too), in milliseconds.
    #[arg(long, env = "HOOX_HEADER_READ_TIMEOUT_MS", default_value_t = server::DEFAULT_HEADER_READ_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,

    /// How long a connection may go without a byte moving either way before it is
    /// closed, in milliseconds; longer than the 10 s request timeout.
    #[arg(long, env = "HOOX_IDLE_TIMEOUT_MS", default_value_t = server::DEFAULT_IDLE_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(10_001..))]
    pub idle_timeout_ms: u64,

    /// How long a webhook's body may take to arrive before it is answered 408, in
    /// milliseconds; under the 10 s request timeout, so a stalled body is never a 503.
    #[arg(long, env = "HOOX_BODY_READ_TIMEOUT_MS", default_value_t = server::DEFAULT_BODY_READ_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..10_000))]
    pub body_read_timeout_ms: u64,

    /// Most connections open at once; more wait in the kernel's backlog.
    #[arg(long, env = "HOOX_MAX_CONNECTIONS", default_value_t = server::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Most connections open at once from one address (trusted proxies exempt); more
    /// are closed at once.
    #[arg(long, env = "HOOX_MAX_CONNECTIONS_PER_IP", default_value_t = server::DEFAULT_MAX_CONNECTIONS_PER_IP, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: u32,

    /// Comma-separated addresses or CIDRs allowed to call `/webhook`; empty allows all.
    #[arg(long, env = "HOOX_IP_ALLOWLIST", default_value = "", value_parser = IpNets::parse)]
    pub ip_allowlist: IpNets,

    /// Comma-separated addresses or CIDRs of reverse proxies whose `X-Forwarded-For` is
    /// believed; empty believes no one.
    #[arg(long, env = "HOOX_TRUSTED_PROXIES", default_value = "", value_parser = IpNets::parse)]
    pub trusted_proxies: IpNets,

    /// Webhooks a minute accepted from one source after authentication; empty is off.
    #[arg(long, env = "HOOX_RATE_LIMIT_PER_MIN", default_value = "", value_parser = RatePerMinute::parse)]
    pub rate_limit_per_min: RatePerMinute,
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

    /// The connection limits and timeouts.
    pub fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_connections: self.max_connections as usize,
            max_connections_per_ip: self.max_connections_per_ip as usize,
        }
    }

    /// Who may send webhooks, how their address is found, and how often they may.
    pub fn sources(&self) -> Sources {
        Sources::new(
            self.ip_allowlist.clone(),
            self.trusted_proxies.clone(),
            self.rate_limit_per_min,
        )
    }
}
