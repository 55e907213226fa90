//! The consumer: executes the signals of the partitions it leases, one at a time per
//! symbol and many symbols at once, records fills and audit rows in one transaction per
//! batch of outcomes, and only then acknowledges, retries (through the broker's delay
//! tiers) or dead-letters. This file wires the parts together: `run` is the run loop,
//! `leases` the partition ownership, `lanes` the per-symbol order, `worker` the
//! execution, `store` the claims and commits, `health` the HTTP endpoints.

pub mod batch;
pub mod config;
pub mod exchange;
pub mod exposure;
mod health;
pub mod lanes;
pub mod leases;
pub mod ledger;
mod run;
pub mod store;
pub mod worker;

pub use health::health_router;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hoox_common::amqp::Topology;
use hoox_common::retry::{sleep_unless_cancelled, Reconnect};
use hoox_common::runtime_config::RuntimeConfig;
use hoox_common::telegram::{Notifier, BROKER_OUTAGE_ALERT};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::batch::BatchBounds;
use crate::exchange::paper::Paper;
use crate::exchange::router::ExchangeRouter;
use crate::worker::{Worker, WorkerSettings};

/// RabbitMQ's default `consumer_timeout`: a delivery left unacknowledged longer makes
/// the broker close its channel. Signals held behind a retry wait unacknowledged.
const BROKER_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A consumer ready to run.
pub struct Consumer {
    worker: Worker,
    topology: Topology,
    amqp_url: SecretString,
    bounds: BatchBounds,
    connected: Arc<AtomicBool>,
    notifier: Option<Notifier>,
    alert_after: Duration,
}

impl Consumer {
    /// A consumer of `topology`'s main queue executing through `worker`.
    pub fn new(
        worker: Worker,
        topology: Topology,
        amqp_url: SecretString,
        bounds: BatchBounds,
    ) -> Self {
        Self {
            worker,
            topology,
            amqp_url,
            bounds,
            connected: Arc::new(AtomicBool::new(false)),
            notifier: None,
            alert_after: BROKER_OUTAGE_ALERT,
        }
    }

    /// The same consumer, telling `notifier` (when there is one) once per outage when
    /// it has been without its broker for [`BROKER_OUTAGE_ALERT`] (30 s).
    #[must_use]
    pub fn with_notifier(self, notifier: Option<Notifier>) -> Self {
        Self { notifier, ..self }
    }

    /// The same consumer, telling its notifier of an outage after `alert_after`
    /// instead (tests do not wait 30 s).
    #[must_use]
    pub fn with_outage_alert_after(self, alert_after: Duration) -> Self {
        Self {
            alert_after,
            ..self
        }
    }

    /// A flag that is true while the consumer holds a broker connection.
    pub fn connected_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.connected)
    }

    /// Consumes until `token` is cancelled, reconnecting with backoff whenever the
    /// broker or the lease connection goes away. What is in flight is finished and
    /// settled before returning.
    pub async fn run(self, token: CancellationToken) {
        let mut reconnect = Reconnect::new();
        // Since when the broker has been out of reach, and whether the chat was told.
        let mut down_since = Instant::now();
        let mut told = false;
        while !token.is_cancelled() {
            let mut reached = false;
            match run::consume(&self, &token, &mut reached).await {
                Ok(()) => reconnect = Reconnect::new(),
                Err(err) => {
                    self.connected.store(false, Ordering::SeqCst);
                    if reached {
                        down_since = Instant::now();
                        told = false;
                    }
                    let down = down_since.elapsed();
                    if let Some(notifier) = self.notifier.as_ref().filter(|_| !told) {
                        if down >= self.alert_after {
                            notifier.broker_lost(down);
                            told = true;
                        }
                    }
                    let delay = reconnect.next_delay();
                    tracing::warn!(error = %format!("{err:#}"), retry_in_ms = delay.as_millis() as u64, "consumer lost the message broker; reconnecting");
                    sleep_unless_cancelled(delay, &token).await;
                }
            }
        }
        self.connected.store(false, Ordering::SeqCst);
    }
}

/// Runs the consumer with `args` until `token` is cancelled: waits for the database,
/// starts the config listener and the health endpoint, then consumes.
pub async fn run(
    args: &config::ConsumerArgs,
    service: &hoox_common::config::ServiceArgs,
    internal_key: SecretString,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.consumer_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.consumer_addr))?;
    let opened = RuntimeConfig::open(&service.database.database_url, 10, &token)
        .await
        .context("cannot read the config table")?;
    let Some((pool, config)) = opened else {
        return Ok(());
    };
    let mut providers = args.exchanges.providers();
    providers.push(Arc::new(Paper::new(pool.clone(), config.clone())));
    let router = ExchangeRouter::new(providers, config.clone());
    let topology = service.amqp.topology();
    hoox_common::partitions::check(&pool, &topology).await?;
    let longest_hold = Duration::from_secs(args.signal_max_age_secs)
        .saturating_add(topology.retry_policy().max_delay);
    if longest_hold >= BROKER_CONSUMER_TIMEOUT {
        tracing::warn!(
            longest_hold_secs = longest_hold.as_secs(),
            "HOOX_SIGNAL_MAX_AGE_SECS plus HOOX_RETRY_MAX_DELAY_MS reaches RabbitMQ's default consumer_timeout (30 min): raise consumer_timeout, or signals held behind a retry will be handed back and redelivered"
        );
    }
    let worker = Worker::new(
        pool.clone(),
        config.clone(),
        Arc::new(router),
        WorkerSettings {
            internal_key,
            signal_max_age: Duration::from_secs(args.signal_max_age_secs),
            retry: *topology.retry_policy(),
        },
    );
    let notifier = args.telegram.notifier(&token);
    let consumer = Consumer::new(
        worker.with_notifier(notifier.clone()),
        topology,
        service.amqp.amqp_url.clone(),
        args.batch_bounds(),
    )
    .with_notifier(notifier);
    let health = health_router(pool, consumer.connected_flag(), config);
    let server_token = token.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, health)
            .with_graceful_shutdown(server_token.cancelled_owned())
            .await
    });
    tracing::info!(addr = %args.consumer_addr, "consumer health endpoint listening");
    consumer.run(token).await;
    server
        .await
        .context("health server task")?
        .context("health server failed")
}
