//! RabbitMQ: connecting, and the one function that declares the whole topology from the
//! queue name, so ingest, consumer, CLI and tests can never disagree about it.
//!
//! Every queue is a durable quorum queue with its arguments spelled out, so Debian's
//! RabbitMQ 3.10 and the 4.x of `compose.yml` behave the same (4.x changed defaults,
//! such as a delivery limit of 20).

use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm,
};
use secrecy::{ExposeSecret, SecretString};

use crate::message::{HEADER_REQUEST_ID, HEADER_SIGNATURE};
use crate::retry::RetryPolicy;

/// Deliveries of one message before the broker calls it poison and dead-letters it:
/// a message that keeps crashing consumers must not take the queue down with it.
pub const DELIVERY_LIMIT: i64 = 10;

/// The queues of one deployment, named from the main queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    queue: String,
    retry: RetryPolicy,
}

impl Topology {
    /// The topology around main queue `queue` with the retry schedule `retry`.
    pub fn new(queue: impl Into<String>, retry: RetryPolicy) -> Self {
        Self {
            queue: queue.into(),
            retry,
        }
    }

    /// The main queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The dead-letter queue, `<queue>.dlq`.
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    /// The retry schedule the delay tiers were made for.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The delay queue holding messages for `delay`, `<queue>.retry.<ms>`. Named by its
    /// delay because a queue's TTL cannot change once declared.
    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.retry.{}", self.queue, delay.as_millis())
    }

    /// Declares the main queue, the dead-letter queue and one delay tier per distinct
    /// retry delay. Idempotent: declaring what exists with the same arguments is a no-op.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let dlq = self.dlq();
        // Dead letters must outlive any inspection: no delivery limit (RabbitMQ 4.x
        // would otherwise drop a dead letter after 20 looks), and no dead-letter target.
        let mut dlq_args = quorum_args();
        dlq_args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::MAX));
        declare(channel, &dlq, dlq_args).await?;

        // Main queue: what the broker itself gives up on (poison) goes to the DLQ,
        // at-least-once so dead-lettering cannot lose it.
        let mut main_args = dead_lettering_to(&dlq);
        main_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        declare(channel, &self.queue, main_args).await?;

        // Delay tiers: nobody consumes them; a message waits out the TTL and the broker
        // dead-letters it back onto the main queue. The wait lives in the broker, so a
        // consumer restart loses no retry.
        for delay in self.retry.tiers() {
            let mut args = dead_lettering_to(&self.queue);
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
            declare(channel, &self.retry_queue(delay), args).await?;
        }
        Ok(())
    }
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), string("quorum"));
    // Refuse new publishes when a queue is full rather than dropping old messages; a
    // refused publish is never confirmed, so the publisher knows.
    args.insert("x-overflow".into(), string("reject-publish"));
    args
}

fn dead_lettering_to(target: &str) -> FieldTable {
    let mut args = quorum_args();
    args.insert("x-dead-letter-exchange".into(), string(""));
    args.insert("x-dead-letter-routing-key".into(), string(target));
    args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
    args
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

async fn declare(channel: &Channel, name: &str, args: FieldTable) -> Result<(), lapin::Error> {
    channel
        .queue_declare(
            ShortString::from(name),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map(drop)
}

/// Opens a connection named `name` (shown in the broker's management UI).
pub async fn connect(url: &SecretString, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url.expose_secret(), properties).await
}

/// Why a confirmed publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel or connection failed.
    #[error("broker connection failed: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker refused or could not route the message.
    #[error("broker did not take the message for {queue}: {detail}")]
    Refused {
        /// The target queue.
        queue: String,
        /// What the broker said.
        detail: String,
    },
}

/// The headers of a signed hoox message: its signature and its request id.
pub fn signed_headers(signature: Option<&str>, request_id: Option<&str>) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(signature) = signature {
        headers.insert(HEADER_SIGNATURE.into(), text(signature));
    }
    if let Some(id) = request_id {
        headers.insert(HEADER_REQUEST_ID.into(), text(id));
    }
    headers
}

/// Publishes a persistent, mandatory JSON message to `queue` through the default
/// exchange; the returned confirm resolves when the broker has decided.
pub async fn publish(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    headers: FieldTable,
    message_id: Option<&str>,
) -> Result<PublisherConfirm, lapin::Error> {
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        // 2 = persistent: written to disk before the broker confirms.
        .with_delivery_mode(2)
        .with_timestamp(now)
        .with_headers(headers);
    if let Some(id) = message_id {
        properties = properties.with_message_id(id.into());
    }
    channel
        .basic_publish(
            ShortString::from(""),
            ShortString::from(queue),
            // mandatory: a message no queue takes comes back instead of vanishing.
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await
}

/// The broker's verdict on a publish to `queue`: `Ok` only when it has the message.
pub fn confirmed(confirmation: Confirmation, queue: &str) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(PublishError::Refused {
            queue: queue.to_owned(),
            detail: format!(
                "unroutable ({}): is the queue declared?",
                returned.reply_text
            ),
        }),
        Confirmation::Nack(_) => Err(PublishError::Refused {
            queue: queue.to_owned(),
            detail: "nacked".to_owned(),
        }),
        Confirmation::NotRequested => Err(PublishError::Refused {
            queue: queue.to_owned(),
            detail: "channel is not in confirm mode".to_owned(),
        }),
    }
}

/// [`publish`], then waits for the confirm; `channel` must be in confirm mode.
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    headers: FieldTable,
    message_id: Option<&str>,
) -> Result<(), PublishError> {
    let confirmation = publish(channel, queue, body, headers, message_id)
        .await?
        .await?;
    confirmed(confirmation, queue)
}

/// A text header value.
pub fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

/// The text of header `name`, if present and textual.
pub fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The integer value of header `name`, if present and numeric.
pub fn header_int(headers: Option<&FieldTable>, name: &str) -> Option<i64> {
    match headers?.inner().get(name)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}
