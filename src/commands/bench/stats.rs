//! Latency percentiles and rates. Percentiles come from an HDR histogram (the
//! `hdrhistogram` crate): exact to three significant digits over the whole range, so a
//! 30 s stall and a 300 µs answer sit in one histogram without either being rounded
//! away.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency recorded, in µs; anything longer is recorded as this (an hour).
const HIGHEST_US: u64 = 3_600_000_000;

/// The percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(super) struct Percentiles {
    /// How many latencies were recorded.
    pub(super) count: u64,
    /// The median.
    pub p50_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// The 99.9th percentile.
    pub p999_ms: f64,
    /// The longest.
    pub(super) max_ms: f64,
}

/// A histogram of latencies recorded in microseconds.
pub(super) struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub(super) fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, HIGHEST_US, 3)
                .expect("1 µs to an hour at 3 significant digits is a valid histogram"),
        )
    }

    /// Records one latency.
    pub(super) fn record(&mut self, latency: Duration) {
        self.record_us(u64::try_from(latency.as_micros()).unwrap_or(HIGHEST_US));
    }

    /// Records one latency given in microseconds; zero counts as 1 µs.
    pub(super) fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, HIGHEST_US));
    }

    /// The percentiles, or `None` when nothing was recorded.
    pub(super) fn percentiles(&self) -> Option<Percentiles> {
        if self.0.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Percentiles {
            count: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.5)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
        })
    }
}

/// Events per second: `count` over `elapsed`, zero for an empty interval.
pub(super) fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        count as f64 / secs
    }
}

/// `value` as a share of `ceiling`, when there is a ceiling to compare with.
pub(super) fn ratio(value: f64, ceiling: f64) -> Option<f64> {
    (ceiling > 0.0 && value.is_finite()).then(|| value / ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_thousand_are_exact() {
        let mut latencies = Latencies::new();
        for us in 1..=1000 {
            latencies.record_us(us);
        }
        let p = latencies.percentiles().unwrap();
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_ms, 0.5);
        assert_eq!(p.p99_ms, 0.99);
        assert_eq!(p.p999_ms, 0.999);
        assert_eq!(p.max_ms, 1.0);
    }

    #[test]
    fn one_stall_shows_in_the_tail_and_not_in_the_median() {
        let mut latencies = Latencies::new();
        for _ in 0..999 {
            latencies.record(Duration::from_millis(2));
        }
        latencies.record(Duration::from_secs(3));
        let p = latencies.percentiles().unwrap();
        assert_eq!(p.p50_ms, 2.0);
        assert_eq!(p.p99_ms, 2.0);
        // Three significant digits: the stall is read back within 0.1 %.
        assert!((p.max_ms - 3000.0).abs() <= 3.0, "{p:?}");
        assert!(
            p.p999_ms <= 2.0,
            "the 999th of 1000 values is still 2 ms: {p:?}"
        );
    }

    #[test]
    fn no_latencies_have_no_percentiles_and_extremes_are_clamped() {
        let mut latencies = Latencies::new();
        assert_eq!(latencies.percentiles(), None);
        latencies.record(Duration::ZERO);
        latencies.record(Duration::from_secs(10 * 3600));
        let p = latencies.percentiles().unwrap();
        assert_eq!(p.count, 2);
        assert_eq!(p.p50_ms, 0.001);
        assert!(p.max_ms >= 3_600_000.0 * 0.999, "{p:?}");
    }

    #[test]
    fn rates_and_ratios_are_plain_divisions_that_refuse_nothing_to_divide_by() {
        assert_eq!(rate(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
        assert_eq!(ratio(50.0, 200.0), Some(0.25));
        assert_eq!(ratio(50.0, 0.0), None);
    }
}
