//! The run loop of one broker connection: lease partitions, read each leased partition
//! queue into per-symbol lanes, keep up to `HOOX_BATCH_SIZE` orders in flight across
//! symbols, and settle outcomes in batches (publish retries and dead letters, commit one
//! transaction, then acknowledge).
//!
//! The owner of partition 0 also forwards what arrives on the main queue (the inbox:
//! retries coming back from their delay tiers, and signals from publishers that predate
//! the partitions) to the partition of its symbol, in order.
//!
//! [`fate`] is the one place that decides what happens to a claimed delivery.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures_util::{FutureExt, Stream, StreamExt};
use hoox_common::amqp::{self, Topology};
use hoox_common::message::{QueueMessage, HEADER_ATTEMPTS, HEADER_ERROR, HEADER_REASON};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Acker;
use lapin::{Channel, Connection};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::lanes::{Lanes, Waiting};
use crate::leases::{LeaseError, Leases};
use crate::store::{self, Claim, ExecutionState};
use crate::worker::{copy, Batch, Disposition, Incoming, Outgoing, Processed, Slot, Worker};
use crate::Consumer;

/// How often the leases are looked at: a new consumer gets its share, and a lost lease
/// connection is noticed, within about this long.
const REBALANCE: Duration = Duration::from_millis(500);

/// Deliveries a partition (or the inbox) may have unacknowledged, per batch slot: the
/// lookahead that lets other symbols pass a held one. When held signals fill it, that
/// partition waits until the hold ends or they expire; other partitions go on. Kept
/// small because every delivery handed back (a crash, a handover) counts towards the
/// partition's delivery limit, past which the broker dead-letters a message as poison.
const LOOKAHEAD_PER_SLOT: usize = 2;

/// Where a delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Partition(u16),
    Inbox,
}

/// The deliveries of every queue this consumer subscribes to, each tagged with its queue.
type Deliveries = SelectAll<BoxStream<'static, (Source, anyhow::Result<Delivery>)>>;

/// Order slots being held, at most `HOOX_BATCH_SIZE`: each completes when its order
/// has been answered.
type Slots = FuturesUnordered<BoxFuture<'static, Freed>>;

/// An order slot let go.
struct Freed {
    partition: u16,
    symbol: String,
    request_id: Uuid,
    age_origin: DateTime<Utc>,
    /// The exchange took the order: its outcome is a fill, whatever the read-back says.
    placed: bool,
}

/// A delivery of a partition, read and verified.
struct Taken {
    acker: Acker,
    incoming: Incoming,
    message: QueueMessage,
}

/// An outcome waiting to be settled.
struct Done {
    partition: u16,
    /// Its request id, when its claim is held until the commit.
    claimed: Option<Uuid>,
    acker: Acker,
    processed: Processed,
}

/// An outcome committed and acknowledged.
struct Settled {
    partition: u16,
    request_id: Option<Uuid>,
}

/// What a claimed delivery comes to next.
enum Fate {
    /// Execute it; `resumed` when its attempt was started before.
    Execute { resumed: bool },
    /// Settle it without executing.
    Settle(Box<Processed>),
    /// Its request id is held elsewhere: back to its lane's head, to wait.
    Wait,
}

/// The one place that decides what a claimed delivery comes to: executed, settled as a
/// copy (its attempt already ran: executing it would trade twice), or kept waiting in
/// its place (another consumer holds its request id: acknowledging it would lose the
/// signal if that consumer died).
fn fate(message: &QueueMessage, claim: Claim) -> Fate {
    match claim {
        Claim::Run { resumed } => Fate::Execute { resumed },
        Claim::Copy { state } => Fate::Settle(Box::new(copy(message, Some(state)))),
        Claim::Busy => Fate::Wait,
    }
}

/// A claimed delivery that may execute once a slot is free.
struct Ready {
    partition: u16,
    symbol: String,
    waiting: Waiting<Taken>,
    resumed: bool,
    batch: Batch,
}

