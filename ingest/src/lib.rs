//! The webhook service: validates signals, authenticates their producer, refuses
//! duplicates, and queues them with a confirmed, persistent publish.

mod audit;
mod batch;
pub mod config;
pub mod error;
pub mod idempotency;
pub mod publisher;
pub mod routes;
pub mod server;
pub mod source;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{middleware, Router};
use hoox_common::runtime_config::RuntimeConfig;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::timeout::TimeoutLayer;

use crate::publisher::Publisher;
use crate::server::Limits;
use crate::source::Sources;

/// Longest wait at shutdown for webhooks in flight once the server has stopped: a
/// publish waits at most two seconds for its confirm, a database write a few more.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// How often expired idempotency keys and idle rate-limit entries are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    /// Webhooks being claimed, published and recorded, and late confirms: shutdown
    /// waits for them before it closes the broker connection.
    pub(crate) tasks: TaskTracker,
    /// Identical webhooks in flight take turns.
    pub(crate) key_locks: Arc<idempotency::KeyLocks>,
    /// Concurrent webhooks' key claims, many per statement.
    pub(crate) claims: Arc<idempotency::Claims>,
    /// Concurrent webhooks' audit rows and key confirmations, many per transaction.
    pub(crate) recorder: Arc<audit::Recorder>,
}

/// The shared parts of [`AppState`].
pub struct Inner {
    /// The database.
    pub pool: PgPool,
    /// The queue publisher.
    pub publisher: Publisher,
    /// Live operator settings.
    pub config: RuntimeConfig,
    /// The webhook key when the config table has none.
    pub api_key: SecretString,
    /// The queue-message signing key.
    pub internal_key: SecretString,
    /// How long explicit idempotency keys live.
    pub idempotency_ttl: Duration,
    /// How long fingerprints live.
    pub duplicate_window: Duration,
    /// Connection limits and timeouts.
    pub limits: Limits,
    /// Who may send webhooks, how their address is found, and how often they may.
    pub sources: Arc<Sources>,
}

impl AppState {
    /// Wraps the shared parts, and starts the tasks that write for many webhooks at
    /// once (they stop when the last clone of the state is dropped).
    pub fn new(inner: Inner) -> Self {
        Self {
            claims: Arc::new(idempotency::Claims::start(inner.pool.clone())),
            recorder: Arc::new(audit::Recorder::start(inner.pool.clone())),
            inner: Arc::new(inner),
            tasks: TaskTracker::new(),
            key_locks: Arc::default(),
        }
    }

    /// Waits, at most `limit`, until every webhook in flight and every late confirm
    /// has been recorded; no new one can start once this is called.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        self.tasks.close();
        // Webhooks first: the last of them may still hand a late verdict over.
        let answered = tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_ok();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        answered && self.publisher.settle_late_verdicts(left).await
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// The HTTP routes. Every answer is the JSON envelope, those of the layers included.
pub fn router(state: AppState) -> Router {
    // Recording starts with the first route, so nothing before the first scrape is lost.
    hoox_common::metrics::install();
    Router::new()
        .route("/webhook", post(routes::webhook::webhook))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .fallback(routes::edge::not_found)
        .method_not_allowed_fallback(routes::edge::method_not_allowed)
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        ))
        .layer(middleware::from_fn(routes::edge::limit_head))
        .layer(middleware::map_response(routes::edge::envelope_errors))
        .layer(middleware::from_fn(routes::webhook::measured))
        .with_state(state)
}

/// Serves `state` on `listener` until `token` is cancelled, then stops accepting, lets
/// every request in flight finish, closes idle connections, and returns. Also sweeps
/// expired idempotency keys and idle rate-limit entries.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    token: CancellationToken,
) -> std::io::Result<()> {
    tokio::spawn(sweep(
        state.pool.clone(),
        Arc::clone(&state.sources),
        token.clone(),
    ));
    let (limits, sources) = (state.limits, Arc::clone(&state.sources));
    server::serve(listener, router(state), limits, sources, token).await;
    Ok(())
}

async fn sweep(pool: PgPool, sources: Arc<Sources>, token: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        sources.forget_idle();
        match idempotency::sweep(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(swept = n, "expired idempotency keys removed"),
            Err(err) => tracing::warn!(error = %err, "cannot sweep idempotency keys"),
        }
    }
}

/// Runs the service with `args` until `token` is cancelled: waits for the database,
/// starts the publisher and the config listener, then serves.
pub async fn run(
    args: &config::IngestArgs,
    service: &hoox_common::config::ServiceArgs,
    api_key: SecretString,
    internal_key: SecretString,
    token: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context;

    let listener = TcpListener::bind(args.ingest_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.ingest_addr))?;
    let opened = RuntimeConfig::open(&service.database.database_url, 10, &token)
        .await
        .context("cannot read the config table")?;
    let Some((pool, config)) = opened else {
        return Ok(());
    };
    hoox_common::partitions::check(&pool, &service.amqp.topology()).await?;
    // The broker connection outlives the server: it closes only once every webhook in
    // flight has its confirm and audit row (see the end of this function).
    let publisher_token = CancellationToken::new();
    let (publisher, supervisor) = Publisher::start(
        service.amqp.amqp_url.clone(),
        service.amqp.topology(),
        publisher_token.clone(),
    );
    let state = AppState::new(Inner {
        pool,
        publisher,
        config,
        api_key,
        internal_key,
        idempotency_ttl: args.idempotency_ttl(),
        duplicate_window: args.duplicate_window(),
        limits: args.limits(),
        sources: Arc::new(args.sources()),
    });
    tracing::info!(addr = %args.ingest_addr, "ingest listening");
    let served = serve(listener, state.clone(), token)
        .await
        .context("ingest server failed");
    // The server has stopped accepting and answered every request in flight; the
    // publishes they started finish before the broker connection closes.
    if !state.drain(DRAIN_LIMIT).await {
        tracing::error!(
            "webhooks still in flight after {DRAIN_LIMIT:?}; closing the broker connection anyway"
        );
    }
    publisher_token.cancel();
    let _ = supervisor.await;
    served
}
