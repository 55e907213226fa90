//! The retry schedule, in one place: how long a retryable failure waits before its
//! next attempt, and when attempts run out.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// Exponential backoff: the wait after attempt `n` is `base·2^(n-1)`, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first attempt.
    pub base: Duration,
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Longest wait between two attempts.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The wait after attempt `attempt` (1-based) failed; `None` when it was the last.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt == 0 || attempt >= self.max_attempts {
            return None;
        }
        let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
        Some(self.base.saturating_mul(factor).min(self.max_delay))
    }

    /// How long a delivery waits when its request id is being executed elsewhere:
    /// the first tier, which exists whatever the number of attempts.
    pub fn defer_delay(&self) -> Duration {
        self.base.min(self.max_delay)
    }

    /// Every distinct wait the schedule can produce, shortest first: one delay tier each.
    pub fn tiers(&self) -> Vec<Duration> {
        let mut tiers: Vec<Duration> = (1..self.max_attempts)
            .filter_map(|n| self.delay_after(n))
            .chain([self.defer_delay()])
            .collect();
        tiers.sort();
        tiers.dedup();
        tiers
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(30_000),
            max_attempts: 5,
            max_delay: Duration::from_millis(480_000),
        }
    }
}

/// Waits between attempts to reach a broker or database that is down: 100 ms,
/// doubling to 5 s, for as long as it takes.
#[derive(Debug)]
pub struct Reconnect {
    delays: ExponentialBackoff,
}

impl Reconnect {
    /// A fresh schedule, starting at 100 ms.
    pub fn new() -> Self {
        Self {
            delays: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .without_max_times()
                .build(),
        }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(Duration::from_secs(5))
    }
}

impl Default for Reconnect {
    fn default() -> Self {
        Self::new()
    }
}

/// Sleeps `delay`; returns `false` at once if `token` is cancelled first.
pub async fn sleep_unless_cancelled(delay: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        () = token.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_schedule_doubles_from_thirty_seconds() {
        let policy = RetryPolicy::default();
        let delays: Vec<_> = (1..=5).map(|n| policy.delay_after(n)).collect();
        assert_eq!(
            delays,
            vec![
                Some(secs(30)),
                Some(secs(60)),
                Some(secs(120)),
                Some(secs(240)),
                None
            ]
        );
        assert_eq!(
            policy.tiers(),
            vec![secs(30), secs(60), secs(120), secs(240)]
        );
    }

    #[test]
    fn delays_are_capped_and_tiers_deduplicated() {
        let policy = RetryPolicy {
            base: secs(30),
            max_attempts: 10,
            max_delay: secs(100),
        };
        assert_eq!(policy.delay_after(3), Some(secs(100)));
        assert_eq!(policy.delay_after(9), Some(secs(100)));
        assert_eq!(policy.delay_after(10), None);
        assert_eq!(policy.tiers(), vec![secs(30), secs(60), secs(100)]);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = RetryPolicy {
            base: secs(30),
            max_attempts: u32::MAX,
            max_delay: secs(480),
        };
        assert_eq!(policy.delay_after(40), Some(secs(480)));
        assert_eq!(policy.delay_after(0), None);
    }

    #[test]
    fn reconnect_waits_double_up_to_five_seconds() {
        let mut reconnect = Reconnect::new();
        let delays: Vec<_> = (0..9).map(|_| reconnect.next_delay()).collect();
        // backon multiplies in f32: compare whole milliseconds.
        let millis: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(&millis[..3], &[100, 200, 400]);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(millis[8], 5_000);
    }

    #[test]
    fn a_single_attempt_never_retries_but_keeps_the_tier_for_deferrals() {
        let policy = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.delay_after(1), None);
        assert_eq!(policy.tiers(), vec![policy.defer_delay()]);
    }
}
