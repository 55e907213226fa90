//! Signing in, sessions and CSRF.
//!
//! One password (`HOOX_DASHBOARD_PASSWORD`), compared in constant time by its SHA-256.
//! Sign-in attempts are rate limited per client address and for all clients together,
//! before the password is looked at; a refused attempt is recorded as a typed event
//! (`login_failed`, and `login_throttled` up to ten a minute). A session is a random id in the `hoox_session`
//! cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over HTTPS); the database keeps only
//! its SHA-256, its CSRF token and its times, so sessions survive a restart and are
//! shared by every dashboard on the database. A session ends after
//! `HOOX_DASHBOARD_IDLE_MINUTES` unused, `HOOX_DASHBOARD_SESSION_HOURS` after sign-in,
//! or at sign-out, which deletes its row. A request without a live session gets the
//! sign-in page, never data. Every POST but the sign-in itself must carry the session's
//! CSRF token in its `csrf` field, and no POST may come from another site (`Origin`,
//! `Sec-Fetch-Site`): otherwise 403, and nothing changes.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use hoox_common::event::Event;
use hoox_common::logs::{insert_logs, LogEntry, Worker};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use url::form_urlencoded;

use super::page::{self, LoginPage};
use super::{Dashboard, PageError, BODY_LIMIT};
use crate::commands::run::generate_secret;

/// The session cookie's name.
pub(super) const COOKIE: &str = "hoox_session";
/// Sign-in attempts one client may make per minute (a burst of as many, then evenly).
const PER_CLIENT_PER_MINUTE: u32 = 5;
/// Sign-in attempts all clients together may make per minute.
const GLOBAL_PER_MINUTE: u32 = 30;
/// Throttled attempts recorded per minute, in all: a flood of sign-ins must not become
/// a flood of audit rows.
const THROTTLED_RECORDED_PER_MINUTE: u32 = 10;

/// The password and the session rules.
pub(super) struct Auth {
    password_digest: [u8; 32],
    tls: bool,
    idle: Duration,
    lifetime: Duration,
    per_client: DefaultKeyedRateLimiter<IpAddr>,
    global: DefaultDirectRateLimiter,
    throttled_records: DefaultDirectRateLimiter,
}

/// A live session, handed to every protected handler.
#[derive(Debug, Clone)]
pub(super) struct Session {
    id_hash: Vec<u8>,
    /// The token every changing form of this session carries.
    pub(super) csrf: String,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl Auth {
    pub(super) fn new(
        password: &SecretString,
        tls: bool,
        idle: Duration,
        lifetime: Duration,
    ) -> Self {
        Self {
            password_digest: digest(password.expose_secret()),
            tls,
            idle,
            lifetime,
            per_client: RateLimiter::keyed(per_minute(PER_CLIENT_PER_MINUTE)),
            global: RateLimiter::direct(per_minute(GLOBAL_PER_MINUTE)),
            throttled_records: RateLimiter::direct(per_minute(THROTTLED_RECORDED_PER_MINUTE)),
        }
    }

    fn password_matches(&self, presented: &str) -> bool {
        bool::from(digest(presented).ct_eq(&self.password_digest))
    }

    /// The session of cookie value `id` if it is live, touched as used now.
    async fn session(&self, pool: &PgPool, id: &str) -> Result<Option<Session>, sqlx::Error> {
        let id_hash = digest(id).to_vec();
        let csrf: Option<String> = sqlx::query_scalar(
            r#"
            UPDATE dashboard_sessions SET last_seen = now()
            WHERE id_hash = $1 AND expires_at > now()
              AND last_seen > now() - $2::bigint * interval '1 second'
            RETURNING csrf_token
            "#,
        )
        .bind(&id_hash)
        .bind(secs(self.idle))
        .fetch_optional(pool)
        .await?;
        Ok(csrf.map(|csrf| Session { id_hash, csrf }))
    }

    /// Starts a session; gives the cookie value. Ended sessions are removed on the way.
    async fn start(&self, pool: &PgPool) -> Result<String, sqlx::Error> {
        let id = generate_secret();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "DELETE FROM dashboard_sessions WHERE expires_at <= now() OR last_seen <= now() - $1::bigint * interval '1 second'",
        )
        .bind(secs(self.idle))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (id_hash, csrf_token, expires_at) VALUES ($1, $2, now() + $3::bigint * interval '1 second')",
        )
        .bind(digest(&id).to_vec())
        .bind(generate_secret())
        .bind(secs(self.lifetime))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The `Set-Cookie` value for session `id`; `None` clears the cookie.
    fn cookie(&self, id: Option<&str>, headers: &HeaderMap) -> HeaderValue {
        let secure = self.tls
            || headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        let (value, max_age) = match id {
            Some(id) => (id, secs(self.lifetime)),
            None => ("", 0),
        };
        let cookie = format!(
            "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
            if secure { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// The session cookie's value, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// Whether the request says it comes from another site. Browsers send `Sec-Fetch-Site`
/// and `Origin` with every POST; a client that sends neither is no browser a forged
/// page could drive.
fn cross_site(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return true;
        }
    }
    match text(header::ORIGIN.as_str()) {
        None => false,
        Some(origin) => {
            let host = text(header::HOST.as_str()).unwrap_or_default();
            let origin_host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            origin_host != Some(host)
        }
    }
}

/// A page's own address (path and query), if `next` is one: never another site's.
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path
        }
        _ => "/",
    }
}

