//! Config: every key with its meaning and value, edited with `hoox config`'s own
//! validation and write (the change and its audit row in one transaction, recorded
//! with worker `dashboard`). The webhook key is never shown, not even as its digest,
//! and never travels back to the browser.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use hoox_common::logs::Worker;
use hoox_common::runtime_config::{normalise_key, validate, KNOWN_KEYS, WEBHOOK_API_KEY};
use serde::Deserialize;

use super::auth::Session;
use super::page::{html, ConfirmPage};
use super::{Dashboard, PageError, PageResult};
use crate::commands::config;

/// What a key (or key pattern of [`KNOWN_KEYS`]) does.
fn meaning(pattern: &str) -> &'static str {
    match pattern {
        "trade:kill_switch" => "true halts all trading: ingest answers 503 and consumers dead-letter what is queued.",
        "webhooks:api_key" => "The key webhooks must carry (stored as its SHA-256 digest; at least 16 characters). Replaces HOOX_WEBHOOK_API_KEY.",
        "exchanges:default_routing" => "Where signals that name no exchange go: bybit, binance, mexc or paper.",
        "exchanges:routing:<SYMBOL>" => "Where one symbol's signals go, overriding the default route and the signal.",
        "paper:price:<SYMBOL>" => "The price the paper exchange fills a symbol's market orders at.",
        "paper:latency_ms" => "How long the paper exchange takes to answer, in ms (0 to 10000).",
        "risk:allowed_symbols" => "The only symbols traded, comma-separated; others are dead-lettered.",
        "risk:max_quantity[:<SYMBOL>]" => "Largest quantity of one order (for every symbol, or one).",
        "risk:max_leverage[:<SYMBOL>]" => "Highest leverage of one order, 1 to 125 (for every symbol, or one).",
        "risk:max_notional[:<SYMBOL>]" => "Largest value of one order, price × quantity (for every symbol, or one).",
        _ => "See `hoox config set --help`.",
    }
}

/// A stored value as the page shows it: never a webhook key's digest.
fn shown(key: &str, value: &str) -> String {
    if key == WEBHOOK_API_KEY {
        "(set; never shown)".to_owned()
    } else {
        config::shown(key, value)
    }
}

#[derive(Template)]
#[template(path = "config.html")]
struct ConfigPage {
    csrf: String,
    active: &'static str,
    known: Vec<(&'static str, &'static str)>,
    settings: Vec<(String, String)>,
}

/// `GET /config`.
pub(super) async fn page(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
) -> PageResult {
    let settings = config::list(dashboard.pool())
        .await?
        .into_iter()
        .map(|(key, value)| {
            let value = shown(&key, &value);
            (key, value)
        })
        .collect();
    Ok(html(&ConfigPage {
        csrf: session.csrf,
        active: "config",
        known: KNOWN_KEYS.iter().map(|k| (*k, meaning(k))).collect(),
        settings,
    }))
}

#[derive(Template)]
#[template(path = "config_edit.html")]
struct EditPage {
    csrf: String,
    active: &'static str,
    key: String,
    value: String,
    current: Option<String>,
    secret: bool,
    error: Option<String>,
}

/// Which key to edit.
#[derive(Deserialize)]
pub(super) struct EditQuery {
    key: Option<String>,
}

async fn edit_page(
    dashboard: &Dashboard,
    session: &Session,
    key: &str,
    value: &str,
    error: Option<String>,
) -> Result<EditPage, PageError> {
    let normalised = normalise_key(key).ok();
    let current = match &normalised {
        Some(key) => config::get(dashboard.pool(), key)
            .await?
            .map(|v| shown(key, &v)),
        None => None,
    };
    let secret = normalised.as_deref() == Some(WEBHOOK_API_KEY);
    Ok(EditPage {
        csrf: session.csrf.clone(),
        active: "config",
        key: normalised.unwrap_or_else(|| key.to_owned()),
        value: if secret {
            String::new()
        } else {
            value.to_owned()
        },
        current,
        secret,
        error,
    })
}

/// `GET /config/edit?key=…`.
pub(super) async fn edit(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Query(query): Query<EditQuery>,
) -> PageResult {
    let key = query.key.unwrap_or_default();
    let page = edit_page(&dashboard, &session, &key, "", None).await?;
    Ok(html(&page))
}

/// A key and its new value (none to delete it).
#[derive(Deserialize)]
pub(super) struct Change {
    key: String,
    value: Option<String>,
    #[serde(default)]
    delete: bool,
}

/// The change as it would be stored, checked as `hoox config` checks it: the key
/// normalised and the value validated (`None`: delete the key).
fn checked(change: &Change, value: &str) -> Result<(String, Option<String>), String> {
    if change.delete {
        normalise_key(&change.key).map(|key| (key, None))
    } else {
        validate(&change.key, value).map(|s| (s.key, Some(s.value)))
    }
}

/// `POST /config/confirm`: checks the value; the confirmation, or the form again with
/// what is wrong. Changes nothing.
pub(super) async fn confirm(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Form(change): Form<Change>,
) -> PageResult {
    let value = change.value.clone().unwrap_or_default();
    let (key, stored) = match checked(&change, &value) {
        Ok(checked) => checked,
        Err(error) => {
            let page = edit_page(&dashboard, &session, &change.key, &value, Some(error)).await?;
            return Ok((StatusCode::BAD_REQUEST, html(&page)).into_response());
        }
    };
    if key == WEBHOOK_API_KEY && stored.is_some() {
        // The edit form of the webhook key is its own confirmation: the key is not sent
        // back to the browser in a hidden field.
        return Err(PageError::bad_request(
            "the webhook key is set from its own form, which is its confirmation",
        ));
    }
    let current = config::get(dashboard.pool(), &key).await?;
    let mut page = ConfirmPage::new(
        &session.csrf,
        "config",
        match &stored {
            Some(_) => format!("Set {key}?"),
            None => format!("Delete {key}?"),
        },
        "/config/set".to_owned(),
    );
    page.lines.push(format!(
        "Now: {}",
        current.as_deref().map_or_else(
            || "not set (its default applies)".to_owned(),
            |v| shown(&key, v)
        )
    ));
    page.lines.push(match &stored {
        Some(value) => format!("New: {}", shown(&key, value)),
        None => "New: not set (its default applies)".to_owned(),
    });
    page.lines
        .push("Running services see the change within a second.".to_owned());
    page.fields.push(("key".to_owned(), key));
    match &stored {
        Some(_) => page.fields.push(("value".to_owned(), value)),
        None => page.fields.push(("delete".to_owned(), "true".to_owned())),
    }
    page.cancel = "/config".to_owned();
    Ok(html(&page))
}

/// `POST /config/set`: the confirmed change, validated again and written.
pub(super) async fn set(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Form(change): Form<Change>,
) -> PageResult {
    let value = change.value.clone().unwrap_or_default();
    let (key, stored) = match checked(&change, &value) {
        Ok(checked) => checked,
        Err(error) => {
            let page = edit_page(&dashboard, &session, &change.key, &value, Some(error)).await?;
            return Ok((StatusCode::BAD_REQUEST, html(&page)).into_response());
        }
    };
    config::write(dashboard.pool(), Worker::Dashboard, &key, stored.as_deref()).await?;
    Ok(Redirect::to("/config").into_response())
}