/// Work finishing in the background.
enum Work {
    Claimed {
        batch: Batch,
        picked: Vec<(u16, String, Waiting<Taken>)>,
        claims: Result<Vec<Claim>, sqlx::Error>,
    },
    Executed {
        partition: u16,
        symbol: String,
        waiting: Box<Waiting<Taken>>,
        processed: Box<Processed>,
    },
    /// The leases were looked at: hand `release` over; `acquired` were just leased.
    Rebalanced(Result<(Vec<u16>, Vec<u16>), LeaseError>),
    /// The lease on a handed-over partition was let go.
    Released(Result<u16, LeaseError>),
}

/// Why settling stopped.
#[derive(Debug, thiserror::Error)]
enum SettleError {
    /// Shutdown came while the database was down: nothing was acknowledged.
    #[error("interrupted by shutdown")]
    Interrupted,
    /// The broker or the lease connection failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

struct Partition {
    channel: Channel,
    stop: CancellationToken,
    lanes: Lanes<Taken>,
    /// Deliveries taken from the lanes (or unreadable) and not yet settled.
    outstanding: usize,
    releasing: bool,
}

struct Inbox {
    channel: Channel,
    stop: CancellationToken,
}

/// Everything settling needs, cheap to clone into its future.
#[derive(Clone)]
struct Settler {
    worker: Worker,
    topology: Topology,
    publisher: Channel,
    leases: Arc<Mutex<Leases>>,
    token: CancellationToken,
}

struct Session<'a> {
    consumer: &'a Consumer,
    connection: &'a Connection,
    leases: Arc<Mutex<Leases>>,
    partitions: BTreeMap<u16, Partition>,
    inbox: Option<Inbox>,
    inbox_waiting: Vec<Delivery>,
    unsettled: Vec<Done>,
    /// Deliveries being claimed.
    claiming: usize,
    /// Claimed deliveries waiting for a free slot, in the order they were taken.
    ready: VecDeque<Ready>,
    /// Request ids executing, from their slot until their outcome, and whether their
    /// lane already went on (their order was placed and only its state is being read
    /// back, after its slot was let go).
    executing: HashMap<Uuid, bool>,
    draining: bool,
    /// The partition served last: the next dispatch starts after it.
    last_served: u16,
    /// A look at the leases is under way.
    rebalancing: bool,
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Delivery(Source, Box<anyhow::Result<Delivery>>),
    Work(Work),
    SlotFreed(Freed),
    Settled(Result<Vec<Settled>, SettleError>),
    Forwarded(anyhow::Result<()>),
    Rebalance,
    Timer,
    Failed(lapin::Error),
}

/// One connection's worth of consuming; returns `Ok` on shutdown, once everything in
/// flight is settled. Sets `reached` once consuming has begun.
pub(crate) async fn consume(
    consumer: &Consumer,
    token: &CancellationToken,
    reached: &mut bool,
) -> anyhow::Result<()> {
    let connection = amqp::connect(&consumer.amqp_url, "hoox-consumer")
        .await
        .context("connect")?;
    let result = consume_on(consumer, &connection, token, reached).await;
    consumer.connected.store(false, Ordering::SeqCst);
    // Closing hands back every delivery not acknowledged, in order.
    let _ = connection.close(200, "shutdown".into()).await;
    result
}

