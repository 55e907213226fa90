//! `hoox bot`: the Telegram bot, in exactly one process (commands must not be answered
//! twice, nor the kill switch flipped twice).
//!
//! It long-polls `getUpdates`, so it needs no public URL, and obeys only messages from
//! `TELEGRAM_CHAT_ID`: anything else is logged with its chat id (never its text) and
//! ignored. It reads the database and the queues, and writes only the kill switch,
//! through [`kill_switch::set`], which records the change in the audit trail. It also
//! tells the chat about every kill switch change, whoever made it: being the one bot
//! process, it tells each change once however many consumers run.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use hoox_common::amqp::Topology;
use hoox_common::config::{AmqpArgs, DatabaseArgs};
use hoox_common::retry::{sleep_unless_cancelled, Reconnect};
use hoox_common::runtime_config::RuntimeConfig;
use hoox_common::telegram::{watch_kill_switch, BotApi, Notifier, TelegramArgs, Update};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::Connection;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::dlq::DlqRead;
use super::{kill_switch, positions, report, trace};
use hoox_common::logs::Worker;

/// How long one `getUpdates` call waits for a message.
const POLL_WAIT: Duration = Duration::from_secs(25);
/// Dead letters listed by `/dlq`.
const DLQ_SHOWN: usize = 5;

const HELP: &str =
    "commands: /status, /kill_on, /kill_off, /dlq, /trace <requestId>, /positions, /pnl";

/// Arguments of `hoox bot`.
#[derive(Debug, clap::Args)]
pub struct BotArgs {
    #[command(flatten)]
    pub telegram: TelegramArgs,

    #[command(flatten)]
    pub amqp: AmqpArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// The bot's connections.
struct Bot {
    api: BotApi,
    pool: PgPool,
    amqp_url: SecretString,
    topology: Topology,
}

/// Runs `hoox bot` until SIGINT or SIGTERM.
pub async fn run(args: BotArgs) -> anyhow::Result<()> {
    let api = args
        .telegram
        .bot_api()
        .context("TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID are required")?;
    let token = CancellationToken::new();
    hoox_common::shutdown::cancel_on_signal(token.clone());
    let pool = hoox_common::db::connect_existing(&args.database.database_url, 3)
        .await
        .context("cannot open the database")?;
    serve(
        api,
        pool,
        args.amqp.amqp_url.clone(),
        args.amqp.topology(),
        token,
    )
    .await
}

/// Answers the configured chat and tells it about kill switch changes until `token`
/// is cancelled.
pub async fn serve(
    api: BotApi,
    pool: PgPool,
    amqp_url: SecretString,
    topology: Topology,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let config = RuntimeConfig::start(pool.clone(), token.clone())
        .await
        .context("cannot read the config table")?;
    let (notifier, sender) = Notifier::start(api.clone(), token.clone());
    let watch = tokio::spawn(watch_kill_switch(config, notifier, token.clone()));
    tracing::info!(chat_id = api.chat_id(), "Telegram bot polling for commands");
    let bot = Bot {
        api,
        pool,
        amqp_url,
        topology,
    };
    bot.poll(&token).await;
    let _ = watch.await;
    let _ = sender.await;
    Ok(())
}

impl Bot {
    async fn poll(&self, token: &CancellationToken) {
        let mut offset = None;
        let mut reconnect = Reconnect::new();
        loop {
            let polled = tokio::select! {
                () = token.cancelled() => return,
                polled = self.api.updates(offset, POLL_WAIT) => polled,
            };
            match polled {
                Ok(updates) => {
                    reconnect = Reconnect::new();
                    for update in updates {
                        // Asking with a higher offset confirms this update to Telegram.
                        offset = Some(update.update_id.saturating_add(1));
                        self.handle(update, token).await;
                    }
                }
                Err(err) => {
                    let delay = reconnect.next_delay();
                    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "cannot poll Telegram; retrying");
                    if !sleep_unless_cancelled(delay, token).await {
                        return;
                    }
                }
            }
        }
    }

    async fn handle(&self, update: Update, token: &CancellationToken) {
        let Some(message) = update.message else {
            return;
        };
        if message.chat.id != self.api.chat_id() {
            tracing::warn!(
                chat_id = message.chat.id,
                "Telegram message from another chat ignored"
            );
            return;
        }
        let Some(text) = message.text else {
            return;
        };
        let reply = self.answer(&text).await;
        self.api.deliver(&reply, token).await;
    }

