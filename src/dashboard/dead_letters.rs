//! Dead letters: list, show, replay and purge, each change confirmed first. Reading
//! and changing go through `hoox dlq`'s own functions, so the dashboard hands back what
//! it does not remove exactly as the CLI does, and records replays and purges with
//! worker `dashboard`.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use chrono::Utc;
use hoox_common::dead_letter::DeadLetter;
use hoox_common::logs::Worker;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::auth::Session;
use super::overview::when;
use super::page::{html, ConfirmPage};
use super::{Dashboard, PageError, PageResult};
use crate::commands::age;
use crate::commands::dlq::{self, DlqRead};
use crate::terminal;

/// One dead letter as listed.
struct Line {
    request_id: String,
    symbol: String,
    exchange: String,
    reason: String,
    attempts: u32,
    age: String,
    verified: &'static str,
}

fn verified(letter: &DeadLetter) -> &'static str {
    match letter.verified {
        Some(true) => "valid",
        Some(false) => "INVALID",
        None => "not checked",
    }
}

fn id_of(letter: &DeadLetter) -> String {
    letter
        .request_id
        .map_or_else(|| "(no request id)".to_owned(), |id| id.to_string())
}

fn line(letter: &DeadLetter) -> Line {
    Line {
        request_id: letter
            .request_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        symbol: letter.field("/signal/symbol", "-").to_owned(),
        exchange: letter.field("/signal/exchange", "(routed)").to_owned(),
        reason: letter.reason.clone(),
        attempts: letter.attempts,
        age: letter
            .age(Utc::now())
            .map_or_else(|| "-".to_owned(), |a| age(a.num_seconds())),
        verified: verified(letter),
    }
}

#[derive(Template)]
#[template(path = "dead_letters.html")]
struct ListPage {
    csrf: String,
    active: &'static str,
    letters: Vec<Line>,
}

/// Every dead letter, read and handed back in place.
async fn read(dashboard: &Dashboard) -> anyhow::Result<Vec<DeadLetter>> {
    let connection = dashboard.broker().await?;
    let read = DlqRead::open(
        &connection,
        &dashboard.inner.topology,
        dashboard.inner.internal_key.as_ref(),
    )
    .await?;
    let letters = read.letters.clone();
    read.finish().await?;
    Ok(letters)
}

/// `GET /dead-letters`.
pub(super) async fn list(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
) -> PageResult {
    let letters = read(&dashboard).await?;
    Ok(html(&ListPage {
        csrf: session.csrf,
        active: "dead-letters",
        letters: letters.iter().map(line).collect(),
    }))
}

/// One step of a dead letter's history.
struct Attempt {
    at: String,
    exchange: String,
    code: String,
    message: String,
}

#[derive(Template)]
#[template(path = "dead_letter.html")]
struct ShowPage {
    csrf: String,
    active: &'static str,
    line: Line,
    error: String,
    dead_since: String,
    history: Vec<Attempt>,
    payload: String,
}

/// `GET /dead-letters/{request_id}`.
pub(super) async fn show(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Path(request_id): Path<Uuid>,
) -> PageResult {
    let letters = read(&dashboard).await?;
    let letter = letters
        .iter()
        .find(|l| l.request_id == Some(request_id))
        .ok_or_else(|| not_found(request_id))?;
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let history = letter
        .message
        .as_ref()
        .and_then(|m| m.get("history"))
        .and_then(Value::as_array)
        .map(|steps| {
            steps
                .iter()
                .map(|s| Attempt {
                    at: text(&s["at"]),
                    exchange: text(&s["exchange"]),
                    code: s["code"].as_str().unwrap_or("").to_owned(),
                    message: text(&s["message"]),
                })
                .collect()
        })
        .unwrap_or_default();
    let payload = match &letter.message {
        Some(message) => terminal::json(message)?,
        None => String::from_utf8_lossy(letter.body()).into_owned(),
    };
    Ok(html(&ShowPage {
        csrf: session.csrf,
        active: "dead-letters",
        line: line(letter),
        error: letter.error.clone().unwrap_or_default(),
        dead_since: letter.dead_lettered_at.map(when).unwrap_or_default(),
        history,
        payload,
    }))
}

fn not_found(request_id: Uuid) -> PageError {
    PageError::new(
        StatusCode::NOT_FOUND,
        format!("no dead letter with request id {request_id}"),
    )
}

