//! The overview: health, the kill switch, today's fills and PnL, the last dead letters;
//! live over server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::{Stream, StreamExt};
use hoox_common::logs::Worker;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::auth::Session;
use super::page::{html, ConfirmPage};
use super::{Dashboard, PageResult};
use crate::commands::health::{QueueRole, Report};
use crate::commands::{kill_switch, report};

/// How often the live overview is sent again.
const LIVE_EVERY: Duration = Duration::from_secs(2);
/// How many dead letters the overview lists.
const LAST_DEAD_LETTERS: i64 = 5;

/// One queue's line.
struct QueueLine {
    name: String,
    role: &'static str,
    messages: String,
    consumers: String,
    exists: bool,
}

/// One recently dead-lettered signal.
struct DeadLine {
    at: String,
    request_id: String,
    reason: String,
    error: String,
}

/// The part of the overview that updates live.
#[derive(Template)]
#[template(path = "overview_live.html")]
struct Live {
    healthy: bool,
    broker: bool,
    database: bool,
    migrations: bool,
    queues: Vec<QueueLine>,
    problems: Vec<String>,
    warnings: Vec<String>,
    dead_letters: String,
    kill_switch: bool,
    kill_reason: Option<String>,
    fills_today: i64,
    volume_today: Decimal,
    pnl_today: Decimal,
    today: Vec<[String; 6]>,
    last_dead: Vec<DeadLine>,
    checked_at: String,
}

/// A message in place of the live part when it cannot be read.
#[derive(Template)]
#[template(
    source = r#"<div class="message error">{{ message }}</div>"#,
    ext = "html"
)]
struct Notice {
    message: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    csrf: String,
    active: &'static str,
    live: String,
}

fn role(role: QueueRole) -> &'static str {
    match role {
        QueueRole::Main => "main",
        QueueRole::Partition => "partition",
        QueueRole::Retry => "retry",
        QueueRole::Dlq => "dead letters",
    }
}

fn count(n: Option<u32>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// Renders a time as people read it in a table.
pub(super) fn when(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn live(dashboard: &Dashboard) -> anyhow::Result<Live> {
    let pool = dashboard.pool();
    let report: std::sync::Arc<Report> = dashboard.health().await;
    let kill_switch = kill_switch::status(pool).await?;
    let day = Utc::now().date_naive();
    let rows = report::load(pool, Some(day), Some(day)).await?;
    let dead: Vec<(DateTime<Utc>, Option<Uuid>, Value)> = sqlx::query_as(
        "SELECT created_at, request_id, context FROM system_logs WHERE kind = 'dead_lettered' ORDER BY created_at DESC LIMIT $1",
    )
    .bind(LAST_DEAD_LETTERS)
    .fetch_all(pool)
    .await?;
    Ok(Live {
        healthy: report.healthy,
        broker: report.broker.reachable,
        database: report.database.reachable,
        migrations: report.database.migrations_current,
        queues: report
            .queues
            .iter()
            .map(|q| QueueLine {
                name: q.name.clone(),
                role: role(q.role),
                messages: count(q.messages),
                consumers: count(q.consumers),
                exists: q.exists,
            })
            .collect(),
        problems: report.problems.iter().map(|f| f.message.clone()).collect(),
        warnings: report.warnings.iter().map(|f| f.message.clone()).collect(),
        dead_letters: count(report.dead_letters.count),
        kill_switch: kill_switch.on,
        kill_reason: kill_switch.reason.filter(|_| kill_switch.on),
        fills_today: rows.iter().map(|r| r.fills).sum(),
        volume_today: rows.iter().map(|r| r.volume).sum::<Decimal>().normalize(),
        pnl_today: rows
            .iter()
            .map(|r| r.realized_pnl)
            .sum::<Decimal>()
            .normalize(),
        today: rows
            .iter()
            .map(|r| {
                [
                    r.exchange.clone(),
                    if r.testnet { "testnet" } else { "live" }.to_owned(),
                    r.symbol.clone(),
                    r.fills.to_string(),
                    r.volume.to_string(),
                    r.realized_pnl.to_string(),
                ]
            })
            .collect(),
        last_dead: dead
            .into_iter()
            .map(|(at, request_id, context)| DeadLine {
                at: when(at),
                request_id: request_id.map(|id| id.to_string()).unwrap_or_default(),
                reason: context["reason"].as_str().unwrap_or("-").to_owned(),
                error: context["error"].as_str().unwrap_or("").to_owned(),
            })
            .collect(),
        checked_at: when(Utc::now()),
    })
}

/// `GET /`.
pub(super) async fn page(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
) -> PageResult {
    let live = live(&dashboard).await?.render()?;
    Ok(html(&OverviewPage {
        csrf: session.csrf,
        active: "overview",
        live,
    }))
}

/// `GET /events/overview`: the live part of the overview, again every two seconds,
/// until the client leaves or the dashboard stops.
pub(super) async fn events(
    State(dashboard): State<Dashboard>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stop = dashboard.inner.shutdown.clone().cancelled_owned();
    let stream = futures_util::stream::unfold(dashboard, |dashboard| async move {
        tokio::time::sleep(LIVE_EVERY).await;
        let body = match live(&dashboard).await.and_then(|l| Ok(l.render()?)) {
            Ok(body) => body,
            Err(err) => Notice {
                message: format!("cannot read the overview: {err:#}"),
            }
            .render()
            .unwrap_or_default(),
        };
        Some((
            Ok(SseEvent::default().event("overview").data(body)),
            dashboard,
        ))
    });
    Sse::new(stream.take_until(stop)).keep_alive(KeepAlive::default())
}

/// Which way the kill switch is to go.
#[derive(Deserialize)]
pub(super) struct Toggle {
    on: bool,
}

/// `GET /kill-switch?on=…`: the confirmation.
pub(super) async fn confirm_kill_switch(
    Extension(session): Extension<Session>,
    Query(toggle): Query<Toggle>,
) -> PageResult {
    let (title, line, button) = if toggle.on {
        (
            "Turn the kill switch on?",
            "Trading halts: ingest answers new webhooks 503, and consumers dead-letter what is queued instead of trading it.",
            "Halt trading",
        )
    } else {
        (
            "Turn the kill switch off?",
            "Trading resumes: new signals are executed again. Dead letters stay where they are until replayed.",
            "Resume trading",
        )
    };
    let mut page = ConfirmPage::new(
        &session.csrf,
        "overview",
        title.to_owned(),
        "/kill-switch".to_owned(),
    );
    page.lines.push(line.to_owned());
    page.fields.push(("on".to_owned(), toggle.on.to_string()));
    page.button = button.to_owned();
    page.danger = toggle.on;
    Ok(html(&page))
}

/// The confirmed toggle.
#[derive(Deserialize)]
pub(super) struct ToggleForm {
    on: bool,
}

/// `POST /kill-switch`: sets the kill switch, recorded as done by the dashboard.
pub(super) async fn set_kill_switch(
    State(dashboard): State<Dashboard>,
    Form(form): Form<ToggleForm>,
) -> PageResult {
    kill_switch::set(dashboard.pool(), Worker::Dashboard, form.on).await?;
    Ok(Redirect::to("/").into_response())
}
