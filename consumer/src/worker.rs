//! Executing signals: verify, claim each request id (so a copy of a message never
//! trades), execute, and decide each message's fate. Nothing here touches the broker or
//! chooses what runs when: the run loop (`crate::run`) keeps each symbol's order, then
//! publishes the retries and dead letters of the returned [`Disposition`]s, commits a
//! batch of outcomes, and only then acknowledges the deliveries.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use hoox_common::event::Event;
use hoox_common::logs::{LogEntry, Worker as LogWorker};
use hoox_common::message::{AttemptRecord, DeadReason, DecodeError, QueueMessage};
use hoox_common::retry::{sleep_unless_cancelled, Reconnect, RetryPolicy};
use hoox_common::runtime_config::RuntimeConfig;
use hoox_common::signal::{ExchangeName, Signal};
use hoox_common::telegram::Notifier;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::exchange::router::{ExchangeRouter, RouteSource};
use crate::exchange::{ErrorClass, Exchange, ExchangeError, OrderAck, OrderRequest};
use crate::exposure::{self, Blocked, InFlight, PositionKey};
use crate::store::{self, Attempt, ExecutionState, Fill};

/// One of the run loop's order slots, held while an order is being placed. Letting it
/// go tells the run loop the exchange has answered, so the next order may go while this
/// one's state is read back and its outcome settled: [`Slot::placed`] when the exchange
/// took the order (its symbol may go on), dropped otherwise.
pub struct Slot {
    freed: oneshot::Sender<()>,
}

impl Slot {
    /// A slot, and what completes once it is let go: `Ok` when the order was placed.
    pub fn new() -> (Self, oneshot::Receiver<()>) {
        let (freed, released) = oneshot::channel();
        (Self { freed }, released)
    }

    /// Lets the slot go: the exchange took the order.
    pub fn placed(self) {
        let _ = self.freed.send(());
    }
}

/// A message as it came off the queue.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The exact body bytes.
    pub body: Vec<u8>,
    /// Header `x-hoox-signature`.
    pub signature: Option<String>,
    /// Whether the broker delivered it before.
    pub redelivered: bool,
}

/// A message to publish in place of the delivery, before acking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The request id, when known.
    pub request_id: Option<Uuid>,
    /// The body.
    pub body: Vec<u8>,
    /// Its signature, when it has one.
    pub signature: Option<String>,
    /// Attempts made, the first one included.
    pub attempts: u32,
}

/// What the run loop does with a delivery once the batch is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done: acknowledge.
    Ack,
    /// Publish to the delay tier for `delay`, then acknowledge.
    Retry {
        /// How long the broker holds it.
        delay: Duration,
        /// The message with its history.
        message: Outgoing,
    },
    /// Publish to the dead-letter queue with the reason, then acknowledge.
    DeadLetter {
        /// Why.
        reason: DeadReason,
        /// The last error, for people.
        error: String,
        /// The message.
        message: Outgoing,
    },
}

/// One delivery, processed.
#[derive(Debug, Clone)]
pub struct Processed {
    /// The fill to record, when an order was placed or found.
    pub fill: Option<Fill>,
    /// Its audit rows.
    pub logs: Vec<LogEntry>,
    /// What to do with the delivery.
    pub disposition: Disposition,
    /// How the attempt ended, for `executions`; `None` when nothing was attempted.
    pub outcome: Option<(Uuid, ExecutionState)>,
}

/// The batch was interrupted by shutdown before anything was decided: ack nothing.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by shutdown")]
pub struct Interrupted;

/// Settings of the worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Verifies message signatures and signs republished messages.
    pub internal_key: SecretString,
    /// Older signals are dead-lettered, never executed.
    pub signal_max_age: Duration,
    /// The retry schedule.
    pub retry: RetryPolicy,
}

/// Executes batches.
#[derive(Clone)]
pub struct Worker {
    pool: PgPool,
    config: RuntimeConfig,
    router: Arc<ExchangeRouter>,
    settings: Arc<WorkerSettings>,
    notifier: Option<Notifier>,
    in_flight: InFlight,
}

fn log(request_id: Option<Uuid>, event: Event) -> LogEntry {
    LogEntry::now(LogWorker::Consumer, request_id, event)
}

/// The deliveries claimed together, as the trail names them.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// Its id.
    pub id: Uuid,
    /// How many deliveries it took.
    pub size: usize,
}

