//! `hoox dashboard`, the Command Center: the deployment's health, the kill switch,
//! signals, fills, positions, dead letters, settings and the live audit trail, in a
//! browser.
//!
//! Pages are HTML rendered on the server from templates compiled into the binary
//! (askama); htmx and its server-sent-events extension are vendored and embedded, so
//! nothing is fetched at run time, and every page works without JavaScript (with it,
//! the overview and the log view update live). Every page and action needs a session
//! (see [`auth`]); every change goes through a confirmation page, carries the session's
//! CSRF token, and is recorded in `system_logs` with worker `dashboard` by the same
//! functions the CLI uses.

mod assets;
mod auth;
mod config;
mod dead_letters;
mod fills;
mod logs;
mod overview;
mod page;
mod positions;
mod signals;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hoox_common::amqp::{self, Topology};
use hoox_common::config::{parse_secret, AmqpArgs, DatabaseArgs, InternalKeyArgs};
use hoox_consumer::config::ExchangeArgs;
use lapin::Connection;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::commands::health::{self, HealthArgs, Report};

pub use positions::reconcile;

/// Default `HOOX_DASHBOARD_ADDR`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8088";
/// Largest request body: the forms are small.
const BODY_LIMIT: usize = 64 * 1024;
/// Longest time a request may take before it is answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How old a health report may be before the next request has it checked again (in
/// the background: a check costs a broker and a database connection, more than a page
/// may take).
const HEALTH_TTL: Duration = Duration::from_secs(2);

/// How the dashboard listens and keeps sessions; read by `hoox dashboard` and `hoox run`.
#[derive(Debug, Clone, clap::Args)]
pub struct DashboardSettings {
    /// Address the dashboard listens on.
    #[arg(long, env = "HOOX_DASHBOARD_ADDR", default_value = DEFAULT_ADDR)]
    pub dashboard_addr: SocketAddr,

    /// The dashboard's password; required on an address other than loopback (`hoox run`
    /// makes one for the run when unset, and prints it).
    #[arg(long, env = "HOOX_DASHBOARD_PASSWORD", value_parser = parse_secret, hide_env_values = true)]
    pub dashboard_password: Option<SecretString>,

    /// The dashboard is reached over HTTPS (a TLS proxy in front): its session cookie
    /// is marked `Secure`. A request with `X-Forwarded-Proto: https` gets that anyway.
    #[arg(long, env = "HOOX_DASHBOARD_TLS")]
    pub dashboard_tls: bool,

    /// Minutes a session may stay unused before it ends.
    #[arg(long, env = "HOOX_DASHBOARD_IDLE_MINUTES", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=1440))]
    pub dashboard_idle_minutes: u32,

    /// Hours a session lasts at most, used or not.
    #[arg(long, env = "HOOX_DASHBOARD_SESSION_HOURS", default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=720))]
    pub dashboard_session_hours: u32,
}

/// Arguments of `hoox dashboard`.
#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    pub settings: DashboardSettings,

    #[command(flatten)]
    pub amqp: AmqpArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub internal_key: InternalKeyArgs,

    #[command(flatten)]
    pub keys: ExchangeArgs,
}

/// The dashboard's shared state: cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    amqp_url: SecretString,
    topology: Topology,
    internal_key: Option<SecretString>,
    health: HealthArgs,
    auth: auth::Auth,
    /// The broker connection of the dead-letter pages, opened on first use. Its lock
    /// also runs one DLQ read or change at a time: two reads at once would each see
    /// only the letters the other had not taken.
    broker: tokio::sync::Mutex<Option<Connection>>,
    /// The last health report and when it was made.
    health_cache: std::sync::Mutex<Option<(Instant, Arc<Report>)>>,
    /// Whether a health check runs in the background now.
    health_refreshing: AtomicBool,
    /// Cancelled when the server stops, so that live streams end.
    shutdown: CancellationToken,
}

impl Dashboard {
    /// A dashboard on `pool` for the deployment `args` names, signed in to with
    /// `password`.
    pub fn new(pool: PgPool, args: &DashboardArgs, password: &SecretString) -> Self {
        let settings = &args.settings;
        Self {
            inner: Arc::new(Inner {
                pool,
                amqp_url: args.amqp.amqp_url.clone(),
                topology: args.amqp.topology(),
                internal_key: args.internal_key.internal_key.clone(),
                health: HealthArgs {
                    json: false,
                    exchanges: false,
                    amqp: args.amqp.clone(),
                    database: args.database.clone(),
                    keys: args.keys.clone(),
                },
                auth: auth::Auth::new(
                    password,
                    settings.dashboard_tls,
                    Duration::from_secs(u64::from(settings.dashboard_idle_minutes) * 60),
                    Duration::from_secs(u64::from(settings.dashboard_session_hours) * 3600),
                ),
                broker: tokio::sync::Mutex::new(None),
                health_cache: std::sync::Mutex::new(None),
                health_refreshing: AtomicBool::new(false),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The exchange keys of the deployment, for reads (health, reconcile).
    fn keys(&self) -> &ExchangeArgs {
        &self.inner.health.keys
    }

    /// The broker connection, (re)connected if need be, held until the guard drops.
    async fn broker(&self) -> anyhow::Result<tokio::sync::MappedMutexGuard<'_, Connection>> {
        let mut slot = self.inner.broker.lock().await;
        if !slot.as_ref().is_some_and(|c| c.status().connected()) {
            let connection = amqp::connect(&self.inner.amqp_url, "hoox-dashboard")
                .await
                .context("cannot connect to the message broker")?;
            *slot = Some(connection);
        }
        tokio::sync::MutexGuard::try_map(slot, Option::as_mut)
            .map_err(|_| anyhow::anyhow!("the broker connection is gone"))
    }

    /// The latest health report. One older than [`HEALTH_TTL`] is still given, and a
    /// new check starts in the background; only the first request waits for one.
    async fn health(&self) -> Arc<Report> {
        let cached = self
            .inner
            .health_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some((at, report)) = cached else {
            return self.check_health().await;
        };
        if at.elapsed() >= HEALTH_TTL && !self.inner.health_refreshing.swap(true, Ordering::SeqCst)
        {
            let dashboard = self.clone();
            tokio::spawn(async move {
                dashboard.check_health().await;
            });
        }
        report
    }

    async fn check_health(&self) -> Arc<Report> {
        let report = Arc::new(health::inspect(&self.inner.health, false).await);
        *self
            .inner
            .health_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), Arc::clone(&report)));
        self.inner.health_refreshing.store(false, Ordering::SeqCst);
        report
    }
}