async fn consume_on(
    consumer: &Consumer,
    connection: &Connection,
    token: &CancellationToken,
    reached: &mut bool,
) -> anyhow::Result<()> {
    let topology = &consumer.topology;
    let channel = connection.create_channel().await.context("open channel")?;
    topology
        .declare(&channel)
        .await
        .context("declare topology")?;
    let _ = channel.close(200, "declared".into()).await;
    let publisher = connection
        .create_channel()
        .await
        .context("open publish channel")?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("confirm mode")?;
    let leases = Leases::open(
        &consumer.worker.pool().connect_options(),
        topology.queue(),
        topology.partitions(),
    )
    .await
    .context("open the lease connection")?;
    let leases = Arc::new(Mutex::new(leases));
    consumer.connected.store(true, Ordering::SeqCst);
    *reached = true;
    tracing::info!(
        queue = topology.queue(),
        partitions = topology.partitions(),
        "consuming"
    );

    let settler = Settler {
        worker: consumer.worker.clone(),
        topology: topology.clone(),
        publisher: publisher.clone(),
        leases: Arc::clone(&leases),
        token: token.clone(),
    };
    let mut session = Session {
        consumer,
        connection,
        leases: Arc::clone(&leases),
        partitions: BTreeMap::new(),
        inbox: None,
        inbox_waiting: Vec::new(),
        unsettled: Vec::new(),
        claiming: 0,
        ready: VecDeque::new(),
        executing: HashMap::new(),
        draining: false,
        last_served: 0,
        rebalancing: false,
    };
    let mut deliveries: Deliveries = SelectAll::new();
    let mut work: FuturesUnordered<BoxFuture<'static, Work>> = FuturesUnordered::new();
    let mut slots: Slots = FuturesUnordered::new();
    let mut settling: Option<BoxFuture<'static, Result<Vec<Settled>, SettleError>>> = None;
    let mut forwarding: Option<BoxFuture<'static, anyhow::Result<()>>> = None;
    let mut events = connection.events_listener();
    let mut rebalance = tokio::time::interval(REBALANCE);
    rebalance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let result = loop {
        session.dispatch(&mut work, &mut slots);
        if settling.is_none() && !session.unsettled.is_empty() {
            let take = session.unsettled.len().min(consumer.bounds.size.max(1));
            let batch: Vec<Done> = session.unsettled.drain(..take).collect();
            let span = tracing::info_span!("batch", size = batch.len());
            settling = Some(settler.clone().settle(batch).instrument(span).boxed());
        }
        if forwarding.is_none() && !session.inbox_waiting.is_empty() {
            let waiting = std::mem::take(&mut session.inbox_waiting);
            forwarding = Some(forward(publisher.clone(), topology.clone(), waiting).boxed());
        }
        session
            .finish_releases(forwarding.is_none(), &mut work)
            .await;
        if session.draining
            && session.claiming == 0
            && session.ready.is_empty()
            && session.executing.is_empty()
            && session.unsettled.is_empty()
            && settling.is_none()
            && forwarding.is_none()
            && !session.rebalancing
        {
            break Ok(());
        }
        let wake_at = session
            .partitions
            .values()
            .filter_map(|p| p.lanes.wake_at())
            .min();
        let wake = tokio::select! {
            () = token.cancelled(), if !session.draining => Wake::Shutdown,
            Some((source, delivery)) = deliveries.next(), if !deliveries.is_empty() => {
                Wake::Delivery(source, Box::new(delivery))
            }
            Some(done) = work.next(), if !work.is_empty() => Wake::Work(done),
            Some(freed) = slots.next(), if !slots.is_empty() => Wake::SlotFreed(freed),
            settled = async { settling.as_mut().expect("guarded").await }, if settling.is_some() => {
                settling = None;
                Wake::Settled(settled)
            }
            forwarded = async { forwarding.as_mut().expect("guarded").await }, if forwarding.is_some() => {
                forwarding = None;
                Wake::Forwarded(forwarded)
            }
            _ = rebalance.tick() => Wake::Rebalance,
            () = sleep_until(wake_at), if wake_at.is_some() => Wake::Timer,
            err = connection_failed(&mut events) => Wake::Failed(err),
        };
        let handled = match wake {
            Wake::Shutdown => {
                session.draining = true;
                Ok(())
            }
            Wake::Delivery(source, delivery) => match *delivery {
                Ok(delivery) => {
                    session.take(source, delivery);
                    Ok(())
                }
                Err(err) => Err(err.context("delivery stream failed")),
            },
            Wake::Work(done) => session.worked(done, &mut deliveries).await,
            Wake::SlotFreed(freed) => {
                session.slot_freed(freed);
                Ok(())
            }
            Wake::Settled(Ok(settled)) => {
                session.settled(settled);
                Ok(())
            }
            // Shutdown with the database down: nothing more can be committed.
            Wake::Settled(Err(SettleError::Interrupted)) => break Ok(()),
            Wake::Settled(Err(SettleError::Failed(err))) => Err(err.context("settle")),
            Wake::Forwarded(forwarded) => forwarded.context("forward from the inbox"),
            Wake::Rebalance => {
                session.rebalance(&mut work);
                Ok(())
            }
            Wake::Timer => Ok(()),
            // An ack or a confirm on a connection that just died can wait forever: what
            // is in flight is abandoned instead, unacknowledged, and the broker
            // redelivers it (its claim makes that safe at any point).
            Wake::Failed(err) => Err(anyhow::Error::new(err).context("connection failed")),
        };
        if let Err(err) = handled {
            break Err(err);
        }
    };
    // Everything that shares the lease connection goes first; closing it then lets go
    // of every lease and claim at once.
    drop((work, slots, settling, forwarding, session, settler));
    if let Ok(leases) = Arc::try_unwrap(leases).map(Mutex::into_inner) {
        leases.close().await;
    }
    result
}

