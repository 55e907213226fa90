//! Telegram: the Bot API client, and notifications sent off the hot path.
//!
//! A process that notifies holds a [`Notifier`]: a bounded queue and one task that
//! sends. [`Notifier::notify`] never waits, so a slow or unreachable Telegram can never
//! hold a batch: when the queue is full the message is counted and dropped. The sender
//! honours a 429's `retry_after`, and a failure is logged and counted, never retried
//! blindly (a message is not worth a stuck queue).
//!
//! The bot token is part of every Bot API URL, so no URL and no reqwest error carrying
//! one is ever logged or returned: errors are stripped with `without_url`.

use std::fmt;
use std::time::Duration;

use ::metrics::counter;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::parse_secret;
use crate::event::Event;
use crate::retry::sleep_unless_cancelled;
use crate::runtime_config::RuntimeConfig;

/// The Bot API's public address.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";
/// `hoox_telegram_failures_total`: messages Telegram did not take.
pub const FAILURES_TOTAL: &str = "hoox_telegram_failures_total";
/// `hoox_telegram_dropped_total`: messages dropped because the send queue was full.
pub const DROPPED_TOTAL: &str = "hoox_telegram_dropped_total";
/// How many messages wait to be sent before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 256;
/// How long a consumer is without its broker before the chat is told.
pub const BROKER_OUTAGE_ALERT: Duration = Duration::from_secs(30);

/// Rate-limit answers honoured for one message before it counts as failed.
const MAX_RATE_LIMITED: u32 = 5;
/// The longest `retry_after` waited for; a longer one fails the message.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How long a `sendMessage` call may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Telegram's limit on a message's length, in characters.
const MAX_TEXT_CHARS: usize = 4096;

/// Telegram settings; with both the token and the chat set, notifications (and, in
/// `hoox bot`, commands) are on.
#[derive(Debug, Clone, clap::Args)]
pub struct TelegramArgs {
    /// Bot token from @BotFather; with TELEGRAM_CHAT_ID, turns on Telegram
    #[arg(long, env = "TELEGRAM_BOT_TOKEN", value_parser = parse_secret, hide_env_values = true)]
    pub telegram_bot_token: Option<SecretString>,

    /// The chat that gets notifications and whose commands the bot obeys (no other)
    #[arg(long, env = "TELEGRAM_CHAT_ID", allow_negative_numbers = true)]
    pub telegram_chat_id: Option<i64>,

    /// Bot API base URL (a local mock in tests)
    #[arg(long, env = "TELEGRAM_API_URL", default_value = DEFAULT_API_URL)]
    pub telegram_api_url: String,
}

impl TelegramArgs {
    /// The Bot API client, when both the token and the chat are set.
    pub fn bot_api(&self) -> Option<BotApi> {
        let token = self.telegram_bot_token.clone()?;
        let chat_id = self.telegram_chat_id?;
        Some(BotApi::new(&self.telegram_api_url, token, chat_id))
    }

    /// A started notifier, when Telegram is configured; its sender stops with `token`.
    pub fn notifier(&self, token: &CancellationToken) -> Option<Notifier> {
        self.bot_api()
            .map(|api| Notifier::start(api, token.clone()).0)
    }
}

/// Why a Bot API call failed. Never carries a URL (it holds the token).
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    /// 429: wait this long before calling again.
    #[error("rate limited by Telegram; retry after {0:?}")]
    RateLimited(Duration),
    /// Telegram refused the call.
    #[error("Telegram refused the call ({code}): {description}")]
    Refused {
        /// Telegram's `error_code` (the HTTP status).
        code: u16,
        /// Telegram's `description`.
        description: String,
    },
    /// The call did not complete, or its answer was not the Bot API's.
    #[error("cannot reach Telegram: {0}")]
    Transport(reqwest::Error),
}

impl From<reqwest::Error> for TelegramError {
    fn from(err: reqwest::Error) -> Self {
        Self::Transport(err.without_url())
    }
}

/// An update from `getUpdates` (only messages are asked for).
#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    /// Its id; the next poll's offset is the last one plus 1.
    pub update_id: i64,
    /// The message, when the update is one.
    pub message: Option<Message>,
}

/// A message sent to the bot.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// Where it was sent.
    pub chat: Chat,
    /// Its text, when it has some.
    pub text: Option<String>,
}

/// A chat.
#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    /// The chat's id.
    pub id: i64,
}

/// A Bot API client for one bot and its configured chat.
#[derive(Clone)]
pub struct BotApi {
    http: reqwest::Client,
    base: String,
    token: SecretString,
    chat_id: i64,
}

impl fmt::Debug for BotApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotApi")
            .field("base", &self.base)
            .field("token", &"[redacted]")
            .field("chat_id", &self.chat_id)
            .finish()
    }
}

