//! The `system_logs` audit trail: rows that tell a signal's life from ingest to fill
//! or dead letter, queried by `hoox trace` and streamed by `hoox logs tail`.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgExecutor, Postgres};
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
    /// The web dashboard.
    Dashboard,
}

impl Worker {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Consumer => "consumer",
            Self::Cli => "cli",
            Self::Dashboard => "dashboard",
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

/// Inserts rows bound by [`bind_entries`] as `$1` to `$7`; a statement may add its own
/// parameters from `$8` on (a CTE doing more in the same statement, say).
pub const INSERT_ENTRIES: &str = r#"
    INSERT INTO system_logs (created_at, request_id, worker, kind, severity, message, context)
    SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])
"#;

/// Binds the columns of `entries`, in the order [`INSERT_ENTRIES`] reads them.
pub fn bind_entries<'q>(
    query: Query<'q, Postgres, PgArguments>,
    entries: &[LogEntry],
) -> Query<'q, Postgres, PgArguments> {
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
    query
        .bind(created)
        .bind(request_ids)
        .bind(workers)
        .bind(kinds)
        .bind(severities)
        .bind(messages)
        .bind(contexts)
}

/// Inserts `entries` in one statement.
pub async fn insert_logs<'e>(
    executor: impl PgExecutor<'e>,
    entries: &[LogEntry],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    bind_entries(sqlx::query(INSERT_ENTRIES), entries)
        .execute(executor)
        .await?;
    Ok(())
}
