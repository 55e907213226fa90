//! The bounds of a batch: how many orders a consumer keeps in flight, and how many
//! outcomes it settles in one transaction.

use std::time::Duration;

/// The bounds of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchBounds {
    /// Most orders in flight at once, and most outcomes committed in one transaction.
    pub size: usize,
    /// Kept for `HOOX_BATCH_TIMEOUT_MS`: outcomes are settled as soon as the previous
    /// batch is committed, so nothing waits to fill a batch.
    pub timeout: Duration,
}
