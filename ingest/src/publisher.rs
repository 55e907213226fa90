//! Publishing to RabbitMQ with publisher confirms, over a connection this module keeps
//! alive itself (lapin's own recovery is not trusted: see the architecture notes).
//!
//! A supervisor task connects with backoff, declares the topology and opens a confirm
//! channel; it reconnects when the connection reports an error or a publish fails. A
//! publish never waits for a connection: with none, it fails at once, and the webhook
//! answers 503 so the producer resends.
//!
//! A publish is the whole job: send, wait for the confirm at most [`CONFIRM_TIMEOUT`],
//! and hand the broker's verdict to the caller's [`Settle`] whenever it comes. Publishes
//! of concurrent webhooks share the channel, so their confirms overlap.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hoox_common::amqp::{self, Topology};
use hoox_common::retry::{sleep_unless_cancelled, Reconnect};
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Event};
use secrecy::SecretString;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

/// How long a publish waits for the broker's confirm. TradingView gives up after 3 s;
/// answering 503 before that lets it resend.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_millis(2_000);

/// What the broker decided about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The broker has the message on disk.
    Confirmed,
    /// The broker does not have it, and never will.
    Refused,
}

/// Records a message's fate once the broker has decided it, however late: the caller
/// of [`Publisher::publish`] says what a verdict means for its message.
pub trait Settle: Send + 'static {
    /// Records `verdict`.
    fn settle(self, verdict: Verdict) -> impl Future<Output = ()> + Send;
}

/// Why a publish was not confirmed, and whether the broker may have the message.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No live connection to the broker: the message was never sent.
    #[error("message broker unreachable")]
    Unavailable,
    /// The broker refused or could not route the message.
    #[error("message broker did not accept the message: {0}")]
    Refused(#[source] amqp::PublishError),
    /// The connection failed after the message was handed to it, before the verdict.
    #[error("message broker connection failed before its confirm: {0}")]
    ConnectionLost(#[source] lapin::Error),
    /// The verdict did not come within [`CONFIRM_TIMEOUT`]; it is settled when it does.
    #[error("message broker did not confirm within {} ms", CONFIRM_TIMEOUT.as_millis())]
    TimedOut,
}

impl PublishError {
    /// Whether the broker may have the message after all.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::ConnectionLost(_) | Self::TimedOut)
    }
}

/// Why the supervisor has no confirm channel yet.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    /// No node of `AMQP_URL` gave a connection.
    #[error(transparent)]
    Connect(#[from] amqp::ConnectError),
    /// A node gave one, and then failed us.
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

/// A supervised, confirming publisher to the partition queues.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    channel: RwLock<Option<Channel>>,
    broken: Notify,
    topology: Topology,
    /// Verdicts that came after [`CONFIRM_TIMEOUT`], still to be settled.
    late: TaskTracker,
}

impl Publisher {
    /// Starts the supervisor, which runs until `token` is cancelled and then closes the
    /// connection; the publisher is ready once it has connected.
    pub fn start(
        url: SecretString,
        topology: Topology,
        token: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let publisher = Self {
            inner: Arc::new(Inner {
                channel: RwLock::new(None),
                broken: Notify::new(),
                topology,
                late: TaskTracker::new(),
            }),
        };
        let supervisor = tokio::spawn(publisher.clone().supervise(url, token));
        (publisher, supervisor)
    }

    /// Whether a confirm channel is open.
    pub fn is_ready(&self) -> bool {
        self.current().is_some_and(|c| c.status().connected())
    }

    /// Publishes one persistent, mandatory, signed message to the partition of `symbol` and waits
    /// for the broker's verdict, at most [`CONFIRM_TIMEOUT`]. Every verdict the broker
    /// gives is passed to `settle` before this returns, or when it comes if later; when
    /// the outcome stays unknown (the connection failed), `settle` is never called.
    pub async fn publish(
        &self,
        request_id: Uuid,
        symbol: &str,
        body: &[u8],
        signature: &str,
        settle: impl Settle,
    ) -> Result<(), PublishError> {
        let mut verdict = match self.send(request_id, symbol, body, signature).await {
            Ok(verdict) => verdict,
            Err(err) => return Err(settled(err, settle).await),
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, &mut verdict).await {
            Ok(Ok(())) => {
                settle.settle(Verdict::Confirmed).await;
                Ok(())
            }
            Ok(Err(err)) => Err(settled(err, settle).await),
            Err(_) => {
                // The verdict is still coming: settle it when it does, so the
                // producer's resend meets a duplicate (confirmed) or a free key.
                self.inner.late.spawn(
                    async move {
                        match verdict.await {
                            Ok(()) => settle.settle(Verdict::Confirmed).await,
                            Err(err) => drop(settled(err, settle).await),
                        }
                    }
                    .in_current_span(),
                );
                Err(PublishError::TimedOut)
            }
        }
    }

