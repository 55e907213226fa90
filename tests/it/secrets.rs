//! Secrets never leave hoox. A whole deployment runs as the real `hoox` binary with a
//! recognisable fake value for every secret it holds (webhook keys, the signing key,
//! exchange keys live and testnet, the database and broker passwords) through fills, a
//! retry, a dead letter, refusals and a key rotation, logging everything at TRACE, in
//! text and in JSON. Then every place an operator, a log shipper or anyone with read
//! access can look is searched for each secret, as written and as a careless encoder
//! would write it (hex, base64, `Debug`'s list of bytes): every log line, database row,
//! CLI output (error paths too), dead letter and HTTP answer.
//! A leak names the secret, the encoding and the place, so the failure needs no reading
//! of this file.

use std::process::Stdio;

use base64::Engine;
use hoox::commands::dlq::DlqRead;
use hoox_common::amqp::Topology;
use hoox_common::retry::RetryPolicy;
use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::support::exchanges::{Fault, Kind, MockExchange};
use crate::support::{
    amqp_url, database_url, delete_queues_at, eventually, free_addr, hoox_with_queues,
    unique_queue, DEADLINE,
};

/// Everything every crate can log: the most a troubleshooting operator can turn on
/// (at TRACE, lapin wrote the broker password until telemetry capped it).
const LOG_FILTER: &str = "trace";

/// A service of `hoox run` that answers HTTP besides the webhook.
#[derive(Debug, Clone, Copy)]
enum Service {
    Ingest,
    Consumer,
}

/// The endpoints scraped from each running `hoox run`. `/metrics` joins this list, for
/// both services, when it exists: its labels must not carry a secret either.
const SCRAPED_ENDPOINTS: [(Service, &str); 4] = [
    (Service::Ingest, "/healthz"),
    (Service::Ingest, "/readyz"),
    (Service::Consumer, "/healthz"),
    (Service::Consumer, "/readyz"),
];

fn fake(label: &str) -> String {
    format!("SECRET{label}-{}", Uuid::new_v4().simple())
}

/// An exchange's key pair.
struct KeyPair {
    key: String,
    secret: String,
}

impl KeyPair {
    fn fake(label: &str) -> Self {
        Self {
            key: fake(&format!("{label}KEY")),
            secret: fake(&format!("{label}SECRET")),
        }
    }

    /// A mock exchange of `kind` taking only this pair.
    async fn mock(&self, kind: Kind) -> MockExchange {
        MockExchange::with_keys(kind, &self.key, &self.secret).await
    }
}

/// Every secret of the deployment, each unique to this run and greppable.
struct Secrets {
    webhook_key: String,
    rotated_webhook_key: String,
    internal_key: String,
    bybit: KeyPair,
    bybit_testnet: KeyPair,
    binance: KeyPair,
    mexc: KeyPair,
    database_password: String,
    broker_password: String,
    dashboard_password: String,
}

impl Secrets {
    fn new() -> Self {
        Self {
            webhook_key: fake("webhookKEY"),
            rotated_webhook_key: fake("rotatedWebhookKEY"),
            internal_key: fake("internalKEY"),
            bybit: KeyPair::fake("bybit"),
            bybit_testnet: KeyPair::fake("bybitTestnet"),
            binance: KeyPair::fake("binance"),
            mexc: KeyPair::fake("mexc"),
            database_password: fake("dbPASS"),
            broker_password: fake("amqpPASS"),
            dashboard_password: fake("dashboardPASS"),
        }
    }

    /// Each secret with what it is.
    fn named(&self) -> Vec<(&'static str, &str)> {
        vec![
            (
                "the webhook API key (HOOX_WEBHOOK_API_KEY)",
                &self.webhook_key,
            ),
            (
                "the rotated webhook API key (hoox config set webhooks:api_key)",
                &self.rotated_webhook_key,
            ),
            ("the signing key (HOOX_INTERNAL_KEY)", &self.internal_key),
            ("the Bybit API key", &self.bybit.key),
            ("the Bybit API secret", &self.bybit.secret),
            ("the Bybit testnet API key", &self.bybit_testnet.key),
            ("the Bybit testnet API secret", &self.bybit_testnet.secret),
            ("the Binance API key", &self.binance.key),
            ("the Binance API secret", &self.binance.secret),
            ("the MEXC API key", &self.mexc.key),
            ("the MEXC API secret", &self.mexc.secret),
            (
                "the database password (in DATABASE_URL)",
                &self.database_password,
            ),
            ("the broker password (in AMQP_URL)", &self.broker_password),
            (
                "the dashboard password (HOOX_DASHBOARD_PASSWORD)",
                &self.dashboard_password,
            ),
        ]
    }
}

