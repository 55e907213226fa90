//! The reader of the dead-letter wire format, beside the header names the consumer
//! writes it with ([`crate::message`]): `hoox dlq`, `hoox health`, the bot and the
//! dashboard all read a dead letter through this one type, so they cannot disagree
//! about its reason, its attempts or its age.
//!
//! A dead letter comes two ways: the consumer publishes it with `x-hoox-*` headers, or
//! the broker dead-letters a poison message itself, leaving only its `x-death` record.

use chrono::{DateTime, TimeZone, Utc};
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::amqp::{header_int, header_text};
use crate::message::{
    DeadReason, QueueMessage, HEADER_ATTEMPTS, HEADER_ERROR, HEADER_REASON, HEADER_REQUEST_ID,
    HEADER_SIGNATURE,
};

/// One dead letter, as read from the queue.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The signal's id, when the message names one.
    pub request_id: Option<Uuid>,
    /// The stable reason code (`poison` for what the broker dead-lettered itself).
    pub reason: String,
    /// The last error.
    pub error: Option<String>,
    /// Attempts made, the first one included.
    pub attempts: u32,
    /// When it was dead-lettered, when known.
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// Whether its signature verifies under this HOOX_INTERNAL_KEY (unknown without one).
    pub verified: Option<bool>,
    /// The message, when its body parses (verified or not).
    pub message: Option<Value>,
    #[serde(skip)]
    body: Vec<u8>,
    #[serde(skip)]
    signature: Option<String>,
}

impl DeadLetter {
    /// Reads `delivery` from a dead-letter queue, checking its signature under `key`
    /// when one is given.
    pub fn from_delivery(delivery: &Delivery, key: Option<&SecretString>) -> Self {
        let headers = delivery.properties.headers().as_ref();
        let signature = header_text(headers, HEADER_SIGNATURE);
        let message: Option<Value> = serde_json::from_slice(&delivery.data).ok();
        let request_id = header_text(headers, HEADER_REQUEST_ID)
            .or_else(|| {
                delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.to_string())
            })
            .or_else(|| {
                message
                    .as_ref()?
                    .get("requestId")?
                    .as_str()
                    .map(str::to_owned)
            })
            .and_then(|id| id.parse().ok());
        let x_death = x_death(headers);
        let reason = header_text(headers, HEADER_REASON).unwrap_or_else(|| match x_death {
            Some(_) => DeadReason::Poison.as_str().to_owned(),
            None => "unknown".to_owned(),
        });
        let error = header_text(headers, HEADER_ERROR).or_else(|| {
            x_death
                .as_ref()
                .map(|(reason, _)| format!("dead-lettered by the broker: {reason}"))
        });
        let attempts = header_int(headers, HEADER_ATTEMPTS)
            .and_then(|n| u32::try_from(n).ok())
            .or_else(|| {
                let attempts = message.as_ref()?.get("attempts")?.as_u64()?;
                u32::try_from(attempts).ok()
            })
            .unwrap_or(0);
        let dead_lettered_at = x_death.and_then(|(_, at)| at).or_else(|| {
            let seconds = i64::try_from((*delivery.properties.timestamp())?).ok()?;
            Utc.timestamp_opt(seconds, 0).single()
        });
        let verified =
            key.map(|key| QueueMessage::decode(&delivery.data, signature.as_deref(), key).is_ok());
        Self {
            request_id,
            reason,
            error,
            attempts,
            dead_lettered_at,
            verified,
            message,
            body: delivery.data.clone(),
            signature,
        }
    }

    /// The body exactly as it sits in the queue (what a replay verifies and re-signs).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The signature header it carries, if any.
    pub fn signature(&self) -> Option<&str> {
        self.signature.as_deref()
    }

    /// The text at JSON `pointer` in its message, or `missing`.
    pub fn field<'a>(&'a self, pointer: &str, missing: &'a str) -> &'a str {
        self.message
            .as_ref()
            .and_then(|m| m.pointer(pointer))
            .and_then(Value::as_str)
            .unwrap_or(missing)
    }

    /// How long ago it was dead-lettered, at `now`; `None` when the time is unknown.
    pub fn age(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        self.dead_lettered_at
            .map(|at| (now - at).max(chrono::Duration::zero()))
    }
}

/// The reason and time of the broker's own dead-lettering, from `x-death`.
fn x_death(headers: Option<&FieldTable>) -> Option<(String, Option<DateTime<Utc>>)> {
    let AMQPValue::FieldArray(deaths) = headers?.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let reason = header_text(Some(first), "reason").unwrap_or_else(|| "unknown".to_owned());
    let at = match first.inner().get("time") {
        Some(AMQPValue::Timestamp(seconds)) => i64::try_from(*seconds)
            .ok()
            .and_then(|s| Utc.timestamp_opt(s, 0).single()),
        _ => None,
    };
    Some((reason, at))
}