    /// Waits, at most `limit`, until every late verdict has been settled.
    pub async fn settle_late_verdicts(&self, limit: Duration) -> bool {
        self.inner.late.close();
        tokio::time::timeout(limit, self.inner.late.wait())
            .await
            .is_ok()
    }

    /// Hands the message to the connection; the returned future is the broker's verdict.
    async fn send(
        &self,
        request_id: Uuid,
        symbol: &str,
        body: &[u8],
        signature: &str,
    ) -> Result<impl Future<Output = Result<(), PublishError>> + Send + Unpin, PublishError> {
        let channel = self.current().ok_or(PublishError::Unavailable)?;
        if !channel.status().connected() {
            // A channel that died without a connection error event (or before it came):
            // tell the supervisor, or it would keep the dead channel and ingest would
            // answer 503 until something else failed.
            self.reconnect();
            return Err(PublishError::Unavailable);
        }
        let id = request_id.to_string();
        let headers = amqp::signed_headers(Some(signature), Some(&id));
        let queue = self.inner.topology.queue_for(symbol);
        let confirm = amqp::publish(&channel, &queue, body, headers, Some(&id))
            .await
            .map_err(|err| {
                self.reconnect();
                PublishError::ConnectionLost(err)
            })?;
        let started = Instant::now();
        let publisher = self.clone();
        Ok(Box::pin(async move {
            let verdict = match confirm.await {
                Ok(confirmation) => {
                    amqp::confirmed(confirmation, &queue).map_err(PublishError::Refused)
                }
                Err(err) => Err(PublishError::ConnectionLost(err)),
            };
            hoox_common::metrics::publish_took(started.elapsed());
            if verdict.is_err() {
                publisher.reconnect();
            }
            verdict
        }))
    }

    fn current(&self) -> Option<Channel> {
        self.inner
            .channel
            .read()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    fn set(&self, channel: Option<Channel>) {
        if let Ok(mut current) = self.inner.channel.write() {
            *current = channel;
        }
    }

    fn reconnect(&self) {
        self.inner.broken.notify_one();
    }

    async fn supervise(self, url: SecretString, token: CancellationToken) {
        let mut reconnect = Reconnect::new();
        while !token.is_cancelled() {
            let connected = async {
                let connection = amqp::connect(&url, "hoox-ingest").await?;
                let channel = connection.create_channel().await?;
                self.inner.topology.declare(&channel).await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                Ok::<_, SetupError>((connection, channel))
            }
            .await;
            let (connection, channel) = match connected {
                Ok(pair) => pair,
                Err(err) => {
                    let delay = reconnect.next_delay();
                    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "cannot connect to the message broker");
                    if !sleep_unless_cancelled(delay, &token).await {
                        break;
                    }
                    continue;
                }
            };
            tracing::info!("connected to the message broker");
            reconnect = Reconnect::new();
            let mut events = connection.events_listener();
            self.set(Some(channel));
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    () = self.inner.broken.notified() => {
                        tracing::warn!("a publish failed; reconnecting to the message broker");
                        break;
                    }
                    event = events.next() => match event {
                        Some(Event::Error(err)) => {
                            tracing::warn!(error = %err, "message broker connection failed; reconnecting");
                            break;
                        }
                        Some(_) => {}
                        None => break,
                    },
                }
            }
            self.set(None);
            let _ = connection.close(200, "reconnecting".into()).await;
        }
    }
}

/// Settles a failed publish whose message the broker does not have; returns `err`.
async fn settled(err: PublishError, settle: impl Settle) -> PublishError {
    if !err.outcome_unknown() {
        settle.settle(Verdict::Refused).await;
    }
    err
}
