//! Which partitions this consumer executes: leases held as PostgreSQL session advisory
//! locks on one dedicated connection, so they vanish with the connection (a consumer
//! killed with SIGKILL hands its share over as soon as the server drops its session).
//!
//! Each consumer also holds a shared "presence" lock on that connection; counting its
//! holders in `pg_locks` gives the live consumers, and each aims at a fair share:
//! at most `ceil(P / live)` partitions, and no more than `floor(P / live)` while another
//! consumer has fewer. The claims on request ids (`crate::store::claim`) live on the
//! same connection: losing it loses everything at once, and the run loop stops.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// How long one lease query may take before the connection is taken for lost.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The second key of the presence lock: above every partition number.
const PRESENCE: i32 = 1_000_000;

/// Why the leases are gone.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease connection failed.
    #[error("lease connection failed: {0}")]
    Database(#[from] sqlx::Error),
    /// The lease connection stopped answering.
    #[error("lease connection did not answer within {}s", QUERY_TIMEOUT.as_secs())]
    TimedOut,
}

/// What to change about this consumer's share.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Partitions to try to lease, in order.
    pub acquire: Vec<u16>,
    /// Partitions to hand over.
    pub release: Vec<u16>,
}

/// The lease connection of one consumer of one main queue.
pub struct Leases {
    connection: PgConnection,
    queue_key: i32,
    partitions: u16,
    pid: i32,
    held: BTreeSet<u16>,
}

impl Leases {
    /// Opens the lease connection (shown as `hoox-consumer` in `pg_stat_activity`) and
    /// announces this consumer.
    pub async fn open(
        options: &PgConnectOptions,
        queue: &str,
        partitions: u16,
    ) -> Result<Self, LeaseError> {
        let options = options.clone().application_name("hoox-consumer");
        let mut connection = timed(options.connect()).await?;
        let queue_key = queue_key(queue);
        let pid: i32 = timed(
            sqlx::query_scalar(
                "SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock_shared($1, $2)) AS t",
            )
            .bind(queue_key)
            .bind(PRESENCE)
            .fetch_one(&mut connection),
        )
        .await?;
        Ok(Self {
            connection,
            queue_key,
            partitions,
            pid,
            held: BTreeSet::new(),
        })
    }

    /// The connection, for claims on request ids.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.connection
    }

    /// Reads who holds what, and says what to acquire and release; `releasing` are
    /// partitions already being handed over.
    pub async fn plan(&mut self, releasing: &BTreeSet<u16>) -> Result<Plan, LeaseError> {
        let holders = timed(holders(&mut self.connection, self.queue_key)).await?;
        let mut counts: HashMap<i32, usize> = HashMap::new();
        let mut taken = BTreeSet::new();
        for (pid, held) in holders {
            taken.extend(held.iter().copied());
            if pid != self.pid {
                counts.insert(pid, held.len());
            }
        }
        let keeping: BTreeSet<u16> = self.held.difference(releasing).copied().collect();
        Ok(plan(self.partitions, &keeping, &counts, &taken))
    }

    /// Tries to lease each of `partitions`; returns those leased.
    pub async fn acquire(&mut self, partitions: &[u16]) -> Result<Vec<u16>, LeaseError> {
        let wanted: Vec<i32> = partitions.iter().map(|p| i32::from(*p)).collect();
        let rows: Vec<(i32, bool)> = timed(
            sqlx::query_as("SELECT p, pg_try_advisory_lock($1, p) FROM unnest($2::int4[]) AS t(p)")
                .bind(self.queue_key)
                .bind(&wanted)
                .fetch_all(&mut self.connection),
        )
        .await?;
        let got: Vec<u16> = rows
            .into_iter()
            .filter(|(_, locked)| *locked)
            .filter_map(|(p, _)| u16::try_from(p).ok())
            .collect();
        self.held.extend(got.iter().copied());
        Ok(got)
    }

    /// Gives up the lease on `partition`, once nothing of it is in flight.
    pub async fn release(&mut self, partition: u16) -> Result<(), LeaseError> {
        timed(
            sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                .bind(self.queue_key)
                .bind(i32::from(partition))
                .execute(&mut self.connection),
        )
        .await?;
        self.held.remove(&partition);
        Ok(())
    }

    /// Closes the connection, which lets go of every lease and claim.
    pub async fn close(self) {
        let _ = self.connection.close().await;
    }
}

