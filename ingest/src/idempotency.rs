//! Idempotency keys in PostgreSQL: the first request to claim a key wins, and every
//! other request holding it while it lives gets the winner's `requestId`.
//!
//! A key is the producer's `idempotencyKey` (remembered for `HOOX_IDEMPOTENCY_TTL_SECS`)
//! or, without one, a fingerprint of the signal (remembered for
//! `HOOX_DUPLICATE_WINDOW_SECS` from the moment it was accepted). The claim is one
//! `INSERT … ON CONFLICT`, so two identical requests racing each other cannot both win.

use std::time::Duration;

use hoox_common::signal::{IdempotencyKey, Signal};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// The outcome of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key.
    Claimed,
    /// Another request owns it; here is its id.
    Duplicate(Uuid),
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
            INSERT INTO idempotency_keys (key, request_id, expires_at)
            VALUES ($1, $2, now() + make_interval(secs => $3))
            ON CONFLICT (key) DO UPDATE
                SET request_id = EXCLUDED.request_id,
                    created_at = now(),
                    expires_at = EXCLUDED.expires_at
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
        let owner: Option<Uuid> = sqlx::query_scalar(
            "SELECT request_id FROM idempotency_keys WHERE key = $1 AND expires_at > now()",
        )
        .bind(key)
        .fetch_optional(pool)
        .await?;
        if let Some(owner) = owner {
            return Ok(Claim::Duplicate(owner));
        }
    }
    Err(sqlx::Error::Protocol(
        "idempotency key changed owner three times during one claim".to_owned(),
    ))
}

/// Gives `key` back when the request that claimed it could not be queued, so the
/// producer's resend is accepted rather than called a duplicate.
pub async fn release(pool: &PgPool, key: &str, request_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND request_id = $2")
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
