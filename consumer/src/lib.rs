//! The batch consumer: takes signals off the queue in batches, executes them on the
//! routed exchange, records fills and audit rows in one transaction per batch, and only
//! then acknowledges, retries (through the broker's delay tiers) or dead-letters.

pub mod batch;
pub mod config;
pub mod exchange;
pub mod store;
pub mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use hoox_common::amqp::{self, Topology};
use hoox_common::message::{HEADER_ATTEMPTS, HEADER_ERROR, HEADER_REASON, HEADER_SIGNATURE};
use hoox_common::retry::{sleep_unless_cancelled, Reconnect};
use hoox_common::runtime_config::RuntimeConfig;
use hoox_common::telegram::{Notifier, BROKER_OUTAGE_ALERT};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Event};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::batch::{collect, BatchBounds, Collected};
use crate::exchange::paper::Paper;
use crate::exchange::router::ExchangeRouter;
use crate::worker::{Disposition, Incoming, Outgoing, Worker, WorkerSettings};

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
    /// broker goes away. A batch in flight is finished before returning.
    pub async fn run(self, token: CancellationToken) {
        let mut reconnect = Reconnect::new();
        // Since when the broker has been out of reach, and whether the chat was told.
        let mut down_since = Instant::now();
        let mut told = false;
        while !token.is_cancelled() {
            let mut reached = false;
            match self.consume(&token, &mut reached).await {
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

    /// One connection's worth of consuming; returns `Ok` on shutdown. Sets `reached`
    /// once consuming has begun (a later error starts a new outage).
    async fn consume(&self, token: &CancellationToken, reached: &mut bool) -> anyhow::Result<()> {
        let connection = amqp::connect(&self.amqp_url, "hoox-consumer")
            .await
            .context("connect")?;
        let channel = connection.create_channel().await.context("open channel")?;
        self.topology
            .declare(&channel)
            .await
            .context("declare topology")?;
        // Two batches in flight from the broker: the next batch is already here when
        // this one is acknowledged, and no consumer hoards more than it can soon use.
        let prefetch = u16::try_from(self.bounds.size.saturating_mul(2)).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .context("qos")?;
        let publisher = connection
            .create_channel()
            .await
            .context("open publish channel")?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("confirm mode")?;
        let mut deliveries = channel
            .basic_consume(
                ShortString::from(self.topology.queue()),
                ShortString::from(""),
                // Manual acks: a message is acknowledged only after its outcome commits.
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("consume")?;
        self.connected.store(true, Ordering::SeqCst);
        *reached = true;
        tracing::info!(queue = self.topology.queue(), "consuming");
        let mut events = connection.events_listener();

        let result = loop {
            let collected = tokio::select! {
                () = token.cancelled() => break Ok(()),
                collected = collect(&mut deliveries, self.bounds) => collected,
            };
            match collected {
                // An ack or a confirm on a connection that just died can wait forever:
                // the batch is abandoned instead, unacknowledged, and the broker
                // redelivers it (its claim makes that safe at any point).
                Collected::Batch(batch) => {
                    let span = tracing::info_span!("batch", size = batch.len());
                    tokio::select! {
                        handled = self.handle(batch, &publisher, token).instrument(span) => handled?,
                        err = connection_failed(&mut events) => {
                            break Err(anyhow::Error::new(err).context("connection failed mid-batch"));
                        }
                    }
                }
                Collected::Failed(batch, err) => {
                    // Deliveries taken before the failure cannot be acknowledged on a
                    // dead channel; the broker redelivers them.
                    drop(batch);
                    break Err(anyhow::Error::new(err).context("delivery stream failed"));
                }
                Collected::Ended => break Err(anyhow::anyhow!("the broker closed the consumer")),
            }
        };
        self.connected.store(false, Ordering::SeqCst);
        let _ = connection.close(200, "shutdown".into()).await;
        result
    }

    /// Processes one batch, publishes its retries and dead letters, commits, then
    /// acknowledges. A publish that fails leaves the batch uncommitted and unacked: the
    /// broker redelivers it and the claim resumes each attempt.
    async fn handle(
        &self,
        batch: Vec<Delivery>,
        publisher: &Channel,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        hoox_common::metrics::batch_taken(batch.len());
        let incoming: Vec<Incoming> = batch.iter().map(incoming).collect();
        // Once started, a batch is finished even during shutdown; only a database
        // outage that outlasts the shutdown interrupts it, and then nothing is acked.
        let Ok(executed) = self.worker.process(&incoming, token).await else {
            return Ok(());
        };
        for processed in &executed.processed {
            self.publish_disposition(&processed.disposition, publisher)
                .await?;
        }
        if self.worker.commit(executed, token).await.is_err() {
            return Ok(());
        }
        for delivery in &batch {
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .context("ack")?;
        }
        Ok(())
    }

    async fn publish_disposition(
        &self,
        disposition: &Disposition,
        publisher: &Channel,
    ) -> anyhow::Result<()> {
        match disposition {
            Disposition::Ack => Ok(()),
            Disposition::Retry { delay, message } => {
                let queue = self.topology.retry_queue(*delay);
                publish(publisher, &queue, message, &[])
                    .await
                    .context("publish retry")
            }
            Disposition::DeadLetter {
                reason,
                error,
                message,
            } => {
                let headers = [
                    (HEADER_REASON, amqp::text(reason.as_str())),
                    (HEADER_ERROR, amqp::text(error)),
                ];
                publish(publisher, &self.topology.dlq(), message, &headers)
                    .await
                    .context("publish dead letter")
            }
        }
    }
}

/// Waits for the connection's first error.
async fn connection_failed(events: &mut (impl Stream<Item = Event> + Unpin)) -> lapin::Error {
    loop {
        match events.next().await {
            Some(Event::Error(err)) => return err,
            Some(_) => {}
            None => {
                return lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                    lapin::ConnectionState::Closed,
                ))
            }
        }
    }
}

fn incoming(delivery: &Delivery) -> Incoming {
    Incoming {
        body: delivery.data.clone(),
        signature: amqp::header_text(delivery.properties.headers().as_ref(), HEADER_SIGNATURE),
        redelivered: delivery.redelivered,
    }
}

/// Publishes `message` to `queue` with its signature and attempt count, confirmed.
async fn publish(
    channel: &Channel,
    queue: &str,
    message: &Outgoing,
    extra: &[(&str, AMQPValue)],
) -> Result<(), amqp::PublishError> {
    let id = message.request_id.map(|id| id.to_string());
    let mut headers = amqp::signed_headers(message.signature.as_deref(), id.as_deref());
    for (name, value) in extra {
        headers.insert((*name).into(), value.clone());
    }
    headers.insert(
        HEADER_ATTEMPTS.into(),
        AMQPValue::LongLongInt(i64::from(message.attempts)),
    );
    amqp::publish_confirmed(channel, queue, &message.body, headers, id.as_deref()).await
}

#[derive(Clone)]
struct Health {
    pool: sqlx::PgPool,
    connected: Arc<AtomicBool>,
    config: RuntimeConfig,
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    let body = hoox_common::metrics::scrape(
        health.config.kill_switch(),
        health.connected.load(Ordering::SeqCst),
        &health.pool,
    )
    .await;
    (
        [(header::CONTENT_TYPE, hoox_common::metrics::CONTENT_TYPE)],
        body,
    )
}

async fn readyz(State(health): State<Health>) -> (StatusCode, Json<serde_json::Value>) {
    let broker = health.connected.load(Ordering::SeqCst);
    let (ready, body) = hoox_common::health::readiness(broker, &health.pool).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// The consumer's `/healthz`, `/readyz` and `/metrics`.
pub fn health_router(
    pool: sqlx::PgPool,
    connected: Arc<AtomicBool>,
    config: RuntimeConfig,
) -> Router {
    hoox_common::metrics::install();
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(hoox_common::health::alive()) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Health {
            pool,
            connected,
            config,
        })
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
