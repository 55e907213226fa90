//! `hoox health`: can this deployment take and execute signals right now? One command
//! for people at a terminal and for container health checks (`--json`, exit status).
//!
//! It only looks: the database is opened with [`db::connect_existing`] (never created
//! or migrated), and every queue is declared *passively*, which reads its depth and
//! consumer count and fails if it is missing, so health pointed at the wrong vhost
//! reports the missing queues instead of creating them there. The DLQ's head is read
//! with `basic.get` and handed back unacknowledged by closing the channel, as `hoox dlq`
//! reads.
//!
//! What fails the check (a *problem*, exit 1): the broker unreachable; the database
//! missing, unreachable or not at this build's migrations; a queue missing; the main
//! queue without a consumer (signals would pile up); routing to an exchange with no
//! keys; with `--exchanges`, keys that do not work or cannot trade. What only warns:
//! dead letters waiting (they need an operator, but new signals still flow), the kill
//! switch on (an operator's decision, not a fault), routing to an exchange with test
//! keys only, and keys that can withdraw.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, Utc};
use hoox_common::amqp::{self, Nodes};
use hoox_common::config::{AmqpArgs, DatabaseArgs};
use hoox_common::db::{self, DbError};
use hoox_common::dead_letter::DeadLetter;
use hoox_common::runtime_config::{is_on, DEFAULT_ROUTING, KILL_SWITCH};
use hoox_common::signal::ExchangeName;
use hoox_consumer::config::ExchangeArgs;
use hoox_consumer::exchange::Exchange;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::Connection;
use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::PgPool;

use super::age;
use crate::terminal::{self, escape};

/// The prefix of the per-symbol routing overrides in the `config` table.
const ROUTING_PREFIX: &str = "exchanges:routing:";

/// Arguments of `hoox health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Print one JSON object for scripts, with a `healthy` flag and a `problems` list.
    #[arg(long)]
    pub json: bool,

    /// Also make one signed read-only call per configured exchange key (live and
    /// testnet): do the keys work, can they trade, can they withdraw.
    #[arg(long)]
    pub exchanges: bool,

    #[command(flatten)]
    pub amqp: AmqpArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub keys: ExchangeArgs,
}

/// What `hoox health` found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// No problems: exit status 0.
    pub healthy: bool,
    /// The message broker.
    pub broker: Broker,
    /// The database.
    pub database: Database,
    /// The main queue, each delay tier and the DLQ, in that order.
    pub queues: Vec<QueueState>,
    /// The dead-letter queue's contents.
    pub dead_letters: DeadLetters,
    /// When the last fill was executed; none before the first.
    pub last_fill_at: Option<DateTime<Utc>>,
    /// Whether the kill switch is on; unknown without the database.
    pub kill_switch: Option<bool>,
    /// The routing settings: the default route and every per-symbol override.
    pub routing: Vec<Route>,
    /// Each real exchange environment: keys configured, and with `--exchanges` what
    /// the exchange says of them.
    pub exchanges: Vec<ExchangeState>,
    /// What makes the deployment unhealthy, one per problem.
    pub problems: Vec<Finding>,
    /// What an operator should know that does not stop signals from flowing.
    pub warnings: Vec<Finding>,
}

/// The broker's state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Broker {
    /// A node of `AMQP_URL` accepted a connection.
    pub reachable: bool,
    /// The nodes of `AMQP_URL` as `host:port`, in the order tried.
    pub nodes: Vec<String>,
}

/// The database's state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Database {
    /// The server answered and the database exists.
    pub reachable: bool,
    /// Its applied migrations are exactly this build's.
    pub migrations_current: bool,
}

/// What a queue is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueRole {
    /// The main queue: the inbox that retries return to, forwarded to the partitions.
    Main,
    /// A partition queue: the signals of the symbols that hash to it.
    Partition,
    /// A delay tier, waiting out a retry.
    Retry,
    /// The dead-letter queue.
    Dlq,
}

/// One queue, as a passive declare reports it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueState {
    /// The queue's name.
    pub name: String,
    /// What it is for.
    pub role: QueueRole,
    /// Whether it exists on this vhost.
    pub exists: bool,
    /// Messages ready in it.
    pub messages: Option<u32>,
    /// Consumers attached to it.
    pub consumers: Option<u32>,
}

