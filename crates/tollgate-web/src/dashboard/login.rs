//! The sign-in page. The form posts (from the script) to `POST /api/v1/auth/login`, which
//! sets the session cookie and applies the sign-in throttle; errors show above the form.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, html};
use serde::Deserialize;

use super::{Ctx, head, html_response};
use crate::WebState;

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
    /// Set after a password change, which ends every session.
    changed: Option<String>,
}

/// Only same-site dashboard paths are followed after sign-in (no open redirect).
fn safe_next(next: Option<String>) -> String {
    next.filter(|n| n.starts_with("/dashboard") && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or_else(|| "/dashboard".to_owned())
}

pub(crate) async fn page(
    State(state): State<Arc<WebState>>,
    signed_in: Result<Ctx, Response>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let next = safe_next(q.next.clone());
    // Already signed in: straight on.
    if signed_in.is_ok() {
        return Redirect::to(&next).into_response();
    }
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body.auth data-page="/dashboard/login" {
                main.auth-card {
                    div.brand.brand-lg { span.logo aria-hidden="true" { "T" } "Tollgate" }
                    h1 { "Sign in" }
                    p.muted { "Use the email and password of your Tollgate account." }
                    @if q.changed.is_some() {
                        div #login-note .alert.alert-ok role="status" { "Your password was changed. Sign in with the new one." }
                    }
                    div #login-error .alert.alert-error role="alert" hidden {}
                    form #login-form method="post" action="/api/v1/auth/login" data-next=(next) novalidate {
                        div.field {
                            label for="email" { "Email" }
                            input #email type="email" name="email" autocomplete="username" required autofocus;
                            p.field-error hidden {}
                        }
                        div.field {
                            label for="password" { "Password" }
                            input #password type="password" name="password" autocomplete="current-password" required;
                            p.field-error hidden {}
                        }
                        button.btn.btn-primary.btn-block type="submit" { "Sign in" }
                    }
                    // Only when anyone may sign up; invited people follow their link.
                    @if state.services.signup_policy.is_open() {
                        p.muted style="margin: 16px 0 0" { "New here? " a #signup-link href="/dashboard/signup" { "Create an account" } }
                    }
                }
            }
        }
    };
    html_response(markup)
}
