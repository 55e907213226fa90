//! Per-symbol lanes of one partition: which delivery may run next.
//!
//! A symbol runs one signal at a time, in the order the partition delivered them; a
//! signal that waits for its retry holds its symbol until it fills or is dead-lettered;
//! different symbols never wait for each other. Nothing here does I/O: the run loop
//! asks for what may run, reports when an outcome is committed, and does the rest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use uuid::Uuid;

use crate::store::{ExecutionState, Hold};

/// How long a delivery whose request id another consumer holds waits before it is
/// claimed again. It keeps its place (and its symbol) meanwhile.
pub const BUSY_WAIT: Duration = Duration::from_millis(500);

/// A delivery waiting in a lane.
#[derive(Debug)]
pub struct Waiting<D> {
    /// Its request id.
    pub request_id: Uuid,
    /// Since when its age counts.
    pub age_origin: DateTime<Utc>,
    /// Order of arrival across the partition's lanes.
    seq: u64,
    /// The delivery itself.
    pub delivery: D,
}

#[derive(Debug)]
struct Lane<D> {
    waiting: VecDeque<Waiting<D>>,
    /// A delivery of this symbol is being claimed or executed.
    busy: bool,
    /// Not before then: the head's request id was busy elsewhere.
    not_before: Option<Instant>,
}

impl<D> Default for Lane<D> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
            busy: false,
            not_before: None,
        }
    }
}

/// A symbol held by a signal waiting for its retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    request_id: Uuid,
    /// After this, the held signal can no longer be executed (it is older than the
    /// max age even if its retry came back at once), so the hold is let go: this only
    /// matters if its retry was lost by hand (a purged delay tier).
    until: DateTime<Utc>,
}

/// The lanes of one partition.
#[derive(Debug)]
pub struct Lanes<D> {
    lanes: HashMap<String, Lane<D>>,
    holds: HashMap<String, Held>,
    /// Request ids whose outcome is known but not yet committed: a copy of one waits,
    /// so that its claim sees the committed outcome.
    uncommitted: HashSet<Uuid>,
    next_seq: u64,
    max_age: Duration,
    hold_for: chrono::Duration,
}

impl<D> Lanes<D> {
    /// Empty lanes, with `holds` (read from the database) in force. A signal older
    /// than `max_age` is never executed; a retry comes back within `max_delay`.
    pub fn new(holds: Vec<Hold>, max_age: Duration, max_delay: Duration) -> Self {
        let hold_for = chrono::Duration::from_std(max_age.saturating_add(max_delay))
            .unwrap_or(chrono::Duration::MAX);
        let mut lanes = Self {
            lanes: HashMap::new(),
            holds: HashMap::new(),
            uncommitted: HashSet::new(),
            next_seq: 0,
            max_age,
            hold_for,
        };
        for hold in holds {
            lanes.hold(hold.symbol, hold.request_id, hold.age_origin);
        }
        lanes
    }

    fn hold(&mut self, symbol: String, request_id: Uuid, age_origin: DateTime<Utc>) {
        let until = age_origin
            .checked_add_signed(self.hold_for)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.holds.insert(symbol, Held { request_id, until });
    }

