//! A local stand-in for the Telegram Bot API: `POST /bot<token>/<method>` with a JSON
//! body, checked as Telegram does (a wrong token is 401 `Unauthorized`; `sendMessage`
//! needs a `chat_id` and a non-empty `text`, else 400), answered in the Bot API's
//! envelope. Tests queue updates for `getUpdates`, read what was sent, and can make the
//! next `sendMessage` meet a 429 with `retry_after`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// The token the mock accepts.
pub const TOKEN: &str = "123456:mock-bot-token-Qf8s";
/// The chat hoox is configured for.
pub const CHAT: i64 = 4242;

/// A message the mock took.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Its chat.
    pub chat_id: i64,
    /// Its text.
    pub text: String,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Calls {
    sent: Vec<Sent>,
    refused_token: usize,
    updates: Vec<Value>,
    next_update_id: i64,
    highest_offset: i64,
    rate_limit_next: Option<u64>,
    rate_limited_at: Vec<Instant>,
}

struct Inner {
    calls: Mutex<Calls>,
    new_update: Notify,
}

/// The running mock.
pub struct MockTelegram {
    url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl MockTelegram {
    /// Starts the mock on a free local port.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner {
            calls: Mutex::new(Calls {
                next_update_id: 1000,
                ..Calls::default()
            }),
            new_update: Notify::new(),
        });
        let app = axum::Router::new()
            .route("/{bot}/{method}", axum::routing::post(handle))
            .with_state(Arc::clone(&inner));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner, task }
    }

    /// The base URL (`TELEGRAM_API_URL`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Queues a text message from `chat_id`; returns its update id.
    pub fn queue_message(&self, chat_id: i64, text: &str) -> i64 {
        let mut calls = self.inner.calls.lock().unwrap();
        let update_id = calls.next_update_id;
        calls.next_update_id += 1;
        calls.updates.push(json!({
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "date": 0,
                "chat": {"id": chat_id, "type": "private"},
                "text": text,
            },
        }));
        drop(calls);
        self.inner.new_update.notify_one();
        update_id
    }

    /// Answers the next `sendMessage` with a 429 asking to retry after `seconds`.
    pub fn rate_limit_next(&self, seconds: u64) {
        self.inner.calls.lock().unwrap().rate_limit_next = Some(seconds);
    }

    /// The messages taken so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.inner.calls.lock().unwrap().sent.clone()
    }

    /// When 429s were answered.
    pub fn rate_limited_at(&self) -> Vec<Instant> {
        self.inner.calls.lock().unwrap().rate_limited_at.clone()
    }

    /// Calls refused for a wrong token.
    pub fn refused_token(&self) -> usize {
        self.inner.calls.lock().unwrap().refused_token
    }

    /// The highest `offset` a `getUpdates` asked with: every update below it was handled.
    pub fn highest_offset(&self) -> i64 {
        self.inner.calls.lock().unwrap().highest_offset
    }
}

impl Drop for MockTelegram {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn bad_request(description: &str) -> Response {
    answer(
        StatusCode::BAD_REQUEST,
        json!({"ok": false, "error_code": 400, "description": format!("Bad Request: {description}")}),
    )
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    Path((bot, method)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if bot != format!("bot{TOKEN}") {
        inner.calls.lock().unwrap().refused_token += 1;
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
        );
    }
    let Ok(params) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("can't parse JSON");
    };
    match method.as_str() {
        "sendMessage" => send_message(&inner, &params),
        "getUpdates" => get_updates(&inner, &params).await,
        _ => answer(
            StatusCode::NOT_FOUND,
            json!({"ok": false, "error_code": 404, "description": "Not Found"}),
        ),
    }
}

fn send_message(inner: &Inner, params: &Value) -> Response {
    let Some(chat_id) = params["chat_id"].as_i64() else {
        return bad_request("chat_id is empty");
    };
    let text = params["text"].as_str().unwrap_or_default();
    if text.trim().is_empty() {
        return bad_request("message text is empty");
    }
    let mut calls = inner.calls.lock().unwrap();
    if let Some(seconds) = calls.rate_limit_next.take() {
        calls.rate_limited_at.push(Instant::now());
        return answer(
            StatusCode::TOO_MANY_REQUESTS,
            json!({
                "ok": false,
                "error_code": 429,
                "description": format!("Too Many Requests: retry after {seconds}"),
                "parameters": {"retry_after": seconds},
            }),
        );
    }
    calls.sent.push(Sent {
        chat_id,
        text: text.to_owned(),
        at: Instant::now(),
    });
    let message_id = calls.sent.len();
    answer(
        StatusCode::OK,
        json!({"ok": true, "result": {"message_id": message_id, "chat": {"id": chat_id}, "text": text}}),
    )
}

/// Long polling as Telegram does it: updates at or after `offset` (which confirms the
/// ones before it), waiting up to `timeout` seconds for one.
async fn get_updates(inner: &Inner, params: &Value) -> Response {
    let offset = params["offset"].as_i64().unwrap_or(0);
    let wait = Duration::from_secs(params["timeout"].as_u64().unwrap_or(0));
    if params.get("allowed_updates").is_some() && !params["allowed_updates"].is_array() {
        return bad_request("allowed_updates must be an array");
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let pending = {
            let mut calls = inner.calls.lock().unwrap();
            calls.highest_offset = calls.highest_offset.max(offset);
            calls
                .updates
                .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            calls.updates.clone()
        };
        if !pending.is_empty() || tokio::time::Instant::now() >= deadline {
            return answer(StatusCode::OK, json!({"ok": true, "result": pending}));
        }
        let _ = tokio::time::timeout_at(deadline, inner.new_update.notified()).await;
    }
}
