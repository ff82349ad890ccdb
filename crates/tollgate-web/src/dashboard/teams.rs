//! The Teams page: each team with its models, budget, limits and members, and the
//! organization's Members with their roles. Owners and admins create and edit teams
//! (`POST`/`PATCH /api/v1/teams…`, one dialog) and add or remove members; owners change
//! roles (`PATCH /api/v1/users/{id}`), admins see them read-only; members see their own
//! teams, read-only, and no Members panel. The script (`assets/teams.js`) sends the
//! session's `x-csrf-token`, so the API's rules apply unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};
use tollgate_core::tenancy::Role;
use tollgate_service::{MemberView, TeamView};

use super::{Ctx, Nav, alert, day, layout, usd};
use crate::WebState;

const ROLES: [Role; 3] = [Role::Owner, Role::Admin, Role::Member];

pub(crate) async fn page(State(state): State<Arc<WebState>>, ctx: Ctx) -> Response {
    let services = &state.services;
    let teams = services.list_teams(&ctx.actor).await;
    // Membership is shown to managers (who may list the organization's members).
    let members = if ctx.manages { services.list_members(&ctx.actor).await } else { Ok(Vec::new()) };
    let mut by_team: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for m in members.as_deref().unwrap_or_default() {
        match services.store.teams_of(&m.id).await {
            Ok(ids) => {
                for t in ids {
                    by_team.entry(t).or_default().push((m.id.clone(), m.email.clone()));
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing a member's teams failed"),
        }
    }
    let invites = match (&teams, ctx.manages) {
        (Ok(list), true) => Some(super::signup::invite_panel(&state, &ctx, list).await),
        _ => None,
    };
    let all_members = members.as_deref().unwrap_or_default();
    let limit = |v: Option<i64>| v.map_or_else(|| "Unlimited".to_owned(), |v| v.to_string());
    let actions = html! {
        @if ctx.manages { button.btn.btn-primary #open-team-create type="button" { "+ Create team" } }
    };
    let body = html! {
        @match &teams {
            Err(e) => (alert(e)),
            Ok(list) if list.is_empty() => div.empty {
                h2 { "No teams yet" }
                @if ctx.manages {
                    p { "Teams group keys and people, with shared models, budgets and limits." }
                    button.btn.btn-primary type="button" data-open-team-create { "Create a team" }
                } @else { p { "You are not in a team yet. An owner or admin can add you to one." } }
            },
            Ok(list) => div.team-list #teams {
                @for t in list {
                    section.panel.team data-team-id=(t.id) data-team-name=(t.name) {
                        div.team-head {
                            h2 { (t.name) }
                            span.muted.mono { (t.id) }
                            @if ctx.manages {
                                button.btn.btn-sm.edit-team type="button" data-team=(serde_json::to_string(t).unwrap_or_default())
                                    aria-label=(format!("Edit team {}", t.name)) { "Edit" }
                            }
                        }
                        dl.team-facts {
                            div { dt { "Models" } dd { @if t.allowed_models.is_empty() { "All" } @else { (t.allowed_models.join(", ")) } } }
                            div { dt { "Budget" } dd { (t.budget_usd.map_or_else(|| "Workspace balance".to_owned(), usd)) } }
                            div { dt { "Requests / min" } dd { (limit(t.rpm)) } }
                            div { dt { "Tokens / min" } dd { (limit(t.tpm)) } }
                            div { dt { "Token quota" } dd { (limit(t.token_quota)) } }
                        }
                        @if ctx.manages {
                            @let in_team = by_team.get(&t.id).cloned().unwrap_or_default();
                            h3.team-sub { "Members " span.muted { "(" (in_team.len()) ")" } }
                            @if in_team.is_empty() { p.muted.team-none { "No members yet." } }
                            @else {
                                ul.member-list {
                                    @for (id, email) in &in_team {
                                        li data-user-id=(id) {
                                            span { (email) }
                                            button.icon-btn.remove-member type="button" aria-label=(format!("Remove {email} from {}", t.name)) title="Remove from team" { "✕" }
                                        }
                                    }
                                }
                            }
                            @let others: Vec<_> = all_members.iter().filter(|m| !in_team.iter().any(|(id, _)| *id == m.id)).collect();
                            @if !others.is_empty() {
                                form.add-member.toolbar {
                                    select name="user_id" aria-label=(format!("Member to add to {}", t.name)) {
                                        @for m in &others { option value=(m.id) { (m.email) " (" (m.role.as_str()) ")" } }
                                    }
                                    button.btn type="submit" { "Add member" }
                                }
                            }
                        }
                    }
                }
            },
        }
        @if ctx.manages {
            @match &members {
                Err(e) => (alert(e)),
                Ok(list) => (members_panel(&ctx, list, teams.as_deref().unwrap_or_default(), &by_team)),
            }
        }
        @if let Some(panel) = invites { (panel) }
        @if ctx.manages { (team_dialog()) }
    };
    layout(&ctx, Nav::Teams, "Teams", actions, body)
}

/// The organization's users and their roles: a role picker per user for owners,
/// read-only for admins. Each picker has its own error line (the API refuses, for
/// example, to demote the last owner).
fn members_panel(
    ctx: &Ctx,
    members: &[MemberView],
    teams: &[TeamView],
    by_team: &HashMap<String, Vec<(String, String)>>,
) -> Markup {
    let owner = ctx.actor.user_principal().is_some_and(|u| u.role == Role::Owner);
    let teams_of = |user: &str| -> String {
        let names: Vec<&str> = teams
            .iter()
            .filter(|t| by_team.get(&t.id).is_some_and(|m| m.iter().any(|(id, _)| id == user)))
            .map(|t| t.name.as_str())
            .collect();
        if names.is_empty() { "—".to_owned() } else { names.join(", ") }
    };
    html! {
        section.panel #org-members {
            h2 { "Members" }
            p.muted {
                "Owners manage everything, including roles; admins manage keys, teams and billing; members use their own keys. "
                @if owner { "Change a role with its picker; it applies at once." } @else { "Only owners change roles." }
            }
            @if members.is_empty() {
                div.empty.empty-sm { p { "No one is in this organization yet. Invite people with the panel below." } }
            } @else {
                div.table-wrap {
                    table.data #members-table {
                        thead { tr { th { "Email" } th { "Role" } th { "Teams" } th { "Joined" } } }
                        tbody {
                            @for m in members {
                                @let me = m.id == ctx.actor.id;
                                tr data-user-id=(m.id) data-email=(m.email) data-role=(m.role.as_str()) data-self=[me.then_some("1")] {
                                    td { (m.email) @if me { span.muted { " (you)" } } }
                                    td {
                                        @if owner {
                                            div.field.role-field data-field=(format!("role-{}", m.id)) {
                                                select.role-select aria-label=(format!("Role of {}", m.email)) data-current=(m.role.as_str()) {
                                                    @for r in ROLES { option value=(r.as_str()) selected[r == m.role] { (r.as_str()) } }
                                                }
                                                p.field-error role="alert" hidden {}
                                            }
                                        } @else {
                                            span.badge.role-badge { (m.role.as_str()) }
                                        }
                                    }
                                    td.wrap-cell { (teams_of(&m.id)) }
                                    td { (day(Some(&m.created_at))) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Create and Edit share this dialog; the script sets its title, button and values.
fn team_dialog() -> Markup {
    html! {
        dialog #team-dialog .modal aria-labelledby="team-title" {
            form #team-form novalidate {
                div.modal-head { h2 #team-title { "Create team" } button.icon-btn type="button" data-close aria-label="Close" { "✕" } }
                div role="group" style="padding: 16px 20px 4px" {
                    div.field data-field="team-name" {
                        label for="team-name" { "Name" }
                        input #team-name name="name" maxlength="64" required placeholder="e.g. Platform";
                        p.field-error hidden {}
                    }
                    div.field data-field="team-models" {
                        label for="team-models" { "Allowed models " span.muted { "(empty: all)" } }
                        input #team-models name="allowed_models" placeholder="demo-chat, gpt-4o-mini";
                        p.field-error hidden {}
                    }
                    div.grid2 {
                        div.field data-field="team-budget" {
                            label for="team-budget" { "Budget (USD) " span.muted { "(empty: workspace balance)" } }
                            input #team-budget name="budget_usd" type="number" min="0.01" step="0.01";
                            p.field-error hidden {}
                        }
                        div.field data-field="team-quota" {
                            label for="team-quota" { "Token quota " span.muted { "(empty: unlimited)" } }
                            input #team-quota name="token_quota" type="number" min="1" step="1";
                            p.field-error hidden {}
                        }
                        div.field data-field="team-rpm" {
                            label for="team-rpm" { "Requests / min" }
                            input #team-rpm name="rpm" type="number" min="1" step="1";
                            p.field-error hidden {}
                        }
                        div.field data-field="team-tpm" {
                            label for="team-tpm" { "Tokens / min" }
                            input #team-tpm name="tpm" type="number" min="1" step="1";
                            p.field-error hidden {}
                        }
                    }
                }
                p.form-error.alert.alert-error role="alert" hidden {}
                div.modal-foot {
                    button.btn type="button" data-close { "Cancel" }
                    button.btn.btn-primary #team-submit type="submit" { "Create team" }
                }
            }
        }
    }
}