impl Session<'_> {
    /// Files a delivery: a partition's into its symbol's lane (or straight to
    /// settlement when it cannot be read), the inbox's for forwarding.
    fn take(&mut self, source: Source, delivery: Delivery) {
        let partition = match source {
            Source::Inbox => {
                self.inbox_waiting.push(delivery);
                return;
            }
            Source::Partition(p) => p,
        };
        let Some(state) = self.partitions.get_mut(&partition) else {
            // A partition being closed: its channel hands the delivery back.
            return;
        };
        let incoming = Incoming {
            body: delivery.data,
            signature: amqp::header_text(
                delivery.properties.headers().as_ref(),
                hoox_common::message::HEADER_SIGNATURE,
            ),
            redelivered: delivery.redelivered,
        };
        match self.consumer.worker.decode(&incoming) {
            Ok(message) => {
                let symbol = message.signal.symbol.as_str().to_owned();
                let (id, origin) = (message.request_id, message.age_origin());
                let taken = Taken {
                    acker: delivery.acker,
                    incoming,
                    message,
                };
                state.lanes.push(&symbol, id, origin, taken);
            }
            Err(processed) => {
                state.outstanding += 1;
                self.unsettled.push(Done {
                    partition,
                    claimed: None,
                    acker: delivery.acker,
                    processed: *processed,
                });
            }
        }
    }

    /// Takes what may run from the lanes, one partition after another, and claims it in
    /// one go. Claims run ahead of the slots by up to one batch, so that a slot that
    /// frees finds a claimed delivery ready: the claim's round trips never sit between
    /// two orders.
    fn dispatch(
        &mut self,
        work: &mut FuturesUnordered<BoxFuture<'static, Work>>,
        slots: &mut Slots,
    ) {
        self.start_ready(work, slots);
        // One claim at a time: what frees while it runs makes up the next one, so under
        // load each claim's statements serve many deliveries.
        if self.draining || self.claiming > 0 {
            return;
        }
        let size = self.consumer.bounds.size.max(1);
        let free = (2 * size).saturating_sub(self.claiming + self.ready.len() + slots.len());
        let (now, wall) = (Instant::now(), Utc::now());
        // Round robin over the partitions, starting after the last one served: a
        // partition served first every time would drain early and leave the others'
        // few symbols to run alone.
        let open: Vec<u16> = self
            .partitions
            .iter()
            .filter(|(_, s)| !s.releasing)
            .map(|(p, _)| *p)
            .collect();
        let order = serving_order(&open, self.last_served);
        let mut picked = Vec::new();
        while picked.len() < free {
            let before = picked.len();
            for &p in &order {
                if picked.len() == free {
                    break;
                }
                let Some(state) = self.partitions.get_mut(&p) else {
                    continue;
                };
                if let Some((symbol, waiting)) = state.lanes.next(now, wall) {
                    state.outstanding += 1;
                    self.last_served = p;
                    picked.push((p, symbol, waiting));
                }
            }
            if picked.len() == before {
                break;
            }
        }
        if picked.is_empty() {
            return;
        }
        self.claiming += picked.len();
        let batch = Batch {
            id: Uuid::new_v4(),
            size: picked.len(),
        };
        let queue = self.consumer.topology.queue();
        let attempts: Vec<store::Attempt> = picked
            .iter()
            .map(|(_, _, w)| self.consumer.worker.attempt(&w.delivery.message, queue))
            .collect();
        let leases = Arc::clone(&self.leases);
        work.push(
            async move {
                let claims = {
                    let mut leases = leases.lock().await;
                    store::claim(leases.connection(), &attempts).await
                };
                Work::Claimed {
                    batch,
                    picked,
                    claims,
                }
            }
            .boxed(),
        );
    }

    /// Handles background work that finished.
    async fn worked(&mut self, done: Work, deliveries: &mut Deliveries) -> anyhow::Result<()> {
        match done {
            Work::Rebalanced(looked) => {
                self.rebalancing = false;
                let (release, acquired) = looked.context("look at the leases")?;
                for partition in &release {
                    if let Some(state) = self.partitions.get_mut(partition) {
                        tracing::info!(partition, "handing a partition over");
                        state.releasing = true;
                    }
                }
                // Leased while shutting down: closing the lease connection lets go.
                if !self.draining {
                    for partition in acquired {
                        self.open(partition, deliveries).await?;
                    }
                }
            }
            Work::Released(released) => {
                let partition = released.context("release a partition")?;
                tracing::info!(partition, "handed a partition over");
            }
            Work::Claimed {
                batch,
                picked,
                claims,
            } => {
                // The claims live on the lease connection: without it, stop at once.
                let claims = claims.context("claim on the lease connection")?;
                self.claiming -= picked.len();
                for ((partition, symbol, waiting), claim) in picked.into_iter().zip(claims) {
                    match fate(&waiting.delivery.message, claim) {
                        Fate::Execute { resumed } => self.ready.push_back(Ready {
                            partition,
                            symbol,
                            waiting,
                            resumed,
                            batch,
                        }),
                        Fate::Settle(processed) => {
                            self.ended(partition, symbol, waiting, *processed);
                        }
                        Fate::Wait => {
                            if let Some(state) = self.partitions.get_mut(&partition) {
                                state.outstanding -= 1;
                                state.lanes.finish(&symbol, Some(waiting), Instant::now());
                            }
                        }
                    }
                }
            }
            Work::Executed {
                partition,
                symbol,
                waiting,
                processed,
            } => {
                self.ended(partition, symbol, *waiting, *processed);
            }
        }
        Ok(())
    }

    /// Executes claimed deliveries while slots are free: at most `HOOX_BATCH_SIZE`
    /// orders being placed at once. Claimed ones still run during shutdown: their claims
    /// are taken.
    fn start_ready(
        &mut self,
        work: &mut FuturesUnordered<BoxFuture<'static, Work>>,
        slots: &mut Slots,
    ) {
        let size = self.consumer.bounds.size.max(1);
        while slots.len() < size {
            let Some(ready) = self.ready.pop_front() else {
                return;
            };
            let (slot, freed) = Slot::new();
            let (request_id, age_origin) = (ready.waiting.request_id, ready.waiting.age_origin);
            let (partition, symbol) = (ready.partition, ready.symbol.clone());
            slots.push(
                freed
                    .map(move |placed| Freed {
                        partition,
                        symbol,
                        request_id,
                        age_origin,
                        placed: placed.is_ok(),
                    })
                    .boxed(),
            );
            self.executing.insert(request_id, false);
            let worker = self.consumer.worker.clone();
            let Ready {
                partition,
                symbol,
                waiting,
                resumed,
                batch,
            } = ready;
            work.push(
                async move {
                    let taken = &waiting.delivery;
                    let processed = worker
                        .run(&taken.message, &taken.incoming, resumed, batch, slot)
                        .await;
                    Work::Executed {
                        partition,
                        symbol,
                        waiting: Box::new(waiting),
                        processed: Box::new(processed),
                    }
                }
                .boxed(),
            );
        }
    }

    /// A delivery's outcome is known: its lane goes on (a retry holds it), unless it
    /// already did when its order was placed, and the outcome waits to be settled.
    fn ended(
        &mut self,
        partition: u16,
        symbol: String,
        waiting: Waiting<Taken>,
        processed: Processed,
    ) {
        let released = self.executing.remove(&waiting.request_id).unwrap_or(false);
        if !released {
            let outcome = processed.outcome.map(|(_, state)| state);
            self.lane_ended(
                partition,
                &symbol,
                waiting.request_id,
                waiting.age_origin,
                outcome,
            );
        }
        self.unsettled.push(done_of(partition, waiting, processed));
    }

    /// Lets `symbol`'s lane go on after `request_id`'s outcome (a retry holds it).
    fn lane_ended(
        &mut self,
        partition: u16,
        symbol: &str,
        request_id: Uuid,
        age_origin: DateTime<Utc>,
        outcome: Option<ExecutionState>,
    ) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.lanes.ended(symbol, request_id, age_origin, outcome);
            state.lanes.finish(symbol, None, Instant::now());
        }
    }

    /// An order slot is free. When the exchange took its order, the outcome is a fill
    /// whatever the read-back still under way says, so the symbol's next signal may
    /// go now instead of one exchange round trip later.
    fn slot_freed(&mut self, freed: Freed) {
        if !freed.placed {
            return;
        }
        // Only while the delivery is still executing: if its outcome came first, its
        // lane already went on.
        let Some(released) = self.executing.get_mut(&freed.request_id) else {
            return;
        };
        *released = true;
        self.lane_ended(
            freed.partition,
            &freed.symbol,
            freed.request_id,
            freed.age_origin,
            Some(ExecutionState::Filled),
        );
    }

    /// Counts settled outcomes off their partitions.
    fn settled(&mut self, settled: Vec<Settled>) {
        for one in settled {
            if let Some(state) = self.partitions.get_mut(&one.partition) {
                state.outstanding -= 1;
                if let Some(id) = one.request_id {
                    state.lanes.committed(id);
                }
            }
        }
    }

    /// Starts a look at the leases: which surplus partitions to hand over, and which
    /// free ones to take. It runs beside the loop, which must keep polling the claims
    /// that share the lease connection.
    fn rebalance(&mut self, work: &mut FuturesUnordered<BoxFuture<'static, Work>>) {
        if self.rebalancing || self.draining {
            return;
        }
        self.rebalancing = true;
        let releasing: BTreeSet<u16> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.releasing)
            .map(|(p, _)| *p)
            .collect();
        let leases = Arc::clone(&self.leases);
        work.push(
            async move {
                let mut leases = leases.lock().await;
                let looked = async {
                    let plan = leases.plan(&releasing).await?;
                    let acquired = if plan.acquire.is_empty() {
                        Vec::new()
                    } else {
                        leases.acquire(&plan.acquire).await?
                    };
                    Ok((plan.release, acquired))
                }
                .await;
                Work::Rebalanced(looked)
            }
            .boxed(),
        );
    }

    /// Starts consuming a newly leased partition: its holds first, then its queue.
    async fn open(&mut self, partition: u16, deliveries: &mut Deliveries) -> anyhow::Result<()> {
        let topology = &self.consumer.topology;
        let worker = &self.consumer.worker;
        let holds = store::holds(worker.pool(), topology.queue())
            .await
            .context("read the holds")?
            .into_iter()
            .filter(|h| topology.partition_of(&h.symbol) == partition)
            .collect();
        let lanes = Lanes::new(
            holds,
            worker.signal_max_age(),
            worker.retry_policy().max_delay,
        );
        let queue = topology.partition_queue(partition);
        let (channel, stop) = self
            .subscribe(&queue, Source::Partition(partition), deliveries)
            .await?;
        tracing::info!(partition, queue = %queue, "leased a partition");
        self.partitions.insert(
            partition,
            Partition {
                channel,
                stop,
                lanes,
                outstanding: 0,
                releasing: false,
            },
        );
        if partition == 0 {
            let (channel, stop) = self
                .subscribe(topology.queue(), Source::Inbox, deliveries)
                .await?;
            self.inbox = Some(Inbox { channel, stop });
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        queue: &str,
        source: Source,
        deliveries: &mut Deliveries,
    ) -> anyhow::Result<(Channel, CancellationToken)> {
        let channel = self
            .connection
            .create_channel()
            .await
            .context("open channel")?;
        let lookahead = self
            .consumer
            .bounds
            .size
            .max(1)
            .saturating_mul(LOOKAHEAD_PER_SLOT);
        channel
            .basic_qos(
                u16::try_from(lookahead).unwrap_or(u16::MAX),
                BasicQosOptions::default(),
            )
            .await
            .context("qos")?;
        let consumer = channel
            .basic_consume(
                ShortString::from(queue),
                ShortString::from(""),
                // Manual acks: a message is acknowledged only after its outcome commits.
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consume {queue}"))?;
        let stop = CancellationToken::new();
        // A consumer the broker ends (a deleted queue, a consumer_timeout) must not
        // leave the partition leased and unread: its end is an error, unless we stopped
        // reading it ourselves.
        let ended = format!("the broker ended the consumer of {queue}");
        deliveries.push(
            consumer
                .map(|delivery| delivery.map_err(anyhow::Error::from))
                .chain(futures_util::stream::once(async move {
                    Err(anyhow::anyhow!(ended))
                }))
                .map(move |delivery| (source, delivery))
                .take_until(stop.clone().cancelled_owned())
                .boxed(),
        );
        Ok((channel, stop))
    }

    /// Hands over each partition being released once nothing of it is in flight:
    /// stop reading, close its channel (the broker hands its waiting deliveries, in
    /// order, to the next consumer), then let go of the lease.
    async fn finish_releases(
        &mut self,
        inbox_idle: bool,
        work: &mut FuturesUnordered<BoxFuture<'static, Work>>,
    ) {
        let ready: Vec<u16> = self
            .partitions
            .iter()
            .filter(|(p, s)| {
                s.releasing
                    && s.outstanding == 0
                    && !s.lanes.busy()
                    && (**p != 0 || (inbox_idle && self.inbox_waiting.is_empty()))
            })
            .map(|(p, _)| *p)
            .collect();
        for partition in ready {
            if let Some(state) = self.partitions.remove(&partition) {
                state.stop.cancel();
                let _ = state.channel.close(200, "handover".into()).await;
                if !state.lanes.is_empty() {
                    tracing::info!(
                        partition,
                        waiting = state.lanes.len(),
                        "handed waiting signals back"
                    );
                }
            }
            if partition == 0 {
                if let Some(inbox) = self.inbox.take() {
                    inbox.stop.cancel();
                    let _ = inbox.channel.close(200, "handover".into()).await;
                }
            }
            let leases = Arc::clone(&self.leases);
            work.push(
                async move {
                    let released = leases.lock().await.release(partition).await;
                    Work::Released(released.map(|()| partition))
                }
                .boxed(),
            );
        }
    }
}

fn done_of(partition: u16, waiting: Waiting<Taken>, processed: Processed) -> Done {
    Done {
        partition,
        claimed: Some(waiting.request_id),
        acker: waiting.delivery.acker,
        processed,
    }
}

impl Settler {
    /// Publishes a batch's retries and dead letters, commits its outcomes in one
    /// transaction, lets go of its claims, then acknowledges it. A publish that fails
    /// leaves the batch uncommitted and unacked: the broker redelivers it and the claim
    /// resumes each attempt.
    async fn settle(self, batch: Vec<Done>) -> Result<Vec<Settled>, SettleError> {
        hoox_common::metrics::batch_taken(batch.len());
        for done in &batch {
            self.publish_disposition(&done.processed.disposition)
                .await?;
        }
        let processed: Vec<&Processed> = batch.iter().map(|d| &d.processed).collect();
        self.worker
            .commit(&processed, &self.token)
            .await
            .map_err(|_| SettleError::Interrupted)?;
        let claimed: Vec<Uuid> = batch.iter().filter_map(|d| d.claimed).collect();
        {
            let mut leases = self.leases.lock().await;
            store::unclaim(leases.connection(), &claimed)
                .await
                .context("let go of the claims")?;
        }
        for done in &batch {
            done.acker
                .ack(BasicAckOptions::default())
                .await
                .context("ack")?;
        }
        Ok(batch
            .into_iter()
            .map(|d| Settled {
                partition: d.partition,
                request_id: d.claimed,
            })
            .collect())
    }

    async fn publish_disposition(&self, disposition: &Disposition) -> anyhow::Result<()> {
        match disposition {
            Disposition::Ack => Ok(()),
            Disposition::Retry { delay, message } => {
                let queue = self.topology.retry_queue(*delay);
                publish(&self.publisher, &queue, message, &[])
                    .await
                    .context("publish retry")
            }
            Disposition::DeadLetter {
                reason,
                error,
                message,
            } => {
                let headers = [
                    (HEADER_REASON, amqp::text(reason.as_str())),
                    (HEADER_ERROR, amqp::text(error)),
                ];
                publish(&self.publisher, &self.topology.dlq(), message, &headers)
                    .await
                    .context("publish dead letter")
            }
        }
    }
}

/// Forwards inbox deliveries, in order, to the partition of their symbol (partition 0
/// when the body names none: the consumer there dead-letters it as invalid), then
/// acknowledges them. The body is only read for routing here; it is verified where it
/// is executed.
async fn forward(
    publisher: Channel,
    topology: Topology,
    deliveries: Vec<Delivery>,
) -> anyhow::Result<()> {
    let mut confirms = Vec::with_capacity(deliveries.len());
    for delivery in &deliveries {
        let symbol = serde_json::from_slice::<serde_json::Value>(&delivery.data)
            .ok()
            .and_then(|body| body["signal"]["symbol"].as_str().map(str::to_owned));
        let queue = symbol.map_or_else(|| topology.partition_queue(0), |s| topology.queue_for(&s));
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string);
        let confirm = amqp::publish(&publisher, &queue, &delivery.data, headers, id.as_deref())
            .await
            .context("forward")?;
        confirms.push((queue, confirm));
    }
    // Published in order on one channel; acknowledged only once each is confirmed.
    for (queue, confirm) in confirms {
        amqp::confirmed(confirm.await.context("forward confirm")?, &queue)?;
    }
    for delivery in &deliveries {
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .context("ack forwarded")?;
    }
    Ok(())
}

