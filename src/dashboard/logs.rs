//! Logs: the `system_logs` stream with `hoox logs tail`'s filters, newest last, paged
//! back by id; with JavaScript, new rows are appended live (server-sent events, read
//! with `logs tail --follow`'s own cursor, so none is skipped or shown twice).

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Extension;
use chrono::SecondsFormat;
use clap::ValueEnum;
use futures_util::{Stream, StreamExt};
use hoox_common::logs::{Severity, Worker};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Session;
use super::page::html;
use super::{Dashboard, PageError, PageResult};
use crate::commands::logs::{self, Filter, LogRow};

/// Rows on a page.
const PAGE: u32 = 100;
/// How often the live view looks for new rows.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// The filters as the form sends them.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Params {
    worker: Option<String>,
    severity: Option<String>,
    request_id: Option<String>,
    since: Option<String>,
    before: Option<i64>,
    after: Option<i64>,
}

fn given(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

impl Params {
    fn filter(&self) -> Result<Filter, String> {
        let worker = given(&self.worker)
            .map(|w| Worker::from_str(w, true).map_err(|_| format!("`{w}` is not a worker")))
            .transpose()?;
        let severity = given(&self.severity)
            .map(|s| Severity::from_str(s, true).map_err(|_| format!("`{s}` is not a severity")))
            .transpose()?;
        let request_id = given(&self.request_id)
            .map(|r| {
                r.parse::<Uuid>()
                    .map_err(|_| format!("`{r}` is not a requestId"))
            })
            .transpose()?;
        let since = given(&self.since)
            .map(|s| {
                humantime::parse_duration(s)
                    .map(logs::ago)
                    .map_err(|_| format!("`{s}` is not a duration such as 10m, 2h or 1d"))
            })
            .transpose()?;
        Ok(Filter {
            worker,
            severity,
            request_id,
            since,
        })
    }

    /// The query string of these filters, for links and the live stream.
    fn query(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("worker", &self.worker),
            ("severity", &self.severity),
            ("request_id", &self.request_id),
            ("since", &self.since),
        ] {
            if let Some(value) = given(value) {
                out.append_pair(name, value);
            }
        }
        out.finish()
    }
}

/// One row as shown.
struct Line {
    id: i64,
    at: String,
    worker: String,
    severity: String,
    kind: String,
    request_id: String,
    message: String,
}

fn line(row: &LogRow) -> Line {
    Line {
        id: row.id,
        at: row.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        worker: row.worker.clone(),
        severity: row.severity.clone(),
        kind: row.kind.clone().unwrap_or_default(),
        request_id: row.request_id.map(|id| id.to_string()).unwrap_or_default(),
        message: row.message.clone(),
    }
}

/// Rows as table rows: the page's body, and what the live stream appends.
#[derive(Template)]
#[template(path = "log_rows.html")]
struct Rows {
    lines: Vec<Line>,
}

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage {
    csrf: String,
    active: &'static str,
    params: Params,
    workers: Vec<&'static str>,
    severities: Vec<&'static str>,
    error: Option<String>,
    rows: String,
    query: String,
    /// The newest id shown: the live stream continues after it. None on an older page.
    live_after: Option<i64>,
    older: Option<String>,
}

/// `GET /logs`.
pub(super) async fn page(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Query(params): Query<Params>,
) -> PageResult {
    let mut page = LogsPage {
        csrf: session.csrf,
        active: "logs",
        query: params.query(),
        params: params.clone(),
        workers: Worker::value_variants()
            .iter()
            .map(|w| w.as_str())
            .collect(),
        severities: Severity::value_variants()
            .iter()
            .map(|s| s.as_str())
            .collect(),
        error: None,
        rows: String::new(),
        live_after: None,
        older: None,
    };
    let filter = match params.filter() {
        Ok(filter) => filter,
        Err(error) => {
            page.error = Some(error);
            return Ok((StatusCode::BAD_REQUEST, html(&page)).into_response());
        }
    };
    let rows = match params.before {
        Some(before) => {
            let mut rows = logs::older(dashboard.pool(), &filter, before, PAGE).await?;
            rows.reverse();
            rows
        }
        None => {
            let (rows, _) = logs::newest(dashboard.pool(), &filter, PAGE).await?;
            page.live_after = Some(rows.last().map_or(0, |r| r.id));
            rows
        }
    };
    if rows.len() == PAGE as usize {
        if let Some(first) = rows.first() {
            let mut link = url::form_urlencoded::Serializer::new(page.query.clone());
            link.append_pair("before", &first.id.to_string());
            page.older = Some(format!("/logs?{}", link.finish()));
        }
    }
    page.rows = Rows {
        lines: rows.iter().map(line).collect(),
    }
    .render()?;
    Ok(html(&page))
}

/// `GET /events/logs?…&after=ID`: the rows matching the filters written after row
/// `after`, as they come, until the client leaves or the dashboard stops.
pub(super) async fn events(
    State(dashboard): State<Dashboard>,
    Query(params): Query<Params>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, PageError> {
    let filter = params.filter().map_err(PageError::bad_request)?;
    let after = params.after.unwrap_or(0);
    // The rows the page may have missed, and the follow's cursor, from one snapshot.
    let (recent, cursor) = logs::newest(dashboard.pool(), &filter, PAGE).await?;
    let first: Vec<LogRow> = recent.into_iter().filter(|r| r.id > after).collect();
    let stop = dashboard.inner.shutdown.clone().cancelled_owned();
    let pool = dashboard.pool().clone();
    let stream = futures_util::stream::unfold(
        (pool, filter, cursor, Some(first)),
        |(pool, filter, mut cursor, first)| async move {
            let rows = match first {
                Some(rows) => rows,
                None => {
                    tokio::time::sleep(POLL_EVERY).await;
                    // A failed read is tried again at the next tick; the cursor stays.
                    logs::next(&pool, &filter, &mut cursor)
                        .await
                        .unwrap_or_default()
                }
            };
            let body = Rows {
                lines: rows.iter().map(line).collect(),
            }
            .render()
            .unwrap_or_default();
            Some(((rows.is_empty(), body), (pool, filter, cursor, None)))
        },
    )
    .filter_map(|(empty, body)| async move {
        (!empty).then(|| Ok(SseEvent::default().event("logs").data(body)))
    });
    Ok(Sse::new(stream.take_until(stop)).keep_alive(KeepAlive::default()))
}
