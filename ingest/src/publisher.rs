//! Publishing to RabbitMQ with publisher confirms, over a connection this module keeps
//! alive itself (lapin's own recovery is not trusted: see the architecture notes).
//!
//! A supervisor task connects with backoff, declares the topology and opens a confirm
//! channel; it reconnects when the connection reports an error or a publish fails. A
//! publish never waits for a connection: with none, it fails at once, and the webhook
//! answers 503 so the producer resends.

use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use hoox_common::amqp::{self, Topology};
use hoox_common::retry::{sleep_unless_cancelled, Reconnect};
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Event, PublisherConfirm};
use secrecy::SecretString;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why a message was not confirmed by the broker.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No live connection to the broker.
    #[error("message broker unreachable")]
    Unavailable,
    /// The broker refused or could not route the message.
    #[error("message broker did not accept the message: {0}")]
    Refused(String),
    /// The connection failed while the message was in flight.
    #[error("message broker connection failed: {0}")]
    Broken(#[from] lapin::Error),
}

impl PublishError {
    /// Whether the broker may have the message after all: it was handed to the
    /// connection, and the connection failed before the broker's verdict came back.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Broken(_))
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

/// A publish the broker has received but not yet confirmed.
pub struct Pending {
    confirm: PublisherConfirm,
    publisher: Publisher,
    queue: String,
}

impl Pending {
    /// Waits for the broker's verdict: `Ok` only when it has the message on disk.
    pub async fn confirmed(self) -> Result<(), PublishError> {
        let result = match self.confirm.await {
            Ok(confirmation) => amqp::confirmed(confirmation, &self.queue)
                .map_err(|err| PublishError::Refused(err.to_string())),
            Err(err) => Err(PublishError::Broken(err)),
        };
        if result.is_err() {
            self.publisher.reconnect();
        }
        result
    }
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
            }),
        };
        let supervisor = tokio::spawn(publisher.clone().supervise(url, token));
        (publisher, supervisor)
    }

    /// Whether a confirm channel is open.
    pub fn is_ready(&self) -> bool {
        self.current().is_some_and(|c| c.status().connected())
    }

    /// Publishes one persistent, mandatory message to the partition of `symbol`.
    pub async fn publish(
        &self,
        request_id: Uuid,
        symbol: &str,
        body: &[u8],
        signature: &str,
    ) -> Result<Pending, PublishError> {
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
            .inspect_err(|_| self.reconnect())?;
        Ok(Pending {
            confirm,
            publisher: self.clone(),
            queue,
        })
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
