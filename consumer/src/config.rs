//! The consumer's settings: every flag also reads its environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use crate::batch::BatchBounds;

/// Settings of the batch consumer (besides the shared [`hoox_common::config::ServiceArgs`]).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerArgs {
    /// Listen address of `/healthz` and `/readyz`.
    #[arg(long, env = "HOOX_CONSUMER_ADDR", default_value = "127.0.0.1:9090")]
    pub consumer_addr: SocketAddr,

    /// Most signals executed in one batch.
    #[arg(long, env = "HOOX_BATCH_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,

    /// Longest time spent filling a batch after its first signal, in ms. A lone signal
    /// never waits for it.
    #[arg(long, env = "HOOX_BATCH_TIMEOUT_MS", default_value_t = 1000)]
    pub batch_timeout_ms: u64,

    /// Signals older than this (seconds since ingest accepted them) are dead-lettered, never executed.
    #[arg(long, env = "HOOX_SIGNAL_MAX_AGE_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub signal_max_age_secs: u64,
}

impl ConsumerArgs {
    /// The batch bounds these settings give.
    pub fn batch_bounds(&self) -> BatchBounds {
        BatchBounds {
            size: usize::from(self.batch_size),
            timeout: Duration::from_millis(self.batch_timeout_ms),
        }
    }
}