fn forbidden(why: &str) -> Response {
    PageError::new(StatusCode::FORBIDDEN, why).into_response()
}

/// The sign-in page with `status`, returning to `next` after sign-in.
fn login_response(status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let page = LoginPage {
        next: next.to_owned(),
        error: error.map(str::to_owned),
    };
    (status, page::html(&page)).into_response()
}

/// Lets a request through only with a live session, and a POST only with that
/// session's CSRF token and from this site.
pub(super) async fn require_session(
    State(dashboard): State<Dashboard>,
    request: Request,
    next: Next,
) -> Response {
    let auth = &dashboard.inner.auth;
    let session = match session_cookie(request.headers()) {
        None => None,
        Some(id) => match auth.session(dashboard.pool(), &id).await {
            Ok(session) => session,
            Err(err) => return PageError::from(err).into_response(),
        },
    };
    let Some(session) = session else {
        let back = if request.method() == Method::GET {
            request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned()
        } else {
            "/".to_owned()
        };
        return login_response(StatusCode::UNAUTHORIZED, local_path(Some(&back)), None);
    };
    let mut request = if request.method() == Method::POST {
        if cross_site(request.headers()) {
            return forbidden("this form was sent from another site");
        }
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
            return PageError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large")
                .into_response();
        };
        let token = form_urlencoded::parse(&bytes)
            .find(|(name, _)| name == "csrf")
            .map(|(_, value)| value.into_owned());
        let valid =
            token.is_some_and(|token| bool::from(token.as_bytes().ct_eq(session.csrf.as_bytes())));
        if !valid {
            return forbidden(
                "this form's security token is missing or stale: reload the page and try again",
            );
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// Where to go after signing in.
#[derive(Debug, Deserialize)]
pub(super) struct ReturnTo {
    next: Option<String>,
}

/// `GET /login`.
pub(super) async fn login_page(Query(query): Query<ReturnTo>) -> Response {
    login_response(StatusCode::OK, local_path(query.next.as_deref()), None)
}

/// The sign-in form.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    password: String,
    next: Option<String>,
}

async fn record(pool: &PgPool, event: Event) -> Result<(), sqlx::Error> {
    insert_logs(pool, &[LogEntry::now(Worker::Dashboard, None, event)]).await
}

/// `POST /login`: checks the rate limits, then the password; starts a session.
pub(super) async fn login(
    State(dashboard): State<Dashboard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    if cross_site(&headers) {
        return Ok(forbidden("this form was sent from another site"));
    }
    let auth = &dashboard.inner.auth;
    let pool = dashboard.pool();
    let next = local_path(form.next.as_deref());
    let client = peer.ip().to_string();
    let throttled = if auth.per_client.check_key(&peer.ip()).is_err() {
        Some(false)
    } else if auth.global.check().is_err() {
        Some(true)
    } else {
        None
    };
    auth.per_client.retain_recent();
    if let Some(global) = throttled {
        if auth.throttled_records.check().is_ok() {
            record(pool, Event::LoginThrottled { client, global }).await?;
        }
        return Ok(login_response(
            StatusCode::TOO_MANY_REQUESTS,
            next,
            Some("too many sign-in attempts: wait a minute and try again"),
        ));
    }
    if !auth.password_matches(&form.password) {
        record(pool, Event::LoginFailed { client }).await?;
        return Ok(login_response(
            StatusCode::UNAUTHORIZED,
            next,
            Some("wrong password"),
        ));
    }
    let id = auth.start(pool).await?;
    record(pool, Event::LoggedIn { client }).await?;
    let mut response = Redirect::to(next).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, auth.cookie(Some(&id), &headers));
    Ok(response)
}

/// `POST /logout`: ends the session.
pub(super) async fn logout(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let pool = dashboard.pool();
    sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
        .bind(&session.id_hash)
        .execute(pool)
        .await?;
    record(pool, Event::LoggedOut).await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        dashboard.inner.auth.cookie(None, &headers),
    );
    Ok(response)
}