/// An error page: what went wrong, never a secret (sqlx and lapin errors name no
/// password).
#[derive(Debug)]
struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl<E: Into<anyhow::Error>> From<E> for PageError {
    fn from(err: E) -> Self {
        let err: anyhow::Error = err.into();
        tracing::warn!(error = %format!("{err:#}"), "dashboard request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}"))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = page::ErrorPage {
            status: self.status.as_u16(),
            message: self.message,
        };
        (self.status, page::html(&page)).into_response()
    }
}

/// What a page handler gives.
type PageResult = Result<Response, PageError>;

/// The dashboard's routes: the sign-in page and assets are open, everything else needs
/// a session, and every POST also its CSRF token.
pub fn router(dashboard: Dashboard) -> Router {
    let protected = Router::new()
        .route("/", get(overview::page))
        .route("/events/overview", get(overview::events))
        .route(
            "/kill-switch",
            get(overview::confirm_kill_switch).post(overview::set_kill_switch),
        )
        .route("/signals", get(signals::page))
        .route("/fills", get(fills::page))
        .route("/fills.csv", get(fills::csv))
        .route("/positions", get(positions::page))
        .route("/positions/reconcile", post(positions::reconcile_page))
        .route("/dead-letters", get(dead_letters::list))
        .route(
            "/dead-letters/purge",
            get(dead_letters::confirm_purge).post(dead_letters::purge),
        )
        .route("/dead-letters/{request_id}", get(dead_letters::show))
        .route(
            "/dead-letters/{request_id}/replay",
            get(dead_letters::confirm_replay).post(dead_letters::replay),
        )
        .route("/config", get(config::page))
        .route("/config/edit", get(config::edit))
        .route("/config/confirm", post(config::confirm))
        .route("/config/set", post(config::set))
        .route("/logs", get(logs::page))
        .route("/events/logs", get(logs::events))
        .route("/logout", post(auth::logout))
        .route_layer(middleware::from_fn_with_state(
            dashboard.clone(),
            auth::require_session,
        ));
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/assets/{file}", get(assets::serve))
        .merge(protected)
        .fallback(|| async { PageError::new(StatusCode::NOT_FOUND, "no such page") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // Not `no-referrer`: under it browsers send `Origin: null` with a form's POST,
        // which the cross-site check must refuse.
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .with_state(dashboard)
}

/// Serves the dashboard on `listener` until `token` is cancelled; then lets requests in
/// flight finish (live streams end with the token) and returns.
pub async fn serve(
    listener: TcpListener,
    dashboard: Dashboard,
    token: CancellationToken,
) -> std::io::Result<()> {
    let streams = dashboard.inner.shutdown.clone();
    let app = router(dashboard.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            token.cancelled().await;
            streams.cancel();
        })
        .await;
    if let Some(connection) = dashboard.inner.broker.lock().await.take() {
        let _ = connection.close(200, "done".into()).await;
    }
    served
}

/// Refuses to listen beyond loopback without a password.
fn check_password(settings: &DashboardSettings) -> anyhow::Result<()> {
    if settings.dashboard_password.is_none() && !settings.dashboard_addr.ip().is_loopback() {
        bail!(
            "HOOX_DASHBOARD_PASSWORD is required: the dashboard listens on {}, beyond this machine",
            settings.dashboard_addr
        );
    }
    Ok(())
}

/// Runs `hoox dashboard` until SIGINT or SIGTERM.
pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    check_password(&args.settings)?;
    let (password, generated) = match &args.settings.dashboard_password {
        Some(password) => (password.clone(), None),
        None => {
            let password = crate::commands::run::generate_secret();
            (SecretString::from(password.clone()), Some(password))
        }
    };
    let token = CancellationToken::new();
    hoox_common::shutdown::cancel_on_signal(token.clone());
    let pool = hoox_common::db::connect_existing(&args.database.database_url, 8)
        .await
        .context("cannot open the database")?;
    let listener = TcpListener::bind(args.settings.dashboard_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.settings.dashboard_addr))?;
    println!(
        "hoox dashboard: http://{} (Ctrl-C stops it)",
        listener.local_addr()?
    );
    if let Some(password) = generated {
        println!(
            "  password: {password}   (made for this run; set HOOX_DASHBOARD_PASSWORD to keep one)"
        );
    }
    let dashboard = Dashboard::new(pool, &args, &password);
    serve(listener, dashboard, token)
        .await
        .context("dashboard server")
}
