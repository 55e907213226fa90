//! Ingest's audit rows, written for concurrent webhooks in shared statements: an
//! accepted signal's `accepted` row commits together with its key's confirmation, and
//! a refused duplicate's row joins the next batch.

use std::sync::LazyLock;

use hoox_common::logs::{bind_entries, LogEntry, INSERT_ENTRIES};
use sqlx::PgPool;

use crate::batch::{self, BatchFailed, Batcher};
use crate::idempotency::Confirmation;

/// One row to write, and the key to confirm in the same transaction, if any.
#[derive(Debug)]
pub(crate) struct Record {
    /// The key whose message the broker confirmed.
    pub(crate) confirm: Option<Confirmation>,
    /// The audit row.
    pub(crate) entry: LogEntry,
}

/// Writes [`Record`]s, many per statement.
pub(crate) struct Recorder {
    batcher: Batcher<RecordJob>,
}

impl Recorder {
    /// Starts recording through `pool`.
    pub(crate) fn start(pool: PgPool) -> Self {
        Self {
            batcher: Batcher::start(RecordJob { pool }, batch::Limits::WEBHOOKS),
        }
    }

    /// Writes `record`; returns once the statement holding it has committed.
    pub(crate) async fn record(&self, record: Record) -> Result<(), BatchFailed> {
        self.batcher.submit(record).await
    }
}

struct RecordJob {
    pool: PgPool,
}

/// Confirms the keys bound as `$8` and `$9` and inserts the audit rows, in one
/// statement: one round trip and one commit for the whole batch. The keys are found
/// through `key = ANY`, an index lookup whatever the batch's size (an `UPDATE … FROM
/// UNNEST` may be planned as a hash join over the whole table).
static CONFIRM_AND_INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
        WITH confirmed AS (
            UPDATE idempotency_keys k SET confirmed = TRUE
            WHERE k.key = ANY($8::text[])
                AND (k.key, k.request_id) IN (SELECT * FROM UNNEST($8::text[], $9::uuid[]))
        )
        {INSERT_ENTRIES}
        "#
    )
});

impl batch::Job for RecordJob {
    type Item = Record;
    type Output = ();

    async fn run(&self, records: Vec<Record>) -> Result<Vec<()>, sqlx::Error> {
        let size = records.len();
        let (mut keys, mut ids, mut entries) = (Vec::new(), Vec::new(), Vec::with_capacity(size));
        for record in records {
            if let Some(confirm) = record.confirm {
                keys.push(confirm.key);
                ids.push(confirm.request_id);
            }
            entries.push(record.entry);
        }
        bind_entries(sqlx::query(&CONFIRM_AND_INSERT), &entries)
            .bind(keys)
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(vec![(); size])
    }

    fn name(&self) -> &'static str {
        "audit rows"
    }
}
