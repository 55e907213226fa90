//! `/healthz` (the process answers) and `/readyz` (broker and database reachable).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::Value;

use crate::AppState;

/// Liveness: always 200 while the process serves requests.
pub async fn healthz() -> Json<Value> {
    Json(hoox_common::health::alive())
}

/// `/metrics`, in the Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = hoox_common::metrics::scrape(
        state.config.kill_switch(),
        state.publisher.is_ready(),
        &state.pool,
    )
    .await;
    (
        [(header::CONTENT_TYPE, hoox_common::metrics::CONTENT_TYPE)],
        body,
    )
}

/// Readiness: 200 when a webhook could be queued now, else 503 naming what is down.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (ready, body) =
        hoox_common::health::readiness(state.publisher.is_ready(), &state.pool).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
