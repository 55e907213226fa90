//! The embedded assets: htmx 2 and its server-sent-events extension (vendored from
//! their npm packages, 0BSD; see `LICENSE-htmx*` beside them) and the stylesheet. Each
//! is served under a name that changes with its content, with a year-long cache.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// htmx, minified, as published.
const HTMX: &[u8] = include_bytes!("assets/htmx-2.0.11.min.js");
/// htmx's server-sent-events extension, minified, as published.
const HTMX_SSE: &[u8] = include_bytes!("assets/htmx-ext-sse-2.2.4.min.js");
/// The stylesheet.
const STYLE: &[u8] = include_bytes!("assets/dashboard.css");

/// The stylesheet's name, with a hash of its content.
static STYLE_NAME: LazyLock<String> =
    LazyLock::new(|| format!("dashboard-{:016x}.css", fnv(STYLE)));

/// FNV-1a: enough to tell one stylesheet from the next.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The stylesheet's address.
pub(super) fn style_url() -> String {
    format!("/assets/{}", *STYLE_NAME)
}

/// htmx's address.
pub(super) const HTMX_URL: &str = "/assets/htmx-2.0.11.min.js";
/// The SSE extension's address.
pub(super) const HTMX_SSE_URL: &str = "/assets/htmx-ext-sse-2.2.4.min.js";

/// `GET /assets/{file}`.
pub(super) async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "htmx-2.0.11.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "htmx-ext-sse-2.2.4.min.js" => (HTMX_SSE, "text/javascript; charset=utf-8"),
        name if name == STYLE_NAME.as_str() => (STYLE, "text/css; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        body,
    )
        .into_response()
}