impl Worker {
    /// A worker over `router`, recording in `pool`.
    pub fn new(
        pool: PgPool,
        config: RuntimeConfig,
        router: Arc<ExchangeRouter>,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            pool,
            config,
            router,
            settings: Arc::new(settings),
            notifier: None,
            in_flight: InFlight::default(),
        }
    }

    /// The same worker, telling `notifier` (when there is one) about each committed
    /// fill and dead letter.
    #[must_use]
    pub fn with_notifier(self, notifier: Option<Notifier>) -> Self {
        Self { notifier, ..self }
    }

    /// The message a delivery carries, or the dead letter of one that cannot be read
    /// or verified.
    pub fn decode(&self, incoming: &Incoming) -> Result<QueueMessage, Box<Processed>> {
        QueueMessage::decode(
            &incoming.body,
            incoming.signature.as_deref(),
            &self.settings.internal_key,
        )
        .map_err(|err| Box::new(undecodable(incoming, &err)))
    }

    /// The claim's view of `message` on the main queue `queue`.
    pub fn attempt(&self, message: &QueueMessage, queue: &str) -> Attempt {
        Attempt {
            request_id: message.request_id,
            replays: message.replays,
            attempt: message.attempt(),
            queue: queue.to_owned(),
            symbol: message.signal.symbol.as_str().to_owned(),
            age_origin: message.age_origin(),
        }
    }

    /// The oldest a signal may be and still be executed.
    pub fn signal_max_age(&self) -> Duration {
        self.settings.signal_max_age
    }

    /// The retry schedule.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.settings.retry
    }

    /// The database this worker records in.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Executes one claimed delivery: `resumed` when its attempt was started before.
    /// `slot` is let go once the exchange has answered the order (or it failed).
    /// A panic in the execution (a bug, an exchange answer nobody foresaw) dead-letters
    /// this signal alone, not its batch or the consumer.
    pub async fn run(
        &self,
        message: &QueueMessage,
        incoming: &Incoming,
        resumed: bool,
        batch: Batch,
        slot: Slot,
    ) -> Processed {
        let span = tracing::info_span!(
            "order",
            request_id = %message.request_id,
            symbol = %message.signal.symbol,
            exchange = tracing::field::Empty,
        );
        AssertUnwindSafe(self.execute(message, incoming, resumed, batch, slot))
            .catch_unwind()
            .instrument(span)
            .await
            .unwrap_or_else(|panic| self.panicked(message, panic.as_ref()))
    }

    /// Commits a batch's fills (and the positions they move), audit rows and outcomes in
    /// one transaction, retrying while the database is down.
    ///
    /// The run loop publishes retries and dead letters before this commit: an outcome
    /// recorded as `retrying` or `dead` is then always in the broker, and a crash in
    /// between leaves the attempt `running`, which a redelivery resumes.
    pub async fn commit(
        &self,
        processed: &[&Processed],
        token: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let fills: Vec<Fill> = processed.iter().filter_map(|p| p.fill.clone()).collect();
        let logs: Vec<LogEntry> = processed
            .iter()
            .flat_map(|p| p.logs.iter().cloned())
            .collect();
        let outcomes: Vec<(Uuid, ExecutionState)> =
            processed.iter().filter_map(|p| p.outcome).collect();
        self.wait_for_db(token, || {
            store::commit_batch(&self.pool, &fills, &logs, &outcomes)
        })
        .await?;
        // Their fills are in the ledger now.
        self.in_flight.settle(outcomes.iter().map(|(id, _)| *id));
        // Counted and told once committed, from the same events as the trail; the
        // notifier only queues, so a slow Telegram never holds the batch.
        for entry in &logs {
            hoox_common::metrics::record(&entry.event);
            if let Some(notifier) = &self.notifier {
                notifier.notify(&entry.event, entry.request_id);
            }
        }
        if !fills.is_empty() {
            self.guard_daily_loss().await;
        }
        Ok(())
    }

    /// Turns the kill switch on when the day's realized loss went beyond its limit. A
    /// database error leaves it to the next batch with fills: the fills stand either way.
    async fn guard_daily_loss(&self) {
        match exposure::guard_daily_loss(&self.pool, &self.config).await {
            Ok(Some(entries)) => {
                tracing::error!("daily loss limit reached: kill switch turned on");
                for entry in &entries {
                    hoox_common::metrics::record(&entry.event);
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "cannot check the daily loss limit"),
        }
    }

    /// Runs a database call until it succeeds: with the database down, the batch waits
    /// (unacknowledged, its outcome held in memory) rather than guessing.
    async fn wait_for_db<T, F, Fut>(
        &self,
        token: &CancellationToken,
        mut call: F,
    ) -> Result<T, Interrupted>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let mut reconnect = Reconnect::new();
        loop {
            let err = match call().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let delay = reconnect.next_delay();
            tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "database unavailable; batch waits");
            if !sleep_unless_cancelled(delay, token).await {
                return Err(Interrupted);
            }
        }
    }

    async fn execute(
        &self,
        message: &QueueMessage,
        incoming: &Incoming,
        resumed: bool,
        batch: Batch,
        slot: Slot,
    ) -> Processed {
        let id = Some(message.request_id);
        let signal = &message.signal;
        let attempt = message.attempt();
        let mut logs = vec![log(
            id,
            Event::Dequeued {
                attempt,
                redelivered: incoming.redelivered,
                resumed,
                batch: batch.id,
                batch_size: batch.size,
            },
        )];

        // An attempt that may have placed the order before looks it up first (below):
        // whatever changed since (its age, the kill switch, a limit) must not disown an
        // order the exchange already took.
        let tried_before = attempt > 1 || resumed;
        if !tried_before {
            if let Some((reason, error)) = self.halted(message) {
                return self.dead_letter(message, reason, error, None, logs);
            }
        }

        let (exchange, source) = match self.router.route(signal) {
            Ok(route) => route,
            Err(err) => return self.failed(message, None, err, logs),
        };
        tracing::Span::current().record("exchange", exchange.as_str());
        let provider = match self.router.provider(exchange, signal.test) {
            Ok(provider) => provider,
            Err(err) => return self.failed(message, Some(exchange), err, logs),
        };
        logs.push(log(
            id,
            Event::Routed {
                exchange,
                testnet: signal.test,
                by_config: source == RouteSource::Config,
            },
        ));

        let order = OrderRequest::from_message(message);
        let found = if tried_before {
            match provider.order_by_client_id(&order).await {
                Ok(found) => found,
                // Placing without knowing could trade twice: wait for the lookup.
                Err(err) => {
                    let err = ExchangeError {
                        class: ErrorClass::Retryable,
                        ..err
                    };
                    return self.failed(message, Some(exchange), err, logs);
                }
            }
        } else {
            None
        };
        let placed = match found {
            Some(ack) => Ok((ack, true)),
            None => {
                if tried_before {
                    if let Some((reason, error)) = self.halted(message) {
                        return self.dead_letter(message, reason, error, None, logs);
                    }
                }
                match self.check_limits(signal, provider.as_ref(), &order).await {
                    Ok(()) => {}
                    Err(refused @ Blocked::Refused(_)) => {
                        let error = refused.to_string();
                        return self.dead_letter(message, DeadReason::Fatal, error, None, logs);
                    }
                    Err(Blocked::Unknown(err)) => {
                        return self.failed(message, Some(exchange), err, logs)
                    }
                }
                if let Some(leverage) = signal.leverage {
                    match self
                        .router
                        .ensure_leverage(provider.as_ref(), &order, leverage)
                        .await
                    {
                        Ok(true) => logs.push(log(
                            id,
                            Event::LeverageSet {
                                exchange,
                                leverage: leverage.get(),
                            },
                        )),
                        Ok(false) => {}
                        Err(err) => return self.failed(message, Some(exchange), err, logs),
                    }
                }
                self.in_flight.add(
                    message.request_id,
                    PositionKey::of(provider.as_ref(), &order),
                    exposure::change(&order),
                );
                self.place(provider.as_ref(), &order, tried_before, &mut logs)
                    .await
            }
        };
        if placed.is_ok() {
            slot.placed();
        } else {
            drop(slot);
        }
        match placed {
            Ok((ack, recovered)) => {
                // A lookup already read the order's state; a new order's may lag.
                let ack = if recovered {
                    ack
                } else {
                    provider.read_back(&order, ack).await
                };
                let (exchange_order_id, client_order_id, status, fill_price) = (
                    ack.exchange_order_id.clone(),
                    order.client_order_id.as_str().to_owned(),
                    ack.status.clone(),
                    ack.fill_price,
                );
                logs.push(log(
                    id,
                    if recovered {
                        Event::OrderFound {
                            exchange,
                            exchange_order_id,
                            client_order_id,
                            status,
                            fill_price,
                        }
                    } else {
                        Event::OrderPlaced {
                            exchange,
                            exchange_order_id,
                            client_order_id,
                            status,
                            fill_price,
                        }
                    },
                ));
                let to_order = ack.placed_at.signed_duration_since(message.received_at);
                logs.push(log(
                    id,
                    Event::Filled {
                        exchange,
                        side: order.side,
                        fill_quantity: ack.fill_quantity,
                        fill_price: ack.fill_price,
                        signal_to_order_seconds: to_order.as_seconds_f64().max(0.0),
                    },
                ));
                Processed {
                    fill: Some(fill_row(message, &order, provider.as_ref(), ack)),
                    logs,
                    disposition: Disposition::Ack,
                    outcome: Some((message.request_id, ExecutionState::Filled)),
                }
            }
            Err(err) => self.failed(message, Some(exchange), err, logs),
        }
    }

    /// Why `message` may not be executed at all now: it is too old, or the kill switch
    /// is on.
    fn halted(&self, message: &QueueMessage) -> Option<(DeadReason, String)> {
        let age = Utc::now().signed_duration_since(message.age_origin());
        let max_age = self.settings.signal_max_age;
        if age.to_std().is_ok_and(|age| age > max_age) {
            let error = format!(
                "signal is {}s old, older than the {}s limit; not executed",
                age.num_seconds(),
                max_age.as_secs()
            );
            return Some((DeadReason::Expired, error));
        }
        self.config.kill_switch().then(|| {
            (
                DeadReason::KillSwitch,
                "kill switch is on; not executed".to_owned(),
            )
        })
    }

    /// The risk limits `order` must pass before it is sent, checked again here because
    /// a limit may have been set since ingest took the signal, and those that need the
    /// ledger or the exchange's price. An order that only reduces passes them all.
    async fn check_limits(
        &self,
        signal: &Signal,
        provider: &dyn Exchange,
        order: &OrderRequest,
    ) -> Result<(), Blocked> {
        if hoox_common::risk::reduces(signal) {
            return Ok(());
        }
        hoox_common::risk::check_signal(&self.config, signal)?;
        exposure::check(&self.pool, &self.config, &self.in_flight, provider, order).await
    }

    /// Places `order`, which a lookup did not find if it was `tried_before`. Returns
    /// the exchange's account of the order and whether it was found rather than placed
    /// (an ambiguous or duplicate answer is looked up).
    async fn place(
        &self,
        provider: &dyn Exchange,
        order: &OrderRequest,
        tried_before: bool,
        logs: &mut Vec<LogEntry>,
    ) -> Result<(OrderAck, bool), ExchangeError> {
        let id = Some(order.request_id);
        let err = match provider.place_order(order).await {
            Ok(ack) => return Ok((ack, false)),
            Err(err) => err,
        };
        // An exchange that does not say "duplicate" plainly refuses a second order as
        // something fatal-looking, so after an earlier attempt the order is looked up
        // before such a refusal is believed.
        let look_up = matches!(err.class, ErrorClass::Duplicate | ErrorClass::Ambiguous)
            || (tried_before && err.class == ErrorClass::Fatal);
        if !look_up {
            return Err(err);
        }
        logs.push(log(
            id,
            Event::OrderLookup {
                exchange: provider.name(),
                class: err.class.as_str().to_owned(),
                code: err.code.map(|code| code.to_string()),
                error: err.message.clone(),
            },
        ));
        match provider.order_by_client_id(order).await {
            Ok(Some(ack)) => Ok((ack, true)),
            Ok(None) if err.class == ErrorClass::Fatal => Err(err),
            Ok(None) => Err(ExchangeError {
                class: ErrorClass::Retryable,
                code: err.code,
                message: format!("{}; no order with this client id was found", err.message),
            }),
            Err(lookup) => Err(ExchangeError {
                class: ErrorClass::Retryable,
                ..lookup
            }),
        }
    }

    /// A failed attempt: retried after its delay while attempts remain, else dead.
    fn failed(
        &self,
        message: &QueueMessage,
        exchange: Option<ExchangeName>,
        err: ExchangeError,
        mut logs: Vec<LogEntry>,
    ) -> Processed {
        let id = Some(message.request_id);
        let attempt = message.attempt();
        let record = AttemptRecord {
            at: Utc::now(),
            exchange: exchange.map_or("none", ExchangeName::as_str).to_owned(),
            code: err.code.map(|code| code.to_string()),
            message: format!("{}: {}", err.class.as_str(), err.message),
        };
        logs.push(log(
            id,
            Event::AttemptFailed {
                exchange,
                attempt,
                class: err.class.as_str().to_owned(),
                code: err.code.map(|code| code.to_string()),
                error: err.message.clone(),
            },
        ));
        if err.class == ErrorClass::Fatal {
            return self.dead_letter(
                message,
                DeadReason::Fatal,
                err.to_string(),
                Some(record),
                logs,
            );
        }
        match self.settings.retry.delay_after(attempt) {
            Some(delay) => {
                logs.push(log(
                    id,
                    Event::RetryScheduled {
                        exchange,
                        next_attempt: attempt.saturating_add(1),
                        delay_ms: millis(delay),
                    },
                ));
                let next = message.after_attempt(record);
                Processed {
                    fill: None,
                    logs,
                    disposition: Disposition::Retry {
                        delay,
                        message: self.outgoing(&next),
                    },
                    outcome: Some((message.request_id, ExecutionState::Retrying)),
                }
            }
            None => {
                let error = format!("gave up after {attempt} attempts; last error: {err}");
                self.dead_letter(message, DeadReason::Exhausted, error, Some(record), logs)
            }
        }
    }

    fn dead_letter(
        &self,
        message: &QueueMessage,
        reason: DeadReason,
        error: String,
        record: Option<AttemptRecord>,
        mut logs: Vec<LogEntry>,
    ) -> Processed {
        let dead = match record {
            Some(record) => message.after_attempt(record),
            None => message.clone(),
        };
        let outgoing = self.outgoing(&dead);
        logs.push(log(
            Some(message.request_id),
            Event::DeadLettered {
                reason,
                error: error.clone(),
                attempts: outgoing.attempts,
            },
        ));
        Processed {
            fill: None,
            logs,
            disposition: Disposition::DeadLetter {
                reason,
                error,
                message: outgoing,
            },
            outcome: Some((message.request_id, ExecutionState::Dead)),
        }
    }

    /// A signal whose execution panicked: dead-lettered as fatal, alone.
    fn panicked(&self, message: &QueueMessage, panic: &(dyn Any + Send)) -> Processed {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        tracing::error!(request_id = %message.request_id, panic = %what, "signal execution panicked; dead-lettering it");
        let record = AttemptRecord {
            at: Utc::now(),
            exchange: message
                .signal
                .exchange
                .map_or("none", |e| e.as_str())
                .to_owned(),
            code: None,
            message: format!("internal error: {what}"),
        };
        let error = format!("internal error while executing the signal: {what}");
        self.dead_letter(message, DeadReason::Fatal, error, Some(record), Vec::new())
    }

    fn outgoing(&self, message: &QueueMessage) -> Outgoing {
        let (body, signature) = message.encode(&self.settings.internal_key);
        Outgoing {
            request_id: Some(message.request_id),
            body,
            signature: Some(signature),
            attempts: message.attempts,
        }
    }
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

