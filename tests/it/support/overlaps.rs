//! Counts, for a test exchange, how often one symbol had two orders in flight at once:
//! per-symbol order means it never does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Orders in flight per symbol, and how often a symbol had more than one.
#[derive(Debug, Default)]
pub struct SymbolOverlaps {
    in_flight: Mutex<HashMap<String, usize>>,
    overlaps: AtomicUsize,
}

impl SymbolOverlaps {
    /// An order for `symbol` starts; counted as an overlap if one was already running.
    pub fn enter(&self, symbol: &str) {
        let mut in_flight = self.in_flight.lock().unwrap();
        let n = in_flight.entry(symbol.to_owned()).or_default();
        *n += 1;
        if *n > 1 {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// An order for `symbol` has its answer.
    pub fn leave(&self, symbol: &str) {
        if let Some(n) = self.in_flight.lock().unwrap().get_mut(symbol) {
            *n -= 1;
        }
    }

    /// How many orders started while another of their symbol was running.
    pub fn count(&self) -> usize {
        self.overlaps.load(Ordering::SeqCst)
    }
}