/// `GET /dead-letters/{request_id}/replay`: the confirmation.
pub(super) async fn confirm_replay(
    Extension(session): Extension<Session>,
    Path(request_id): Path<Uuid>,
) -> PageResult {
    let mut page = ConfirmPage::new(
        &session.csrf,
        "dead-letters",
        format!("Replay {request_id}?"),
        format!("/dead-letters/{request_id}/replay"),
    );
    page.lines.push(
        "The signal goes back to its symbol's partition with a fresh attempt count and is executed now: its age counts from the replay. A signal that already has a fill is not replayed.".to_owned(),
    );
    page.button = "Replay".to_owned();
    page.cancel = format!("/dead-letters/{request_id}");
    Ok(html(&page))
}

/// `POST /dead-letters/{request_id}/replay`: replays it, then shows its timeline.
pub(super) async fn replay(
    State(dashboard): State<Dashboard>,
    Path(request_id): Path<Uuid>,
) -> PageResult {
    let Some(key) = dashboard.inner.internal_key.as_ref() else {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "HOOX_INTERNAL_KEY is required to verify and re-sign dead letters",
        ));
    };
    let connection = dashboard.broker().await?;
    let replayed = dlq::replay(
        &connection,
        &dashboard.inner.topology,
        key,
        dashboard.pool(),
        Worker::Dashboard,
        Some(request_id),
    )
    .await;
    drop(connection);
    replayed.map_err(|err| PageError::new(StatusCode::CONFLICT, format!("{err:#}")))?;
    Ok(Redirect::to(&format!("/signals?request_id={request_id}")).into_response())
}

/// Which dead letters to purge.
#[derive(Deserialize)]
pub(super) struct PurgeQuery {
    older_than: Option<String>,
}

fn older_than(text: Option<&str>) -> Result<Option<Duration>, PageError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(text) => humantime::parse_duration(text).map(Some).map_err(|err| {
            PageError::bad_request(format!(
                "`{text}` is not a duration such as 7d, 12h or 30m: {err}"
            ))
        }),
    }
}

fn chosen(letters: &[DeadLetter], older: Option<Duration>) -> Vec<String> {
    let cutoff =
        older.map(|d| Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
    letters
        .iter()
        .filter(|l| match cutoff {
            None => true,
            Some(cutoff) => l.dead_lettered_at.is_some_and(|at| at < cutoff),
        })
        .map(id_of)
        .collect()
}

/// `GET /dead-letters/purge?older_than=…`: the confirmation, naming each dead letter
/// that would go.
pub(super) async fn confirm_purge(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Query(query): Query<PurgeQuery>,
) -> PageResult {
    let older = older_than(query.older_than.as_deref())?;
    let letters = read(&dashboard).await?;
    let ids = chosen(&letters, older);
    let mut page = ConfirmPage::new(
        &session.csrf,
        "dead-letters",
        format!("Delete these {} dead letter(s) for good?", ids.len()),
        "/dead-letters/purge".to_owned(),
    );
    page.lines.push(
        "Purged signals are gone: they can no longer be replayed. Each purge is recorded in the audit trail.".to_owned(),
    );
    page.fields.push((
        "older_than".to_owned(),
        query.older_than.clone().unwrap_or_default(),
    ));
    page.fields.push(("ids".to_owned(), ids.join(",")));
    page.items = ids;
    page.button = "Purge".to_owned();
    page.danger = true;
    page.cancel = "/dead-letters".to_owned();
    Ok(html(&page))
}

/// The confirmed purge.
#[derive(Deserialize)]
pub(super) struct PurgeForm {
    older_than: Option<String>,
    ids: String,
}

/// `POST /dead-letters/purge`: purges exactly the dead letters confirmed; if the DLQ
/// changed since, purges nothing and says so.
pub(super) async fn purge(
    State(dashboard): State<Dashboard>,
    Form(form): Form<PurgeForm>,
) -> PageResult {
    let older = older_than(form.older_than.as_deref())?;
    let confirmed: Vec<&str> = form.ids.split(',').filter(|s| !s.is_empty()).collect();
    let connection = dashboard.broker().await?;
    let mut changed = false;
    let purged = dlq::purge(
        &connection,
        &dashboard.inner.topology,
        dashboard.pool(),
        Worker::Dashboard,
        older,
        |letters| {
            let now: Vec<String> = letters.iter().map(|l| id_of(l)).collect();
            changed = now != confirmed;
            !changed
        },
    )
    .await;
    drop(connection);
    purged?;
    if changed {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "the dead letters changed since you confirmed: nothing was purged; look at the list again",
        ));
    }
    Ok(Redirect::to("/dead-letters").into_response())
}