fn undecodable(incoming: &Incoming, err: &DecodeError) -> Processed {
    let reason = match err {
        DecodeError::Unverified => DeadReason::Unverified,
        DecodeError::Invalid(_) => DeadReason::Invalid,
    };
    Processed {
        fill: None,
        // Not attributed to a request id: an unverified message could claim any.
        logs: vec![log(
            None,
            Event::DeadLettered {
                reason,
                error: err.to_string(),
                attempts: 0,
            },
        )],
        disposition: Disposition::DeadLetter {
            reason,
            error: err.to_string(),
            message: Outgoing {
                request_id: None,
                body: incoming.body.clone(),
                signature: incoming.signature.clone(),
                attempts: 0,
            },
        },
        outcome: None,
    }
}

/// A delivery of an attempt that already ran: acknowledged without trading, with an
/// audit row, because executing it would trade twice.
pub fn copy(message: &QueueMessage, state: Option<ExecutionState>) -> Processed {
    Processed {
        fill: None,
        logs: vec![log(
            Some(message.request_id),
            Event::CopyRefused {
                attempt: message.attempt(),
                replays: message.replays,
                state: state.map(|s| s.as_str().to_owned()),
            },
        )],
        disposition: Disposition::Ack,
        outcome: None,
    }
}

fn fill_row(
    message: &QueueMessage,
    order: &OrderRequest,
    provider: &dyn Exchange,
    ack: OrderAck,
) -> Fill {
    let signal = &message.signal;
    let exchange = provider.name();
    Fill {
        request_id: message.request_id,
        exchange: exchange.as_str().to_owned(),
        market: provider.market().to_owned(),
        paper: exchange == ExchangeName::Paper,
        testnet: order.testnet,
        symbol: order.symbol.to_string(),
        action: signal.action.to_string(),
        side: order.side.as_str().to_owned(),
        reduce_only: order.reduce_only,
        quantity: order.quantity,
        leverage: signal
            .leverage
            .map(|l| i32::try_from(l.get()).unwrap_or(i32::MAX)),
        order_type: order.order_type.as_str().to_owned(),
        requested_price: order.price,
        client_order_id: order.client_order_id.as_str().to_owned(),
        exchange_order_id: Some(ack.exchange_order_id),
        status: ack.status,
        fill_price: ack.fill_price,
        fill_quantity: ack.fill_quantity,
        fee: ack.fee,
        raw_response: ack.raw,
        received_at: message.received_at,
        executed_at: ack.placed_at,
    }
}
