//! The sign-in page. The form posts (from the script) to `POST /api/v1/auth/login`, which
//! sets the session cookie and applies the sign-in throttle; errors show above the form.

use axum::extract::Query;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, html};
use serde::Deserialize;

use super::{Ctx, head, html_response};

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// Only same-site dashboard paths are followed after sign-in (no open redirect).
fn safe_next(next: Option<String>) -> String {
    next.filter(|n| n.starts_with("/dashboard") && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or_else(|| "/dashboard".to_owned())
}

pub(crate) async fn page(signed_in: Result<Ctx, Response>, Query(q): Query<LoginQuery>) -> Response {
    let next = safe_next(q.next);
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
                }
            }
        }
    };
    html_response(markup)
}
