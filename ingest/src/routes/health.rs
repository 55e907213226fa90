//! `/healthz` (the process answers) and `/readyz` (broker and database reachable).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// Liveness: always 200 while the process serves requests.
pub async fn healthz() -> Json<Value> {
    Json(json!({"success": true, "result": {"status": "ok"}, "error": null}))
}

/// Readiness: 200 when a webhook could be queued now, else 503 naming what is down.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let broker = state.publisher.is_ready();
    let database = sqlx::query("SELECT 1").execute(&state.pool).await.is_ok();
    let ready = broker && database;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "success": ready,
        "result": {"broker": broker, "database": database},
        "error": (!ready).then_some("not ready: broker or database unreachable"),
    });
    (status, Json(body))
}
