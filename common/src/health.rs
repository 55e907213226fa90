//! The bodies of `/healthz` and `/readyz`, the same for every service.

use serde_json::{json, Value};
use sqlx::PgPool;

/// The `/healthz` body: the process answers.
pub fn alive() -> Value {
    json!({"success": true, "result": {"status": "ok"}, "error": null})
}

/// Whether the service is ready (broker connected and database answering), and the
/// `/readyz` body that says which is down.
pub async fn readiness(broker: bool, pool: &PgPool) -> (bool, Value) {
    let database = sqlx::query("SELECT 1").execute(pool).await.is_ok();
    let ready = broker && database;
    let body = json!({
        "success": ready,
        "result": {"broker": broker, "database": database},
        "error": (!ready).then_some("not ready: broker or database unreachable"),
    });
    (ready, body)
}