impl BotApi {
    /// A client of the Bot API at `base` for the bot with `token`, configured for `chat_id`.
    pub fn new(base: &str, token: SecretString, chat_id: i64) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token,
            chat_id,
        }
    }

    /// The configured chat.
    pub fn chat_id(&self) -> i64 {
        self.chat_id
    }

    /// Calls `method` with JSON `params`, within `timeout`; gives the `result`.
    async fn call(
        &self,
        method: &str,
        params: &Value,
        timeout: Duration,
    ) -> Result<Value, TelegramError> {
        let url = format!("{}/bot{}/{method}", self.base, self.token.expose_secret());
        let response = self
            .http
            .post(url)
            .json(params)
            .timeout(timeout)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await?;
        if body["ok"].as_bool() == Some(true) {
            return Ok(body["result"].clone());
        }
        if status == 429 {
            let seconds = body["parameters"]["retry_after"].as_u64().unwrap_or(1);
            return Err(TelegramError::RateLimited(Duration::from_secs(seconds)));
        }
        Err(TelegramError::Refused {
            code: status,
            description: body["description"]
                .as_str()
                .unwrap_or("no description")
                .to_owned(),
        })
    }

    /// Sends `text` to `chat_id`, once.
    pub async fn send_message(&self, chat_id: i64, text: &str) -> Result<(), TelegramError> {
        let text: String = text.chars().take(MAX_TEXT_CHARS).collect();
        let params = json!({ "chat_id": chat_id, "text": text });
        self.call("sendMessage", &params, SEND_TIMEOUT)
            .await
            .map(drop)
    }

    /// Long-polls for messages after `offset`, waiting up to `wait` for one.
    pub async fn updates(
        &self,
        offset: Option<i64>,
        wait: Duration,
    ) -> Result<Vec<Update>, TelegramError> {
        let mut params = json!({
            "timeout": wait.as_secs(),
            "allowed_updates": ["message"],
        });
        if let Some(offset) = offset {
            params["offset"] = json!(offset);
        }
        let result = self
            .call("getUpdates", &params, wait + SEND_TIMEOUT)
            .await?;
        serde_json::from_value(result).map_err(|err| TelegramError::Refused {
            code: 200,
            description: format!("unexpected getUpdates result: {err}"),
        })
    }

    /// Sends `text` to the configured chat, waiting out rate limits; a failure is
    /// logged and counted.
    pub async fn deliver(&self, text: &str, token: &CancellationToken) {
        let mut limited = 0;
        loop {
            let err = match self.send_message(self.chat_id, text).await {
                Ok(()) => return,
                Err(err) => err,
            };
            match err {
                TelegramError::RateLimited(wait)
                    if limited < MAX_RATE_LIMITED && wait <= MAX_RETRY_AFTER =>
                {
                    limited += 1;
                    tracing::info!(
                        retry_after_ms = wait.as_millis() as u64,
                        "Telegram rate limit; waiting"
                    );
                    if !sleep_unless_cancelled(wait, token).await {
                        return;
                    }
                }
                err => {
                    counter!(FAILURES_TOTAL).increment(1);
                    tracing::warn!(error = %err, "Telegram message not sent");
                    return;
                }
            }
        }
    }
}

/// Sends notifications to the configured chat without ever making the caller wait.
#[derive(Debug, Clone)]
pub struct Notifier {
    queue: mpsc::Sender<String>,
}

impl Notifier {
    /// Starts the sender task, which stops when `token` is cancelled.
    pub fn start(api: BotApi, token: CancellationToken) -> (Self, JoinHandle<()>) {
        let (queue, mut pending) = mpsc::channel::<String>(QUEUE_CAPACITY);
        let task = tokio::spawn(async move {
            loop {
                let text = tokio::select! {
                    () = token.cancelled() => return,
                    text = pending.recv() => match text {
                        Some(text) => text,
                        None => return,
                    },
                };
                api.deliver(&text, &token).await;
            }
        });
        (Self { queue }, task)
    }

    /// Queues the notification of `event`, if it is one the chat is told about.
    pub fn notify(&self, event: &Event, request_id: Option<Uuid>) {
        if let Some(text) = text_of(event, request_id) {
            self.send(text);
        }
    }

    /// Tells the chat that a consumer has been without its broker for `down`.
    pub fn broker_lost(&self, down: Duration) {
        self.send(format!(
            "🔌 a consumer has been without its message broker for {}s; signals wait in the queue",
            down.as_secs()
        ));
    }

    /// Queues `text`; when the queue is full it is counted and dropped.
    pub fn send(&self, text: String) {
        if self.queue.try_send(text).is_err() {
            counter!(DROPPED_TOTAL).increment(1);
        }
    }
}

/// The message for `event`: fills, dead letters and kill switch changes only.
pub fn text_of(event: &Event, request_id: Option<Uuid>) -> Option<String> {
    let signal = request_id.map_or_else(|| "no request id".to_owned(), |id| id.to_string());
    match event {
        Event::Filled {
            exchange,
            side,
            fill_quantity,
            fill_price,
            ..
        } => Some(format!(
            "✅ filled on {exchange}: {} {}{}\nrequest {signal}",
            side.as_str(),
            fill_quantity.map_or_else(|| "?".to_owned(), |q| q.to_string()),
            fill_price.map(|p| format!(" @ {p}")).unwrap_or_default(),
        )),
        Event::DeadLettered { .. } => Some(format!("⚠️ {}\nrequest {signal}", event.message())),
        Event::KillSwitchChanged { .. } => Some(format!("🛑 {}", event.message())),
        _ => None,
    }
}

/// Tells the chat about every kill switch change seen in `config`, whoever made it,
/// until `token` is cancelled. Runs in `hoox bot` alone (one process), so a change is
/// told once however many consumers run.
pub async fn watch_kill_switch(
    config: RuntimeConfig,
    notifier: Notifier,
    token: CancellationToken,
) {
    loop {
        let on = config.kill_switch();
        let changed = config.wait_until(move |values| {
            values
                .get(crate::runtime_config::KILL_SWITCH)
                .is_some_and(|v| crate::runtime_config::is_on(v))
                != on
        });
        tokio::select! {
            () = token.cancelled() => return,
            () = changed => {}
        }
        // `wait_until` also returns when the config can no longer change.
        if config.kill_switch() == on {
            return;
        }
        // The reason is written with the switch, so this snapshot holds it.
        let reason = if on {
            None
        } else {
            config.get(crate::kill_switch::REASON)
        };
        notifier.notify(&Event::KillSwitchChanged { on: !on, reason }, None);
    }
}
