//! RabbitMQ: connecting, and the one function that declares the whole topology from the
//! queue name, so ingest, consumer, CLI and tests can never disagree about it.
//!
//! Every queue is a durable quorum queue with its arguments spelled out, so Debian's
//! RabbitMQ 3.10 and the 4.x of `compose.yml` behave the same (4.x changed defaults,
//! such as a delivery limit of 20).
//!
//! `AMQP_URL` may list the nodes of a cluster, comma-separated, each a full URL. They are
//! tried in the order given, so an operator knows where each part connects; a node that
//! refuses costs a refusal and a silent one at most [`CONNECT_TIMEOUT`]. Whatever the
//! broker says, errors and logs name a node by `host:port`, never by its URL, which holds
//! the password.

use std::fmt;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm,
};
use secrecy::{ExposeSecret, SecretString};

use crate::message::{HEADER_REQUEST_ID, HEADER_SIGNATURE};
use crate::retry::RetryPolicy;

/// Deliveries of one message before the broker calls it poison and dead-letters it:
/// a message that keeps crashing consumers must not take the queue down with it.
pub const DELIVERY_LIMIT: i64 = 10;

/// Partitions of the main queue when `HOOX_PARTITIONS` is not set.
pub const DEFAULT_PARTITIONS: u16 = 16;

/// Most partitions a deployment may have: names keep two digits, and each partition is
/// a quorum queue (a Raft group) of its own.
pub const MAX_PARTITIONS: u16 = 100;

/// The queues of one deployment, named from the main queue.
///
/// Signals are spread over `partitions` partition queues `<queue>.p00`, `<queue>.p01`,
/// … by a stable hash of their symbol, so every signal of one symbol goes through one
/// queue, in order. Each partition has a single active consumer. The main queue itself
/// is the inbox: the delay tiers return retries there, and publishers that predate the
/// partitions still publish there; a consumer forwards each message to its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    queue: String,
    retry: RetryPolicy,
    partitions: u16,
}

impl Topology {
    /// The topology around main queue `queue` with the retry schedule `retry` and
    /// [`DEFAULT_PARTITIONS`] partitions.
    pub fn new(queue: impl Into<String>, retry: RetryPolicy) -> Self {
        Self {
            queue: queue.into(),
            retry,
            partitions: DEFAULT_PARTITIONS,
        }
    }

    /// The same topology with `partitions` partitions (clamped to 1..=[`MAX_PARTITIONS`]).
    #[must_use]
    pub fn with_partitions(self, partitions: u16) -> Self {
        Self {
            partitions: partitions.clamp(1, MAX_PARTITIONS),
            ..self
        }
    }

    /// The main queue: the inbox that retries return to, forwarded to the partitions.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// How many partitions the main queue is split into.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// Partition queue `partition`, `<queue>.p<NN>`.
    pub fn partition_queue(&self, partition: u16) -> String {
        format!("{}.p{partition:02}", self.queue)
    }

