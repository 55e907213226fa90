//! `hoox bench`: what this machine can do, and how much of it hoox gets. In one run,
//! against the local RabbitMQ and PostgreSQL: the broker's and database's ceilings,
//! ingest's saturation rate and latency at half of it, signal-to-order latency through
//! a mock exchange, the consumer's order rate with 1, 2 and 4 consumers, and the peak
//! memory of ingest and consumer. Ingest and consumers run as child processes on a
//! database and queues of their own, all removed at the end, on error and on Ctrl-C.

mod ceilings;
mod dashboard;
mod exchange;
mod load;
mod processes;
mod report;
mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hoox_common::amqp::{self, Topology};
use hoox_common::config::{parse_secret, AmqpUrlParser, DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL};
use hoox_common::message::QueueMessage;
use hoox_common::retry::RetryPolicy;
use hoox_consumer::exchange::ClientOrderId;
use lapin::options::{ConfirmSelectOptions, QueueDeleteOptions, QueuePurgeOptions};
use lapin::types::ShortString;
use lapin::Channel;
use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::MigrateDatabase;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::exchange::MockExchange;
use self::load::{Schedule, Target};
use self::processes::{free_addr, Binaries, Service};
use self::report::{Figure, Machine, Report, Unit};
use self::stats::{rate, Latencies};

/// Arguments of `hoox bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A short run (under a minute), as CI's smoke test; the full run takes under ten.
    #[arg(long)]
    pub quick: bool,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Instead of the pipeline, time each dashboard page (p50, p99) on a database of its
    /// own seeded with 100,000 fills and 1,000,000 log rows.
    #[arg(long, conflicts_with = "json")]
    pub dashboard: bool,

    /// How long the mock exchange takes to answer each request, in ms.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub exchange_latency_ms: u64,

    /// Keep-alive connections of the saturation load.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub connections: u16,

    /// Most webhooks in flight at once in the fixed-rate runs; reaching it is reported.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=16_384))]
    pub max_in_flight: u32,

    /// Symbols the signals are spread over (at least 20).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u16).range(20..=1000))]
    pub symbols: u16,

    /// HOOX_BATCH_SIZE of the consumers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,

    /// PostgreSQL URL; the bench creates a database `hoox_bench_<random>` on its server and drops it at the end [default: postgres://postgres@127.0.0.1:5432/hoox]
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        value_parser = parse_secret,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub database_url: SecretString,

    /// RabbitMQ URL; the bench's queues are named `hoox-bench-<random>…` and deleted at the end [default: amqp://guest:guest@127.0.0.1:5672/%2f]
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = DEFAULT_AMQP_URL,
        value_parser = AmqpUrlParser,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub amqp_url: SecretString,
}

/// How long each part runs.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Plan {
    /// Each ceiling loop, in seconds.
    ceiling_secs: f64,
    /// Load before the saturation window, in seconds.
    warmup_secs: f64,
    /// The saturation window, in seconds.
    saturation_secs: f64,
    /// Each fixed-rate run, in seconds.
    fixed_rate_secs: f64,
    /// Signals per consumer run.
    consumer_signals: usize,
    /// Idle signal-to-order samples.
    idle_samples: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                ceiling_secs: 2.0,
                warmup_secs: 1.0,
                saturation_secs: 3.0,
                fixed_rate_secs: 3.0,
                consumer_signals: 400,
                idle_samples: 30,
            }
        } else {
            Self {
                ceiling_secs: 10.0,
                warmup_secs: 3.0,
                saturation_secs: 20.0,
                fixed_rate_secs: 20.0,
                consumer_signals: 4000,
                idle_samples: 300,
            }
        }
    }
}

/// Pipelined publishes in flight in the broker ceiling and the consumers' prefill.
const PIPELINE: usize = 256;
/// How long a webhook may wait for its answer (ingest answers 503 after 10 s).
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one signal may take to become an order before the run fails.
const ORDER_WITHIN: Duration = Duration::from_secs(30);
/// How long consumers may take to share the partitions out.
const SHARES_WITHIN: Duration = Duration::from_secs(30);

/// A random 64-hex-digit secret.
fn secret() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

fn progress(what: &str) {
    eprintln!("bench: {what}");
}

