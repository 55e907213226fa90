//! Signals: one signal's timeline by requestId, the same events as `hoox trace`.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Extension;
use chrono::SecondsFormat;
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Session;
use super::page::html;
use super::{Dashboard, PageResult};
use crate::commands::trace::{self, Trace};

#[derive(Template)]
#[template(path = "signals.html")]
struct SignalsPage {
    csrf: String,
    active: &'static str,
    query: String,
    error: Option<String>,
    trace: Option<Trace>,
}

impl SignalsPage {
    fn at(&self, index: &usize) -> String {
        self.trace
            .as_ref()
            .and_then(|t| t.events.get(*index))
            .map(|e| e.created_at.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_default()
    }
}

/// The search.
#[derive(Deserialize)]
pub(super) struct Search {
    request_id: Option<String>,
}

/// `GET /signals?request_id=…`.
pub(super) async fn page(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Query(search): Query<Search>,
) -> PageResult {
    let query = search.request_id.unwrap_or_default().trim().to_owned();
    let mut page = SignalsPage {
        csrf: session.csrf,
        active: "signals",
        query: query.clone(),
        error: None,
        trace: None,
    };
    if query.is_empty() {
        return Ok(html(&page));
    }
    let Ok(request_id) = query.parse::<Uuid>() else {
        page.error = Some(format!(
            "`{query}` is not a requestId (a UUID such as ingest answers with)"
        ));
        return Ok((StatusCode::BAD_REQUEST, html(&page)).into_response());
    };
    let trace = trace::load(dashboard.pool(), request_id).await?;
    if trace.events.is_empty() && trace.fill.is_none() {
        page.error = Some(format!("nothing is recorded about {request_id}"));
        return Ok((StatusCode::NOT_FOUND, html(&page)).into_response());
    }
    page.trace = Some(trace);
    Ok(html(&page))
}
