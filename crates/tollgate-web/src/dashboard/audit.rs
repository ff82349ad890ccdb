//! The Audit Log page: who changed what, newest first, read through `list_audit` (owners
//! and admins see their organization's entries; members get a clear "not for your role"
//! state). Filters by actor, action, target and date; keyset "older" links stay fast at
//! any depth.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use tollgate_service::{ListAudit, ServiceError};

use super::{Ctx, Nav, alert, layout, query_string, when};
use crate::WebState;

const PAGE_SIZE: i64 = 50;

#[derive(Deserialize, Default)]
pub(crate) struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

fn day_bound(v: &Option<String>, end: bool) -> Option<String> {
    nonempty(v).map(|d| {
        if d.len() == 10 { if end { format!("{d}T23:59:59.999Z") } else { format!("{d}T00:00:00Z") } } else { d }
    })
}

pub(crate) async fn page(State(state): State<Arc<WebState>>, ctx: Ctx, Query(q): Query<AuditQuery>) -> Response {
    if !ctx.manages {
        let body = html! {
            div.empty #audit-forbidden {
                h2 { "Not available for your role" }
                p { "The audit log is for organization owners and admins. Ask one of them if you need to know who changed something." }
            }
        };
        return layout(&ctx, Nav::Audit, "Audit Log", html! {}, body);
    }
    let page = state
        .services
        .list_audit(
            &ctx.actor,
            ListAudit {
                actor: nonempty(&q.actor),
                action: nonempty(&q.action),
                target: nonempty(&q.target),
                from: day_bound(&q.from, false),
                to: day_bound(&q.to, true),
                cursor: nonempty(&q.cursor),
                limit: Some(PAGE_SIZE),
            },
        )
        .await;
    // Actors by email where they are members; the operator and tokens show as recorded.
    let emails: std::collections::HashMap<String, String> = state
        .services
        .list_members(&ctx.actor)
        .await
        .map(|m| m.into_iter().map(|m| (m.id, m.email)).collect())
        .unwrap_or_default();
    let href = |cursor: Option<&str>| {
        format!(
            "/dashboard/audit{}",
            query_string(&[
                ("actor", q.actor.as_deref()),
                ("action", q.action.as_deref()),
                ("target", q.target.as_deref()),
                ("from", q.from.as_deref()),
                ("to", q.to.as_deref()),
                ("cursor", cursor),
            ])
        )
    };
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let filtered = [&q.actor, &q.action, &q.target, &q.from, &q.to].iter().any(|f| nonempty(f).is_some());
    let body = html! {
        form.toolbar.filters method="get" action="/dashboard/audit" role="search" {
            input name="actor" placeholder="Actor (user id)" aria-label="Actor" value=(v(&q.actor));
            input name="action" placeholder="Action, e.g. key.create" aria-label="Action" value=(v(&q.action));
            input name="target" placeholder="Target id" aria-label="Target" value=(v(&q.target));
            label.inline { span { "From" } input type="date" name="from" value=(v(&q.from)); }
            label.inline { span { "To" } input type="date" name="to" value=(v(&q.to)); }
            button.btn type="submit" { "Filter" }
            @if filtered { a.btn.btn-ghost href="/dashboard/audit" { "Clear" } }
        }
        @match page {
            Err(ServiceError::Forbidden(_)) => div.empty #audit-forbidden {
                h2 { "Not available for your role" }
                p { "The audit log is for organization owners and admins." }
            },
            Err(e) => (alert(&e)),
            Ok(page) if page.data.is_empty() => div.empty {
                @if filtered {
                    h2 { "No entries match these filters" }
                    p { a href="/dashboard/audit" { "Clear the filters" } " to see every entry." }
                } @else {
                    h2 { "Nothing recorded yet" }
                    p { "Changes to keys, members, teams and billing are recorded here as they happen." }
                }
            },
            Ok(page) => {
                div.table-wrap {
                    table.data #audit-table {
                        thead { tr { th { "Time" } th { "Actor" } th { "Action" } th { "Target" } th { "Source IP" } th { "Change" } } }
                        tbody {
                            @for r in &page.data {
                                @let e = &r.entry;
                                tr data-action=(e.action) {
                                    td { (when(Some(&r.at))) }
                                    td.mono { a href=(format!("/dashboard/audit{}", query_string(&[("actor", Some(e.actor.as_str()))]))) title=(e.actor) {
                                        (emails.get(&e.actor).map_or(e.actor.as_str(), String::as_str)) } }
                                    td { a.badge.badge-code href=(format!("/dashboard/audit{}", query_string(&[("action", Some(e.action.as_str()))]))) { (e.action) } }
                                    td.mono { span.muted { (e.target_type) " " }
                                        a href=(format!("/dashboard/audit{}", query_string(&[("target", Some(e.target_id.as_str()))]))) { (e.target_id) } }
                                    td.mono { (e.source_ip.as_deref().unwrap_or("—")) }
                                    td {
                                        @if e.before.is_some() || e.after.is_some() {
                                            details.audit-change {
                                                summary.linklike { "Details" }
                                                @if let Some(b) = &e.before { div { strong { "Before " } code { (b.to_string()) } } }
                                                @if let Some(a) = &e.after { div { strong { "After " } code { (a.to_string()) } } }
                                            }
                                        } @else { span.muted { "—" } }
                                    }
                                }
                            }
                        }
                    }
                }
                div.pager {
                    @if nonempty(&q.cursor).is_some() { a.btn href=(href(None)) { "← Newest" } }
                    @if let Some(next) = &page.next_cursor { a.btn #next-page href=(href(Some(next))) { "Older →" } }
                }
            }
        }
    };
    layout(&ctx, Nav::Audit, "Audit Log", html! {}, body)
}
