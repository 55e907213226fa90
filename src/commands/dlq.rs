//! `hoox dlq`: inspect, replay and purge dead letters.
//!
//! Reading takes every dead letter with `basic.get` without acknowledging it; what the
//! command does not remove is handed back when the channel closes, and the broker
//! returns it to its place. So inspection never loses or reorders a dead letter, and
//! works while consumers run (they consume the partitions, never the DLQ).

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use hoox_common::amqp::{self, Topology};
use hoox_common::config::{AmqpArgs, DatabaseArgs, InternalKeyArgs};
pub use hoox_common::dead_letter::DeadLetter;
use hoox_common::event::Event;
use hoox_common::logs::{insert_logs, LogEntry, Worker};
use hoox_common::message::QueueMessage;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::terminal::{self, escape};

/// Arguments of `hoox dlq`.
#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,

    #[command(flatten)]
    pub amqp: AmqpArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub internal_key: InternalKeyArgs,
}

/// What to do with the dead letters.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first: requestId, symbol, exchange, reason, attempts, age.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: its payload, reason and attempt history.
    Show {
        /// The signal's requestId.
        request_id: Uuid,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to their symbol's partition with a fresh attempt count.
    ///
    /// A replay is your decision to execute the signal now: its age counts from the
    /// replay, and its original receipt time stays in its history. Needs
    /// HOOX_INTERNAL_KEY to verify and re-sign the message.
    Replay {
        /// The signal's requestId.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        request_id: Option<Uuid>,
        /// Replay every dead letter that can be verified.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters for good (asks first unless --yes).
    Purge {
        /// Only those dead-lettered longer ago than this, e.g. `7d`, `12h`, `30m`.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// A read of the DLQ: every dead letter, held unacknowledged until `finish`.
pub struct DlqRead {
    channel: Channel,
    deliveries: Vec<Delivery>,
    /// The dead letters, oldest first.
    pub letters: Vec<DeadLetter>,
}

impl DlqRead {
    /// Takes every dead letter in `topology`'s DLQ without acknowledging any.
    pub async fn open(
        connection: &Connection,
        topology: &Topology,
        key: Option<&SecretString>,
    ) -> anyhow::Result<Self> {
        let channel = connection.create_channel().await?;
        topology
            .declare(&channel)
            .await
            .context("declare topology")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mut deliveries = Vec::new();
        while let Some(got) = channel
            .basic_get(
                topology.dlq().as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?
        {
            deliveries.push(got.delivery);
        }
        let letters = deliveries
            .iter()
            .map(|d| DeadLetter::from_delivery(d, key))
            .collect();
        Ok(Self {
            channel,
            deliveries,
            letters,
        })
    }

    /// Removes dead letter `index` for good.
    async fn remove(&self, index: usize) -> anyhow::Result<()> {
        self.deliveries[index]
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .context("ack dead letter")
    }

    /// Hands back every dead letter not removed, in its place.
    pub async fn finish(self) -> anyhow::Result<()> {
        self.channel
            .close(200, "done".into())
            .await
            .context("close DLQ channel")
    }

    /// Replays dead letter `index` to its symbol's partition, then removes it.
    async fn replay(
        &self,
        index: usize,
        topology: &Topology,
        key: &SecretString,
    ) -> anyhow::Result<QueueMessage> {
        let letter = &self.letters[index];
        let original =
            QueueMessage::decode(letter.body(), letter.signature(), key).with_context(|| {
                format!(
                    "dead letter {} cannot be replayed",
                    letter
                        .request_id
                        .map_or("(no request id)".to_owned(), |id| id.to_string())
                )
            })?;
        let replayed = original.replayed(Utc::now());
        let (body, signature) = replayed.encode(key);
        let id = replayed.request_id.to_string();
        let headers = amqp::signed_headers(Some(&signature), Some(&id));
        let queue = topology.queue_for(replayed.signal.symbol.as_str());
        amqp::publish_confirmed(&self.channel, &queue, &body, headers, Some(&id)).await?;
        // Published and confirmed before the dead letter is removed: a crash in between
        // leaves a copy in the DLQ, never a lost signal.
        self.remove(index).await?;
        Ok(replayed)
    }

    fn position(&self, request_id: Uuid) -> anyhow::Result<usize> {
        self.letters
            .iter()
            .position(|l| l.request_id == Some(request_id))
            .with_context(|| format!("no dead letter with request id {request_id}"))
    }
}

/// Replays the dead letter of `request_id`, or every verifiable one, recording each as
/// done by `worker`; returns the replayed messages and, with `all`, the dead letters
/// that could not be verified.
pub async fn replay(
    connection: &Connection,
    topology: &Topology,
    key: &SecretString,
    pool: &PgPool,
    worker: Worker,
    request_id: Option<Uuid>,
) -> anyhow::Result<(Vec<QueueMessage>, usize)> {
    hoox_common::partitions::check(pool, topology).await?;
    let read = DlqRead::open(connection, topology, Some(key)).await?;
    // A dead letter whose signal has a fill is a copy (the broker's own poison copy,
    // or one left by a crash between its publish and its commit): replaying it would
    // trade a second time.
    let named: Vec<Uuid> = read.letters.iter().filter_map(|l| l.request_id).collect();
    let filled: Vec<Uuid> =
        sqlx::query_scalar("SELECT request_id FROM fills WHERE request_id = ANY($1)")
            .bind(&named)
            .fetch_all(pool)
            .await
            .context("look for fills of the dead letters")?;
    let replayable = |i: &usize| {
        let letter = &read.letters[*i];
        letter.verified == Some(true) && !letter.request_id.is_some_and(|id| filled.contains(&id))
    };
    let indices: Vec<usize> = match request_id {
        Some(id) => {
            let index = read.position(id)?;
            if filled.contains(&id) {
                read.finish().await?;
                bail!("{id} already has a fill: this dead letter is a copy, and replaying it would trade twice; purge it instead");
            }
            vec![index]
        }
        None => (0..read.letters.len()).filter(replayable).collect(),
    };
    let skipped = read.letters.len() - indices.len();
    let mut replayed = Vec::new();
    let mut failure = None;
    for index in indices {
        match read.replay(index, topology, key).await {
            Ok(message) => replayed.push((message, read.letters[index].reason.clone())),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    read.finish().await?;
    let entries: Vec<LogEntry> = replayed
        .iter()
        .map(|(message, reason)| {
            LogEntry::now(
                worker,
                Some(message.request_id),
                Event::Replayed {
                    reason: reason.clone(),
                    received_at: message.received_at,
                },
            )
        })
        .collect();
    insert_logs(pool, &entries)
        .await
        .context("record the replays in system_logs")?;
    if let Some(err) = failure {
        return Err(err);
    }
    Ok((replayed.into_iter().map(|(m, _)| m).collect(), skipped))
}

/// Deletes the dead letters dead for longer than `older_than` (all without it) for
/// which `confirm` says yes, recording each as done by `worker`; returns how many.
pub async fn purge(
    connection: &Connection,
    topology: &Topology,
    pool: &PgPool,
    worker: Worker,
    older_than: Option<Duration>,
    confirm: impl FnOnce(&[&DeadLetter]) -> bool,
) -> anyhow::Result<usize> {
    let read = DlqRead::open(connection, topology, None).await?;
    let cutoff = older_than
        .map(|d| Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
    let chosen: Vec<usize> = (0..read.letters.len())
        .filter(|&i| match cutoff {
            None => true,
            Some(cutoff) => read.letters[i]
                .dead_lettered_at
                .is_some_and(|at| at < cutoff),
        })
        .collect();
    let letters: Vec<&DeadLetter> = chosen.iter().map(|&i| &read.letters[i]).collect();
    if chosen.is_empty() || !confirm(&letters) {
        read.finish().await?;
        return Ok(0);
    }
    let entries: Vec<LogEntry> = letters
        .iter()
        .map(|l| {
            LogEntry::now(
                worker,
                l.request_id,
                Event::Purged {
                    reason: l.reason.clone(),
                    error: l.error.clone(),
                },
            )
        })
        .collect();
    // Recorded before deleting: an audit row for a purge that then failed is better
    // than a purge nobody can account for.
    insert_logs(pool, &entries)
        .await
        .context("record the purge in system_logs")?;
    for &index in &chosen {
        read.remove(index).await?;
    }
    read.finish().await?;
    Ok(chosen.len())
}

fn age(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| super::age((Utc::now() - at).num_seconds()),
    )
}

/// The dead letters as a table for people.
pub fn render_list(letters: &[DeadLetter]) -> String {
    let mut out = format!(
        "{:<36}  {:<12}  {:<8}  {:<11}  {:>8}  {:>5}\n",
        "REQUEST ID", "SYMBOL", "EXCHANGE", "REASON", "ATTEMPTS", "AGE"
    );
    for letter in letters {
        out.push_str(&format!(
            "{:<36}  {:<12}  {:<8}  {:<11}  {:>8}  {:>5}\n",
            letter
                .request_id
                .map_or("-".to_owned(), |id| id.to_string()),
            escape(letter.field("/signal/symbol", "-")),
            escape(letter.field("/signal/exchange", "(routed)")),
            escape(&letter.reason),
            letter.attempts,
            age(letter.dead_lettered_at),
        ));
    }
    out.push_str(&format!("{} dead letter(s)\n", letters.len()));
    out
}

/// One dead letter in full, for people.
pub fn render_show(letter: &DeadLetter) -> String {
    let mut out = format!(
        "request id:  {}\nreason:      {}\nerror:       {}\nattempts:    {}\ndead since:  {}\nsignature:   {}\n",
        letter.request_id.map_or("-".to_owned(), |id| id.to_string()),
        escape(&letter.reason),
        escape(letter.error.as_deref().unwrap_or("-")),
        letter.attempts,
        letter.dead_lettered_at.map_or("-".to_owned(), |t| t.to_rfc3339()),
        match letter.verified {
            Some(true) => "valid",
            Some(false) => "INVALID (will not be replayed)",
            None => "not checked (no HOOX_INTERNAL_KEY)",
        },
    );
    if let Some(message) = &letter.message {
        if let Some(history) = message.get("history").and_then(Value::as_array) {
            out.push_str("history:\n");
            for attempt in history {
                out.push_str(&format!(
                    "  {}  {:<8}  {}{}\n",
                    escape(attempt["at"].as_str().unwrap_or("-")),
                    escape(attempt["exchange"].as_str().unwrap_or("-")),
                    attempt["code"]
                        .as_str()
                        .map(|c| format!("[{}] ", escape(c)))
                        .unwrap_or_default(),
                    escape(attempt["message"].as_str().unwrap_or("-")),
                ));
            }
        }
        out.push_str("payload:\n");
        out.push_str(&terminal::json(message).unwrap_or_default());
        out.push('\n');
    } else {
        out.push_str(&format!(
            "payload (not JSON): {}\n",
            escape(&String::from_utf8_lossy(letter.body()))
        ));
    }
    out
}

fn ask(question: &str) -> bool {
    print!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Runs `hoox dlq`.
pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let topology = args.amqp.topology();
    let key = args.internal_key.internal_key.clone();
    let connection = amqp::connect(&args.amqp.amqp_url, "hoox-cli")
        .await
        .context("cannot connect to the message broker")?;
    let result = async {
        match args.command {
            DlqCommand::List { json } => {
                let read = DlqRead::open(&connection, &topology, key.as_ref()).await?;
                let letters = read.letters.clone();
                read.finish().await?;
                if json {
                    println!("{}", terminal::json(&letters)?);
                } else {
                    print!("{}", render_list(&letters));
                }
            }
            DlqCommand::Show { request_id, json } => {
                let read = DlqRead::open(&connection, &topology, key.as_ref()).await?;
                let letter = read.position(request_id).map(|i| read.letters[i].clone());
                read.finish().await?;
                let letter = letter?;
                if json {
                    println!("{}", terminal::json(&letter)?);
                } else {
                    print!("{}", render_show(&letter));
                }
            }
            DlqCommand::Replay { request_id, all } => {
                let Some(key) = key.as_ref() else {
                    bail!("HOOX_INTERNAL_KEY is required to verify and re-sign dead letters");
                };
                let pool = hoox_common::db::connect_existing(&args.database.database_url, 1)
                    .await
                    .context("cannot open the database")?;
                let (replayed, skipped) = replay(
                    &connection,
                    &topology,
                    key,
                    &pool,
                    Worker::Cli,
                    request_id.filter(|_| !all),
                )
                .await?;
                for message in &replayed {
                    println!(
                        "replayed {} to {}",
                        message.request_id,
                        escape(&topology.queue_for(message.signal.symbol.as_str()))
                    );
                }
                if all && skipped > 0 {
                    println!(
                        "{skipped} dead letter(s) left in place: their signature does not verify, or their signal already has a fill"
                    );
                }
                println!("{} dead letter(s) replayed", replayed.len());
            }
            DlqCommand::Purge { older_than, yes } => {
                let pool = hoox_common::db::connect_existing(&args.database.database_url, 1)
                    .await
                    .context("cannot open the database")?;
                let purged = purge(&connection, &topology, &pool, Worker::Cli, older_than, |letters| {
                    print!(
                        "{}",
                        render_list(&letters.iter().map(|l| (*l).clone()).collect::<Vec<_>>())
                    );
                    yes || ask(&format!(
                        "Delete these {} dead letter(s) for good?",
                        letters.len()
                    ))
                })
                .await?;
                println!("{purged} dead letter(s) purged");
            }
        }
        Ok(())
    }
    .await;
    let _ = connection.close(200, "done".into()).await;
    result
}
