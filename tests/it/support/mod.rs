//! Test harness: an in-process ingest and consumer on a fresh database and a unique
//! queue, waiting helpers with deadlines, a broker proxy that can fail on demand, and a
//! RabbitMQ cluster of three nodes that can lose one.

pub mod browser;
pub mod cluster;
pub mod dashboard;
pub mod exchanges;
pub mod ledger;
pub mod overlaps;
pub mod proxy;
pub mod raw;
pub mod telegram;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hoox::commands::dlq::{DeadLetter, DlqRead};
use hoox_common::amqp::Topology;
use hoox_common::config::DEFAULT_AMQP_URL;
use hoox_common::message::QueueMessage;
use hoox_common::retry::RetryPolicy;
use hoox_common::runtime_config::RuntimeConfig;
use hoox_common::signal::WebhookSignal;
use hoox_common::telegram::Notifier;
use hoox_consumer::batch::BatchBounds;
use hoox_consumer::exchange::paper::Paper;
use hoox_consumer::exchange::router::ExchangeRouter;
use hoox_consumer::exchange::Exchange;
use hoox_consumer::worker::{Worker, WorkerSettings};
use hoox_consumer::Consumer;
use hoox_ingest::publisher::Publisher;
use hoox_ingest::server::Limits;
use hoox_ingest::source::Sources;
use hoox_ingest::{AppState, Inner};
use lapin::options::QueueDeleteOptions;
use lapin::Connection;
use secrecy::SecretString;
use serde_json::Value;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The webhook key every test app accepts.
pub const API_KEY: &str = "test-webhook-key";
/// The message-signing key every test app uses.
pub const INTERNAL_KEY: &str = "test-internal-key";
/// How long any wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The broker the tests use.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

/// A queue name no other test uses.
pub fn unique_queue() -> String {
    format!("hoox-test-{}", uuid::Uuid::new_v4().simple())
}

/// The URL of the database behind `pool` (a `#[sqlx::test]` database).
pub fn database_url(pool: &PgPool) -> String {
    let db = pool
        .connect_options()
        .get_database()
        .expect("test pools name their database")
        .to_owned();
    url_of_database(&db)
}

/// The URL of database `name` on the test server.
pub fn url_of_database(name: &str) -> String {
    let master = std::env::var("DATABASE_URL").expect("DATABASE_URL names the test server");
    let (base, _) = master
        .rsplit_once('/')
        .expect("DATABASE_URL has a database path");
    format!("{base}/{name}")
}

/// The `hoox` binary, configured for `database_url` and the test broker.
pub fn hoox_on(database_url: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hoox"));
    command
        .env("DATABASE_URL", database_url)
        .env("AMQP_URL", amqp_url())
        .kill_on_drop(true);
    command
}

/// The `hoox` binary, configured for `database_url`, the test broker, and the queues
/// and retry schedule of `topology`.
pub fn hoox_with_queues(database_url: &str, topology: &Topology) -> tokio::process::Command {
    let retry = topology.retry_policy();
    let mut command = hoox_on(database_url);
    command
        .env("HOOX_QUEUE", topology.queue())
        .env("HOOX_PARTITIONS", topology.partitions().to_string())
        .env("HOOX_RETRY_BASE_MS", retry.base.as_millis().to_string())
        .env("HOOX_RETRY_MAX_ATTEMPTS", retry.max_attempts.to_string())
        .env(
            "HOOX_RETRY_MAX_DELAY_MS",
            retry.max_delay.as_millis().to_string(),
        );
    command
}

/// Polls `check` until it gives `Some`, failing the test at [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, DEADLINE, check).await
}

