//! `POST /webhook`: the checks of the contract's answer table, in its order (cheap
//! network checks first; nothing about the system's state before authentication), then
//! idempotency, then a confirmed publish. The order: declared body size (413), source
//! allowlist (403), body read (413 when too large, 408 when too slow), strict JSON
//! object (400), apiKey (401), rate limit (429), fields (400), kill switch (503), then
//! `accept`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use chrono::Utc;
use hoox_common::event::Event;
use hoox_common::json::{self, ObjectError};
use hoox_common::logs::{LogEntry, Worker};
use hoox_common::message::QueueMessage;
use hoox_common::runtime_config::{secret_matches, WEBHOOK_API_KEY};
use hoox_common::signal::{IdempotencyKey, Signal, WebhookSignal};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};
use tracing::Instrument;
use uuid::Uuid;

use crate::audit::Record;
use crate::error::ApiError;
use crate::idempotency::{self, Claim, Confirmation};
use crate::publisher::{Settle, Verdict};
use crate::AppState;

/// Largest body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Counts every answer to `POST /webhook` by status and times it, whatever layer gave
/// the answer (the outermost layer sees the envelope, the timeout and the 413 alike).
pub async fn measured(request: Request, next: Next) -> Response {
    if request.uri().path() != "/webhook" {
        return next.run(request).await;
    }
    let started = Instant::now();
    let response = next.run(request).await;
    hoox_common::metrics::webhook_answered(response.status().as_u16(), started.elapsed());
    response
}

/// Handles one webhook.
pub async fn webhook(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let source = state.sources.source(peer.ip(), &headers);
    let answered = answer(state, peer, source, headers, body).await;
    if let Err(refused) = &answered {
        let status = refused.status_code();
        // Logged once, here: the status, the reason and the source; never the body or
        // the key. 5xx are logged where they happen, with their cause.
        if status.is_client_error() {
            tracing::info!(
                status = status.as_u16(),
                reason = %refused,
                source = ?source,
                peer = %peer.ip(),
                "webhook refused"
            );
        }
    }
    answered
}

async fn answer(
    state: AppState,
    peer: SocketAddr,
    source: Option<std::net::IpAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_declared_length(&headers)?;
    // The allowlist comes before the body is read: a stranger's body is not worth the
    // memory or the wait. A chunked body over the limit is still a 413 when read.
    state.sources.check_allowed(source)?;
    let bytes = read_body(body, state.limits.body_read_timeout).await?;
    let object = parse_object(&bytes)?;
    authenticate(&state, &headers, &object)?;
    state.sources.check_rate(source, peer.ip())?;
    let parsed = WebhookSignal::from_json(&object)?;
    if state.config.kill_switch() {
        return Err(ApiError::KillSwitch);
    }
    hoox_common::risk::check_signal(&state.config, &parsed.signal)?;
    let explicit_key = match parsed.idempotency_key {
        Some(key) => Some(key),
        None => header_idempotency_key(&headers)?,
    };

    let request_id = Uuid::new_v4();
    let span =
        tracing::info_span!("webhook", request_id = %request_id, symbol = %parsed.signal.symbol);
    // Claim, publish and log run in their own task: a producer that hangs up midway
    // must not cancel them between claiming the key and queuing the signal. The task
    // is tracked, so shutdown waits for it before closing the broker connection.
    let accepted = state
        .tasks
        .clone()
        .spawn(accept(state, request_id, parsed.signal, explicit_key).instrument(span))
        .await
        .map_err(|_| ApiError::Unavailable("internal error"))??;
    let body = json!({
        "success": true,
        "result": {"requestId": accepted, "status": "queued"},
        "error": null,
    });
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// Refuses a body whose `Content-Length` is over the limit, before reading it.
fn check_declared_length(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > BODY_LIMIT) {
        return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
    }
    Ok(())
}

/// Reads the body, at most [`BODY_LIMIT`] bytes within `timeout`.
async fn read_body(body: Body, timeout: Duration) -> Result<axum::body::Bytes, ApiError> {
    let read = tokio::time::timeout(timeout, Limited::new(body, BODY_LIMIT).collect()).await;
    match read {
        Err(_) => Err(ApiError::BodyTimeout {
            after_ms: timeout.as_millis(),
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT })
        }
        Ok(Err(err)) => Err(ApiError::NotJson(format!("body could not be read: {err}"))),
    }
}

/// Parses the body as JSON whatever its `Content-Type` (TradingView sends `text/plain`),
/// refusing a key that appears twice.
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    json::parse_object(bytes).map_err(|err| match err {
        ObjectError::DuplicateKey(path) => ApiError::DuplicateField(path),
        other => ApiError::NotJson(other.to_string()),
    })
}

