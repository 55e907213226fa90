//! An exchange that accepts every order and keeps a ledger of what it accepted, with
//! no duplicate check of its own: a request id executed twice shows as two entries, so
//! tests see what hoox itself lets through, not what an exchange would catch.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use hoox_common::signal::{ExchangeName, Leverage};
use hoox_consumer::exchange::{Exchange, ExchangeError, OrderAck, OrderRequest};

use super::filled;

/// The ledger exchange (it answers as `paper`, the default route).
#[derive(Default)]
pub struct Ledger {
    accepted: Mutex<Vec<String>>,
    latency: Duration,
    panic_on: Option<String>,
}

impl Ledger {
    /// A ledger that takes `latency` to answer each order.
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    /// A ledger that panics while placing an order for `symbol`.
    pub fn panicking_on(symbol: &str) -> Self {
        Self {
            panic_on: Some(symbol.to_owned()),
            ..Self::default()
        }
    }

    /// Every client order id accepted, in order, repeats included.
    pub fn accepted(&self) -> Vec<String> {
        self.accepted.lock().unwrap().clone()
    }

    /// How many times each client order id was accepted.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for id in self.accepted() {
            *counts.entry(id).or_default() += 1;
        }
        counts
    }
}

#[async_trait]
impl Exchange for Ledger {
    fn name(&self) -> ExchangeName {
        ExchangeName::Paper
    }

    fn has_credentials(&self, _: bool) -> bool {
        true
    }

    async fn set_leverage(&self, _: &OrderRequest, _: Leverage) -> Result<(), ExchangeError> {
        Ok(())
    }

    async fn place_order(&self, order: &OrderRequest) -> Result<OrderAck, ExchangeError> {
        if self.panic_on.as_deref() == Some(order.symbol.as_str()) {
            panic!("the ledger was told to panic on {}", order.symbol);
        }
        tokio::time::sleep(self.latency).await;
        let id = order.client_order_id.as_str().to_owned();
        self.accepted.lock().unwrap().push(id.clone());
        Ok(filled(order, format!("ledger-{id}")))
    }

    async fn order_by_client_id(
        &self,
        order: &OrderRequest,
    ) -> Result<Option<OrderAck>, ExchangeError> {
        let id = order.client_order_id.as_str();
        let known = self.accepted.lock().unwrap().iter().any(|a| a == id);
        Ok(known.then(|| filled(order, format!("ledger-{id}"))))
    }
}
