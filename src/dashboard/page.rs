//! The pages every area shares: sign-in, errors, and the confirmation of a change.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// Renders `template`; a template that fails to render is a bug, answered 500.
pub(super) fn html<T: Template>(template: &T) -> Response {
    match template.render() {
        Ok(body) => Html(body).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "dashboard template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

/// The sign-in page.
#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct LoginPage {
    /// Where to go after signing in.
    pub(super) next: String,
    /// Why the last attempt was refused.
    pub(super) error: Option<String>,
}

/// An error, for people.
#[derive(Template)]
#[template(path = "error.html")]
pub(super) struct ErrorPage {
    pub(super) status: u16,
    pub(super) message: String,
}

/// "Are you sure?": the form that makes a change, reached by a link that changes
/// nothing, so every change is confirmed with or without JavaScript.
#[derive(Template)]
#[template(path = "confirm.html")]
pub(super) struct ConfirmPage {
    pub(super) csrf: String,
    pub(super) active: &'static str,
    pub(super) title: String,
    pub(super) lines: Vec<String>,
    pub(super) items: Vec<String>,
    /// Where the form posts.
    pub(super) action: String,
    /// Hidden fields besides the CSRF token.
    pub(super) fields: Vec<(String, String)>,
    pub(super) button: String,
    pub(super) danger: bool,
    pub(super) cancel: String,
}

impl ConfirmPage {
    /// A confirmation with no list and no hidden fields.
    pub(super) fn new(csrf: &str, active: &'static str, title: String, action: String) -> Self {
        Self {
            csrf: csrf.to_owned(),
            active,
            title,
            lines: Vec::new(),
            items: Vec::new(),
            action,
            fields: Vec::new(),
            button: "Confirm".to_owned(),
            danger: false,
            cancel: "/".to_owned(),
        }
    }
}