/// Checks `apiKey` (body) or `X-Api-Key` (header) against the configured key, in
/// constant time. The `webhooks:api_key` config entry overrides `HOOX_WEBHOOK_API_KEY`.
fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    object: &Map<String, Value>,
) -> Result<(), ApiError> {
    let presented = object
        .get("apiKey")
        .and_then(Value::as_str)
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .ok_or(ApiError::Unauthorized)?;
    let matches = match state.config.get(WEBHOOK_API_KEY) {
        Some(expected) => secret_matches(presented, &expected),
        None => secret_matches(presented, state.api_key.expose_secret()),
    };
    if matches {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn header_idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = |reason: String| {
        ApiError::Invalid(hoox_common::signal::FieldError {
            field: "Idempotency-Key".to_owned(),
            reason,
        })
    };
    let text = value
        .to_str()
        .map_err(|_| invalid("must be printable ASCII".to_owned()))?;
    IdempotencyKey::parse(text).map(Some).map_err(invalid)
}

async fn accept(
    state: AppState,
    request_id: Uuid,
    signal: Signal,
    explicit_key: Option<IdempotencyKey>,
) -> Result<Uuid, ApiError> {
    let received_at = Utc::now();
    let key = idempotency::key_for(explicit_key.as_ref(), &signal);
    let ttl = if explicit_key.is_some() {
        state.idempotency_ttl
    } else {
        state.duplicate_window
    };
    // Identical webhooks in this process take turns: the second then finds the first
    // confirmed (409) or released (its own claim), never a publish in flight.
    let _turn = state.key_locks.lock(&key).await;
    let (request_id, resent) = match state.claims.claim(&key, request_id, ttl).await {
        Ok(Claim::Claimed) => (request_id, false),
        Ok(Claim::Duplicate(first)) => {
            tracing::debug!(first_request_id = %first, "duplicate signal refused");
            // In the first signal's trail: its producer resent it, and was told so.
            let refused = LogEntry::now(
                Worker::Ingest,
                Some(first),
                Event::DuplicateRefused {
                    idempotency_key: idempotency::is_explicit(&key),
                },
            );
            let record = Record {
                confirm: None,
                entry: refused,
            };
            if let Err(err) = state.recorder.record(record).await {
                tracing::warn!(error = %err, "duplicate refusal not recorded");
            }
            return Err(ApiError::Duplicate(first));
        }
        Ok(Claim::Unconfirmed(earlier)) => {
            tracing::warn!(earlier_request_id = %earlier, "an earlier publish of this signal has an unknown outcome; publishing again under its request id");
            (earlier, true)
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot record the idempotency key");
            return Err(ApiError::Unavailable("database unavailable"));
        }
    };
    tracing::Span::current().record("request_id", tracing::field::display(request_id));

    let message = QueueMessage::new(request_id, received_at, signal);
    let (body, signature) = message.encode(&state.internal_key);
    let symbol = message.signal.symbol.as_str().to_owned();
    let settlement = Settlement {
        state: state.clone(),
        key,
        message,
        resent,
    };
    match state
        .publisher
        .publish(request_id, &symbol, &body, &signature, settlement)
        .await
    {
        Ok(()) => {
            tracing::debug!("signal queued");
            Ok(request_id)
        }
        Err(err) if err.outcome_unknown() => {
            tracing::warn!(error = %err, "signal's publish outcome unknown; its key keeps the request id for the resend");
            Err(ApiError::Unavailable(
                "message broker did not confirm the signal",
            ))
        }
        Err(err) => {
            tracing::warn!(error = %err, "signal not queued");
            Err(ApiError::Unavailable("message broker unavailable"))
        }
    }
}

/// What the broker's verdict on a webhook's message means for its key and its trail.
struct Settlement {
    state: AppState,
    key: String,
    message: QueueMessage,
    /// Whether this publish repeats one whose outcome is unknown.
    resent: bool,
}

impl Settle for Settlement {
    /// Confirmed: the key is confirmed and the `accepted` row written, in one
    /// transaction. Refused: the key is released so the producer's resend is accepted,
    /// unless this was a resend, whose earlier publish may still have landed.
    async fn settle(self, verdict: Verdict) {
        let Self {
            state,
            key,
            message,
            resent,
        } = self;
        match verdict {
            Verdict::Confirmed => {
                let record = Record {
                    confirm: Some(Confirmation {
                        key: key.clone(),
                        request_id: message.request_id,
                    }),
                    entry: LogEntry {
                        created_at: message.received_at,
                        request_id: Some(message.request_id),
                        worker: Worker::Ingest,
                        event: Event::Accepted {
                            idempotency_key: idempotency::is_explicit(&key),
                            signal: message.signal,
                            resent,
                        },
                    },
                };
                if let Err(err) = state.recorder.record(record).await {
                    // The broker has the signal: a failure to write the audit row must
                    // not turn the answer into an error the producer would resend. The
                    // key stays unconfirmed, so a resend is queued again under this id,
                    // which the consumer executes at most once.
                    tracing::error!(error = %err, "signal queued but its key and audit row were not written");
                }
            }
            Verdict::Refused if resent => {}
            Verdict::Refused => {
                if let Err(err) = idempotency::release(&state.pool, &key, message.request_id).await
                {
                    tracing::error!(error = %err, "cannot release the idempotency key");
                }
            }
        }
    }
}
