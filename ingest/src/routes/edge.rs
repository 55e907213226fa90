//! Answers given before or around the handlers, so that every answer of ingest is the
//! JSON envelope: no route (404), wrong method (405), too long a URI (414), too large a
//! head (431), and any other bare error (the request timeout's 503).
//!
//! The head limits are below hyper's own (see `server.rs`), so a client over them gets
//! an envelope from here; only a head past hyper's buffer, or one hyper cannot parse at
//! all, gets hyper's own bare answer.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Longest request target (path and query) answered by a handler.
pub const MAX_URI_LEN: usize = 8 * 1024;
/// Largest request head (request line and headers) answered by a handler.
pub const MAX_HEAD_LEN: usize = 16 * 1024;
/// Most headers in a request answered by a handler.
pub const MAX_HEADERS: usize = 100;

/// The fallback for paths without a route.
pub async fn not_found() -> ApiError {
    ApiError::Http(StatusCode::NOT_FOUND)
}

/// The fallback for a known path with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::Http(StatusCode::METHOD_NOT_ALLOWED)
}

/// Answers 414 or 431 for a request head over this module's limits.
pub async fn limit_head(request: Request, next: Next) -> Response {
    let uri_len = request.uri().to_string().len();
    if uri_len > MAX_URI_LEN {
        return ApiError::Http(StatusCode::URI_TOO_LONG).into_response();
    }
    let headers = request.headers();
    // Each header line is `name: value\r\n`.
    let head_len = uri_len
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if headers.len() > MAX_HEADERS || head_len > MAX_HEAD_LEN {
        return ApiError::Http(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).into_response();
    }
    next.run(request).await
}

/// Turns an error answer that is not already JSON (a layer's bare status) into the
/// envelope, keeping its other headers (`Allow` on a 405).
pub async fn envelope_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut enveloped = ApiError::Http(status).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            enveloped.headers_mut().append(name, value.clone());
        }
    }
    enveloped
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use serde_json::Value;

    #[tokio::test]
    async fn a_bare_error_becomes_the_envelope_and_keeps_its_other_headers() {
        // What the request timeout layer answers: a status and nothing else.
        let bare = Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header(header::ALLOW, "GET")
            .body(Body::empty())
            .unwrap();
        let response = envelope_errors(bare).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::ALLOW], "GET");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let envelope: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(envelope["success"], false);
        assert_eq!(envelope["result"], Value::Null);
        assert_eq!(envelope["error"], "service unavailable");
    }

    #[tokio::test]
    async fn success_and_json_answers_pass_unchanged() {
        let ok = Response::builder()
            .status(200)
            .body(Body::from("x"))
            .unwrap();
        let passed = envelope_errors(ok).await;
        let body = axum::body::to_bytes(passed.into_body(), 16).await.unwrap();
        assert_eq!(&body[..], b"x");
        let json = ApiError::Unauthorized.into_response();
        let passed = envelope_errors(json).await;
        let body = axum::body::to_bytes(passed.into_body(), 1024)
            .await
            .unwrap();
        let envelope: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(envelope["error"], "apiKey is missing or wrong");
    }
}
