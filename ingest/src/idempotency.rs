//! Idempotency keys in PostgreSQL: the first request to claim a key wins, and every
//! other request holding it while it lives gets the winner's `requestId`.
//!
//! A key is the producer's `idempotencyKey` (remembered for `HOOX_IDEMPOTENCY_TTL_SECS`)
//! or, without one, a fingerprint of the signal (remembered for
//! `HOOX_DUPLICATE_WINDOW_SECS` from the moment it was accepted). The claim is one
//! `INSERT … ON CONFLICT`, so two identical requests racing each other cannot both win.
//!
//! A claim counts as a duplicate only once the broker confirmed its message. Until
//! then it keeps its request id: released if the broker refused the message, kept
//! when the outcome is unknown, so that a resend publishes again under the same id.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use hoox_common::signal::{IdempotencyKey, Signal};
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// The outcome of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key.
    Claimed,
    /// Another request owns it and the broker confirmed its message; here is its id.
    Duplicate(Uuid),
    /// Another request owns it, but whether its message reached the broker is unknown
    /// (ingest died, or the connection dropped before the confirm): publish again
    /// under this id. The consumer executes a request id at most once.
    Unconfirmed(Uuid),
}

/// Whether a stored key is the producer's own (else a fingerprint).
pub fn is_explicit(key: &str) -> bool {
    key.starts_with("key:")
}

/// The stored key for a request: the explicit key, else the signal's fingerprint.
pub fn key_for(explicit: Option<&IdempotencyKey>, signal: &Signal) -> String {
    match explicit {
        Some(key) => format!("key:{}", key.as_str()),
        None => {
            // The signal's wire form is canonical: fixed field order, normalised
            // decimals and symbol, no apiKey.
            let canonical = serde_json::to_vec(signal).expect("a Signal always serialises");
            format!("fp:{}", hex::encode(Sha256::digest(canonical)))
        }
    }
}

/// Claims `key` for `request_id` for `ttl`. An expired key is claimed anew.
pub async fn claim(
    pool: &PgPool,
    key: &str,
    request_id: Uuid,
    ttl: Duration,
) -> Result<Claim, sqlx::Error> {
    let ttl_secs = ttl.as_secs_f64();
    // Bounded: the loop only repeats when the owner released the key in between.
    for _ in 0..3 {
        let claimed: Option<Uuid> = sqlx::query_scalar(
            r#"
            INSERT INTO idempotency_keys (key, request_id, expires_at, confirmed)
            VALUES ($1, $2, now() + make_interval(secs => $3), FALSE)
            ON CONFLICT (key) DO UPDATE
                SET request_id = EXCLUDED.request_id,
                    created_at = now(),
                    expires_at = EXCLUDED.expires_at,
                    confirmed = FALSE
                WHERE idempotency_keys.expires_at <= now()
            RETURNING request_id
            "#,
        )
        .bind(key)
        .bind(request_id)
        .bind(ttl_secs)
        .fetch_optional(pool)
        .await?;
        if claimed.is_some() {
            return Ok(Claim::Claimed);
        }
        let owner: Option<(Uuid, bool)> = sqlx::query_as(
            "SELECT request_id, confirmed FROM idempotency_keys WHERE key = $1 AND expires_at > now()",
        )
        .bind(key)
        .fetch_optional(pool)
        .await?;
        match owner {
            Some((owner, true)) => return Ok(Claim::Duplicate(owner)),
            Some((owner, false)) => return Ok(Claim::Unconfirmed(owner)),
            None => {}
        }
    }
    Err(sqlx::Error::Protocol(
        "idempotency key changed owner three times during one claim".to_owned(),
    ))
}

/// Marks `key` confirmed: from now on a request presenting it is a duplicate of
/// `request_id`.
pub async fn confirm<'e>(
    executor: impl PgExecutor<'e>,
    key: &str,
    request_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE idempotency_keys SET confirmed = TRUE WHERE key = $1 AND request_id = $2")
        .bind(key)
        .bind(request_id)
        .execute(executor)
        .await?;
    Ok(())
}

/// Gives `key` back when the broker refused the message of the request that claimed
/// it, so the producer's resend is accepted rather than called a duplicate. Never
/// called while the outcome is unknown: the key then keeps its request id.
pub async fn release(pool: &PgPool, key: &str, request_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE key = $1 AND request_id = $2 AND NOT confirmed",
    )
    .bind(key)
    .bind(request_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes expired keys; returns how many.
pub async fn sweep(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= now()")
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// One lock per key in flight in this process: identical webhooks arriving together
/// take turns, so the second sees the first's confirmed claim (a 409) instead of
/// publishing the same signal again.
#[derive(Debug, Default)]
pub struct KeyLocks {
    held: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A key held by [`KeyLocks::lock`]; released on drop.
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLocks {
    /// Waits until no other request of this process holds `key`, then holds it.
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let mutex = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(held.entry(key.to_owned()).or_default())
        };
        KeyGuard {
            locks: self,
            key: key.to_owned(),
            guard: Some(mutex.lock_owned().await),
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut held = self
            .locks
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Forget the key once nobody holds or waits for it.
        if held
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            held.remove(&self.key);
        }
    }
}