    /// Queues a delivery behind the earlier ones of its symbol.
    pub fn push(&mut self, symbol: &str, request_id: Uuid, age_origin: DateTime<Utc>, delivery: D) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.lanes
            .entry(symbol.to_owned())
            .or_default()
            .waiting
            .push_back(Waiting {
                request_id,
                age_origin,
                seq,
                delivery,
            });
    }

    /// The next delivery that may run, if any, taken out of its lane, which is busy
    /// until [`Lanes::finish`]. Lanes whose head arrived first go first.
    pub fn next(&mut self, now: Instant, wall: DateTime<Utc>) -> Option<(String, Waiting<D>)> {
        let max_age = chrono::Duration::from_std(self.max_age).unwrap_or(chrono::Duration::MAX);
        self.holds.retain(|_, held| held.until >= wall);
        let mut best: Option<(u64, &str, usize)> = None;
        for (symbol, lane) in &self.lanes {
            if lane.busy || lane.not_before.is_some_and(|t| t > now) {
                continue;
            }
            let index = match self.holds.get(symbol) {
                // The held signal itself has come back: it goes first.
                Some(held) => lane
                    .waiting
                    .iter()
                    .position(|w| w.request_id == held.request_id)
                    // Held back, but one too old to execute may go: it will only be
                    // dead-lettered, which sends nothing to any exchange.
                    .or_else(|| {
                        lane.waiting
                            .front()
                            .filter(|w| wall.signed_duration_since(w.age_origin) > max_age)
                            .map(|_| 0)
                    }),
                None => (!lane.waiting.is_empty()).then_some(0),
            };
            if let Some(index) = index {
                if self.uncommitted.contains(&lane.waiting[index].request_id) {
                    continue;
                }
                let seq = lane.waiting[index].seq;
                if best.is_none_or(|(s, _, _)| seq < s) {
                    best = Some((seq, symbol, index));
                }
            }
        }
        let (_, symbol, index) = best?;
        let symbol = symbol.to_owned();
        let lane = self.lanes.get_mut(&symbol)?;
        let waiting = lane.waiting.remove(index)?;
        lane.busy = true;
        lane.not_before = None;
        Some((symbol, waiting))
    }

    /// Frees `symbol`'s lane once the outcome of the delivery taken from it is known
    /// (the exchange has answered; the commit may still be under way). A delivery whose
    /// request id another consumer holds comes back as `busy`: it returns to the head of
    /// its lane and waits [`BUSY_WAIT`].
    pub fn finish(&mut self, symbol: &str, busy: Option<Waiting<D>>, now: Instant) {
        let Some(lane) = self.lanes.get_mut(symbol) else {
            return;
        };
        lane.busy = false;
        if let Some(waiting) = busy {
            lane.waiting.push_front(waiting);
            lane.not_before = Some(now + BUSY_WAIT);
        }
        if lane.waiting.is_empty() && !lane.busy {
            self.lanes.remove(symbol);
        }
    }

    /// Records the outcome of `request_id` on `symbol`, known and about to be
    /// committed: a retry holds the symbol; a fill or a dead letter of the held signal
    /// lets it go. Until [`Lanes::committed`], a copy of `request_id` waits.
    pub fn ended(
        &mut self,
        symbol: &str,
        request_id: Uuid,
        age_origin: DateTime<Utc>,
        state: Option<ExecutionState>,
    ) {
        self.uncommitted.insert(request_id);
        let Some(state) = state else {
            return;
        };
        match state {
            ExecutionState::Retrying => self.hold(symbol.to_owned(), request_id, age_origin),
            ExecutionState::Filled | ExecutionState::Dead => {
                if self
                    .holds
                    .get(symbol)
                    .is_some_and(|h| h.request_id == request_id)
                {
                    self.holds.remove(symbol);
                }
            }
            ExecutionState::Running => {}
        }
    }

    /// Records that the outcome of `request_id` is committed.
    pub fn committed(&mut self, request_id: Uuid) {
        self.uncommitted.remove(&request_id);
    }

    /// Whether any delivery of this partition is taken and not yet finished.
    pub fn busy(&self) -> bool {
        self.lanes.values().any(|lane| lane.busy)
    }

    /// Deliveries waiting, taken or not.
    pub fn len(&self) -> usize {
        self.lanes.values().map(|lane| lane.waiting.len()).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The earliest moment a busy-waiting lane may run again.
    pub fn wake_at(&self) -> Option<Instant> {
        self.lanes.values().filter_map(|lane| lane.not_before).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: Duration = Duration::from_secs(600);
    const DELAY: Duration = Duration::from_secs(60);

    fn lanes() -> Lanes<u32> {
        Lanes::new(Vec::new(), AGE, DELAY)
    }

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    fn take(lanes: &mut Lanes<u32>) -> Option<(String, u32)> {
        lanes
            .next(Instant::now(), Utc::now())
            .map(|(symbol, w)| (symbol, w.delivery))
    }

    fn done(lanes: &mut Lanes<u32>, symbol: &str, id: Uuid, state: ExecutionState) {
        lanes.ended(symbol, id, Utc::now(), Some(state));
        lanes.finish(symbol, None, Instant::now());
        lanes.committed(id);
    }

    #[test]
    fn one_symbol_runs_one_at_a_time_in_order_while_others_run_beside_it() {
        let mut lanes = lanes();
        let id = ids(4);
        let now = Utc::now();
        lanes.push("BTC", id[0], now, 0);
        lanes.push("BTC", id[1], now, 1);
        lanes.push("ETH", id[2], now, 2);
        lanes.push("ETH", id[3], now, 3);
        assert_eq!(take(&mut lanes), Some(("BTC".into(), 0)));
        assert_eq!(take(&mut lanes), Some(("ETH".into(), 2)));
        assert_eq!(take(&mut lanes), None, "each symbol is busy");
        done(&mut lanes, "ETH", id[2], ExecutionState::Filled);
        assert_eq!(take(&mut lanes), Some(("ETH".into(), 3)));
        done(&mut lanes, "BTC", id[0], ExecutionState::Filled);
        assert_eq!(take(&mut lanes), Some(("BTC".into(), 1)));
        assert!(lanes.busy());
    }

    #[test]
    fn a_retry_holds_its_symbol_until_it_comes_back_and_ends() {
        let mut lanes = lanes();
        let id = ids(3);
        let now = Utc::now();
        lanes.push("BTC", id[0], now, 0);
        lanes.push("BTC", id[1], now, 1);
        lanes.push("ETH", id[2], now, 2);
        assert_eq!(take(&mut lanes), Some(("BTC".into(), 0)));
        done(&mut lanes, "BTC", id[0], ExecutionState::Retrying);
        // The later BTC signal waits; ETH does not.
        assert_eq!(take(&mut lanes), Some(("ETH".into(), 2)));
        assert_eq!(take(&mut lanes), None);
        // The retry comes back behind it, and goes first.
        lanes.push("BTC", id[0], now, 10);
        assert_eq!(take(&mut lanes), Some(("BTC".into(), 10)));
        done(&mut lanes, "BTC", id[0], ExecutionState::Dead);
        assert_eq!(take(&mut lanes), Some(("BTC".into(), 1)));
    }

    #[test]
    fn holds_read_from_the_database_are_in_force_and_expire() {
        let id = ids(2);
        let old = Utc::now() - chrono::Duration::seconds(700);
        let hold = |age_origin| Hold {
            request_id: id[0],
            symbol: "BTC".into(),
            age_origin,
        };
        let mut lanes = Lanes::new(vec![hold(Utc::now())], AGE, DELAY);
        lanes.push("BTC", id[1], Utc::now(), 1);
        assert_eq!(take(&mut lanes), None, "held");
        // A held signal too old to execute goes, to be dead-lettered.
        let mut lanes_old = Lanes::new(vec![hold(Utc::now())], AGE, DELAY);
        lanes_old.push("BTC", id[1], old, 3);
        assert_eq!(take(&mut lanes_old), Some(("BTC".into(), 3)));
        // A hold whose signal can no longer execute anywhere is let go.
        let mut stale = Lanes::new(vec![hold(old - chrono::Duration::seconds(60))], AGE, DELAY);
        stale.push("BTC", id[1], Utc::now(), 4);
        assert_eq!(take(&mut stale), Some(("BTC".into(), 4)));
    }

    #[test]
    fn a_copy_waits_until_the_first_outcome_is_committed() {
        let mut lanes = lanes();
        let id = Uuid::new_v4();
        lanes.push("BTC", id, Utc::now(), 0);
        lanes.push("BTC", id, Utc::now(), 1);
        assert_eq!(take(&mut lanes), Some(("BTC".into(), 0)));
        lanes.ended("BTC", id, Utc::now(), Some(ExecutionState::Filled));
        lanes.finish("BTC", None, Instant::now());
        assert_eq!(take(&mut lanes), None, "its outcome is not committed yet");
        lanes.committed(id);
        assert_eq!(take(&mut lanes), Some(("BTC".into(), 1)));
    }

    #[test]
    fn a_busy_request_id_keeps_its_place_and_waits() {
        let mut lanes = lanes();
        let id = ids(2);
        lanes.push("BTC", id[0], Utc::now(), 0);
        lanes.push("BTC", id[1], Utc::now(), 1);
        let now = Instant::now();
        let (symbol, waiting) = lanes.next(now, Utc::now()).unwrap();
        lanes.finish(&symbol, Some(waiting), now);
        assert!(lanes.next(now, Utc::now()).is_none(), "waits");
        let later = now + BUSY_WAIT;
        assert_eq!(lanes.wake_at(), Some(later));
        let (_, again) = lanes.next(later, Utc::now()).unwrap();
        assert_eq!(again.delivery, 0, "in its place");
    }
}