    /// Every partition queue, in order.
    pub fn partition_queues(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.partitions).map(|p| self.partition_queue(p))
    }

    /// Every queue [`Self::declare`] declares: the main queue, its partitions, the
    /// dead-letter queue and the delay tiers.
    pub fn queues(&self) -> Vec<String> {
        let mut names = vec![self.queue.clone()];
        names.extend(self.partition_queues());
        names.push(self.dlq());
        names.extend(self.retry.tiers().into_iter().map(|d| self.retry_queue(d)));
        names
    }

    /// The partition that carries every signal for `symbol`.
    pub fn partition_of(&self, symbol: &str) -> u16 {
        let buckets = u64::from(self.partitions.max(1));
        u16::try_from(fnv1a(symbol.as_bytes()) % buckets).unwrap_or_default()
    }

    /// The queue a signal for `symbol` is published to.
    pub fn queue_for(&self, symbol: &str) -> String {
        self.partition_queue(self.partition_of(symbol))
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
        declare(channel, &self.queue, main_args.clone()).await?;

        // Partitions: the main queue's arguments, plus a single active consumer. Even if
        // two consumers subscribe to one partition (one that lost its lease without
        // noticing yet), the broker delivers to one of them only, in queue order.
        let mut partition_args = main_args;
        partition_args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        for partition in 0..self.partitions {
            declare(
                channel,
                &self.partition_queue(partition),
                partition_args.clone(),
            )
            .await?;
        }

        // Delay tiers: nobody consumes them; a message waits out the TTL and the broker
        // dead-letters it back onto the main queue, whence it is forwarded to its
        // partition. The wait lives in the broker, so a consumer restart loses no retry.
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

/// FNV-1a, 64 bits: a hash that every build and every process computes alike (Rust's
/// own hasher is seeded per process), so ingest and consumers agree on partitions.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
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

/// Longest wait for one node to accept a connection before the next is tried: a node
/// that is gone without a word (a dead host, a dropped packet) must not hold up the rest.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Heartbeat interval asked for when a URL sets none, in seconds. RabbitMQ proposes 60,
/// which leaves a connection to a dead host looking alive for minutes; within the 5 to
/// 20 s RabbitMQ recommends, a lost node is noticed in well under a minute.
pub const HEARTBEAT_SECS: u16 = 10;

/// Why `AMQP_URL` cannot be used. Entries are named by position and host, never shown
/// whole: they hold the password.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Nothing but separators.
    #[error("AMQP_URL names no broker node")]
    Empty,
    /// One entry is not a full `amqp://` or `amqps://` URL.
    #[error("AMQP_URL entry {position} ({host}) is not a usable amqp:// or amqps:// URL: {reason}; each comma-separated entry must be a full URL with its credentials and vhost")]
    Malformed {
        /// The entry's place in the list, from 1.
        position: usize,
        /// What the entry seems to name as its host, or `?`.
        host: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The broker nodes of an `AMQP_URL`, in the order they are tried.
#[derive(Clone)]
pub struct Nodes(Vec<Node>);

#[derive(Clone)]
struct Node {
    uri: AMQPUri,
    name: String,
}

impl Nodes {
    /// Parses a comma-separated list of full `amqp://` or `amqps://` URLs. A bare
    /// `host:port` is refused rather than given the first entry's credentials: each
    /// entry says exactly where it connects and as whom.
    pub fn parse(list: &str) -> Result<Self, UrlError> {
        let entries: Vec<&str> = list.split(',').map(str::trim).collect();
        if entries.iter().all(|e| e.is_empty()) {
            return Err(UrlError::Empty);
        }
        let nodes = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let malformed = |reason: String| UrlError::Malformed {
                    position: i + 1,
                    host: host_of(entry),
                    reason,
                };
                if entry.is_empty() {
                    return Err(malformed("the entry is empty".to_owned()));
                }
                if !entry.contains("://") {
                    return Err(malformed("it has no scheme".to_owned()));
                }
                let mut uri: AMQPUri = entry.parse().map_err(|err: String| {
                    // The parser quotes the whole input in one of its messages.
                    malformed(if err.contains(entry) {
                        "it is not a URL".to_owned()
                    } else {
                        err
                    })
                })?;
                uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
                let name = format!("{}:{}", uri.authority.host, uri.authority.port);
                Ok(Node { uri, name })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(nodes))
    }

    /// Each node as `host:port`, in order: how logs and errors name them.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|n| n.name.as_str()).collect()
    }
}

impl fmt::Debug for Nodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Nodes").field(&self.names()).finish()
    }
}

/// The host an entry seems to name, for an error message: what follows the scheme and
/// the last `@` (everything before it may be credentials), up to the path, with a port
/// only when it is digits (a lone `user:password` must not pass for `host:port`).
fn host_of(entry: &str) -> String {
    let rest = entry.split_once("://").map_or(entry, |(_, rest)| rest);
    let after_credentials = rest.rsplit('@').next().unwrap_or_default();
    let authority = after_credentials
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((name, port)) if !port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    };
    if host.is_empty() {
        "?".to_owned()
    } else {
        host.to_owned()
    }
}

/// Why no node of `AMQP_URL` gave a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `AMQP_URL` is not a list of URLs.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// Every node was tried, and each failed.
    #[error("no broker node answered: {}", failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Unreachable {
        /// Each node tried, in order, with its failure.
        failures: Vec<NodeFailure>,
    },
}

/// One node that gave no connection, and why.
#[derive(Debug, thiserror::Error)]
#[error("{node}: {error}")]
pub struct NodeFailure {
    /// The node, as `host:port`.
    pub node: String,
    /// What went wrong.
    pub error: NodeError,
}

/// How connecting to one node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node refused, or the handshake failed.
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    /// The node did not answer within [`CONNECT_TIMEOUT`].
    #[error("no answer within {}s", CONNECT_TIMEOUT.as_secs())]
    TimedOut,
}