/// The DLQ, counted, with its oldest letter.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetters {
    /// How many dead letters wait; unknown without the broker.
    pub count: Option<u32>,
    /// When the oldest was dead-lettered.
    pub oldest_at: Option<DateTime<Utc>>,
    /// How long ago that was, in seconds.
    pub oldest_age_secs: Option<i64>,
    /// Why the oldest was dead-lettered.
    pub oldest_reason: Option<String>,
}

/// One routing setting.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The config key: `exchanges:default_routing` or `exchanges:routing:<SYMBOL>`.
    pub key: String,
    /// The exchange it names.
    pub exchange: String,
}

/// One environment of one exchange.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeState {
    /// The exchange.
    pub exchange: ExchangeName,
    /// Its test environment (signals with `"test": true`) rather than the live one.
    pub testnet: bool,
    /// Both key and secret are set.
    pub keys_configured: bool,
    /// With `--exchanges` and keys: what the exchange said of them.
    pub check: Option<KeyState>,
}

/// What one signed read-only call said of a key.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyState {
    /// The exchange accepted the key and its signature.
    pub works: bool,
    /// The key may trade; none when the exchange does not say.
    pub can_trade: Option<bool>,
    /// The key may withdraw; none when the exchange does not say.
    pub can_withdraw: Option<bool>,
    /// Why it does not work.
    pub error: Option<String>,
}

/// Which part of the deployment a finding is about: stable names for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The message broker.
    Broker,
    /// The database and its migrations.
    Database,
    /// A queue of the topology.
    Queue,
    /// Consumers of the main queue.
    Consumers,
    /// The dead-letter queue.
    DeadLetters,
    /// The kill switch.
    KillSwitch,
    /// The routing settings.
    Routing,
    /// An exchange's API keys.
    ExchangeKeys,
}

/// One problem or warning.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// What it is about.
    pub check: Check,
    /// What is wrong, for people.
    pub message: String,
}

/// The report under construction.
struct Findings {
    problems: Vec<Finding>,
    warnings: Vec<Finding>,
}

impl Findings {
    fn problem(&mut self, check: Check, message: String) {
        self.problems.push(Finding { check, message });
    }

    fn warning(&mut self, check: Check, message: String) {
        self.warnings.push(Finding { check, message });
    }
}