/// Polls `check` until it gives `Some`, failing the test after `limit`.
pub async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// How a test app is put together.
pub struct Options {
    /// Broker URL for ingest (a proxy, or a dead port).
    pub ingest_amqp_url: String,
    /// Broker URL for the consumers (a cluster's node list, say); the app's queues are
    /// deleted there when it stops.
    pub consumer_amqp_url: String,
    /// Whether to run a consumer.
    pub consumer: bool,
    /// Exchanges the consumer routes to; paper when empty.
    pub exchanges: Vec<Arc<dyn Exchange>>,
    /// Batch bounds.
    pub bounds: BatchBounds,
    /// Retry schedule.
    pub retry: RetryPolicy,
    /// Oldest signal executed.
    pub signal_max_age: Duration,
    /// Ingest's connection limits and timeouts.
    pub limits: Limits,
    /// Ingest's allowlist, trusted proxies and rate limit.
    pub sources: Sources,
    /// Where the consumers send Telegram notifications; none when `None`.
    pub notifier: Option<Notifier>,
    /// Partitions of the main queue: fewer than a deployment's default, so that each
    /// test declares few queues.
    pub partitions: u16,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ingest_amqp_url: amqp_url(),
            consumer_amqp_url: amqp_url(),
            consumer: true,
            exchanges: Vec::new(),
            bounds: BatchBounds {
                size: 10,
                timeout: Duration::from_millis(1000),
            },
            retry: RetryPolicy {
                base: Duration::from_millis(5),
                max_attempts: 3,
                max_delay: Duration::from_millis(20),
            },
            signal_max_age: Duration::from_secs(600),
            limits: Limits::default(),
            sources: Sources::open(),
            notifier: None,
            partitions: 4,
        }
    }
}

/// Ingest and (optionally) a consumer, in this process.
pub struct TestApp {
    /// Where ingest listens.
    pub addr: SocketAddr,
    /// The test's database.
    pub pool: PgPool,
    /// The test's queues.
    pub topology: Topology,
    /// The live config view ingest uses.
    pub config: RuntimeConfig,
    /// An HTTP client.
    pub http: reqwest::Client,
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    consumer_settings: ConsumerSettings,
    consumers: Vec<(CancellationToken, JoinHandle<()>)>,
}

struct ConsumerSettings {
    amqp_url: String,
    bounds: BatchBounds,
    retry: RetryPolicy,
    signal_max_age: Duration,
    notifier: Option<Notifier>,
}

impl TestApp {
    /// An app with default options.
    pub async fn start(pool: PgPool) -> Self {
        Self::with(pool, Options::default()).await
    }

