//! Headless Chromium driven over WebDriver (the W3C protocol, JSON over HTTP) by
//! Debian's `chromedriver`, started on a free port for each test. The protocol's few
//! calls the tests need are made with reqwest, which the tests already use: the
//! WebDriver client crates pull in a second HTTP stack and duplicate dependencies.

use std::process::Stdio;

use base64::Engine;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use super::{eventually, free_addr};

/// Debian's Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Fails the test, saying what
    /// to install, when either is missing: CI installs both, so a browser test never
    /// passes by not running.
    pub async fn start() -> Self {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: the browser tests need Debian's chromium and chromium-driver \
                 packages (apt-get install chromium chromium-driver; .ci/run installs them)"
            );
        }
        let addr = free_addr();
        let port = addr.rsplit_once(':').expect("host:port").1.to_owned();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");
        eventually("chromedriver to be ready", || async {
            let status: Value = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (status["value"]["ready"] == true).then_some(())
        })
        .await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
        }}});
        let session: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a session");
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("Chromium did not start: {session}"))
            .to_owned();
        Self {
            driver,
            base: format!("{base}/session/{id}"),
            http,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("chromedriver answers JSON");
        answer["value"].clone()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The page's current address.
    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML as the browser holds it now (after scripts ran).
    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element `css` selects, once there is one.
    async fn find(&self, css: &str) -> String {
        eventually(&format!("an element {css}"), || async {
            let found = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            found[ELEMENT].as_str().map(str::to_owned)
        })
        .await
    }

    /// Waits until the page has an element `css` selects.
    pub async fn wait_for(&self, css: &str) {
        self.find(css).await;
    }

    /// Types `text` into the element `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Clicks the element `css` selects; again if the page replaced it meanwhile (the
    /// live overview does every two seconds).
    pub async fn click(&self, css: &str) {
        eventually(&format!("a click on {css}"), || async {
            let element = self.find(css).await;
            let answer = self
                .call(
                    reqwest::Method::POST,
                    &format!("/element/{element}/click"),
                    Some(json!({})),
                )
                .await;
            answer.get("error").is_none().then_some(())
        })
        .await;
    }

    /// A PNG of the window, saved as `docs/dashboard/<name>.png` when
    /// `HOOX_SCREENSHOTS=1` (so that ordinary runs leave tracked files alone).
    pub async fn screenshot(&self, name: &str) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a screenshot"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if std::env::var("HOOX_SCREENSHOTS").as_deref() == Ok("1") {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard");
            std::fs::create_dir_all(&dir).expect("docs/dashboard");
            std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot saved");
        }
    }

    /// Ends the session and chromedriver.
    pub async fn stop(mut self) {
        let _ = self.http.delete(&self.base).send().await;
        let _ = self.driver.kill().await;
    }
}