    /// The reply to a command; a failure is logged and answered without its details.
    async fn answer(&self, text: &str) -> String {
        let mut words = text.split_whitespace();
        // In groups, Telegram appends the bot's name: `/status@hoox_bot`.
        let command = words
            .next()
            .and_then(|w| w.split('@').next())
            .unwrap_or_default();
        let answered = match command {
            "/status" => self.status().await,
            "/kill_on" => self.kill_switch(true).await,
            "/kill_off" => self.kill_switch(false).await,
            "/dlq" => self.dlq().await,
            "/positions" => self.positions().await,
            "/pnl" => self.pnl().await,
            "/trace" => match words.next().map(str::parse::<Uuid>) {
                Some(Ok(id)) => self.trace(id).await,
                _ => Ok("usage: /trace <requestId>".to_owned()),
            },
            _ => Ok(HELP.to_owned()),
        };
        answered.unwrap_or_else(|err| {
            tracing::warn!(command, error = %format!("{err:#}"), "bot command failed");
            format!("{command} failed; the bot's log says why")
        })
    }

    async fn kill_switch(&self, on: bool) -> anyhow::Result<String> {
        kill_switch::set(&self.pool, Worker::Cli, on).await?;
        tracing::info!(on, "kill switch set from Telegram");
        Ok(if on {
            "kill switch ON: trading is halted".to_owned()
        } else {
            "kill switch off: trading is live".to_owned()
        })
    }

    async fn status(&self) -> anyhow::Result<String> {
        let on = kill_switch::state(&self.pool).await?;
        let last_fill: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT max(executed_at) FROM fills")
                .fetch_one(&self.pool)
                .await?;
        let connection = self.connect().await?;
        let mut main = queue_counts(&connection, self.topology.queue()).await;
        for partition in self.topology.partition_queues() {
            let counts = queue_counts(&connection, &partition).await;
            main = main.and_then(|(depth, consumers)| {
                counts.map(|(more, _)| (depth.saturating_add(more), consumers))
            });
        }
        let dlq = queue_counts(&connection, &self.topology.dlq()).await;
        let _ = connection.close(200, "done".into()).await;
        let (depth, consumers) = main?;
        let (dead, _) = dlq?;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "kill switch: {}",
            if on { "ON (trading halted)" } else { "off" }
        );
        let _ = writeln!(
            out,
            "queue {} ({} partitions): {depth} waiting, {consumers} consumers",
            self.topology.queue(),
            self.topology.partitions()
        );
        let _ = writeln!(out, "dead letters: {dead}");
        let _ = write!(
            out,
            "last fill: {}",
            last_fill.map_or_else(
                || "none".to_owned(),
                |at| at.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        );
        Ok(out)
    }

    async fn dlq(&self) -> anyhow::Result<String> {
        let connection = self.connect().await?;
        let read = DlqRead::open(&connection, &self.topology, None).await?;
        let now = Utc::now();
        let mut out = format!("dead letters: {}", read.letters.len());
        for letter in read.letters.iter().take(DLQ_SHOWN) {
            let _ = write!(
                out,
                "\n{} {} ({} attempts){}",
                letter
                    .request_id
                    .map_or_else(|| "(no request id)".to_owned(), |id| id.to_string()),
                letter.reason,
                letter.attempts,
                letter
                    .age(now)
                    .map(|age| format!(", {} ago", super::age(age.num_seconds())))
                    .unwrap_or_default(),
            );
        }
        read.finish().await?;
        let _ = connection.close(200, "done".into()).await;
        Ok(out)
    }

    /// The positions ledger, as `hoox positions` shows it.
    async fn positions(&self) -> anyhow::Result<String> {
        Ok(positions::render(&positions::load(&self.pool).await?))
    }

    /// Today's (UTC) fills, volume and realized PnL, as `hoox report` shows a day.
    async fn pnl(&self) -> anyhow::Result<String> {
        let today = Utc::now().date_naive();
        let rows = report::load(&self.pool, Some(today), Some(today)).await?;
        if rows.is_empty() {
            return Ok(format!("no fills today ({today}, UTC)"));
        }
        Ok(format!(
            "today ({today}, UTC):\n{}",
            report::render_table(&rows)
        ))
    }

    async fn trace(&self, request_id: Uuid) -> anyhow::Result<String> {
        let trace = trace::load(&self.pool, request_id).await?;
        if trace.events.is_empty() && trace.fill.is_none() {
            return Ok(format!("nothing is recorded for {request_id}"));
        }
        Ok(trace::render(&trace))
    }

    async fn connect(&self) -> anyhow::Result<Connection> {
        hoox_common::amqp::connect(&self.amqp_url, "hoox-bot")
            .await
            .context("cannot reach the message broker")
    }
}

/// Messages ready in `queue` and its consumers, by a passive declare on a channel of
/// its own (a missing queue closes the channel).
async fn queue_counts(connection: &Connection, queue: &str) -> anyhow::Result<(u32, u32)> {
    let channel = connection.create_channel().await?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("queue {queue}"))?;
    let _ = channel.close(200, "done".into()).await;
    Ok((declared.message_count(), declared.consumer_count()))
}
