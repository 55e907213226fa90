//! The queue's wire type: a versioned, signed envelope around a validated signal.
//!
//! The body is JSON; header `x-hoox-signature` is the HMAC-SHA256 of the exact body
//! bytes under `HOOX_INTERNAL_KEY`, so a consumer never executes a message that did not
//! come from an ingest holding the same key.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::signal::Signal;
use crate::signing::{hmac_sha256_hex, verify_hmac_sha256_hex};

/// The version this build writes and reads.
pub const MESSAGE_VERSION: u32 = 1;
/// Header carrying the body's signature.
pub const HEADER_SIGNATURE: &str = "x-hoox-signature";
/// Header carrying the request id (also the AMQP `message_id`).
pub const HEADER_REQUEST_ID: &str = "x-request-id";
/// Dead-letter header: a stable reason code.
pub const HEADER_REASON: &str = "x-hoox-reason";
/// Dead-letter header: the last error, for people.
pub const HEADER_ERROR: &str = "x-hoox-error";
/// Dead-letter header: attempts made, the first one included.
pub const HEADER_ATTEMPTS: &str = "x-hoox-attempts";

/// Why a message went to the dead-letter queue: the stable codes of header `x-hoox-reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// Retryable failures until the attempts ran out.
    Exhausted,
    /// The exchange refused it for good, or it cannot be routed.
    Fatal,
    /// Older than `HOOX_SIGNAL_MAX_AGE_SECS` when its turn came.
    Expired,
    /// Dequeued while the kill switch was on.
    KillSwitch,
    /// Signed, but not a message this build can read.
    Invalid,
    /// Signature missing or wrong.
    Unverified,
    /// Dead-lettered by the broker after too many deliveries.
    Poison,
}

impl DeadReason {
    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exhausted => "exhausted",
            Self::Fatal => "fatal",
            Self::Expired => "expired",
            Self::KillSwitch => "kill_switch",
            Self::Invalid => "invalid",
            Self::Unverified => "unverified",
            Self::Poison => "poison",
        }
    }
}

/// A signal on its way to an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueMessage {
    /// Wire format version, [`MESSAGE_VERSION`].
    pub version: u32,
    /// The id ingest gave the signal; it names the signal everywhere.
    pub request_id: Uuid,
    /// When ingest accepted the webhook.
    pub received_at: DateTime<Utc>,
    /// The validated signal.
    pub signal: Signal,
    /// Attempts already made since the signal was accepted or last replayed.
    #[serde(default)]
    pub attempts: u32,
    /// When an operator last replayed it from the dead-letter queue; its age counts
    /// from then, because a replay is an explicit decision to execute it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_at: Option<DateTime<Utc>>,
    /// Operator replays so far: the message's generation. The consumer runs a request
    /// id at most once per generation, so only `hoox dlq replay` can run it again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replays: u32,
    /// Every earlier attempt, replays included, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptRecord>,
}

/// One earlier attempt at executing a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// When the attempt ended.
    pub at: DateTime<Utc>,
    /// Which exchange it went to.
    pub exchange: String,
    /// The exchange's own error code, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// Why a delivery could not be turned into a [`QueueMessage`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No signature header, or one that does not match the body.
    #[error("message signature is missing or does not match its body")]
    Unverified,
    /// Signed, but not a message this build understands.
    #[error("message is not a valid hoox message: {0}")]
    Invalid(String),
}

impl QueueMessage {
    /// A first-attempt message for a freshly accepted signal.
    pub fn new(request_id: Uuid, received_at: DateTime<Utc>, signal: Signal) -> Self {
        Self {
            version: MESSAGE_VERSION,
            request_id,
            received_at,
            signal,
            attempts: 0,
            replayed_at: None,
            replays: 0,
            history: Vec::new(),
        }
    }

    /// The JSON body and its signature.
    pub fn encode(&self, key: &SecretString) -> (Vec<u8>, String) {
        let body = serde_json::to_vec(self).expect("a QueueMessage always serialises");
        let signature = hmac_sha256_hex(key.expose_secret().as_bytes(), &body);
        (body, signature)
    }

    /// Verifies `signature` over `body`, then parses it. Verification comes first: an
    /// unsigned body is never even parsed.
    pub fn decode(
        body: &[u8],
        signature: Option<&str>,
        key: &SecretString,
    ) -> Result<Self, DecodeError> {
        let verified = signature
            .is_some_and(|sig| verify_hmac_sha256_hex(key.expose_secret().as_bytes(), body, sig));
        if !verified {
            return Err(DecodeError::Unverified);
        }
        let message: Self =
            serde_json::from_slice(body).map_err(|e| DecodeError::Invalid(e.to_string()))?;
        if message.version != MESSAGE_VERSION {
            return Err(DecodeError::Invalid(format!(
                "unsupported version {} (this build reads {MESSAGE_VERSION})",
                message.version
            )));
        }
        Ok(message)
    }

    /// The number of the attempt under way (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempts.saturating_add(1)
    }

    /// When the signal's age starts: its receipt, or its latest replay.
    pub fn age_origin(&self) -> DateTime<Utc> {
        self.replayed_at.unwrap_or(self.received_at)
    }

    /// This message after a failed attempt: one more attempt made, and its record.
    pub fn after_attempt(&self, record: AttemptRecord) -> Self {
        let mut next = self.clone();
        next.attempts = next.attempts.saturating_add(1);
        next.history.push(record);
        next
    }

    /// This message replayed by an operator at `at`: a new generation with a fresh
    /// attempt count, its age counted from now, and its history (receipt time
    /// included) kept.
    pub fn replayed(&self, at: DateTime<Utc>) -> Self {
        let mut next = self.clone();
        next.attempts = 0;
        next.replayed_at = Some(at);
        next.replays = next.replays.saturating_add(1);
        next
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::WebhookSignal;

    fn message() -> QueueMessage {
        let body = serde_json::json!({"action": "LONG", "symbol": "BTCUSDT", "quantity": 0.005});
        let signal = WebhookSignal::from_json(body.as_object().unwrap())
            .unwrap()
            .signal;
        QueueMessage::new(Uuid::new_v4(), Utc::now(), signal)
    }

    fn key(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn a_signed_message_decodes_to_itself() {
        let msg = message();
        let (body, sig) = msg.encode(&key("k"));
        assert_eq!(
            QueueMessage::decode(&body, Some(&sig), &key("k")).unwrap(),
            msg
        );
        assert_eq!(msg.attempt(), 1);
    }

    #[test]
    fn forged_or_unsigned_messages_are_unverified() {
        let (body, sig) = message().encode(&key("k"));
        let forged_key = QueueMessage::decode(&body, Some(&sig), &key("other"));
        assert!(matches!(forged_key, Err(DecodeError::Unverified)));
        assert!(matches!(
            QueueMessage::decode(&body, None, &key("k")),
            Err(DecodeError::Unverified)
        ));
        let mut tampered = body.clone();
        let pos = tampered.iter().position(|&b| b == b'5').unwrap();
        tampered[pos] = b'9';
        let tampered = QueueMessage::decode(&tampered, Some(&sig), &key("k"));
        assert!(matches!(tampered, Err(DecodeError::Unverified)));
    }

    #[test]
    fn signed_garbage_is_invalid() {
        let body = br#"{"version": 2}"#;
        let sig = hmac_sha256_hex(b"k", body);
        assert!(matches!(
            QueueMessage::decode(body, Some(&sig), &key("k")),
            Err(DecodeError::Invalid(_))
        ));
    }
}