async fn timed<T>(
    query: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, LeaseError> {
    tokio::time::timeout(QUERY_TIMEOUT, query)
        .await
        .map_err(|_| LeaseError::TimedOut)?
        .map_err(LeaseError::from)
}

/// How many partitions of `queue` each live consumer holds, one entry per consumer
/// (a consumer that holds none yet counts as 0), largest first.
pub async fn shares(connection: &mut PgConnection, queue: &str) -> Result<Vec<usize>, LeaseError> {
    let mut shares: Vec<usize> = holdings(connection, queue)
        .await?
        .iter()
        .map(BTreeSet::len)
        .collect();
    shares.sort_unstable_by(|a, b| b.cmp(a));
    Ok(shares)
}

/// The partitions of `queue` each live consumer holds, one entry per consumer.
pub async fn holdings(
    connection: &mut PgConnection,
    queue: &str,
) -> Result<Vec<BTreeSet<u16>>, LeaseError> {
    let holders = timed(holders(connection, queue_key(queue))).await?;
    Ok(holders.into_values().collect())
}

/// The partitions each live consumer of the queue with `queue_key` holds, by backend pid.
async fn holders(
    connection: &mut PgConnection,
    queue_key: i32,
) -> Result<HashMap<i32, BTreeSet<u16>>, sqlx::Error> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        r#"
        SELECT pid, objid::text::bigint FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND objsubid = 2
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND classid::text::bigint = $1
        "#,
    )
    .bind(i64::from(queue_key))
    .fetch_all(connection)
    .await?;
    let mut holders: HashMap<i32, BTreeSet<u16>> = HashMap::new();
    for (pid, key) in rows {
        let held = holders.entry(pid).or_default();
        if key != i64::from(PRESENCE) {
            if let Ok(partition) = u16::try_from(key) {
                held.insert(partition);
            }
        }
    }
    Ok(holders)
}

/// The first key of this main queue's locks: a stable, non-negative hash of its name.
fn queue_key(queue: &str) -> i32 {
    let hash = queue.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    i32::try_from(hash & 0x7fff_ffff).unwrap_or_default()
}

/// This consumer's next move, given the partitions it keeps, how many each other live
/// consumer holds, and which partitions anyone holds.
fn plan(
    partitions: u16,
    keeping: &BTreeSet<u16>,
    others: &HashMap<i32, usize>,
    taken: &BTreeSet<u16>,
) -> Plan {
    let total = usize::from(partitions);
    let live = others.len() + 1;
    let low = total / live;
    let high = total.div_ceil(live);
    let mine = keeping.len();
    let mut release = Vec::new();
    if mine > high {
        release.extend(keeping.iter().rev().take(mine - high).copied());
    } else if mine > low && others.values().any(|&n| n < low) {
        // One at a time: every consumer above its floor gives one, the newcomer takes.
        release.extend(keeping.iter().next_back().copied());
    }
    let acquire = if mine < high && release.is_empty() {
        (0..partitions)
            .filter(|p| !taken.contains(p))
            .take(high - mine)
            .collect()
    } else {
        Vec::new()
    };
    Plan { acquire, release }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: impl IntoIterator<Item = u16>) -> BTreeSet<u16> {
        items.into_iter().collect()
    }

    #[test]
    fn a_lone_consumer_takes_every_free_partition() {
        let planned = plan(4, &set([]), &HashMap::new(), &set([]));
        assert_eq!(planned.acquire, vec![0, 1, 2, 3]);
        assert!(planned.release.is_empty());
    }

    #[test]
    fn a_consumer_above_its_share_hands_the_surplus_over() {
        // 16 partitions, two consumers: the one holding all keeps 8.
        let planned = plan(16, &set(0..16), &HashMap::from([(7, 0)]), &set(0..16));
        assert_eq!(planned.release, (8..16).rev().collect::<Vec<_>>());
        assert!(planned.acquire.is_empty());
    }

    #[test]
    fn shares_converge_to_within_one_when_the_division_is_uneven() {
        // 16 over five: 4, 4, 4, 4 and a newcomer with none; each gives one back.
        let others = HashMap::from([(1, 4), (2, 4), (3, 4), (4, 0)]);
        let planned = plan(16, &set(0..4), &others, &set(0..16));
        assert_eq!(planned.release, vec![3]);
        // The newcomer takes what is free, up to the ceiling (4).
        let others = HashMap::from([(1, 3), (2, 3), (3, 3), (5, 3)]);
        let planned = plan(16, &set([]), &others, &set(0..12));
        assert_eq!(planned.acquire, vec![12, 13, 14, 15]);
        // At 3, 3, 3, 3, 4 nobody moves.
        let others = HashMap::from([(1, 3), (2, 3), (3, 3), (4, 4)]);
        assert_eq!(plan(16, &set(0..3), &others, &set(0..16)), Plan::default());
    }

    #[test]
    fn the_queue_key_is_stable_and_not_negative() {
        assert_eq!(queue_key("trade-execution"), queue_key("trade-execution"));
        assert_ne!(queue_key("a"), queue_key("b"));
        assert!(queue_key("trade-execution") >= 0);
    }
}