/// The partitions (`sorted`) in the order a dispatch serves them: those after `last`,
/// then from the first up to `last`.
fn serving_order(sorted: &[u16], last: u16) -> Vec<u16> {
    let split = sorted.partition_point(|&p| p <= last);
    sorted[split..]
        .iter()
        .chain(&sorted[..split])
        .copied()
        .collect()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for the connection's first error.
async fn connection_failed(
    events: &mut (impl Stream<Item = lapin::Event> + Unpin),
) -> lapin::Error {
    loop {
        match events.next().await {
            Some(lapin::Event::Error(err)) => return err,
            Some(_) => {}
            None => {
                return lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                    lapin::ConnectionState::Closed,
                ))
            }
        }
    }
}

/// Publishes `message` to `queue` with its signature and attempt count, confirmed.
async fn publish(
    channel: &Channel,
    queue: &str,
    message: &Outgoing,
    extra: &[(&str, AMQPValue)],
) -> Result<(), amqp::PublishError> {
    let id = message.request_id.map(|id| id.to_string());
    let mut headers = amqp::signed_headers(message.signature.as_deref(), id.as_deref());
    for (name, value) in extra {
        headers.insert((*name).into(), value.clone());
    }
    headers.insert(
        HEADER_ATTEMPTS.into(),
        AMQPValue::LongLongInt(i64::from(message.attempts)),
    );
    amqp::publish_confirmed(channel, queue, &message.body, headers, id.as_deref()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_serves_the_partitions_after_the_last_one_served_first() {
        let partitions = [0, 1, 2, 5];
        assert_eq!(serving_order(&partitions, 1), vec![2, 5, 0, 1]);
        assert_eq!(serving_order(&partitions, 5), vec![0, 1, 2, 5]);
        // A partition handed over since: the next one after it goes first.
        assert_eq!(serving_order(&partitions, 3), vec![5, 0, 1, 2]);
        assert!(serving_order(&[], 0).is_empty());
    }
}