    /// An app with `options`.
    pub async fn with(pool: PgPool, options: Options) -> Self {
        let token = CancellationToken::new();
        let topology =
            Topology::new(unique_queue(), options.retry).with_partitions(options.partitions);
        let config = RuntimeConfig::start(pool.clone(), token.clone())
            .await
            .expect("config loads");
        let internal_key = SecretString::from(INTERNAL_KEY.to_owned());
        let mut tasks = Vec::new();

        let consumer_settings = ConsumerSettings {
            amqp_url: options.consumer_amqp_url,
            bounds: options.bounds,
            retry: options.retry,
            signal_max_age: options.signal_max_age,
            notifier: options.notifier,
        };
        let (publisher, supervisor) = Publisher::start(
            SecretString::from(options.ingest_amqp_url),
            topology.clone(),
            token.clone(),
        );
        let state = AppState::new(Inner {
            pool: pool.clone(),
            publisher,
            config: config.clone(),
            api_key: SecretString::from(API_KEY.to_owned()),
            internal_key,
            idempotency_ttl: Duration::from_secs(86_400),
            duplicate_window: Duration::from_secs(60),
            limits: options.limits,
            sources: Arc::new(options.sources),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(hoox_ingest::serve(listener, state, token.clone()));
        tasks.push(supervisor);
        tasks.push(tokio::spawn(async move {
            let _ = server.await;
        }));

        let mut app = Self {
            addr,
            pool,
            topology,
            config,
            http: client(),
            token,
            tasks,
            consumer_settings,
            consumers: Vec::new(),
        };
        if options.consumer {
            app.start_consumer(options.exchanges);
        }
        app
    }

    /// Starts one more consumer routing to `exchanges` (paper when empty).
    pub fn start_consumer(&mut self, exchanges: Vec<Arc<dyn Exchange>>) {
        let settings = &self.consumer_settings;
        let exchanges = if exchanges.is_empty() {
            vec![Arc::new(Paper::new(self.pool.clone(), self.config.clone())) as Arc<dyn Exchange>]
        } else {
            exchanges
        };
        let router = ExchangeRouter::new(exchanges, self.config.clone());
        let worker = Worker::new(
            self.pool.clone(),
            self.config.clone(),
            Arc::new(router),
            WorkerSettings {
                internal_key: SecretString::from(INTERNAL_KEY.to_owned()),
                signal_max_age: settings.signal_max_age,
                retry: settings.retry,
            },
        )
        .with_notifier(settings.notifier.clone());
        let consumer = Consumer::new(
            worker,
            self.topology.clone(),
            SecretString::from(settings.amqp_url.clone()),
            settings.bounds,
        )
        .with_notifier(settings.notifier.clone());
        let token = self.token.child_token();
        let task = tokio::spawn(consumer.run(token.clone()));
        self.consumers.push((token, task));
    }

    /// Stops every consumer after its batch in flight, and waits until they have.
    pub async fn stop_consumer(&mut self) {
        for (token, task) in self.consumers.drain(..) {
            token.cancel();
            let _ = task.await;
        }
    }

    /// An ingest without a consumer.
    pub async fn ingest_only(pool: PgPool) -> Self {
        Self::with(
            pool,
            Options {
                consumer: false,
                ..Options::default()
            },
        )
        .await
    }

    /// The `hoox` binary, configured for this app's database, queues and keys.
    pub fn hoox(&self) -> tokio::process::Command {
        let mut command = hoox_with_queues(&database_url(&self.pool), &self.topology);
        command
            .env("HOOX_WEBHOOK_API_KEY", API_KEY)
            .env("HOOX_INTERNAL_KEY", INTERNAL_KEY);
        command
    }

    /// The webhook URL.
    pub fn webhook_url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// Waits until ingest is ready to queue signals.
    pub async fn ready(&self) {
        let url = format!("http://{}/readyz", self.addr);
        eventually("ingest readiness", || async {
            let response = self.http.get(&url).send().await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
    }

    /// Posts a JSON webhook; returns the status and the envelope.
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        self.post_raw(body.to_string(), &[]).await
    }

    /// Posts `body` as-is with extra `headers`.
    pub async fn post_raw(
        &self,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        self.post_with(&self.http, body, headers).await
    }

    /// Posts `body` as-is with extra `headers` through `client` (one bound to another
    /// loopback address, say).
    pub async fn post_with(
        &self,
        client: &reqwest::Client,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = client.post(self.webhook_url()).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("ingest answers");
        let status = response.status().as_u16();
        let envelope = response.json().await.expect("ingest answers JSON");
        (status, envelope)
    }

    /// Sets a config key and waits until this app's processes see it.
    pub async fn set_config(&self, key: &str, value: &str) {
        sqlx::query("INSERT INTO config (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .expect("config write");
        let (key, value) = (key.to_owned(), value.to_owned());
        tokio::time::timeout(
            DEADLINE,
            self.config
                .wait_until(move |m: &HashMap<String, String>| m.get(&key) == Some(&value)),
        )
        .await
        .expect("config change seen");
    }

    /// Waits until `request_id` has a fill, and returns how many fills it has.
    pub async fn wait_for_fill(&self, request_id: &str) -> i64 {
        let id: uuid::Uuid = request_id.parse().expect("request ids are uuids");
        eventually("the fill", || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM fills WHERE request_id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await
                .ok()?;
            (n > 0).then_some(n)
        })
        .await
    }
}

impl TestApp {
    /// Begins shutdown without waiting: ingest stops accepting and drains.
    pub fn begin_shutdown(&self) {
        self.token.cancel();
    }

    /// Stops ingest and consumer, waits until they have let go of the broker, and
    /// deletes this test's queues (quorum queues outlive their connections).
    pub async fn stop(self) {
        let (url, topology) = (
            self.consumer_settings.amqp_url.clone(),
            self.topology.clone(),
        );
        self.stop_leaving_queues().await;
        delete_queues_at(&url, &topology).await;
    }

    /// Stops ingest and consumer and waits until they have let go of the broker, but
    /// leaves the queues: for a broker that goes away with the test anyway (deleting a
    /// quorum queue that lost a member waits on the lost member).
    pub async fn stop_leaving_queues(mut self) {
        self.stop_consumer().await;
        self.token.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A test that failed before `stop` still stops its tasks.
        self.token.cancel();
    }
}

/// Deletes the queues of `topology` on the broker at `url`.
pub async fn delete_queues_at(url: &str, topology: &Topology) {
    let Ok(connection) =
        hoox_common::amqp::connect(&SecretString::from(url.to_owned()), "hoox-test-cleanup").await
    else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else {
        return;
    };
    for name in topology.queues() {
        let _ = channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
}

/// A valid webhook body for `symbol`.
pub fn signal(symbol: &str) -> Value {
    serde_json::json!({
        "apiKey": API_KEY,
        "action": "LONG",
        "symbol": symbol,
        "quantity": 0.005,
        "price": 68000,
    })
}

/// What an exchange answers for an order it filled in full at the order's price.
pub fn filled(
    order: &hoox_consumer::exchange::OrderRequest,
    exchange_order_id: String,
) -> hoox_consumer::exchange::OrderAck {
    hoox_consumer::exchange::OrderAck {
        exchange_order_id,
        status: "filled".to_owned(),
        fill_price: order.price,
        fill_quantity: Some(order.quantity),
        fee: None,
        placed_at: chrono::Utc::now(),
        raw: serde_json::json!({}),
    }
}

/// How long the tests' clients keep an idle connection: less than ingest's header
/// timeout, which closes idle connections, so that a client never sends on a connection
/// the server is closing at that moment (a reverse proxy needs the same setting).
const CLIENT_IDLE: Duration = Duration::from_secs(2);

/// An HTTP client for the test app.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(CLIENT_IDLE)
        .build()
        .expect("client")
}

/// An HTTP client whose connections come from the loopback address `ip`.
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(CLIENT_IDLE)
        .local_address(ip.parse::<std::net::IpAddr>().expect("an IP address"))
        .build()
        .expect("client")
}

/// A connection to the test broker.
pub async fn broker() -> Connection {
    hoox_common::amqp::connect(&SecretString::from(amqp_url()), "hoox-test")
        .await
        .unwrap()
}

/// The request ids in the dead-letter queue, oldest first.
pub async fn dead_letter_ids(app: &TestApp, connection: &Connection) -> Vec<String> {
    dead_letters(app, connection)
        .await
        .iter()
        .map(|l| {
            l.request_id
                .expect("hoox dead letters name their request")
                .to_string()
        })
        .collect()
}

/// What the dead-letter queue holds, oldest first (left in place).
pub async fn dead_letters(app: &TestApp, connection: &Connection) -> Vec<DeadLetter> {
    let key = SecretString::from(INTERNAL_KEY.to_owned());
    let read = DlqRead::open(connection, &app.topology, Some(&key))
        .await
        .unwrap();
    let letters = read.letters.clone();
    read.finish().await.unwrap();
    letters
}

/// Waits until the dead-letter queue holds at least `n` letters.
pub async fn wait_for_dead_letters(
    app: &TestApp,
    connection: &Connection,
    n: usize,
) -> Vec<DeadLetter> {
    eventually("dead letters", || async {
        let letters = dead_letters(app, connection).await;
        (letters.len() >= n).then_some(letters)
    })
    .await
}

/// Publishes a signed message straight onto the main queue, as ingest would.
pub async fn publish_signed(app: &TestApp, connection: &Connection, message: &QueueMessage) {
    let (body, signature) = message.encode(&SecretString::from(INTERNAL_KEY.to_owned()));
    publish_raw(app, connection, &body, &signature).await;
}

/// Publishes `body` with `signature` straight onto the main queue.
pub async fn publish_raw(app: &TestApp, connection: &Connection, body: &[u8], signature: &str) {
    let channel = connection.create_channel().await.unwrap();
    app.topology.declare(&channel).await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let id = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["requestId"].as_str().map(str::to_owned));
    let headers = hoox_common::amqp::signed_headers(Some(signature), id.as_deref());
    hoox_common::amqp::publish_confirmed(&channel, app.topology.queue(), body, headers, None)
        .await
        .unwrap();
    let _ = channel.close(200, "done".into()).await;
}

/// A first-attempt message for a valid signal on `symbol`.
pub fn message_for(symbol: &str, received_at: chrono::DateTime<chrono::Utc>) -> QueueMessage {
    let parsed = WebhookSignal::from_json(signal(symbol).as_object().unwrap()).unwrap();
    QueueMessage::new(uuid::Uuid::new_v4(), received_at, parsed.signal)
}

/// How many messages wait in the main queue of `app` and its partitions (declared by
/// ingest once ready).
pub async fn queue_depth(app: &TestApp) -> u32 {
    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    let mut names = vec![app.topology.queue().to_owned()];
    names.extend(app.topology.partition_queues());
    let mut depth = 0;
    for name in names {
        let queue = channel
            .queue_declare(
                name.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
        depth += queue.message_count();
    }
    let _ = connection.close(200, "done".into()).await;
    depth
}

/// Posts `body` and returns the request id of its 202.
pub async fn accepted(app: &TestApp, body: &serde_json::Value) -> String {
    let (status, envelope) = app.post(body).await;
    assert_eq!(status, 202, "{envelope}");
    envelope["result"]["requestId"].as_str().unwrap().to_owned()
}

/// The promise checked after every fault test: each client order id the exchange
/// accepted was accepted once and has its fill, and each accepted request id ended in
/// exactly one fill or exactly one dead letter.
pub async fn assert_exactly_once(
    app: &TestApp,
    connection: &Connection,
    exchange_accepted: &[String],
    request_ids: &[uuid::Uuid],
) {
    let mut accepted = exchange_accepted.to_vec();
    accepted.sort();
    let fills: Vec<String> =
        sqlx::query_scalar("SELECT client_order_id FROM fills ORDER BY client_order_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        accepted, fills,
        "orders accepted by the exchange = fills, once each"
    );
    let dead: Vec<uuid::Uuid> = dead_letters(app, connection)
        .await
        .iter()
        .filter_map(|l| l.request_id)
        .collect();
    let filled: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT request_id FROM fills")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for id in request_ids {
        let endings =
            filled.iter().filter(|f| *f == id).count() + dead.iter().filter(|d| *d == id).count();
        assert_eq!(endings, 1, "{id} ended in {endings} fills and dead letters");
    }
}

/// A free local address to listen on.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// `hoox run` as a child process on `app`'s database and queues, its ingest on a free
/// address (returned) and its output discarded.
pub fn spawn_hoox_at(app: &TestApp) -> (tokio::process::Child, String) {
    let ingest_addr = free_addr();
    let child = app
        .hoox()
        .arg("run")
        .env("HOOX_INGEST_ADDR", &ingest_addr)
        .env("HOOX_CONSUMER_ADDR", free_addr())
        .env("HOOX_DASHBOARD_ADDR", free_addr())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hoox run starts");
    (child, ingest_addr)
}

/// `hoox run` as a child process consuming `app`'s queue.
pub fn spawn_hoox(app: &TestApp) -> tokio::process::Child {
    spawn_hoox_at(app).0
}

/// A worker on `pool` routing to `exchange`, with the test apps' key and settings and
/// a fixed, empty config: for tests that drive batches by hand.
pub fn worker_on(pool: &PgPool, exchange: Arc<dyn Exchange>) -> Worker {
    let config = RuntimeConfig::fixed(HashMap::new());
    let router = ExchangeRouter::new(vec![exchange], config.clone());
    Worker::new(
        pool.clone(),
        config,
        Arc::new(router),
        WorkerSettings {
            internal_key: SecretString::from(INTERNAL_KEY.to_owned()),
            signal_max_age: Duration::from_secs(600),
            retry: Options::default().retry,
        },
    )
}
