//! Positions: the ledger, and on demand the reconcile diff against the exchanges.

use askama::Template;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Extension;

use super::auth::Session;
use super::page::html;
use super::{Dashboard, PageResult};
use crate::commands::positions::{self, reconcile, PositionRow};

#[derive(Template)]
#[template(path = "positions.html")]
struct PositionsPage {
    csrf: String,
    active: &'static str,
    rows: Vec<PositionRow>,
    reconcile: Option<String>,
}

/// The reconcile diff of the ledger against what the exchanges hold, as
/// `hoox positions reconcile` prints it: read only, nothing adopted.
pub async fn reconcile(dashboard: &Dashboard) -> anyhow::Result<String> {
    let providers = reconcile::providers(dashboard.keys(), dashboard.pool());
    let venues = reconcile::venues(&providers, None).map_err(anyhow::Error::msg)?;
    let reports = reconcile::reconcile(dashboard.pool(), &venues, None, false).await?;
    Ok(reconcile::render(&reports))
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
