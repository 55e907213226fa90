//! Positions: the ledger, and on demand the reconcile diff against the exchanges.

use askama::Template;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Extension;

use super::auth::Session;
use super::page::html;
use super::{Dashboard, PageResult};
use crate::commands::positions::{self, PositionRow};

#[derive(Template)]
#[template(path = "positions.html")]
struct PositionsPage {
    csrf: String,
    active: &'static str,
    rows: Vec<PositionRow>,
    reconcile: Option<String>,
}

/// The reconcile diff of the ledger against what the exchanges hold, as text for the
/// Positions page.
pub async fn reconcile(_dashboard: &Dashboard) -> anyhow::Result<String> {
    Ok("Reconcile is not available in this build.".to_owned())
}

async fn render(dashboard: &Dashboard, session: Session, reconcile: Option<String>) -> PageResult {
    let rows = positions::load(dashboard.pool()).await?;
    Ok(html(&PositionsPage {
        csrf: session.csrf,
        active: "positions",
        rows,
        reconcile,
    })
    .into_response())
}

/// `GET /positions`.
pub(super) async fn page(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
) -> PageResult {
    render(&dashboard, session, None).await
}

/// `POST /positions/reconcile`: the ledger with the reconcile diff under it.
pub(super) async fn reconcile_page(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
) -> PageResult {
    let diff = reconcile(&dashboard).await?;
    render(&dashboard, session, Some(diff)).await
}
