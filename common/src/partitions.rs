//! The partition count a deployment was set up with, recorded in the database: ingest
//! and every consumer must hash a symbol onto the same partition, so a process started
//! with another `HOOX_PARTITIONS` refuses to run instead of splitting a symbol's signals
//! over two queues.

use sqlx::PgPool;

use crate::amqp::Topology;

/// Why the partition count cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The database records another count for this queue.
    #[error("HOOX_PARTITIONS is {configured}, but queue {queue} was set up with {recorded} partitions; run every process with HOOX_PARTITIONS={recorded}, or change it as the README's \"Changing HOOX_PARTITIONS\" says (drain first)")]
    Mismatch {
        /// The main queue.
        queue: String,
        /// What this process was given.
        configured: u16,
        /// What the database holds.
        recorded: i32,
    },
    /// The database could not be read.
    #[error("cannot read the recorded partition count: {0}")]
    Database(#[from] sqlx::Error),
}

/// Records `topology`'s partition count when none is recorded for its queue, and
/// refuses a count that differs from the recorded one.
pub async fn check(pool: &PgPool, topology: &Topology) -> Result<(), PartitionError> {
    let configured = topology.partitions();
    sqlx::query(
        "INSERT INTO queue_partitions (queue, partitions) VALUES ($1, $2) ON CONFLICT (queue) DO NOTHING",
    )
    .bind(topology.queue())
    .bind(i32::from(configured))
    .execute(pool)
    .await?;
    // Read in a statement of its own, which sees a row another process inserted first.
    let recorded: i32 =
        sqlx::query_scalar("SELECT partitions FROM queue_partitions WHERE queue = $1")
            .bind(topology.queue())
            .fetch_one(pool)
            .await?;
    if recorded == i32::from(configured) {
        Ok(())
    } else {
        Err(PartitionError::Mismatch {
            queue: topology.queue().to_owned(),
            configured,
            recorded,
        })
    }
}
