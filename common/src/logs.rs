//! The `system_logs` audit trail: rows that tell a signal's life from ingest to fill
//! or dead letter, queried by `hoox trace` and streamed by `hoox logs tail`.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::event::Event;

/// Which part of hoox wrote a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Worker {
    /// The webhook service.
    Ingest,
    /// The batch consumer.
    Consumer,
    /// The operator CLI.
    Cli,
}

impl Worker {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Consumer => "consumer",
            Self::Cli => "cli",
        }
    }
}

/// How much a row matters; variants are declared least first, so `Ord` ranks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Severity {
    /// Detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something an operator may want to look at.
    Warn,
    /// Something failed.
    Error,
}

impl Severity {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// One `system_logs` row: an event, who recorded it, when, and for which signal.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// The signal it belongs to, if any.
    pub request_id: Option<Uuid>,
    /// Who wrote it.
    pub worker: Worker,
    /// What happened; kind, severity, message and context are derived from it.
    pub event: Event,
}

impl LogEntry {
    /// An entry for `event`, stamped now.
    pub fn now(worker: Worker, request_id: Option<Uuid>, event: Event) -> Self {
        Self {
            created_at: Utc::now(),
            request_id,
            worker,
            event,
        }
    }
}

/// Inserts `entries` in one statement.
pub async fn insert_logs<'e>(
    executor: impl PgExecutor<'e>,
    entries: &[LogEntry],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let created: Vec<_> = entries.iter().map(|e| e.created_at).collect();
    let request_ids: Vec<_> = entries.iter().map(|e| e.request_id).collect();
    let workers: Vec<_> = entries.iter().map(|e| e.worker.as_str()).collect();
    let kinds: Vec<_> = entries.iter().map(|e| e.event.kind()).collect();
    let severities: Vec<_> = entries
        .iter()
        .map(|e| e.event.severity().as_str())
        .collect();
    let messages: Vec<_> = entries.iter().map(|e| e.event.message()).collect();
    let contexts: Vec<_> = entries.iter().map(|e| e.event.context()).collect();
    sqlx::query(
        r#"
        INSERT INTO system_logs (created_at, request_id, worker, kind, severity, message, context)
        SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])
        "#,
    )
    .bind(created)
    .bind(request_ids)
    .bind(workers)
    .bind(kinds)
    .bind(severities)
    .bind(messages)
    .bind(contexts)
    .execute(executor)
    .await?;
    Ok(())
}
