//! The sign-up page (`/dashboard/signup`, `?invite=` prefills the invitation) and the
//! Teams page's "Invite" panel for owners and admins. Both post through the JSON API
//! (`POST /api/v1/auth/signup`, `/api/v1/invites`) from `assets/signup.js`; errors show
//! next to their field. The page follows the sign-up policy: without an invitation it
//! offers a workspace of one's own only when sign-up is `open`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use tollgate_core::tenancy::Role;
use tollgate_service::{SignupPolicy, TeamView};

use super::{Ctx, alert, head, html_response, icon_copy, when};
use crate::WebState;

pub(crate) const SIGNUP_JS: &str = include_str!("assets/signup.js");

fn script() -> Markup {
    html! { script src=(format!("/dashboard/assets/signup.js?v={}", env!("CARGO_PKG_VERSION"))) defer {} }
}

#[derive(Deserialize)]
pub(crate) struct SignupQuery {
    invite: Option<String>,
}

pub(crate) async fn page(
    State(state): State<Arc<WebState>>,
    signed_in: Result<Ctx, Response>,
    Query(q): Query<SignupQuery>,
) -> Response {
    if signed_in.is_ok() {
        return Redirect::to("/dashboard").into_response();
    }
    let policy = state.services.signup_policy;
    let token = q.invite.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    let preview = match &token {
        Some(t) => state.services.describe_invite(t).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading an invitation for the sign-up page failed");
            None
        }),
        None => None,
    };
    let own_workspace = policy == SignupPolicy::Open && token.is_none();
    let intro = match (&preview, &token, policy) {
        (Some(p), _, _) => format!("You are invited to join {} as {}.", p.organization, p.role.as_str()),
        (None, Some(_), _) => "This invitation is not valid any more: it expired, was revoked or was used. Ask for \
            a new one."
            .to_owned(),
        (None, None, SignupPolicy::Open) => "Create an account and a workspace of your own.".to_owned(),
        (None, None, SignupPolicy::Invite) => "Sign-up on this server is by invitation: paste yours below.".to_owned(),
        (None, None, SignupPolicy::Closed) => {
            "Public sign-up is closed on this server. With an invitation from an administrator, paste it below."
                .to_owned()
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Create an account"))
            body.auth data-page="/dashboard/signup" {
                (script())
                main.auth-card {
                    div.brand.brand-lg { span.logo aria-hidden="true" { "T" } "Tollgate" }
                    h1 { "Create an account" }
                    p.muted #signup-intro { (intro) }
                    p.form-error.alert.alert-error #signup-error role="alert" hidden {}
                    form #signup-form method="post" action="/api/v1/auth/signup" novalidate {
                        div.field data-field="email" {
                            label for="signup-email" { "Email" }
                            input #signup-email type="email" name="email" autocomplete="username" required autofocus
                                value=[preview.as_ref().and_then(|p| p.email.as_deref())];
                            p.field-error hidden {}
                        }
                        div.field data-field="password" {
                            label for="signup-password" { "Password" }
                            input #signup-password type="password" name="password" autocomplete="new-password" required minlength="12";
                            p.hint { "At least 12 characters." }
                            p.field-error hidden {}
                        }
                        @if own_workspace {
                            div.field data-field="name" {
                                label for="signup-name" { "Workspace name " span.muted { "(optional)" } }
                                input #signup-name name="name" maxlength="128" placeholder="e.g. Acme";
                                p.field-error hidden {}
                            }
                        }
                        @if policy != SignupPolicy::Open || token.is_some() {
                            div.field data-field="invite" {
                                label for="signup-invite" { "Invitation" }
                                input #signup-invite name="invite" required autocomplete="off" spellcheck="false"
                                    value=[token.as_deref()] placeholder="tgi_…";
                                p.field-error hidden {}
                            }
                        }
                        button.btn.btn-primary.btn-block #signup-submit type="submit" { "Create account" }
                    }
                    p.muted style="margin: 16px 0 0" { "Already have an account? " a href="/dashboard/login" { "Sign in" } }
                }
            }
        }
    };
    html_response(markup)
}

/// The Teams page's panel for managers: invite someone (the link shows once) and the
/// pending invitations with a revoke button each.
pub(crate) async fn invite_panel(state: &WebState, ctx: &Ctx, teams: &[TeamView]) -> Markup {
    let owner = ctx.actor.user_principal().is_none_or(|u| u.role == Role::Owner);
    let pending = state.services.list_invites(&ctx.actor).await;
    let team_name = |id: &str| teams.iter().find(|t| t.id == id).map_or_else(|| id.to_owned(), |t| t.name.clone());
    html! {
        (script())
        section.panel #invites aria-labelledby="invites-title" {
            div.team-head { h2 #invites-title { "Invite people" } }
            p.muted { "An invitation link lets one person create an account in this organization with the role (and \
                team) you choose. It works once and expires in 7 days." }
            form #invite-form .toolbar style="align-items: flex-end" novalidate {
                div.field data-field="invite-email" {
                    label for="invite-email" { "Email " span.muted { "(optional: only this address may use it)" } }
                    input #invite-email type="email" name="email" placeholder="name@example.com";
                    p.field-error hidden {}
                }
                div.field data-field="invite-role" {
                    label for="invite-role" { "Role" }
                    select #invite-role name="role" {
                        option value="member" selected { "Member" }
                        @if owner { option value="admin" { "Admin" } }
                    }
                    p.field-error hidden {}
                }
                div.field data-field="invite-team" {
                    label for="invite-team" { "Team " span.muted { "(optional)" } }
                    select #invite-team name="team_id" {
                        option value="" { "No team" }
                        @for t in teams { option value=(t.id) { (t.name) } }
                    }
                    p.field-error hidden {}
                }
                button.btn.btn-primary #invite-submit type="submit" style="margin-bottom: 14px" { "Invite" }
            }
            p.form-error.alert.alert-error role="alert" hidden {}
            div.success-box #invite-created hidden {
                h2 { "Invitation created" }
                p { "Send this link to the person you invite. It is shown only now." }
                pre.secret #invite-link {}
                button.btn #invite-copy type="button" { (icon_copy()) "Copy link" }
            }
            @match &pending {
                Err(e) => (alert(e)),
                Ok(list) if list.is_empty() => p.muted #invites-none { "No pending invitations." },
                Ok(list) => div.table-wrap { table.data #invite-list {
                    thead { tr { th { "Email" } th { "Role" } th { "Team" } th { "Expires" } th { span.sr-only { "Actions" } } } }
                    tbody {
                        @for i in list {
                            tr data-invite-id=(i.id) {
                                td { (i.email.as_deref().unwrap_or("Anyone with the link")) }
                                td { (i.role.as_str()) }
                                td { (i.team_id.as_deref().map_or_else(|| "—".to_owned(), team_name)) }
                                td { (when(Some(&i.expires_at))) }
                                td { button.btn.btn-danger-outline.revoke-invite type="button" { "Revoke" } }
                            }
                        }
                    }
                } },
            }
        }
    }
}
