//! The consumer's `/healthz`, `/readyz` and `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use hoox_common::runtime_config::RuntimeConfig;

#[derive(Clone)]
struct Health {
    pool: sqlx::PgPool,
    connected: Arc<AtomicBool>,
    config: RuntimeConfig,
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    let body = hoox_common::metrics::scrape(
        health.config.kill_switch(),
        health.connected.load(Ordering::SeqCst),
        &health.pool,
    )
    .await;
    (
        [(header::CONTENT_TYPE, hoox_common::metrics::CONTENT_TYPE)],
        body,
    )
}

async fn readyz(State(health): State<Health>) -> (StatusCode, Json<serde_json::Value>) {
    let broker = health.connected.load(Ordering::SeqCst);
    let (ready, body) = hoox_common::health::readiness(broker, &health.pool).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// The consumer's `/healthz`, `/readyz` and `/metrics`.
pub fn health_router(
    pool: sqlx::PgPool,
    connected: Arc<AtomicBool>,
    config: RuntimeConfig,
) -> Router {
    hoox_common::metrics::install();
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(hoox_common::health::alive()) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Health {
            pool,
            connected,
            config,
        })
}
