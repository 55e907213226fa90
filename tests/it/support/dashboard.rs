//! The dashboard in this process, on a test app's database and queues, and a client
//! that signs in to it and keeps its cookie and CSRF token by hand.

use clap::Parser;
use hoox::dashboard::{self, Dashboard, DashboardArgs};
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::{RequestBuilder, Response};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{amqp_url, database_url, TestApp, INTERNAL_KEY};

/// The password every test dashboard takes.
pub const PASSWORD: &str = "test-dashboard-password";

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    args: DashboardArgs,
}

/// A dashboard serving a test app's deployment.
pub struct TestDashboard {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// A client that never follows redirects, so that tests see them.
    pub http: reqwest::Client,
    token: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// A signed-in session: its cookie value and CSRF token.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The `hoox_session` cookie's value.
    pub cookie: String,
    /// The session's CSRF token, as its pages carry it.
    pub csrf: String,
}

/// The arguments of `hoox dashboard` for `app`'s database and queues.
pub fn args_for(app: &TestApp) -> DashboardArgs {
    let retry = app.topology.retry_policy();
    Args::try_parse_from([
        "dashboard".to_owned(),
        "--database-url".to_owned(),
        database_url(&app.pool),
        "--amqp-url".to_owned(),
        amqp_url(),
        "--queue".to_owned(),
        app.topology.queue().to_owned(),
        "--partitions".to_owned(),
        app.topology.partitions().to_string(),
        "--retry-base-ms".to_owned(),
        retry.base.as_millis().to_string(),
        "--retry-max-attempts".to_owned(),
        retry.max_attempts.to_string(),
        "--retry-max-delay-ms".to_owned(),
        retry.max_delay.as_millis().to_string(),
        "--internal-key".to_owned(),
        INTERNAL_KEY.to_owned(),
    ])
    .expect("dashboard arguments parse")
    .args
}

impl TestDashboard {
    /// Starts a dashboard for `app` on a free port.
    pub async fn start(app: &TestApp) -> Self {
        let args = args_for(app);
        let dashboard = Dashboard::new(
            app.pool.clone(),
            &args,
            &SecretString::from(PASSWORD.to_owned()),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let token = CancellationToken::new();
        let task = tokio::spawn(dashboard::serve(listener, dashboard, token.clone()));
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .expect("client");
        Self {
            url,
            http,
            token,
            task: Some(task),
        }
    }

    /// `GET path` with `session`'s cookie, if any.
    pub fn get(&self, path: &str, session: Option<&Signed>) -> RequestBuilder {
        with_cookie(self.http.get(format!("{}{path}", self.url)), session)
    }

    /// `POST path` of `form` with `session`'s cookie, if any (and no CSRF token unless
    /// `form` has one).
    pub fn post(
        &self,
        path: &str,
        session: Option<&Signed>,
        form: &[(&str, &str)],
    ) -> RequestBuilder {
        with_cookie(self.http.post(format!("{}{path}", self.url)), session).form(form)
    }

    /// `POST path` of `form` plus `session`'s CSRF token.
    pub async fn submit(&self, path: &str, session: &Signed, form: &[(&str, &str)]) -> Response {
        let mut fields = form.to_vec();
        fields.push(("csrf", &session.csrf));
        self.post(path, Some(session), &fields)
            .send()
            .await
            .expect("dashboard answers")
    }

    /// `GET path` as `session`: the status and the page.
    pub async fn page(&self, path: &str, session: Option<&Signed>) -> (u16, String) {
        let response = self
            .get(path, session)
            .send()
            .await
            .expect("dashboard answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("a page"))
    }

    /// Signs in with `password`; the response as it came.
    pub async fn try_login(&self, password: &str) -> Response {
        self.post("/login", None, &[("password", password), ("next", "/")])
            .send()
            .await
            .expect("dashboard answers")
    }

    /// Signs in with the right password.
    pub async fn login(&self) -> Signed {
        let response = self.try_login(PASSWORD).await;
        assert_eq!(response.status(), 303, "signing in redirects");
        let cookie = session_cookie(&response).expect("signing in sets the session cookie");
        let mut session = Signed {
            cookie,
            csrf: String::new(),
        };
        let (status, page) = self.page("/signals", Some(&session)).await;
        assert_eq!(status, 200, "{page}");
        session.csrf = csrf_of(&page).expect("pages carry the CSRF token");
        session
    }

    /// Stops the dashboard and waits until it has.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestDashboard {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn with_cookie(request: RequestBuilder, session: Option<&Signed>) -> RequestBuilder {
    match session {
        Some(session) => request.header(COOKIE, format!("hoox_session={}", session.cookie)),
        None => request,
    }
}

/// The `Set-Cookie` header of `response` for the session cookie, whole.
pub fn set_cookie(response: &Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("hoox_session="))
        .map(str::to_owned)
}

/// The session cookie's value that `response` sets.
pub fn session_cookie(response: &Response) -> Option<String> {
    let header = set_cookie(response)?;
    let value = header.strip_prefix("hoox_session=")?.split(';').next()?;
    (!value.is_empty()).then(|| value.to_owned())
}

/// The CSRF token a page's forms carry.
pub fn csrf_of(page: &str) -> Option<String> {
    let start = page.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    let end = page[start..].find('"')? + start;
    Some(page[start..end].to_owned())
}

/// Whether `page` is the sign-in page.
pub fn is_login(page: &str) -> bool {
    page.contains(r#"id="login""#)
}