/// How `secret` reads where it leaked: as written, as hex of its bytes (either case),
/// as the list of byte values that `Debug` writes, and as base64 (standard and
/// URL-safe) at each of the three alignments it can have inside a longer encoded
/// buffer, such as HTTP Basic or AMQP PLAIN credentials.
fn encodings(secret: &str) -> Vec<(&'static str, String)> {
    let bytes = secret.as_bytes();
    let mut forms = vec![
        ("as written", secret.to_owned()),
        ("as lowercase hex", hex::encode(bytes)),
        ("as uppercase hex", hex::encode_upper(bytes)),
        // `{:?}` of a byte buffer (a `Vec<u8>`, an AMQP frame's field) writes this.
        (
            "as a list of byte values",
            bytes
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    for skip in 0..3 {
        // The first `skip` bytes share a base64 group with what precedes the secret;
        // the whole groups after them encode the same wherever the secret sits.
        let aligned = &bytes[skip..];
        let whole = &aligned[..aligned.len() / 3 * 3];
        forms.push((
            "as base64",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(whole),
        ));
        forms.push((
            "as URL-safe base64",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(whole),
        ));
    }
    forms
}

/// Everything captured for the search, each text with the place it came from.
#[derive(Default)]
struct Sinks(Vec<(String, String)>);

impl Sinks {
    fn add(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.0.push((place.into(), text.into()));
    }

    /// One line per secret found, saying which secret, how encoded, and where.
    fn leaks(&self, secrets: &[(&'static str, &str)]) -> Vec<String> {
        let mut found = Vec::new();
        for (name, secret) in secrets {
            let forms = encodings(secret);
            for (place, text) in &self.0 {
                for (number, line) in text.lines().enumerate() {
                    for (form, encoded) in &forms {
                        if let Some(at) = line.find(encoded.as_str()) {
                            found.push(format!(
                                "{name} ({form}) is in {place}, line {}: {}",
                                number + 1,
                                excerpt(line, at, encoded.len())
                            ));
                        }
                    }
                }
            }
        }
        found
    }
}

/// Up to 80 characters either side of `line[at..at + len]`.
fn excerpt(line: &str, at: usize, len: usize) -> &str {
    let start = line[..at]
        .char_indices()
        .rev()
        .nth(79)
        .map_or(0, |(i, _)| i);
    let end = line[at + len..]
        .char_indices()
        .nth(80)
        .map_or(line.len(), |(i, _)| at + len + i);
    &line[start..end]
}

/// `rabbitmqctl`, which must succeed.
async fn rabbitmqctl(args: &[&str]) {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl runs (the tests need the local RabbitMQ's tools)");
    assert!(
        output.status.success(),
        "rabbitmqctl {}: {}",
        args[0],
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A broker user whose password is a secret; deleted when dropped, a failed test too.
struct BrokerUser {
    name: String,
}

impl BrokerUser {
    async fn add(password: &str) -> Self {
        let user = Self {
            name: format!("hoox-secrets-{}", Uuid::new_v4().simple()),
        };
        rabbitmqctl(&["add_user", &user.name, password]).await;
        rabbitmqctl(&["set_permissions", "-p", "/", &user.name, ".*", ".*", ".*"]).await;
        user
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}

/// `url` with `user` and `password` in it.
fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let mut url = url::Url::parse(url).expect("a URL");
    url.set_username(user).expect("the URL has a host");
    url.set_password(Some(password))
        .expect("the URL has a host");
    url.to_string()
}

/// `url` naming database `name` instead.
fn with_database(url: &str, name: &str) -> String {
    let mut url = url::Url::parse(url).expect("a URL");
    url.set_path(name);
    url.to_string()
}

/// A setting an operator got wrong, its value still carrying a secret password.
struct Broken {
    /// What is wrong, for the place's name.
    what: &'static str,
    variable: &'static str,
    value: String,
}

/// The deployment under test: URLs carrying the secret passwords, its own queues, mock
/// exchanges that only take the secret keys, and every secret.
struct Deployment {
    secrets: Secrets,
    database_url: String,
    amqp_url: String,
    topology: Topology,
    bybit: MockExchange,
    bybit_testnet: MockExchange,
    binance: MockExchange,
    mexc: MockExchange,
    http: reqwest::Client,
    _broker_user: BrokerUser,
}

impl Deployment {
    async fn start(pool: &PgPool) -> Self {
        let secrets = Secrets::new();
        let broker_user = BrokerUser::add(&secrets.broker_password).await;
        Self {
            database_url: with_credentials(
                &database_url(pool),
                "postgres",
                &secrets.database_password,
            ),
            amqp_url: with_credentials(&amqp_url(), &broker_user.name, &secrets.broker_password),
            topology: Topology::new(
                unique_queue(),
                RetryPolicy {
                    base: std::time::Duration::from_millis(5),
                    max_attempts: 3,
                    max_delay: std::time::Duration::from_millis(20),
                },
            ),
            bybit: secrets.bybit.mock(Kind::Bybit).await,
            bybit_testnet: secrets.bybit_testnet.mock(Kind::Bybit).await,
            binance: secrets.binance.mock(Kind::Binance).await,
            mexc: secrets.mexc.mock(Kind::MexcSpot).await,
            http: crate::support::client(),
            secrets,
            _broker_user: broker_user,
        }
    }

    /// The `hoox` binary with the whole deployment's environment, as an operator's
    /// `.env` would give every command.
    fn hoox(&self) -> tokio::process::Command {
        let s = &self.secrets;
        let mut command = hoox_with_queues(&self.database_url, &self.topology);
        command
            .env("AMQP_URL", &self.amqp_url)
            .env("HOOX_WEBHOOK_API_KEY", &s.webhook_key)
            .env("HOOX_INTERNAL_KEY", &s.internal_key)
            .env("HOOX_DASHBOARD_PASSWORD", &s.dashboard_password)
            .env("BYBIT_API_KEY", &s.bybit.key)
            .env("BYBIT_API_SECRET", &s.bybit.secret)
            .env("BYBIT_BASE_URL", self.bybit.url())
            .env("BYBIT_TESTNET_API_KEY", &s.bybit_testnet.key)
            .env("BYBIT_TESTNET_API_SECRET", &s.bybit_testnet.secret)
            .env("BYBIT_TESTNET_BASE_URL", self.bybit_testnet.url())
            .env("BINANCE_API_KEY", &s.binance.key)
            .env("BINANCE_API_SECRET", &s.binance.secret)
            .env("BINANCE_BASE_URL", self.binance.url())
            .env("MEXC_API_KEY", &s.mexc.key)
            .env("MEXC_API_SECRET", &s.mexc.secret)
            .env("MEXC_BASE_URL", self.mexc.url())
            .env("RUST_LOG", LOG_FILTER);
        command
    }

    /// Runs `hoox <args>`, fed `stdin` and with `broken` standing in for one of its
    /// variables, records its output, and gives its exit status.
    async fn cli(
        &self,
        sinks: &mut Sinks,
        args: &[&str],
        stdin: Option<&str>,
        broken: Option<&Broken>,
    ) -> std::process::ExitStatus {
        let mut command = self.hoox();
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut place = format!("`hoox {}`", args.join(" "));
        if let Some(broken) = broken {
            command.env(broken.variable, &broken.value);
            place = format!("{place} with {}", broken.what);
        }
        let mut child = command.spawn().expect("hoox starts");
        let mut input = child.stdin.take().expect("piped stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.expect("stdin");
        }
        drop(input);
        let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .expect("hoox finishes")
            .expect("hoox output");
        sinks.add(
            format!("{place}: stdout"),
            String::from_utf8_lossy(&output.stdout),
        );
        sinks.add(
            format!("{place}: stderr"),
            String::from_utf8_lossy(&output.stderr),
        );
        output.status
    }

    /// Runs `hoox <args>`, which must succeed.
    async fn cli_ok(&self, sinks: &mut Sinks, args: &[&str]) {
        let status = self.cli(sinks, args, None, None).await;
        assert!(status.success(), "hoox {} failed: {status}", args.join(" "));
    }

    /// Waits until `request_id` has a fill, and gives its exchange and testnet flag.
    async fn fill(&self, pool: &PgPool, request_id: Uuid) -> (String, bool) {
        eventually("the fill", || async {
            sqlx::query_as("SELECT exchange, testnet FROM fills WHERE request_id = $1")
                .bind(request_id)
                .fetch_optional(pool)
                .await
                .ok()
                .flatten()
        })
        .await
    }

    /// Waits until `request_id` is dead-lettered, and gives its reason.
    async fn dead_letter(&self, request_id: Uuid) -> String {
        let connection = crate::support::broker().await;
        let reason = eventually("the dead letter", || async {
            let read = DlqRead::open(&connection, &self.topology, None)
                .await
                .ok()?;
            let reason = read
                .letters
                .iter()
                .find(|l| l.request_id == Some(request_id))
                .map(|l| l.reason.clone());
            read.finish().await.ok()?;
            reason
        })
        .await;
        let _ = connection.close(200, "done".into()).await;
        reason
    }
}

/// `hoox run` as a child process, its stdout and stderr captured.
struct Running {
    format: &'static str,
    child: Child,
    ingest: String,
    consumer: String,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

fn drain(mut pipe: impl AsyncRead + Unpin + Send + 'static) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes).await;
        bytes
    })
}

impl Running {
    /// Starts `hoox run` logging in `format`, and waits until both services are ready.
    async fn start(deployment: &Deployment, format: &'static str) -> Self {
        let (ingest, consumer) = (free_addr(), free_addr());
        let mut child = deployment
            .hoox()
            .arg("run")
            .env("HOOX_LOG_FORMAT", format)
            .env("HOOX_INGEST_ADDR", &ingest)
            .env("HOOX_CONSUMER_ADDR", &consumer)
            .env("HOOX_DASHBOARD_ADDR", free_addr())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hoox run starts");
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let running = Self {
            format,
            child,
            ingest,
            consumer,
            stdout,
            stderr,
        };
        for addr in [&running.ingest, &running.consumer] {
            let url = format!("http://{addr}/readyz");
            eventually("hoox run ready", || async {
                let response = deployment.http.get(&url).send().await.ok()?;
                (response.status() == 200).then_some(())
            })
            .await;
        }
        running
    }

    fn addr(&self, service: Service) -> &str {
        match service {
            Service::Ingest => &self.ingest,
            Service::Consumer => &self.consumer,
        }
    }

    /// Posts a webhook `body` with `headers`, records the whole answer as `what`, and
    /// gives its status and envelope.
    async fn post(
        &self,
        deployment: &Deployment,
        sinks: &mut Sinks,
        what: &str,
        body: String,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = deployment
            .http
            .post(format!("http://{}/webhook", self.ingest))
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("ingest answers");
        let status = response.status().as_u16();
        let head = format!("{status} {:?}", response.headers());
        let text = response.text().await.expect("an answer body");
        sinks.add(
            format!("ingest's answer to {what} ({} run)", self.format),
            format!("{head}\n{text}"),
        );
        let envelope = serde_json::from_str(&text).expect("ingest answers JSON");
        (status, envelope)
    }

    /// Posts `body`, which must be accepted, and gives its request id.
    async fn accepted(
        &self,
        deployment: &Deployment,
        sinks: &mut Sinks,
        what: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Uuid {
        let (status, envelope) = self
            .post(deployment, sinks, what, body.to_string(), headers)
            .await;
        assert_eq!(status, 202, "{what}: {envelope}");
        envelope["result"]["requestId"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("a request id")
    }

    /// Records every endpoint of [`SCRAPED_ENDPOINTS`].
    async fn scrape(&self, deployment: &Deployment, sinks: &mut Sinks) {
        for (service, path) in SCRAPED_ENDPOINTS {
            let url = format!("http://{}{path}", self.addr(service));
            let response = deployment.http.get(&url).send().await.expect("answers");
            let head = format!("{} {:?}", response.status(), response.headers());
            let text = response.text().await.expect("a body");
            sinks.add(
                format!("{service:?} {path} ({} run)", self.format),
                format!("{head}\n{text}"),
            );
        }
    }

    /// Stops it with SIGTERM, as an operator would, records everything it wrote, and
    /// gives its log (stderr).
    async fn stop(mut self, sinks: &mut Sinks) -> String {
        let pid = self.child.id().expect("still running");
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("hoox run exits")
            .expect("wait");
        let stdout = String::from_utf8_lossy(&self.stdout.await.expect("stdout")).into_owned();
        let stderr = String::from_utf8_lossy(&self.stderr.await.expect("stderr")).into_owned();
        sinks.add(
            format!("`hoox run` ({} logs): stdout", self.format),
            &stdout,
        );
        sinks.add(
            format!("`hoox run` ({} logs): stderr", self.format),
            &stderr,
        );
        stderr
    }
}

/// A market order for `exchange` (paper when `None`), authenticated by `key` in the
/// body when given; each one new, so none is a duplicate of another.
fn order(key: Option<&str>, exchange: Option<&str>) -> Value {
    let mut body = json!({
        "action": "LONG",
        "symbol": "BTCUSDT",
        "quantity": "0.005",
        "price": 68000,
        "idempotencyKey": Uuid::new_v4().to_string(),
    });
    if let Some(key) = key {
        body["apiKey"] = json!(key);
    }
    if let Some(exchange) = exchange {
        body["exchange"] = json!(exchange);
    }
    if matches!(exchange, Some("bybit" | "binance")) {
        body["leverage"] = json!(5);
    }
    body
}

/// The signals of one run of the flow, by how each must end.
#[derive(Default)]
struct Sent {
    /// Filled, with the exchange and testnet flag each must have filled on.
    filled: Vec<(Uuid, &'static str, bool)>,
    /// Dead-lettered as fatal.
    dead: Vec<Uuid>,
}

/// One pass of the flow on a running `hoox run` whose webhook key is `key`: a fill on
/// each exchange (Bybit after a rate limit, and on its testnet), one with the key in the
/// header, one rejected into the dead-letter queue, and refusals (a key pasted with its
/// line end: 401; a broken body carrying the key: 400).
async fn flow(
    deployment: &Deployment,
    pool: &PgPool,
    running: &Running,
    sinks: &mut Sinks,
    key: &str,
    sent: &mut Sent,
) {
    deployment.bybit.fail_next(&[Fault::RateLimit]);
    for (exchange, test) in [
        ("bybit", false),
        ("binance", false),
        ("mexc", false),
        ("bybit", true),
    ] {
        let mut body = order(Some(key), Some(exchange));
        body["test"] = json!(test);
        let what = format!("a {exchange} order (test: {test})");
        let id = running.accepted(deployment, sinks, &what, &body, &[]).await;
        // Each fills before the next is sent, so a fault meets the order it is meant for.
        assert_eq!(
            deployment.fill(pool, id).await,
            (exchange.to_owned(), test),
            "{what}"
        );
        sent.filled.push((id, exchange, test));
    }
    let id = running
        .accepted(
            deployment,
            sinks,
            "an order with the key in X-Api-Key",
            &order(None, None),
            &[("X-Api-Key", key)],
        )
        .await;
    sent.filled.push((id, "paper", false));

    deployment.binance.fail_next(&[Fault::Reject]);
    let id = running
        .accepted(
            deployment,
            sinks,
            "an order binance rejects",
            &order(Some(key), Some("binance")),
            &[],
        )
        .await;
    sent.dead.push(id);

    let pasted = format!("{key}\n");
    let (status, _) = running
        .post(
            deployment,
            sinks,
            "a key pasted with its line end",
            order(Some(&pasted), None).to_string(),
            &[],
        )
        .await;
    assert_eq!(status, 401);
    let broken = format!(r#"{{"apiKey": "{key}", "action": "LONG", "symbol": "#);
    let (status, _) = running
        .post(
            deployment,
            sinks,
            "a broken body carrying the key",
            broken,
            &[],
        )
        .await;
    assert_eq!(status, 400);
    running.scrape(deployment, sinks).await;
}

/// Every row of every table in the database, one sink per table.
async fn dump_tables(pool: &PgPool, sinks: &mut Sinks) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list tables");
    for table in &tables {
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM {quoted} t"))
            .fetch_all(pool)
            .await
            .expect("dump table");
        sinks.add(format!("table {table}"), rows.join("\n"));
    }
    tables
}

/// An AMQP value as text, strings as their characters rather than their bytes.
fn amqp_text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        AMQPValue::FieldArray(items) => items
            .as_slice()
            .iter()
            .map(amqp_text)
            .collect::<Vec<_>>()
            .join(", "),
        AMQPValue::FieldTable(table) => table_text(table),
        other => format!("{other:?}"),
    }
}

fn table_text(table: &FieldTable) -> String {
    table
        .inner()
        .iter()
        .map(|(name, value)| format!("{}: {}", name.as_str(), amqp_text(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every dead letter's properties, headers and body, read without removing any.
async fn dump_dead_letters(topology: &Topology, sinks: &mut Sinks) -> usize {
    let connection = crate::support::broker().await;
    let channel = connection.create_channel().await.expect("channel");
    let mut n = 0;
    while let Some(got) = channel
        .basic_get(
            topology.dlq().as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .expect("basic.get")
    {
        n += 1;
        let delivery = got.delivery;
        let headers = delivery
            .properties
            .headers()
            .as_ref()
            .map(table_text)
            .unwrap_or_default();
        sinks.add(
            format!("dead letter {n}'s properties and headers"),
            format!("{:?}\n{headers}", delivery.properties),
        );
        sinks.add(
            format!("dead letter {n}'s body"),
            String::from_utf8_lossy(&delivery.data),
        );
    }
    // Closing the channel hands every unacknowledged dead letter back, in its place.
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;
    n
}

#[sqlx::test(migrator = "hoox_common::db::MIGRATOR")]
async fn no_secret_appears_in_any_log_row_output_or_dead_letter(pool: PgPool) {
    let deployment = Deployment::start(&pool).await;
    let secrets = &deployment.secrets;
    let mut sinks = Sinks::default();
    let mut sent = Sent::default();

    // First run, text logs: the flow, then the webhook key rotated through the CLI.
    let running = Running::start(&deployment, "text").await;
    flow(
        &deployment,
        &pool,
        &running,
        &mut sinks,
        &secrets.webhook_key,
        &mut sent,
    )
    .await;
    let status = deployment
        .cli(
            &mut sinks,
            &["config", "set", "webhooks:api_key", "-"],
            Some(&format!("{}\n", secrets.rotated_webhook_key)),
            None,
        )
        .await;
    assert!(status.success(), "config set webhooks:api_key: {status}");
    let rotated = eventually("the rotated key accepted", || async {
        let body = order(Some(&secrets.rotated_webhook_key), None);
        let (status, envelope) = running
            .post(
                &deployment,
                &mut Sinks::default(),
                "the rotated key while it propagates",
                body.to_string(),
                &[],
            )
            .await;
        (status == 202).then(|| envelope["result"]["requestId"].as_str().map(str::to_owned))?
    })
    .await;
    sent.filled
        .push((rotated.parse().expect("a uuid"), "paper", false));
    let first_log = running.stop(&mut sinks).await;

    // Second run, JSON logs: the flow with the rotated key; the old key is refused.
    let second_run_first = sent.filled.len();
    let running = Running::start(&deployment, "json").await;
    flow(
        &deployment,
        &pool,
        &running,
        &mut sinks,
        &secrets.rotated_webhook_key,
        &mut sent,
    )
    .await;
    let (status, _) = running
        .post(
            &deployment,
            &mut sinks,
            "an order with the key replaced by rotation",
            order(Some(&secrets.webhook_key), None).to_string(),
            &[],
        )
        .await;
    assert_eq!(status, 401);
    for (id, exchange, testnet) in &sent.filled {
        assert_eq!(
            deployment.fill(&pool, *id).await,
            (exchange.to_string(), *testnet),
            "{id}"
        );
    }
    for id in &sent.dead {
        assert_eq!(deployment.dead_letter(*id).await, "fatal", "{id}");
    }
    let second_log = running.stop(&mut sinks).await;

    // The operator's commands, on everything the runs left.
    let (filled, _, _) = sent.filled[0];
    let dead = sent.dead[0];
    for id in [filled, dead] {
        let id = id.to_string();
        deployment.cli_ok(&mut sinks, &["trace", &id]).await;
        deployment
            .cli_ok(&mut sinks, &["trace", &id, "--json"])
            .await;
    }
    let dead = dead.to_string();
    for args in [
        &["dlq", "list"][..],
        &["dlq", "list", "--json"],
        &["dlq", "show", &dead],
        &["dlq", "show", &dead, "--json"],
        &["config", "list"],
        &["config", "get", "webhooks:api_key"],
        &["kill-switch", "show"],
        &["migrate"],
        &["--help"],
        &["run", "--help"],
    ] {
        deployment.cli_ok(&mut sinks, args).await;
    }

    // Error paths: settings gone wrong, each URL still carrying a secret password.
    let (database_password, broker_password) =
        (&secrets.database_password, &secrets.broker_password);
    let closed = free_addr();
    let broken = |what, variable, value| Broken {
        what,
        variable,
        value,
    };
    let database = "DATABASE_URL";
    let broker = "AMQP_URL";
    let config_get = &["config", "get", "webhooks:api_key"][..];
    let dlq_list = &["dlq", "list"][..];
    let wrong = [
        (
            config_get,
            broken(
                "a missing database",
                database,
                with_database(&deployment.database_url, "hoox_no_such_database"),
            ),
        ),
        (
            config_get,
            broken(
                "an unreachable database",
                database,
                format!("postgres://postgres:{database_password}@{closed}/hoox"),
            ),
        ),
        (
            &["migrate"][..],
            broken(
                "an unreadable database URL",
                database,
                format!("postgres://postgres:{database_password}@127.0.0.1:port/hoox"),
            ),
        ),
        (
            dlq_list,
            broken(
                "a broker refusing the login",
                broker,
                with_credentials(&amqp_url(), "nobody", broker_password),
            ),
        ),
        (
            dlq_list,
            broken(
                "an unreachable broker",
                broker,
                format!("amqp://nobody:{broker_password}@{closed}/%2f"),
            ),
        ),
        (
            dlq_list,
            broken(
                "an unreadable broker URL",
                broker,
                format!("amqp://nobody:{broker_password}@127.0.0.1:port/%2f"),
            ),
        ),
    ];
    for (args, broken) in &wrong {
        let status = deployment.cli(&mut sinks, args, None, Some(broken)).await;
        assert!(
            !status.success(),
            "hoox {} with {}",
            args.join(" "),
            broken.what
        );
    }

    // The stores: every row of every table, every dead letter.
    let tables = dump_tables(&pool, &mut sinks).await;
    for expected in ["config", "fills", "idempotency_keys", "system_logs"] {
        assert!(tables.iter().any(|t| t == expected), "{tables:?}");
    }
    let letters = dump_dead_letters(&deployment.topology, &mut sinks).await;
    assert_eq!(letters, sent.dead.len());

    // The capture worked: each run logged its signals, the second in JSON.
    let first_id = sent.filled[0].0.to_string();
    let second_id = sent.filled[second_run_first].0.to_string();
    assert!(
        first_log.contains(&first_id),
        "{first_id} not in the text log"
    );
    assert!(
        second_log.contains(&second_id),
        "{second_id} not in the JSON log"
    );
    assert!(second_log
        .lines()
        .all(|line| serde_json::from_str::<Value>(line).is_ok()));

    let leaks = sinks.leaks(&secrets.named());
    assert!(
        leaks.is_empty(),
        "{} secret(s) leaked, searched in {} places:\n{}",
        leaks.len(),
        sinks.0.len(),
        leaks.join("\n")
    );
    delete_queues_at(&amqp_url(), &deployment.topology).await;
}

/// The search itself finds a secret however it was written: plainly, as hex inside a
/// longer buffer, as `Debug`'s byte list, and inside base64 at any alignment (AMQP
/// PLAIN, HTTP Basic).
#[test]
fn the_search_finds_a_secret_written_plainly_as_hex_as_bytes_or_inside_base64() {
    let secret = fake("probe");
    let b64 = base64::engine::general_purpose::STANDARD;
    let url_b64 = base64::engine::general_purpose::URL_SAFE;
    let mut sinks = Sinks::default();
    sinks.add("plain", format!("key={secret} done"));
    sinks.add("hex", format!("0x00ff{}", hex::encode(&secret)));
    sinks.add("HEX", hex::encode_upper(format!("k:{secret}")));
    sinks.add(
        "bytes",
        format!("response: {:?}", format!("\0u\0{secret}").as_bytes()),
    );
    for prefix in ["", "u", "us", "user:"] {
        sinks.add(
            format!("base64 after {prefix:?}"),
            format!("Basic {}", b64.encode(format!("{prefix}{secret}x"))),
        );
    }
    sinks.add(
        "AMQP PLAIN",
        url_b64.encode(format!("\0guest\0{secret}").as_bytes()),
    );
    sinks.add("innocent", "nothing secret here\nSECRETprobe- alone");
    let leaks = sinks.leaks(&[("the probe", &secret)]);
    let places: Vec<&str> = sinks.0.iter().map(|(p, _)| p.as_str()).collect();
    for place in &places[..places.len() - 1] {
        assert!(
            leaks.iter().any(|l| l.contains(&format!("is in {place},"))),
            "{place} not found: {leaks:?}"
        );
    }
    assert!(!leaks.iter().any(|l| l.contains("innocent")), "{leaks:?}");
}
