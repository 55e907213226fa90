//! Ingest's audit rows, written for concurrent webhooks in shared transactions: an
//! accepted signal's `accepted` row commits together with its key's confirmation, and
//! a refused duplicate's row joins the next batch.

use hoox_common::logs::{insert_logs, LogEntry};
use sqlx::PgPool;

use crate::batch::{self, BatchFailed, Batcher};
use crate::idempotency::{self, Confirmation};

/// One row to write, and the key to confirm in the same transaction, if any.
#[derive(Debug)]
pub(crate) struct Record {
    /// The key whose message the broker confirmed.
    pub(crate) confirm: Option<Confirmation>,
    /// The audit row.
    pub(crate) entry: LogEntry,
}

/// Writes [`Record`]s, many per transaction.
pub(crate) struct Recorder {
    batcher: Batcher<RecordJob>,
}

impl Recorder {
    /// Starts recording through `pool`.
    pub(crate) fn start(pool: PgPool) -> Self {
        let limits = batch::Limits {
            max_items: 512,
            in_flight: 2,
        };
        Self {
            batcher: Batcher::start(RecordJob { pool }, limits),
        }
    }

    /// Writes `record`; returns once the transaction holding it has committed.
    pub(crate) async fn record(&self, record: Record) -> Result<(), BatchFailed> {
        self.batcher.submit(record).await
    }
}

struct RecordJob {
    pool: PgPool,
}

impl batch::Job for RecordJob {
    type Item = Record;
    type Output = ();

    async fn run(&self, records: Vec<Record>) -> Result<Vec<()>, sqlx::Error> {
        let size = records.len();
        let (confirmations, entries): (Vec<_>, Vec<_>) =
            records.into_iter().map(|r| (r.confirm, r.entry)).unzip();
        let confirmations: Vec<Confirmation> = confirmations.into_iter().flatten().collect();
        if confirmations.is_empty() {
            insert_logs(&self.pool, &entries).await?;
        } else {
            let mut tx = self.pool.begin().await?;
            idempotency::confirm_all(&mut *tx, &confirmations).await?;
            insert_logs(&mut *tx, &entries).await?;
            tx.commit().await?;
        }
        Ok(vec![(); size])
    }

    fn name(&self) -> &'static str {
        "audit rows"
    }
}
