//! Every answer the webhook gives other than 202, with its status code, in the JSON
//! envelope `{"success": false, "result": …, "error": "…"}`. Internal causes are logged
//! where they happen and never echoed to the caller.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hoox_common::signal::FieldError;
use serde_json::{json, Value};
use uuid::Uuid;

/// A refused webhook.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is over the limit.
    #[error("body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not a JSON object.
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    /// The body is a JSON object that repeats a key (its dotted path).
    #[error("duplicate field: {0}")]
    DuplicateField(String),
    /// The source address is not in `HOOX_IP_ALLOWLIST`.
    #[error("this source address may not send webhooks")]
    Forbidden,
    /// The body did not arrive within `HOOX_BODY_READ_TIMEOUT_MS`.
    #[error("body not received within {after_ms} ms")]
    BodyTimeout {
        /// The timeout in milliseconds.
        after_ms: u128,
    },
    /// `apiKey` is wrong or missing.
    #[error("apiKey is missing or wrong")]
    Unauthorized,
    /// Over `HOOX_RATE_LIMIT_PER_MIN` for this source.
    #[error("rate limit: at most {per_minute} webhooks a minute from one source")]
    RateLimited {
        /// The limit.
        per_minute: u32,
    },
    /// A field is missing or invalid.
    #[error("invalid signal: {0}")]
    Invalid(#[from] FieldError),
    /// The signal goes against a risk limit.
    #[error("refused by a risk limit: {0}")]
    Risk(#[from] hoox_common::risk::Refusal),
    /// The kill switch is on.
    #[error("trading is halted: the kill switch is on")]
    KillSwitch,
    /// The signal was already accepted.
    #[error("duplicate signal: already accepted as {0}")]
    Duplicate(Uuid),
    /// The broker or the database cannot take the signal now; the producer should resend.
    #[error("{0}; the signal was not queued, resend it")]
    Unavailable(&'static str),
    /// Refused before any handler ran (no such route, wrong method, too large a head, the
    /// request timeout): the status says it all.
    #[error("{}", .0.canonical_reason().unwrap_or("refused").to_ascii_lowercase())]
    Http(StatusCode),
}

impl ApiError {
    /// The HTTP status of this refusal.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotJson(_) | Self::DuplicateField(_) | Self::Invalid(_) | Self::Risk(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::KillSwitch | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Duplicate(_) => StatusCode::CONFLICT,
            Self::Http(status) => *status,
        }
    }

    fn result(&self) -> Value {
        match self {
            Self::Duplicate(first) => json!({"requestId": first, "status": "duplicate"}),
            Self::Risk(refusal) => json!({"status": "refused", "limit": refusal.key()}),
            _ => Value::Null,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"success": false, "result": self.result(), "error": self.to_string()});
        (self.status_code(), Json(body)).into_response()
    }
}