/// Looks at the broker, the database and (with `check_keys`) the exchanges, and says
/// what it found; never changes any of them.
pub async fn inspect(args: &HealthArgs, check_keys: bool) -> Report {
    let mut findings = Findings {
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let (broker, queues, dead_letters) = inspect_broker(&args.amqp, &mut findings).await;
    let (database, settings) = inspect_database(&args.database, &mut findings).await;
    let providers = args.keys.providers();
    let exchanges = inspect_exchanges(&providers, check_keys, &mut findings).await;
    if let Some(settings) = &settings {
        if settings.kill_switch {
            findings.warning(
                Check::KillSwitch,
                "the kill switch is on: signals are dead-lettered, not traded".to_owned(),
            );
        }
        check_routing(&settings.routing, &providers, &mut findings);
    }
    Report {
        healthy: findings.problems.is_empty(),
        broker,
        database,
        queues,
        dead_letters,
        last_fill_at: settings.as_ref().and_then(|s| s.last_fill_at),
        kill_switch: settings.as_ref().map(|s| s.kill_switch),
        routing: settings.map(|s| s.routing).unwrap_or_default(),
        exchanges,
        problems: findings.problems,
        warnings: findings.warnings,
    }
}

async fn inspect_broker(
    amqp: &AmqpArgs,
    findings: &mut Findings,
) -> (Broker, Vec<QueueState>, DeadLetters) {
    let nodes = Nodes::parse(amqp.amqp_url.expose_secret())
        .map(|nodes| nodes.names().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    let topology = amqp.topology();
    let mut names = vec![(topology.queue().to_owned(), QueueRole::Main)];
    names.extend(
        topology
            .partition_queues()
            .map(|q| (q, QueueRole::Partition)),
    );
    names.extend(
        topology
            .retry_policy()
            .tiers()
            .into_iter()
            .map(|delay| (topology.retry_queue(delay), QueueRole::Retry)),
    );
    names.push((topology.dlq(), QueueRole::Dlq));

    let connection = match amqp::connect(&amqp.amqp_url, "hoox-health").await {
        Ok(connection) => connection,
        Err(err) => {
            // The error names nodes by host:port, never by URL.
            findings.problem(Check::Broker, format!("broker unreachable: {err}"));
            let queues = names
                .into_iter()
                .map(|(name, role)| QueueState {
                    name,
                    role,
                    exists: false,
                    messages: None,
                    consumers: None,
                })
                .collect();
            let broker = Broker {
                reachable: false,
                nodes,
            };
            return (broker, queues, DeadLetters::default());
        }
    };
    let mut queues = Vec::new();
    for (name, role) in names {
        queues.push(inspect_queue(&connection, name, role, findings).await);
    }
    let mut dead_letters = DeadLetters::default();
    if let Some(dlq) = queues.iter().find(|q| q.role == QueueRole::Dlq && q.exists) {
        dead_letters.count = dlq.messages;
        if dlq.messages.unwrap_or(0) > 0 {
            match oldest_dead_letter(&connection, &dlq.name).await {
                Ok(Some(letter)) => {
                    dead_letters.oldest_at = letter.dead_lettered_at;
                    dead_letters.oldest_age_secs =
                        letter.age(Utc::now()).map(|age| age.num_seconds());
                    dead_letters.oldest_reason = Some(letter.reason);
                }
                Ok(None) => {}
                Err(err) => findings.warning(
                    Check::DeadLetters,
                    format!("cannot read the oldest dead letter: {err}"),
                ),
            }
            findings.warning(
                Check::DeadLetters,
                format!(
                    "{} dead letter(s) wait in {}{}; see `hoox dlq list`",
                    dead_letters.count.unwrap_or(0),
                    dlq.name,
                    dead_letters
                        .oldest_age_secs
                        .map(|secs| format!(", the oldest for {}", age(secs)))
                        .unwrap_or_default()
                ),
            );
        }
    }
    let _ = connection.close(200, "done".into()).await;
    let broker = Broker {
        reachable: true,
        nodes,
    };
    (broker, queues, dead_letters)
}

/// Declares `name` passively on a channel of its own (a missing queue closes the
/// channel it was asked on).
async fn inspect_queue(
    connection: &Connection,
    name: String,
    role: QueueRole,
    findings: &mut Findings,
) -> QueueState {
    let declared = async {
        let channel = connection.create_channel().await?;
        let queue = channel
            .queue_declare(
                ShortString::from(name.as_str()),
                // passive: report the queue if it exists, never create it.
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = channel.close(200, "done".into()).await;
        Ok::<_, lapin::Error>(queue)
    }
    .await;
    match declared {
        Ok(queue) => {
            if role == QueueRole::Main && queue.consumer_count() == 0 {
                findings.problem(
                    Check::Consumers,
                    format!("queue {name} has no consumer: signals pile up until a consumer runs"),
                );
            } else if role == QueueRole::Partition && queue.consumer_count() == 0 {
                findings.problem(
                    Check::Consumers,
                    format!("partition {name} has no consumer: its symbols' signals wait until a consumer leases it"),
                );
            }
            QueueState {
                name,
                role,
                exists: true,
                messages: Some(queue.message_count()),
                consumers: Some(queue.consumer_count()),
            }
        }
        Err(err) => {
            findings.problem(
                Check::Queue,
                format!("queue {name} is missing or unreadable ({err}); is HOOX_QUEUE or the vhost wrong, or has nothing started yet?"),
            );
            QueueState {
                name,
                role,
                exists: false,
                messages: None,
                consumers: None,
            }
        }
    }
}

/// The DLQ's head, read and handed back: closing the channel returns the
/// unacknowledged message to its place.
async fn oldest_dead_letter(
    connection: &Connection,
    dlq: &str,
) -> Result<Option<DeadLetter>, lapin::Error> {
    let channel = connection.create_channel().await?;
    let got = channel
        .basic_get(dlq.into(), BasicGetOptions { no_ack: false })
        .await?;
    let letter = got.map(|got| DeadLetter::from_delivery(&got.delivery, None));
    channel.close(200, "done".into()).await?;
    Ok(letter)
}

/// What the database says about trading.
struct Settings {
    last_fill_at: Option<DateTime<Utc>>,
    kill_switch: bool,
    routing: Vec<Route>,
}

async fn inspect_database(
    database: &DatabaseArgs,
    findings: &mut Findings,
) -> (Database, Option<Settings>) {
    let pool = match db::connect_existing(&database.database_url, 1).await {
        Ok(pool) => pool,
        Err(err) => {
            let reachable = !matches!(err, DbError::Connect(_) | DbError::Missing { .. });
            findings.problem(Check::Database, err.to_string());
            let state = Database {
                reachable,
                migrations_current: false,
            };
            return (state, None);
        }
    };
    let state = Database {
        reachable: true,
        migrations_current: true,
    };
    let settings = read_settings(&pool).await;
    pool.close().await;
    match settings {
        Ok(settings) => (state, Some(settings)),
        Err(err) => {
            findings.problem(
                Check::Database,
                format!("cannot read fills and settings: {err}"),
            );
            (state, None)
        }
    }
}

async fn read_settings(pool: &PgPool) -> Result<Settings, sqlx::Error> {
    let last_fill_at: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT max(executed_at) FROM fills")
            .fetch_one(pool)
            .await?;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT key, value FROM config WHERE key = $1 OR key = $2 OR starts_with(key, $3) ORDER BY key",
    )
    .bind(KILL_SWITCH)
    .bind(DEFAULT_ROUTING)
    .bind(ROUTING_PREFIX)
    .fetch_all(pool)
    .await?;
    let kill_switch = rows
        .iter()
        .any(|(key, value)| key == KILL_SWITCH && is_on(value));
    let mut routing: Vec<Route> = rows
        .into_iter()
        .filter(|(key, _)| key != KILL_SWITCH)
        .map(|(key, exchange)| Route { key, exchange })
        .collect();
    // The default first, then the overrides by symbol.
    routing.sort_by_key(|route| route.key != DEFAULT_ROUTING);
    Ok(Settings {
        last_fill_at,
        kill_switch,
        routing,
    })
}

/// Routing to an exchange that cannot sign is a problem: every signal sent there is
/// dead-lettered. Test keys alone only warn, since test signals do trade.
fn check_routing(routing: &[Route], providers: &[Arc<dyn Exchange>], findings: &mut Findings) {
    for route in routing {
        let Ok(name) = route.exchange.parse::<ExchangeName>() else {
            findings.problem(
                Check::Routing,
                format!("{} names no exchange: {:?}", route.key, route.exchange),
            );
            continue;
        };
        let Some(provider) = providers.iter().find(|p| p.name() == name) else {
            continue;
        };
        match (provider.has_credentials(false), provider.has_credentials(true)) {
            (true, _) => {}
            (false, true) => findings.warning(
                Check::Routing,
                format!("{} routes to {name}, which has test keys only: live signals sent there are dead-lettered", route.key),
            ),
            (false, false) => findings.problem(
                Check::Routing,
                format!("{} routes to {name}, which has no API keys: signals sent there are dead-lettered", route.key),
            ),
        }
    }
}

/// How long one exchange may take to answer a key check, clock sync included.
const KEY_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

async fn inspect_exchanges(
    providers: &[Arc<dyn Exchange>],
    check_keys: bool,
    findings: &mut Findings,
) -> Vec<ExchangeState> {
    let mut states = Vec::new();
    for provider in providers {
        for testnet in [false, true] {
            let exchange = provider.name();
            let keys_configured = provider.has_credentials(testnet);
            let check = if check_keys && keys_configured {
                let environment = if testnet { "testnet" } else { "live" };
                let answer =
                    tokio::time::timeout(KEY_CHECK_TIMEOUT, provider.check_keys(testnet)).await;
                let state = match answer {
                    Ok(Ok(keys)) => KeyState {
                        works: true,
                        can_trade: keys.can_trade,
                        can_withdraw: keys.can_withdraw,
                        error: None,
                    },
                    Ok(Err(err)) => KeyState {
                        works: false,
                        can_trade: None,
                        can_withdraw: None,
                        error: Some(err.to_string()),
                    },
                    Err(_) => KeyState {
                        works: false,
                        can_trade: None,
                        can_withdraw: None,
                        error: Some(format!("no answer within {KEY_CHECK_TIMEOUT:?}")),
                    },
                };
                if let Some(error) = &state.error {
                    findings.problem(
                        Check::ExchangeKeys,
                        format!("{exchange} {environment} keys do not work: {error}"),
                    );
                }
                if state.can_trade == Some(false) {
                    findings.problem(
                        Check::ExchangeKeys,
                        format!("{exchange} {environment} keys cannot trade"),
                    );
                }
                if state.can_withdraw == Some(true) {
                    findings.warning(
                        Check::ExchangeKeys,
                        format!("{exchange} {environment} keys can withdraw: hoox never needs it; create keys without withdrawal permission"),
                    );
                }
                Some(state)
            } else {
                None
            };
            states.push(ExchangeState {
                exchange,
                testnet,
                keys_configured,
                check,
            });
        }
    }
    states
}

fn yes_no(value: Option<bool>, yes: &str, no: &str) -> String {
    match value {
        Some(true) => yes.to_owned(),
        Some(false) => no.to_owned(),
        None => "unknown".to_owned(),
    }
}

/// The report for people: one line per part, then one per problem and warning.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let mut line = |label: &str, text: String| {
        out.push_str(&format!("{label:<13} {}\n", escape(&text)));
    };
    line(
        "broker",
        format!(
            "{} ({})",
            if report.broker.reachable {
                "reachable"
            } else {
                "UNREACHABLE"
            },
            report.broker.nodes.join(", ")
        ),
    );
    line(
        "database",
        match (
            report.database.reachable,
            report.database.migrations_current,
        ) {
            (true, true) => "reachable, migrations current".to_owned(),
            (true, false) => "reachable, MIGRATIONS NOT CURRENT".to_owned(),
            (false, _) => "UNREACHABLE".to_owned(),
        },
    );
    for queue in &report.queues {
        let role = match queue.role {
            QueueRole::Main => "queue",
            QueueRole::Partition => "partition",
            QueueRole::Retry => "retry queue",
            QueueRole::Dlq => "dead letters",
        };
        line(
            role,
            match (queue.messages, queue.consumers) {
                (Some(messages), Some(consumers))
                    if matches!(queue.role, QueueRole::Main | QueueRole::Partition) =>
                {
                    format!(
                        "{}: {messages} message(s), {consumers} consumer(s)",
                        queue.name
                    )
                }
                (Some(messages), _) => format!("{}: {messages} message(s)", queue.name),
                _ => format!("{}: MISSING", queue.name),
            },
        );
    }
    if let (Some(secs), Some(reason)) = (
        report.dead_letters.oldest_age_secs,
        &report.dead_letters.oldest_reason,
    ) {
        line("oldest dead", format!("{} ago ({reason})", age(secs)));
    }
    line(
        "last fill",
        match report.last_fill_at {
            Some(at) => format!(
                "{} ({} ago)",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                age((Utc::now() - at).num_seconds())
            ),
            None if report.database.migrations_current => "none yet".to_owned(),
            None => "unknown".to_owned(),
        },
    );
    line(
        "kill switch",
        yes_no(report.kill_switch, "ON: trading halted", "off"),
    );
    for route in &report.routing {
        line("routing", format!("{} -> {}", route.key, route.exchange));
    }
    if report.routing.is_empty() && report.kill_switch.is_some() {
        line(
            "routing",
            "none set: signals without an exchange go to paper".to_owned(),
        );
    }
    for state in &report.exchanges {
        let environment = if state.testnet { "testnet" } else { "live" };
        let text = match (&state.check, state.keys_configured) {
            (_, false) => "no keys".to_owned(),
            (None, true) => "keys set (not checked; use --exchanges)".to_owned(),
            (Some(check), true) if !check.works => "keys DO NOT WORK".to_owned(),
            (Some(check), true) => format!(
                "keys work, trade: {}, withdraw: {}",
                yes_no(check.can_trade, "yes", "NO"),
                yes_no(check.can_withdraw, "YES", "no")
            ),
        };
        line(
            "exchange",
            format!("{} {environment}: {text}", state.exchange),
        );
    }
    for problem in &report.problems {
        out.push_str(&format!("problem: {}\n", escape(&problem.message)));
    }
    for warning in &report.warnings {
        out.push_str(&format!("warning: {}\n", escape(&warning.message)));
    }
    out.push_str(&if report.healthy {
        "healthy\n".to_owned()
    } else {
        format!("UNHEALTHY: {} problem(s)\n", report.problems.len())
    });
    out
}

/// Runs `hoox health`; an unhealthy deployment is an error, so the exit status is 1.
pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let report = inspect(&args, args.exchanges).await;
    if args.json {
        println!("{}", terminal::json(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if !report.healthy {
        bail!("unhealthy: {} problem(s)", report.problems.len());
    }
    Ok(())
}
