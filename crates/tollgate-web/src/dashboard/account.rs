//! The Account page (`/dashboard/account`, from the top bar's menu): the password change.
//! The script posts to `POST /api/v1/me/password` with the CSRF token; the API checks the
//! current password (throttled like sign-in) and ends every session of the user, so a
//! successful change leads back to sign in.

use axum::response::Response;
use maud::html;

use super::{Ctx, Nav, layout};

/// The shortest new password the service accepts (kept in step with `change_password`).
const MIN_PASSWORD: usize = 12;

pub(crate) async fn page(ctx: Ctx) -> Response {
    let body = html! {
        section.panel.narrow {
            h2 { "Change password" }
            p.muted { "After the change every session of yours ends, this one included: you sign in again with the new password." }
            div.alert.alert-error.form-error role="alert" hidden {}
            form #password-form novalidate data-min-length=(MIN_PASSWORD) {
                div.field data-field="current-password" {
                    label for="current-password" { "Current password" }
                    input #current-password type="password" autocomplete="current-password" required;
                    p.field-error hidden {}
                }
                div.field data-field="new-password" {
                    label for="new-password" { "New password" }
                    input #new-password type="password" autocomplete="new-password" required minlength=(MIN_PASSWORD);
                    p.hint { "At least " (MIN_PASSWORD) " characters." }
                    p.field-error hidden {}
                }
                div.field data-field="confirm-password" {
                    label for="confirm-password" { "New password, again" }
                    input #confirm-password type="password" autocomplete="new-password" required;
                    p.field-error hidden {}
                }
                button.btn.btn-primary #password-submit type="submit" { "Change password" }
            }
        }
    };
    layout(&ctx, Nav::Account, "Account", html! {}, body)
}
