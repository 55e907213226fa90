//! The kill switch as stored (`trade:kill_switch`, with `trade:kill_switch_reason` when
//! hoox turned it on by itself), and turning it on by itself: one transaction writes
//! both rows and the events that say why, so the switch, its reason and the audit trail
//! never disagree, and of several consumers tripping it at once only one records it.

use sqlx::{PgConnection, PgPool};

use crate::event::Event;
use crate::logs::{insert_logs, LogEntry, Worker};
use crate::runtime_config::{is_on, put, KILL_SWITCH};

/// `trade:kill_switch_reason`: why hoox turned the kill switch on by itself; written by
/// hoox alone, and removed by an operator's change of the switch.
pub const REASON: &str = "trade:kill_switch_reason";

/// Writes the switch and its reason (removed when `None`) in the caller's transaction,
/// after locking the switch's row; gives whether it was on before.
pub async fn store(
    conn: &mut PgConnection,
    on: bool,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    // The row exists before it is locked, so two writers queue on the lock instead of
    // both inserting.
    sqlx::query(
        "INSERT INTO config (key, value) VALUES ($1, 'false') ON CONFLICT (key) DO NOTHING",
    )
    .bind(KILL_SWITCH)
    .execute(&mut *conn)
    .await?;
    let before: String = sqlx::query_scalar("SELECT value FROM config WHERE key = $1 FOR UPDATE")
        .bind(KILL_SWITCH)
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query("UPDATE config SET value = $2, updated_at = now() WHERE key = $1")
        .bind(KILL_SWITCH)
        .bind(if on { "true" } else { "false" })
        .execute(&mut *conn)
        .await?;
    put(conn, REASON, reason).await?;
    Ok(is_on(&before))
}

/// Turns the kill switch on for `reason` unless it is on already, recording `cause`
/// and the change as `worker`'s; gives the rows written, or `None` when it was on.
pub async fn trip(
    pool: &PgPool,
    worker: Worker,
    reason: &str,
    cause: Vec<Event>,
) -> Result<Option<Vec<LogEntry>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if store(&mut tx, true, Some(reason)).await? {
        // Already on, perhaps for another reason: leave it as it was.
        tx.rollback().await?;
        return Ok(None);
    }
    let entries: Vec<LogEntry> = cause
        .into_iter()
        .chain([Event::KillSwitchChanged {
            on: true,
            reason: Some(reason.to_owned()),
        }])
        .map(|event| LogEntry::now(worker, None, event))
        .collect();
    insert_logs(&mut *tx, &entries).await?;
    tx.commit().await?;
    Ok(Some(entries))
}
