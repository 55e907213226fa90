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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use hoox_common::signal::{IdempotencyKey, Signal};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::batch::{self, BatchFailed, Batcher};

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

/// One request's claim: `key` for `request_id`, for `ttl`.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRequest {
    /// The stored key.
    pub(crate) key: String,
    /// The claiming request.
    pub(crate) request_id: Uuid,
    /// How long the key lives once claimed.
    pub(crate) ttl: Duration,
}

/// Why a claim has no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    /// The database write shared with concurrent webhooks failed.
    #[error(transparent)]
    Batch(#[from] BatchFailed),
    /// Other requests kept taking and giving back the key while this one tried.
    #[error("idempotency key changed owner {CLAIM_ROUNDS} times during one claim")]
    Contended,
}

/// How often a claim is tried while the key's owner keeps releasing it in between.
const CLAIM_ROUNDS: usize = 3;

/// Claims keys for concurrent webhooks, many in one statement. Identical keys never
/// share a statement ([`KeyLocks`] holds one of them back, and a batch is split if
/// two arrive together anyway): `ON CONFLICT DO UPDATE` cannot touch a row twice.
pub(crate) struct Claims {
    batcher: Batcher<ClaimJob>,
}

impl Claims {
    /// Starts claiming through `pool`.
    pub(crate) fn start(pool: PgPool) -> Self {
        Self {
            batcher: Batcher::start(ClaimJob { pool }, batch::Limits::WEBHOOKS),
        }
    }

    /// Claims `key` for `request_id` for `ttl`. An expired key is claimed anew.
    pub(crate) async fn claim(
        &self,
        key: &str,
        request_id: Uuid,
        ttl: Duration,
    ) -> Result<Claim, ClaimError> {
        let request = ClaimRequest {
            key: key.to_owned(),
            request_id,
            ttl,
        };
        // Bounded: another round only when the owner released the key in between.
        for _ in 0..CLAIM_ROUNDS {
            if let Some(claim) = self.batcher.submit(request.clone()).await? {
                return Ok(claim);
            }
        }
        Err(ClaimError::Contended)
    }
}

struct ClaimJob {
    pool: PgPool,
}

impl batch::Job for ClaimJob {
    type Item = ClaimRequest;
    /// `None` when the key's owner gave it back while the claim ran: try again.
    type Output = Option<Claim>;

    async fn run(&self, items: Vec<ClaimRequest>) -> Result<Vec<Option<Claim>>, sqlx::Error> {
        let mut answers = vec![None; items.len()];
        // Rounds of distinct keys: the first of each key, then the next, and so on.
        let mut rest: Vec<usize> = (0..items.len()).collect();
        while !rest.is_empty() {
            let mut seen = HashSet::new();
            let (round, later): (Vec<usize>, Vec<usize>) =
                rest.into_iter().partition(|&i| seen.insert(&items[i].key));
            let claimed = claim_distinct(&self.pool, round.iter().map(|&i| &items[i])).await?;
            for (i, claim) in round.into_iter().zip(claimed) {
                answers[i] = claim;
            }
            rest = later;
        }
        Ok(answers)
    }

    fn name(&self) -> &'static str {
        "idempotency claims"
    }
}

/// Claims distinct keys in one statement; one answer per request, in order.
async fn claim_distinct<'a>(
    pool: &PgPool,
    requests: impl Iterator<Item = &'a ClaimRequest>,
) -> Result<Vec<Option<Claim>>, sqlx::Error> {
    let (mut keys, mut ids, mut ttls) = (Vec::new(), Vec::new(), Vec::new());
    for request in requests {
        keys.push(request.key.as_str());
        ids.push(request.request_id);
        ttls.push(request.ttl.as_secs_f64());
    }
    // The insert goes in key order, so two ingest processes claiming overlapping keys
    // lock them in the same order and cannot deadlock. A key some other transaction
    // inserted after this statement's snapshot conflicts but is invisible to the final
    // SELECT: its owner comes back NULL, and the claim is tried again. The owner is
    // looked up key by key (a LATERAL with LIMIT, which the planner cannot flatten):
    // joined plainly, a large batch made it hash the whole table, all of a day's keys.
    let rows: Vec<(bool, Option<Uuid>, Option<bool>)> = sqlx::query_as(
        r#"
        WITH wanted AS (
            SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::float8[])
                WITH ORDINALITY AS w(key, request_id, ttl_secs, position)
        ),
        claimed AS (
            INSERT INTO idempotency_keys (key, request_id, expires_at, confirmed)
            SELECT key, request_id, now() + make_interval(secs => ttl_secs), FALSE
            FROM wanted ORDER BY key
            ON CONFLICT (key) DO UPDATE
                SET request_id = EXCLUDED.request_id,
                    created_at = now(),
                    expires_at = EXCLUDED.expires_at,
                    confirmed = FALSE
                WHERE idempotency_keys.expires_at <= now()
            RETURNING key
        )
        SELECT claimed.key IS NOT NULL, owner.request_id, owner.confirmed
        FROM wanted
        LEFT JOIN claimed ON claimed.key = wanted.key
        LEFT JOIN LATERAL (
            SELECT o.request_id, o.confirmed FROM idempotency_keys o
            WHERE claimed.key IS NULL AND o.key = wanted.key AND o.expires_at > now()
            LIMIT 1
        ) owner ON TRUE
        ORDER BY wanted.position
        "#,
    )
    .bind(&keys)
    .bind(&ids)
    .bind(&ttls)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| match row {
            (true, _, _) => Some(Claim::Claimed),
            (false, Some(owner), Some(true)) => Some(Claim::Duplicate(owner)),
            (false, Some(owner), Some(false)) => Some(Claim::Unconfirmed(owner)),
            (false, _, _) => None,
        })
        .collect())
}

/// A key to mark confirmed (by the audit recorder, with the key's `accepted` row): from
/// then on a request presenting it is a duplicate of `request_id`.
#[derive(Debug, Clone)]
pub(crate) struct Confirmation {
    /// The stored key.
    pub(crate) key: String,
    /// The request whose message the broker confirmed.
    pub(crate) request_id: Uuid,
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
