//! The `system_logs` audit trail: rows that tell a signal's life from ingest to fill
//! or dead letter, queried by `hoox trace` and streamed by `hoox logs tail`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

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

/// One `system_logs` row.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// The signal it belongs to, if any.
    pub request_id: Option<Uuid>,
    /// Who wrote it.
    pub worker: Worker,
    /// How much it matters.
    pub severity: Severity,
    /// What happened, for people.
    pub message: String,
    /// Structured detail (never secrets).
    pub context: Value,
}

impl LogEntry {
    /// An entry stamped now.
    pub fn now(
        worker: Worker,
        severity: Severity,
        request_id: Option<Uuid>,
        message: impl Into<String>,
        context: Value,
    ) -> Self {
        Self {
            created_at: Utc::now(),
            request_id,
            worker,
            severity,
            message: message.into(),
            context,
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
    let severities: Vec<_> = entries.iter().map(|e| e.severity.as_str()).collect();
    let messages: Vec<_> = entries.iter().map(|e| e.message.as_str()).collect();
    let contexts: Vec<_> = entries.iter().map(|e| e.context.clone()).collect();
    sqlx::query(
        r#"
        INSERT INTO system_logs (created_at, request_id, worker, severity, message, context)
        SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[])
        "#,
    )
    .bind(created)
    .bind(request_ids)
    .bind(workers)
    .bind(severities)
    .bind(messages)
    .bind(contexts)
    .execute(executor)
    .await?;
    Ok(())
}
