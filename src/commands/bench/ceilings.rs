//! What this machine's broker and database can do at best, measured with bare loops:
//! persistent 300-byte messages published with confirms to a durable quorum queue
//! (pipelined, and one at a time), and fill-shaped rows inserted into `fills` (one per
//! commit, and ten per commit). The pipeline's figures are read against these.

use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use hoox_common::amqp;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Channel;
use sqlx::PgPool;
use uuid::Uuid;

/// The size of a ceiling message: about a signed queue message's.
pub(super) const MESSAGE_BYTES: usize = 300;

/// Declares `queue` as a durable quorum queue, as the main queue is.
pub(super) async fn declare_quorum_queue(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    Ok(())
}

/// One message to publish: body, headers, message id.
pub(super) type Outgoing = (Vec<u8>, FieldTable, Option<String>);

/// Publishes `messages` to `queue` as ingest does (persistent, mandatory, confirmed),
/// keeping up to `in_flight` unconfirmed, until they run out or `until` passes. Gives
/// how many the broker confirmed, and fails on the first it refused. `channel` must be
/// in confirm mode.
pub(super) async fn publish(
    channel: &Channel,
    queue: &str,
    messages: impl Iterator<Item = Outgoing>,
    in_flight: usize,
    until: Option<Instant>,
) -> anyhow::Result<u64> {
    let mut messages = messages.peekable();
    let mut pending = FuturesUnordered::new();
    let mut confirmed = 0;
    loop {
        let open = until.is_none_or(|end| Instant::now() < end);
        while open && pending.len() < in_flight.max(1) {
            let Some((body, headers, id)) = messages.next() else {
                break;
            };
            pending.push(amqp::publish(channel, queue, &body, headers, id.as_deref()).await?);
        }
        let Some(confirmation) = pending.next().await else {
            return Ok(confirmed);
        };
        amqp::confirmed(confirmation?, queue)?;
        if until.is_none_or(|end| Instant::now() < end) {
            confirmed += 1;
        }
    }
}

/// Confirmed publishes per second to `queue` for `window`, with up to `in_flight`
/// unconfirmed at a time (1: each waits for its confirm).
pub(super) async fn publish_rate(
    channel: &Channel,
    queue: &str,
    in_flight: usize,
    window: Duration,
) -> anyhow::Result<f64> {
    let body = vec![b'x'; MESSAGE_BYTES];
    let messages = std::iter::repeat_with(|| (body.clone(), FieldTable::default(), None));
    let started = Instant::now();
    let confirmed = publish(channel, queue, messages, in_flight, Some(started + window)).await?;
    Ok(super::stats::rate(confirmed, window))
}

/// Rows per second inserted into `fills` for `window`, `rows_per_commit` rows in each
/// transaction, one transaction after another on one connection.
pub(super) async fn insert_rate(
    pool: &PgPool,
    rows_per_commit: usize,
    window: Duration,
) -> anyhow::Result<f64> {
    let mut connection = pool.acquire().await?;
    let end = Instant::now() + window;
    let mut rows = 0u64;
    while Instant::now() < end {
        let ids: Vec<Uuid> = (0..rows_per_commit).map(|_| Uuid::new_v4()).collect();
        // One statement is one transaction: its rows are committed together.
        sqlx::query(
            r#"INSERT INTO fills (request_id, exchange, paper, symbol, action, side, reduce_only,
                   quantity, order_type, client_order_id, exchange_order_id, status,
                   fill_price, fill_quantity, raw_response, received_at, executed_at)
               SELECT id, 'bybit', false, 'BTCUSDT', 'LONG', 'buy', false, 0.001, 'market',
                   replace(id::text, '-', ''), replace(id::text, '-', ''), 'filled', 68000.5,
                   0.001, jsonb_build_object('orderId', id, 'orderStatus', 'Filled'),
                   now(), now()
               FROM unnest($1::uuid[]) AS t(id)"#,
        )
        .bind(&ids)
        .execute(&mut *connection)
        .await?;
        if Instant::now() < end {
            rows += ids.len() as u64;
        }
    }
    Ok(super::stats::rate(rows, window))
}
