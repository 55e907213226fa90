//! The `ExchangeRouter`: picks the provider for a signal (its `exchange`, else the
//! symbol's routing override, else the default route, read live from config) and
//! remembers the leverage it set so it is not set again before every order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hoox_common::runtime_config::RuntimeConfig;
use hoox_common::signal::{ExchangeName, Leverage, Signal, Symbol};

use super::{ErrorClass, Exchange, ExchangeError, OrderRequest};

/// Where a route came from, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    /// The signal named its exchange.
    Signal,
    /// Config: a per-symbol override or the default route (or paper, when neither is set).
    Config,
}

/// The providers, and the routing rules between them.
pub struct ExchangeRouter {
    providers: HashMap<ExchangeName, Arc<dyn Exchange>>,
    config: RuntimeConfig,
    leverage_set: Mutex<HashMap<(ExchangeName, bool, Symbol), u32>>,
}

impl ExchangeRouter {
    /// A router over `providers`, reading routes from `config`.
    pub fn new(providers: Vec<Arc<dyn Exchange>>, config: RuntimeConfig) -> Self {
        Self {
            providers: providers.into_iter().map(|p| (p.name(), p)).collect(),
            config,
            leverage_set: Mutex::new(HashMap::new()),
        }
    }

    /// The exchange a signal goes to, and why.
    pub fn route(&self, signal: &Signal) -> Result<(ExchangeName, RouteSource), ExchangeError> {
        if let Some(exchange) = signal.exchange {
            return Ok((exchange, RouteSource::Signal));
        }
        self.config
            .route(&signal.symbol)
            .map(|exchange| (exchange, RouteSource::Config))
            .map_err(|e| ExchangeError::new(ErrorClass::Fatal, e))
    }

    /// The provider for `exchange`, when it can trade in that environment.
    pub fn provider(
        &self,
        exchange: ExchangeName,
        testnet: bool,
    ) -> Result<Arc<dyn Exchange>, ExchangeError> {
        let environment = if testnet { "testnet " } else { "" };
        let provider = self.providers.get(&exchange).ok_or_else(|| {
            ExchangeError::new(
                ErrorClass::Fatal,
                format!("exchange {exchange} is not enabled in this consumer"),
            )
        })?;
        if !provider.has_credentials(testnet) {
            return Err(ExchangeError::new(
                ErrorClass::Fatal,
                format!("no {environment}API credentials configured for {exchange}"),
            ));
        }
        Ok(Arc::clone(provider))
    }

    /// Sets leverage unless this consumer already set the same value for the symbol.
    pub async fn ensure_leverage(
        &self,
        provider: &dyn Exchange,
        order: &OrderRequest,
        leverage: Leverage,
    ) -> Result<bool, ExchangeError> {
        let key = (provider.name(), order.testnet, order.symbol.clone());
        let known = self
            .leverage_set
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied());
        if known == Some(leverage.get()) {
            return Ok(false);
        }
        provider.set_leverage(order, leverage).await?;
        if let Ok(mut cache) = self.leverage_set.lock() {
            cache.insert(key, leverage.get());
        }
        Ok(true)
    }
}