/// Runs the bench and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.dashboard {
        return dashboard::run(&args).await;
    }
    let binaries = Binaries::beside_this_executable()?;
    let token = CancellationToken::new();
    hoox_common::shutdown::cancel_on_signal(token.clone());
    let mut bench = Bench::new(args, binaries, token.child_token());
    if cfg!(debug_assertions) {
        progress("WARNING: this is a debug build; its figures say little about a release build");
    }
    let measured = tokio::select! {
        measured = bench.measure() => measured,
        () = token.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    let cleaned = bench.clean_up().await;
    let report = measured?;
    cleaned?;
    if bench.args.json {
        println!("{}", crate::terminal::json(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// One run's settings and everything it must remove at the end.
struct Bench {
    args: BenchArgs,
    plan: Plan,
    binaries: Binaries,
    /// Names this run's database and queues.
    id: String,
    api_key: String,
    internal_key: SecretString,
    retry: RetryPolicy,
    token: CancellationToken,
    http: reqwest::Client,
    /// The bench database, once named.
    database_url: Option<SecretString>,
    pool: Option<PgPool>,
    /// Every queue this run may have declared.
    queues: Vec<String>,
    /// Services still running.
    services: Vec<Service>,
    /// Where ingest listens, once started.
    ingest_addr: Option<std::net::SocketAddr>,
    /// Ingest's queue, once declared.
    main_queue: Option<String>,
    /// Highest peak memory of any consumer so far.
    consumer_rss: Option<u64>,
    warnings: Vec<String>,
}

impl Bench {
    fn new(args: BenchArgs, binaries: Binaries, token: CancellationToken) -> Self {
        Self {
            plan: Plan::new(args.quick),
            args,
            binaries,
            id: Uuid::new_v4().simple().to_string()[..12].to_owned(),
            api_key: secret(),
            internal_key: SecretString::from(secret()),
            retry: RetryPolicy::default(),
            token,
            http: reqwest::Client::new(),
            database_url: None,
            pool: None,
            queues: Vec::new(),
            services: Vec::new(),
            ingest_addr: None,
            main_queue: None,
            consumer_rss: None,
            warnings: Vec::new(),
        }
    }

    fn latency(&self) -> Duration {
        Duration::from_millis(self.args.exchange_latency_ms)
    }

    fn symbols(&self) -> Vec<String> {
        (0..self.args.symbols)
            .map(|n| format!("BENCH{n:03}USDT"))
            .collect()
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": if self.args.quick { "quick" } else { "full" },
            "exchange_latency_ms": self.args.exchange_latency_ms,
            "connections": self.args.connections,
            "max_in_flight": self.args.max_in_flight,
            "symbols": self.args.symbols,
            "batch_size": self.args.batch_size,
            "ceiling_secs": self.plan.ceiling_secs,
            "saturation_secs": self.plan.saturation_secs,
            "fixed_rate_secs": self.plan.fixed_rate_secs,
            "consumer_signals": self.plan.consumer_signals,
            "idle_samples": self.plan.idle_samples,
        })
    }

    /// A topology of this run, its queues remembered for the clean-up.
    fn topology(&mut self, suffix: &str) -> Topology {
        let topology = Topology::new(format!("hoox-bench-{}{suffix}", self.id), self.retry);
        self.queues.extend(topology.queues());
        topology
    }

    /// The settings every service gets.
    fn service_env(&self, queue: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
        let database_url = self
            .database_url
            .as_ref()
            .context("the bench database is not made yet")?;
        Ok(vec![
            ("DATABASE_URL", database_url.expose_secret().to_owned()),
            ("AMQP_URL", self.args.amqp_url.expose_secret().to_owned()),
            ("HOOX_QUEUE", queue.to_owned()),
            (
                "HOOX_INTERNAL_KEY",
                self.internal_key.expose_secret().to_owned(),
            ),
            (
                "HOOX_RETRY_BASE_MS",
                self.retry.base.as_millis().to_string(),
            ),
            (
                "HOOX_RETRY_MAX_ATTEMPTS",
                self.retry.max_attempts.to_string(),
            ),
            (
                "HOOX_RETRY_MAX_DELAY_MS",
                self.retry.max_delay.as_millis().to_string(),
            ),
            ("RUST_LOG", "warn".to_owned()),
        ])
    }

    /// Starts ingest on `queue`; gives its address.
    async fn start_ingest(&mut self, queue: &str) -> anyhow::Result<std::net::SocketAddr> {
        let addr = free_addr()?;
        let connections =
            (self.args.max_in_flight + u32::from(self.args.connections) + 64).to_string();
        let mut env = self.service_env(queue)?;
        env.extend([
            ("HOOX_INGEST_ADDR", addr.clone()),
            ("HOOX_WEBHOOK_API_KEY", self.api_key.clone()),
            ("HOOX_MAX_CONNECTIONS", connections.clone()),
            ("HOOX_MAX_CONNECTIONS_PER_IP", connections),
            ("HOOX_RATE_LIMIT_PER_MIN", String::new()),
        ]);
        let mut ingest = Service::spawn("ingest", &self.binaries.ingest, &env, &addr)?;
        let ready = ingest.ready(&self.http).await;
        self.services.push(ingest);
        ready?;
        let addr = addr.parse()?;
        self.ingest_addr = Some(addr);
        Ok(addr)
    }

    /// Starts `count` consumers on `queue`, routing Bybit orders to `mock`.
    async fn start_consumers(
        &mut self,
        queue: &str,
        count: usize,
        mock: &MockExchange,
    ) -> anyhow::Result<()> {
        let first = self.services.len();
        for n in 0..count {
            let addr = free_addr()?;
            let mut env = self.service_env(queue)?;
            env.extend([
                ("HOOX_CONSUMER_ADDR", addr.clone()),
                ("HOOX_BATCH_SIZE", self.args.batch_size.to_string()),
                ("BYBIT_API_KEY", exchange::API_KEY.to_owned()),
                ("BYBIT_API_SECRET", exchange::API_SECRET.to_owned()),
                ("BYBIT_BASE_URL", mock.url()),
            ]);
            let name = format!("consumer {}", n + 1);
            let consumer = Service::spawn(&name, &self.binaries.consumer, &env, &addr)?;
            self.services.push(consumer);
        }
        for consumer in &mut self.services[first..] {
            consumer.ready(&self.http).await?;
        }
        Ok(())
    }

    /// Stops every service named `consumer …`, keeping the highest peak memory seen.
    async fn stop_consumers(&mut self) -> anyhow::Result<()> {
        let (consumers, others): (Vec<Service>, Vec<Service>) = std::mem::take(&mut self.services)
            .into_iter()
            .partition(|s| s.name().starts_with("consumer"));
        self.services = others;
        let mut stopped = Ok(());
        for consumer in consumers {
            self.consumer_rss = self.consumer_rss.max(consumer.peak_rss());
            stopped = stopped.and(consumer.stop().await);
        }
        stopped
    }

    /// Measures everything, in an order where each part finds what it reads against.
    async fn measure(&mut self) -> anyhow::Result<Report> {
        let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut figures = Vec::new();

        let database_url = bench_database_url(&self.args.database_url, &self.id)?;
        self.database_url = Some(database_url.clone());
        progress(&format!("creating database hoox_bench_{}", self.id));
        let pool = hoox_common::db::connect_and_migrate(&database_url, 4)
            .await
            .context("cannot create the bench database")?;
        self.pool = Some(pool.clone());
        let connection = amqp::connect(&self.args.amqp_url, "hoox-bench")
            .await
            .context("cannot reach RabbitMQ")?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mock = MockExchange::start(self.latency(), self.token.clone()).await?;

        let ceilings = self.ceilings(&channel, &pool, &mut figures).await?;
        let saturation = self.ingest(&channel, ceilings, &mut figures).await?;
        let one_consumer = self.consumers(&channel, &mock, &mut figures).await?;
        self.end_to_end(
            &mock,
            &pool,
            saturation.min(one_consumer) / 2.0,
            &mut figures,
        )
        .await?;

        let ingest_rss = self
            .services
            .iter()
            .find(|s| s.name() == "ingest")
            .and_then(Service::peak_rss);
        self.stop_consumers().await?;
        for service in std::mem::take(&mut self.services) {
            service.stop().await?;
        }
        match (ingest_rss, self.consumer_rss) {
            (Some(ingest), Some(consumer)) => figures.extend([
                memory("ingest", ingest).target("<= 50 MB"),
                memory("consumer", consumer),
            ]),
            _ => self
                .warnings
                .push("peak memory is read from /proc, which this system lacks".to_owned()),
        }
        if cfg!(debug_assertions) {
            self.warnings
                .push("a debug build: its figures say little about a release build".to_owned());
        }
        if mock.refused() > 0 {
            self.warnings.push(format!(
                "the mock exchange refused {} requests of the consumers (bad signature or body)",
                mock.refused()
            ));
        }
        let _ = connection.close(200, "bench done".into()).await;
        Ok(Report {
            date,
            machine: Machine::this(),
            parameters: self.parameters(),
            figures,
            warnings: self.warnings.clone(),
        })
    }

    /// The broker's and database's ceilings; gives the pipelined publish rate.
    async fn ceilings(
        &mut self,
        channel: &Channel,
        pool: &PgPool,
        figures: &mut Vec<Figure>,
    ) -> anyhow::Result<f64> {
        let window = Duration::from_secs_f64(self.plan.ceiling_secs);
        let queue = format!("hoox-bench-{}-ceiling", self.id);
        self.queues.push(queue.clone());
        ceilings::declare_quorum_queue(channel, &queue).await?;
        progress("ceiling: confirmed publishes, pipelined");
        let pipelined = ceilings::publish_rate(channel, &queue, PIPELINE, window).await?;
        progress("ceiling: confirmed publishes, one at a time");
        let single = ceilings::publish_rate(channel, &queue, 1, window).await?;
        delete_queue(channel, &queue).await?;
        progress("ceiling: fills, one row per commit");
        let one_row = ceilings::insert_rate(pool, 1, window).await?;
        progress("ceiling: fills, ten rows per commit");
        let ten_rows = ceilings::insert_rate(pool, 10, window).await?;
        sqlx::query("TRUNCATE fills").execute(pool).await?;
        figures.extend([
            Figure::new(
                "ceiling.publish_pipelined",
                "ceilings",
                format!("broker: confirmed publishes, {PIPELINE} in flight"),
                pipelined,
                Unit::PerSecond,
            ),
            Figure::new(
                "ceiling.publish_one_at_a_time",
                "ceilings",
                "broker: confirmed publishes, one at a time",
                single,
                Unit::PerSecond,
            ),
            Figure::new(
                "ceiling.fills_one_per_commit",
                "ceilings",
                "database: fill rows, one per commit",
                one_row,
                Unit::PerSecond,
            ),
            Figure::new(
                "ceiling.fills_ten_per_commit",
                "ceilings",
                "database: fill rows, ten per commit",
                ten_rows,
                Unit::PerSecond,
            ),
        ]);
        Ok(pipelined)
    }

    /// Ingest's saturation rate and its latency at half of it; gives the rate.
    async fn ingest(
        &mut self,
        channel: &Channel,
        publish_ceiling: f64,
        figures: &mut Vec<Figure>,
    ) -> anyhow::Result<f64> {
        let topology = self.topology("");
        topology.declare(channel).await?;
        self.main_queue = Some(topology.queue().to_owned());
        progress("starting ingest");
        let addr = self.start_ingest(topology.queue()).await?;
        let target = Arc::new(Target::new(addr, self.api_key.clone(), self.symbols())?);
        let connections = usize::from(self.args.connections);

        progress(&format!("ingest: saturation, {connections} connections"));
        let client = load::client(connections);
        let saturated = load::saturate(
            &client,
            &target,
            connections,
            Duration::from_secs_f64(self.plan.warmup_secs),
            Duration::from_secs_f64(self.plan.saturation_secs),
            WEBHOOK_TIMEOUT,
        )
        .await;
        self.refused("ingest saturation", &saturated.refused);
        let saturation = rate(saturated.accepted, saturated.window);
        if saturated.accepted == 0 {
            bail!(
                "ingest accepted no webhook at all under load: {:?}",
                saturated.refused
            );
        }

        let half = saturation / 2.0;
        progress(&format!("ingest: latency at {half:.0} webhooks/s"));
        let run = load::open_loop(&load::client(connections), &target, self.schedule(half)).await;
        let mut latencies = Latencies::new();
        let mut refused = load::Statuses::new();
        for sent in &run.sent {
            if sent.answer.status == 202 {
                latencies.record(sent.answered - sent.due);
            } else {
                *refused.entry(sent.answer.status).or_default() += 1;
            }
        }
        self.refused("ingest latency", &refused);
        self.cap(run.cap_hits);
        let p = latencies
            .percentiles()
            .context("ingest accepted no webhook at the fixed rate")?;
        purge_topology(channel, &topology).await?;

        figures.extend([
            Figure::new(
                "ingest.saturation",
                "ingest",
                format!("webhooks/s at saturation, {connections} connections"),
                saturation,
                Unit::PerSecond,
            )
            .against("pipelined publish", publish_ceiling)
            .target(">= 50%, then 70%"),
            Figure::new(
                "ingest.p50",
                "ingest",
                format!("p50 at {half:.0}/s"),
                p.p50_ms,
                Unit::Ms,
            ),
            Figure::new(
                "ingest.p99",
                "ingest",
                format!("p99 at {half:.0}/s"),
                p.p99_ms,
                Unit::Ms,
            )
            .target("<= 10 ms"),
            Figure::new(
                "ingest.p999",
                "ingest",
                format!("p99.9 at {half:.0}/s"),
                p.p999_ms,
                Unit::Ms,
            ),
        ]);
        Ok(saturation)
    }

    /// The fixed-rate schedule at `rate` webhooks/s.
    fn schedule(&self, rate: f64) -> Schedule {
        Schedule {
            rate: rate.max(1.0),
            duration: Duration::from_secs_f64(self.plan.fixed_rate_secs),
            max_in_flight: self.args.max_in_flight as usize,
            timeout: WEBHOOK_TIMEOUT,
        }
    }

    fn refused(&mut self, part: &str, refused: &load::Statuses) {
        if refused.is_empty() {
            return;
        }
        let total: u64 = refused.values().sum();
        let by_status: Vec<String> = refused
            .iter()
            .map(|(status, n)| match status {
                0 => format!("{n} unanswered"),
                s => format!("{n} answered {s}"),
            })
            .collect();
        let warning = format!(
            "{part}: {total} webhooks not accepted ({})",
            by_status.join(", ")
        );
        progress(&format!("WARNING: {warning}"));
        self.warnings.push(warning);
    }

    fn cap(&mut self, hits: u64) {
        if hits > 0 {
            let warning = format!(
                "{hits} webhooks came due with {} already in flight and were sent late (their wait is in their latency)",
                self.args.max_in_flight
            );
            progress(&format!("WARNING: {warning}"));
            self.warnings.push(warning);
        }
    }

    /// Orders per second with 1, 2 and 4 consumers on a prefilled queue; gives the
    /// rate of one.
    async fn consumers(
        &mut self,
        channel: &Channel,
        mock: &MockExchange,
        figures: &mut Vec<Figure>,
    ) -> anyhow::Result<f64> {
        let symbols = self.symbols();
        let signals = self.plan.consumer_signals;
        let per_consumer = f64::from(self.args.batch_size) / self.latency().as_secs_f64();
        let mut rates = Vec::new();
        for count in [1usize, 2, 4] {
            let topology = self.topology(&format!("-c{count}"));
            topology.declare(channel).await?;
            // Consumers first, each with its share of the partitions: the figure is the
            // rate of consumers at work, not of a newcomer waiting for its share.
            progress(&format!("consumer: starting {count} consumer(s)"));
            self.start_consumers(topology.queue(), count, mock).await?;
            self.wait_for_shares(topology.queue(), count, topology.partitions())
                .await?;
            // One order per symbol first, so that each consumer has read its
            // instruments' rules and the exchange's clock: a consumer's first order of a
            // symbol waits for them once in its life, which is not its rate at work.
            progress("consumer: warming up");
            let warm: Vec<Uuid> = symbols.iter().map(|_| Uuid::new_v4()).collect();
            self.queue_signals(channel, &topology, &warm, &symbols)
                .await?;
            let links: Vec<String> = warm.iter().map(|id| link(*id)).collect();
            let warmed = mock.wait_for(&links, Instant::now() + ORDER_WITHIN).await;
            if warmed.iter().any(Option::is_none) {
                bail!("{count} consumer(s) did not place the warm-up orders in time");
            }
            progress(&format!(
                "consumer: queueing {signals} signals over {} symbols",
                symbols.len()
            ));
            let ids: Vec<Uuid> = (0..signals).map(|_| Uuid::new_v4()).collect();
            self.queue_signals(channel, &topology, &ids, &symbols)
                .await?;

            progress(&format!("consumer: {count} consumer(s) executing them"));
            let links: Vec<String> = ids.iter().map(|id| link(*id)).collect();
            let deadline =
                Instant::now() + ORDER_WITHIN + Duration::from_secs_f64(signals as f64 / 50.0);
            let times = mock.wait_for(&links, deadline).await;
            let placed: Vec<_> = times.into_iter().flatten().collect();
            if placed.len() < signals {
                bail!(
                    "{count} consumer(s) placed {} of {signals} orders in time",
                    placed.len()
                );
            }
            let first = placed
                .iter()
                .map(|t| t.arrived)
                .min()
                .context("no orders")?;
            let last = placed.iter().map(|t| t.placed).max().context("no orders")?;
            let orders = rate(signals as u64, last - first);
            let busiest = self
                .busiest_share(topology.queue(), &topology, &symbols)
                .await?;
            self.stop_consumers().await?;
            delete_topology(channel, &topology).await?;
            let bound = per_consumer * count as f64;
            figures.push(
                Figure::new(
                    &format!("consumer.orders_{count}"),
                    "consumer",
                    format!("orders/s, {count} consumer(s)"),
                    orders,
                    Unit::PerSecond,
                )
                .against(
                    format!("{count} x batch {} / latency", self.args.batch_size),
                    bound,
                ),
            );
            if count > 1 {
                // Symbols hash onto partitions, and consumers share partitions evenly,
                // not symbols: the consumer with the most of them sets the pace.
                figures.push(
                    Figure::new(
                        &format!("consumer.spread_{count}"),
                        "consumer",
                        format!("{count} consumers: most the symbols' spread allows"),
                        1.0 / busiest,
                        Unit::Times,
                    )
                    .against("linear", count as f64),
                );
            }
            rates.push(orders);
        }
        let one = rates[0];
        for (count, orders) in [(2, rates[1]), (4, rates[2])] {
            figures.push(
                Figure::new(
                    &format!("consumer.scaling_{count}"),
                    "consumer",
                    format!("{count} consumers vs 1"),
                    orders / one,
                    Unit::Times,
                )
                .against("linear", f64::from(count)),
            );
        }
        Ok(one)
    }

    /// Publishes a signal for each of `ids`, its symbol taken in turn from `symbols`,
    /// straight into the symbol's partition, as ingest publishes them.
    async fn queue_signals(
        &self,
        channel: &Channel,
        topology: &Topology,
        ids: &[Uuid],
        symbols: &[String],
    ) -> anyhow::Result<()> {
        let mut by_queue: BTreeMap<String, Vec<ceilings::Outgoing>> = BTreeMap::new();
        for (id, symbol) in ids.iter().zip(symbols.iter().cycle()) {
            by_queue
                .entry(topology.queue_for(symbol))
                .or_default()
                .push(self.queue_message(*id, symbol)?);
        }
        for (queue, messages) in by_queue {
            ceilings::publish(channel, &queue, messages.into_iter(), PIPELINE, None).await?;
        }
        Ok(())
    }

    /// The largest share of the signals (spread evenly over `symbols`) that one
    /// consumer of `queue` executes, from the partitions it holds.
    async fn busiest_share(
        &self,
        queue: &str,
        topology: &Topology,
        symbols: &[String],
    ) -> anyhow::Result<f64> {
        let pool = self.pool.as_ref().context("no bench database")?;
        let mut connection = pool.acquire().await?;
        let holdings = hoox_consumer::leases::holdings(&mut connection, queue).await?;
        let busiest = holdings
            .iter()
            .map(|held| {
                symbols
                    .iter()
                    .filter(|s| held.contains(&topology.partition_of(s)))
                    .count()
            })
            .max()
            .unwrap_or(symbols.len());
        Ok(busiest as f64 / symbols.len() as f64)
    }

    /// Waits until `count` consumers of `queue` hold all `partitions` between them,
    /// evenly (within one).
    async fn wait_for_shares(
        &self,
        queue: &str,
        count: usize,
        partitions: u16,
    ) -> anyhow::Result<()> {
        let pool = self.pool.as_ref().context("no bench database")?;
        let mut connection = pool.acquire().await?;
        let deadline = Instant::now() + SHARES_WITHIN;
        loop {
            let shares = hoox_consumer::leases::shares(&mut connection, queue).await?;
            let even = shares
                .first()
                .zip(shares.last())
                .is_some_and(|(most, least)| most - least <= 1);
            if shares.len() == count
                && even
                && shares.iter().sum::<usize>() == usize::from(partitions)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{count} consumer(s) did not share the {partitions} partitions within {}s: {shares:?}", SHARES_WITHIN.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A signed queue message for a market buy of `symbol` on Bybit, as ingest makes it.
    fn queue_message(&self, id: Uuid, symbol: &str) -> anyhow::Result<ceilings::Outgoing> {
        let body = serde_json::json!({"exchange": "bybit", "action": "LONG", "symbol": symbol, "quantity": "0.001"});
        let fields = body.as_object().context("a JSON object")?;
        let signal = hoox_common::signal::WebhookSignal::from_json(fields)
            .map_err(|err| anyhow::anyhow!("bench signal refused: {err}"))?
            .signal;
        let message = QueueMessage::new(id, chrono::Utc::now(), signal);
        let (body, signature) = message.encode(&self.internal_key);
        let id = id.to_string();
        let headers = amqp::signed_headers(Some(&signature), Some(&id));
        Ok((body, headers, Some(id)))
    }

    /// Webhook-to-order latency, one signal at a time and then at `rate` per second.
    async fn end_to_end(
        &mut self,
        mock: &MockExchange,
        pool: &PgPool,
        rate: f64,
        figures: &mut Vec<Figure>,
    ) -> anyhow::Result<()> {
        let queue = self.main_queue.clone().context("ingest has no queue")?;
        progress("end to end: starting a consumer");
        self.start_consumers(&queue, 1, mock).await?;
        let ingest = self.ingest_target()?;
        let client = load::client(4);

        // One signal per symbol first, so each instrument's rules are cached.
        progress("end to end: warming up");
        let mut warm = Vec::new();
        for n in 0..u64::from(self.args.symbols) {
            warm.push(self.accepted(&client, &ingest, n).await?);
        }
        let links: Vec<String> = warm.iter().map(|id| link(*id)).collect();
        let times = mock.wait_for(&links, Instant::now() + ORDER_WITHIN).await;
        if times.iter().any(Option::is_none) {
            bail!(
                "the warm-up signals did not all become orders within {}s",
                ORDER_WITHIN.as_secs()
            );
        }

        progress(&format!(
            "end to end: {} signals one at a time",
            self.plan.idle_samples
        ));
        let (mut idle, mut idle_beyond) = (Latencies::new(), Latencies::new());
        for n in 0..self.plan.idle_samples as u64 {
            let sent = Instant::now();
            let id = self.accepted(&client, &ingest, n).await?;
            let [Some(order)] = mock.wait_for(&[link(id)], sent + ORDER_WITHIN).await[..] else {
                bail!(
                    "signal {id} did not become an order within {}s",
                    ORDER_WITHIN.as_secs()
                );
            };
            idle.record(order.placed - sent);
            idle_beyond.record(order.arrived - sent);
            wait_for_fill(pool, id).await?;
        }

        progress(&format!("end to end: {rate:.0} signals/s"));
        let run = load::open_loop(
            &load::client(usize::from(self.args.connections)),
            &ingest,
            self.schedule(rate),
        )
        .await;
        let mut refused = load::Statuses::new();
        let mut due = Vec::new();
        for sent in &run.sent {
            match sent.answer.request_id {
                Some(id) => due.push((sent.due, link(id))),
                None => *refused.entry(sent.answer.status).or_default() += 1,
            }
        }
        self.refused("end to end under load", &refused);
        self.cap(run.cap_hits);
        let links: Vec<String> = due.iter().map(|(_, l)| l.clone()).collect();
        let times = mock.wait_for(&links, Instant::now() + ORDER_WITHIN).await;
        let (mut loaded, mut loaded_beyond) = (Latencies::new(), Latencies::new());
        let mut missing = 0;
        for ((due, _), order) in due.iter().zip(times) {
            match order {
                Some(order) => {
                    loaded.record(order.placed - *due);
                    loaded_beyond.record(order.arrived - *due);
                }
                None => missing += 1,
            }
        }
        if missing > 0 {
            bail!(
                "{missing} accepted signals did not become orders within {}s",
                ORDER_WITHIN.as_secs()
            );
        }

        let latency = self.args.exchange_latency_ms;
        let idle = idle.percentiles().context("no idle samples")?;
        let idle_beyond = idle_beyond.percentiles().context("no idle samples")?;
        let loaded = loaded
            .percentiles()
            .context("no signal under load became an order")?;
        let loaded_beyond = loaded_beyond
            .percentiles()
            .context("no signal under load became an order")?;
        let section = "end to end";
        figures.extend([
            Figure::new(
                "e2e.idle_p50",
                section,
                "idle p50, webhook sent to order placed",
                idle.p50_ms,
                Unit::Ms,
            ),
            Figure::new("e2e.idle_p99", section, "idle p99", idle.p99_ms, Unit::Ms),
            Figure::new(
                "e2e.idle_beyond_p50",
                section,
                format!("idle p50 beyond the exchange's {latency} ms"),
                idle_beyond.p50_ms,
                Unit::Ms,
            )
            .target("<= 2 ms"),
            Figure::new(
                "e2e.idle_beyond_p99",
                section,
                format!("idle p99 beyond the exchange's {latency} ms"),
                idle_beyond.p99_ms,
                Unit::Ms,
            )
            .target("<= 10 ms"),
            Figure::new(
                "e2e.load_p50",
                section,
                format!("p50 at {rate:.0}/s"),
                loaded.p50_ms,
                Unit::Ms,
            ),
            Figure::new(
                "e2e.load_p99",
                section,
                format!("p99 at {rate:.0}/s"),
                loaded.p99_ms,
                Unit::Ms,
            ),
            Figure::new(
                "e2e.load_beyond_p50",
                section,
                format!("p50 at {rate:.0}/s beyond the exchange"),
                loaded_beyond.p50_ms,
                Unit::Ms,
            ),
            Figure::new(
                "e2e.load_beyond_p99",
                section,
                format!("p99 at {rate:.0}/s beyond the exchange"),
                loaded_beyond.p99_ms,
                Unit::Ms,
            ),
        ]);
        Ok(())
    }

    fn ingest_target(&self) -> anyhow::Result<Arc<Target>> {
        let addr = self.ingest_addr.context("ingest is not running")?;
        Ok(Arc::new(Target::new(
            addr,
            self.api_key.clone(),
            self.symbols(),
        )?))
    }

    /// Sends the `n`th webhook and gives its request id; anything but a 202 fails.
    async fn accepted(
        &self,
        client: &load::Client,
        target: &Target,
        n: u64,
    ) -> anyhow::Result<Uuid> {
        let answer = load::send(client, target, n, WEBHOOK_TIMEOUT).await;
        match answer.request_id {
            Some(id) => Ok(id),
            None => bail!("ingest did not accept a webhook (status {})", answer.status),
        }
    }

    /// Stops every service, deletes every queue and drops the database; tries each
    /// step whatever the others did, and reports the first failure.
    async fn clean_up(&mut self) -> anyhow::Result<()> {
        progress("cleaning up");
        self.token.cancel();
        let mut result = self.stop_consumers().await;
        for service in std::mem::take(&mut self.services) {
            result = result.and(service.stop().await);
        }
        if !self.queues.is_empty() {
            let deleted = async {
                let connection = amqp::connect(&self.args.amqp_url, "hoox-bench-cleanup").await?;
                let channel = connection.create_channel().await?;
                for queue in &self.queues {
                    delete_queue(&channel, queue).await?;
                }
                let _ = connection.close(200, "bench cleaned up".into()).await;
                anyhow::Ok(())
            };
            result = result.and(deleted.await.context("cannot delete the bench's queues"));
        }
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        if let Some(url) = self.database_url.take() {
            let dropped = sqlx::Postgres::force_drop_database(url.expose_secret()).await;
            result = result.and(dropped.context("cannot drop the bench database"));
        }
        result
    }
}

/// The client order id the consumer gives request `id`'s order.
fn link(id: Uuid) -> String {
    ClientOrderId::from_request_id(id).as_str().to_owned()
}

fn memory(part: &str, bytes: u64) -> Figure {
    Figure::new(
        &format!("memory.{part}"),
        "memory",
        format!("{part} peak RSS"),
        bytes as f64,
        Unit::Bytes,
    )
}

/// `url` with its database replaced by this run's.
fn bench_database_url(url: &SecretString, id: &str) -> anyhow::Result<SecretString> {
    let mut parsed = url::Url::parse(url.expose_secret())
        .map_err(|err| anyhow::anyhow!("DATABASE_URL is not a URL: {err}"))?;
    parsed.set_path(&format!("/hoox_bench_{id}"));
    Ok(SecretString::from(parsed.to_string()))
}

async fn wait_for_fill(pool: &PgPool, id: Uuid) -> anyhow::Result<()> {
    let deadline = Instant::now() + ORDER_WITHIN;
    loop {
        let filled: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM fills WHERE request_id = $1)")
                .bind(id)
                .fetch_one(pool)
                .await?;
        if filled {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "signal {id} was not recorded as filled within {}s",
                ORDER_WITHIN.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn purge_queue(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    channel
        .queue_purge(ShortString::from(queue), QueuePurgeOptions::default())
        .await?;
    Ok(())
}

async fn delete_queue(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    channel
        .queue_delete(ShortString::from(queue), QueueDeleteOptions::default())
        .await
        .with_context(|| format!("cannot delete queue {queue}"))?;
    Ok(())
}

async fn delete_topology(channel: &Channel, topology: &Topology) -> anyhow::Result<()> {
    for queue in topology.queues() {
        delete_queue(channel, &queue).await?;
    }
    Ok(())
}

/// Empties the main queue and its partitions, where ingest's webhooks wait.
async fn purge_topology(channel: &Channel, topology: &Topology) -> anyhow::Result<()> {
    purge_queue(channel, topology.queue()).await?;
    for queue in topology.partition_queues() {
        purge_queue(channel, &queue).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_database_is_named_for_the_run_on_the_given_server() {
        let url = SecretString::from(
            "postgres://hoox:pw@db.internal:5433/hoox?sslmode=require".to_owned(),
        );
        let bench = bench_database_url(&url, "abc123").unwrap();
        assert_eq!(
            bench.expose_secret(),
            "postgres://hoox:pw@db.internal:5433/hoox_bench_abc123?sslmode=require"
        );
        let err = bench_database_url(&SecretString::from("not a url".to_owned()), "x").unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
        assert!(!err.to_string().contains("not a url"), "{err}");
    }
}
