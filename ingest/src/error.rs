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
    /// `apiKey` is wrong or missing.
    #[error("apiKey is missing or wrong")]
    Unauthorized,
    /// A field is missing or invalid.
    #[error("invalid signal: {0}")]
    Invalid(#[from] FieldError),
    /// The kill switch is on.
    #[error("trading is halted: the kill switch is on")]
    KillSwitch,
    /// The signal was already accepted.
    #[error("duplicate signal: already accepted as {0}")]
    Duplicate(Uuid),
    /// The broker or the database cannot take the signal now; the producer should resend.
    #[error("{0}; the signal was not queued, resend it")]
    Unavailable(&'static str),
}

impl ApiError {
    /// The HTTP status of this refusal.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotJson(_) | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::KillSwitch | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Duplicate(_) => StatusCode::CONFLICT,
        }
    }

    fn result(&self) -> Value {
        match self {
            Self::Duplicate(first) => json!({"requestId": first, "status": "duplicate"}),
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
