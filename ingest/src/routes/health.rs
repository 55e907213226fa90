//! `/healthz` (the process answers) and `/readyz` (broker and database reachable).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

use crate::AppState;

/// Liveness: always 200 while the process serves requests.
pub async fn healthz() -> Json<Value> {
    Json(hoox_common::health::alive())
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