/// Opens a connection named `name` (shown in the broker's management UI) to the first
/// node of `url` that accepts one, trying them in order.
pub async fn connect(url: &SecretString, name: &str) -> Result<Connection, ConnectError> {
    let nodes = Nodes::parse(url.expose_secret())?;
    let mut failures = Vec::new();
    for node in nodes.0 {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let attempt = Connection::connect_uri(node.uri, properties);
        let error = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(connection)) => {
                if !failures.is_empty() {
                    // Handled here, by moving on: the caller sees only the success.
                    let skipped: Vec<String> = failures.iter().map(ToString::to_string).collect();
                    tracing::warn!(broker.node = %node.name, skipped = ?skipped, "connected to a later broker node");
                }
                return Ok(connection);
            }
            Ok(Err(err)) => NodeError::Broker(err),
            Err(_) => NodeError::TimedOut,
        };
        failures.push(NodeFailure {
            node: node.name,
            error,
        });
    }
    Err(ConnectError::Unreachable { failures })
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

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "s3cr/et@pw";

    #[test]
    fn partitions_are_named_from_the_queue_and_chosen_by_a_stable_hash_of_the_symbol() {
        let topology = Topology::new("trade-execution", RetryPolicy::default());
        assert_eq!(topology.partitions(), DEFAULT_PARTITIONS);
        assert_eq!(topology.partition_queue(7), "trade-execution.p07");
        // Known answers: the hash must never change, or queued signals would move.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            topology.partition_of("BTCUSDT"),
            (fnv1a(b"BTCUSDT") % 16) as u16
        );
        let spread: std::collections::HashSet<u16> = (0..200)
            .map(|i| topology.partition_of(&format!("SYM{i}USDT")))
            .collect();
        assert_eq!(spread.len(), 16, "symbols spread over every partition");
        let one = topology.clone().with_partitions(0);
        assert_eq!(one.partitions(), 1);
        assert_eq!(one.queue_for("ETHUSDT"), "trade-execution.p00");
        assert_eq!(topology.with_partitions(500).partitions(), MAX_PARTITIONS);
    }

    #[test]
    fn a_list_of_full_urls_is_tried_in_the_order_given_with_a_heartbeat() {
        let nodes = Nodes::parse(
            "amqp://u:p@h1:5672/%2f, amqps://u:p@h2:5671/prod ,amqp://u:p@h3/%2f?heartbeat=30",
        )
        .unwrap();
        assert_eq!(nodes.names(), ["h1:5672", "h2:5671", "h3:5672"]);
        let heartbeats: Vec<_> = nodes.0.iter().map(|n| n.uri.query.heartbeat).collect();
        assert_eq!(
            heartbeats,
            [Some(HEARTBEAT_SECS), Some(HEARTBEAT_SECS), Some(30)]
        );
        assert_eq!(nodes.0[1].uri.vhost, "prod");
    }

    #[test]
    fn malformed_lists_are_refused_naming_the_entry_but_never_the_password() {
        let encoded = "s3cr%2Fet%40pw";
        let cases: [(String, Option<(usize, &str)>); 8] = [
            (String::new(), None),
            (" , ".to_owned(), None),
            (format!("amqp://u:{encoded}@h1/%2f,"), Some((2, "?"))),
            (
                format!("amqp://u:{encoded}@h1/%2f,h2:5672"),
                Some((2, "h2:5672")),
            ),
            (
                format!("amqp://u:{encoded}@h1/%2f,u:{PASSWORD}@h2"),
                Some((2, "h2")),
            ),
            (
                format!("http://u:{PASSWORD}@h1:5672/%2f"),
                Some((1, "h1:5672")),
            ),
            (format!("amqp://u:{PASSWORD}@h1:56x2/%2f"), Some((1, "h1"))),
            ("amqp://u:sesame".to_owned(), Some((1, "u"))),
        ];
        for (list, expected) in cases {
            let err = Nodes::parse(&list).unwrap_err();
            match (expected, &err) {
                (None, UrlError::Empty) => {}
                (Some((at, shown)), UrlError::Malformed { position, host, .. }) => {
                    assert_eq!((*position, host.as_str()), (at, shown), "{list}");
                }
                _ => panic!("{list}: unexpected {err:?}"),
            }
            let message = err.to_string();
            for secret in [PASSWORD, encoded, "sesame"] {
                assert!(!message.contains(secret), "{list}: {message}");
            }
        }
    }

    #[tokio::test]
    async fn when_no_node_answers_the_error_names_each_node_but_no_password() {
        // Port 9 (discard) is closed on a test machine: each node refuses at once.
        let encoded = "s3cr%2Fet%40pw";
        let url = SecretString::from(format!(
            "amqp://u:{encoded}@127.0.0.1:9/%2f,amqp://u:{encoded}@localhost:9/%2f"
        ));
        let err = connect(&url, "hoox-test").await.unwrap_err();
        let ConnectError::Unreachable { failures } = &err else {
            panic!("unexpected {err:?}");
        };
        let tried: Vec<&str> = failures.iter().map(|f| f.node.as_str()).collect();
        assert_eq!(tried, ["127.0.0.1:9", "localhost:9"]);
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(
                !shown.contains(PASSWORD) && !shown.contains(encoded),
                "{shown}"
            );
        }
    }
}
