//! The API Keys page: a server-side sorted, filtered and keyset-paged table read through
//! `list_keys` as the signed-in user (members see only their own keys), plus the Create
//! Key dialog, the one-shot secret box and the detail dialog, which the script drives
//! against `/api/v1/keys…`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_service::{DailyUsage, KeyView, ListKeys, MAX_DAILY_DAYS};

use super::keys_dialogs::{KeyFormChoices, confirm_dialog, detail_dialog, key_dialog, reveal_dialog, secret_dialog};
use super::{Ctx, Nav, alert, day, icon_copy, icon_trash, layout, query_string, status_badge, usd, when};
use crate::WebState;

const PAGE_SIZE: i64 = 50;
const STATUSES: &[(&str, &str)] = &[
    ("", "All"),
    ("active", "Active"),
    ("inactive", "Inactive"),
    ("expired", "Expired"),
    ("revoked", "Revoked"),
    ("exhausted", "Exhausted"),
];

#[derive(Deserialize, Default)]
pub(crate) struct KeysQuery {
    search: Option<String>,
    status: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    cursor: Option<String>,
}

impl KeysQuery {
    /// The page's URL with `sort`/`order`/`cursor` replaced.
    fn href(&self, sort: Option<&str>, order: Option<&str>, cursor: Option<&str>) -> String {
        let q = query_string(&[
            ("search", self.search.as_deref()),
            ("status", self.status.as_deref()),
            ("sort", sort),
            ("order", order),
            ("cursor", cursor),
        ]);
        format!("/dashboard/keys{q}")
    }
}

pub(crate) async fn page(State(state): State<Arc<WebState>>, ctx: Ctx, Query(q): Query<KeysQuery>) -> Response {
    let services = &state.services;
    let list = services
        .list_keys(
            &ctx.actor,
            ListKeys {
                sort: q.sort.clone().filter(|s| !s.is_empty()),
                order: q.order.clone().filter(|s| !s.is_empty()),
                search: q.search.clone(),
                team_id: None,
                status: q.status.clone(),
                cursor: q.cursor.clone().filter(|s| !s.is_empty()),
                limit: Some(PAGE_SIZE),
            },
        )
        .await;
    // "Usage": each key's share of the requests the caller can see over the last year.
    let year_from =
        tollgate_core::time::to_rfc3339(tollgate_core::time::now_millis() - (MAX_DAILY_DAYS - 1) * 86_400_000);
    let total_requests: i64 = services
        .usage_daily(&ctx.actor, DailyUsage { from: Some(year_from), to: None, key_id: None, model: None })
        .await
        .map(|days| days.iter().map(|d| d.requests).sum())
        .unwrap_or(0);
    let members: Option<Vec<(String, String)>> = if ctx.manages {
        services.list_members(&ctx.actor).await.ok().map(|m| m.into_iter().map(|m| (m.id, m.email)).collect())
    } else {
        None
    };
    let owners: HashMap<String, String> = match &members {
        Some(m) => m.iter().cloned().collect(),
        None => HashMap::from([(ctx.actor.id.clone(), ctx.user_label.clone())]),
    };
    let teams = services
        .list_teams(&ctx.actor)
        .await
        .map(|t| t.into_iter().map(|t| (t.id, t.name)).collect())
        .unwrap_or_default();
    let choices = KeyFormChoices {
        owners: members,
        me: ctx.actor.id.clone(),
        teams,
        providers: provider_names(&state),
        reveal: services.sealer.is_some(),
    };
    let by_name = q.sort.as_deref().is_none_or(|s| s.is_empty() || s == "name");
    let filtered =
        q.search.as_deref().is_some_and(|s| !s.is_empty()) || q.status.as_deref().is_some_and(|s| !s.is_empty());
    let actions = html! { button.btn.btn-primary #open-create type="button" { "+ Create Key" } };
    let body = html! {
        form.toolbar method="get" action="/dashboard/keys" role="search" {
            input type="search" name="search" placeholder="Search by name or key preview" aria-label="Search keys"
                value=(q.search.as_deref().unwrap_or(""));
            select name="status" aria-label="Status" {
                @for (value, label) in STATUSES {
                    option value=(value) selected[q.status.as_deref().unwrap_or("") == *value] { (label) }
                }
            }
            @if let Some(sort) = q.sort.as_deref().filter(|s| !s.is_empty()) { input type="hidden" name="sort" value=(sort); }
            @if let Some(order) = q.order.as_deref().filter(|s| !s.is_empty()) { input type="hidden" name="order" value=(order); }
            button.btn type="submit" { "Filter" }
            @if filtered { a.btn.btn-ghost href="/dashboard/keys" { "Clear" } }
        }
        @match list {
            Err(e) => (alert(&e)),
            Ok(list) if list.data.is_empty() && q.cursor.is_none() => {
                div.empty {
                    @if filtered {
                        h2 { "No keys match" }
                        p { "Try another search or status, or " a href="/dashboard/keys" { "show all keys" } "." }
                    } @else {
                        h2 { "No API keys yet" }
                        p { "Create a key to call the gateway's OpenAI-compatible API at " code { "/v1" } "." }
                        button.btn.btn-primary data-open-create type="button" { "+ Create your first key" }
                    }
                }
            }
            Ok(list) => {
                // Sorted by name, a page with environment-named keys heads each run of them.
                @let grouped = by_name && list.data.iter().any(|k| environment(&k.name).is_some());
                div.table-wrap {
                    table.data #keys-table {
                        thead { tr {
                            (sort_th(&q, "Name", Some("name")))
                            (sort_th(&q, "Owner", Some("owner")))
                            th { "Key" }
                            (sort_th(&q, "Status", Some("status")))
                            th { "Expires" }
                            th { "Last used" }
                            (sort_th(&q, "Created", Some("created")))
                            (sort_th(&q, "Requests", Some("requests")))
                            th.num { "Usage" }
                            th.num { "Spend" }
                            th { span.sr-only { "Actions" } }
                        } }
                        tbody {
                            @for (i, k) in list.data.iter().enumerate() {
                                @let env = environment(&k.name);
                                @if grouped && (i == 0 || environment(&list.data[i - 1].name) != env) {
                                    tr.group-row data-environment=(env.unwrap_or("other")) {
                                        th colspan="11" scope="rowgroup" {
                                            @if let Some(env) = env { span.env-tag { (env) } " environment" } @else { "Other keys" }
                                        }
                                    }
                                }
                                (row(k, &owners, total_requests, !grouped))
                            }
                        }
                    }
                }
                p.hint.table-note { "Keys named " code { "prod-…" } ", " code { "staging-…" } " or " code { "dev-…" }
                    " (or " code { "prod/…" } ") are grouped by environment when sorted by name." }
                div.pager {
                    @if q.cursor.is_some() { a.btn href=(q.href(q.sort.as_deref(), q.order.as_deref(), None)) { "← First page" } }
                    @if let Some(next) = &list.next_cursor {
                        a.btn #next-page href=(q.href(q.sort.as_deref(), q.order.as_deref(), Some(next))) { "Next page →" }
                    }
                }
            }
        }
        (key_dialog(&choices))
        (secret_dialog())
        (detail_dialog(choices.reveal))
        @if choices.reveal { (reveal_dialog()) }
        (confirm_dialog())
    };
    layout(&ctx, Nav::Keys, "API Keys", actions, body)
}

fn sort_th(q: &KeysQuery, label: &str, sort: Option<&str>) -> Markup {
    let Some(sort) = sort else { return html! { th { (label) } } };
    let current = q.sort.as_deref().unwrap_or("name") == sort;
    let desc = q.order.as_deref() == Some("desc");
    let next_order = if current && !desc { "desc" } else { "asc" };
    let aria = match (current, desc) {
        (false, _) => None,
        (true, false) => Some("ascending"),
        (true, true) => Some("descending"),
    };
    let class = if sort == "requests" { "num" } else { "" };
    html! {
        th class=(class) aria-sort=[aria] {
            a.sort href=(q.href(Some(sort), Some(next_order), None)) {
                (label)
                @if current { span.sort-arrow aria-hidden="true" { @if desc { "▼" } @else { "▲" } } }
            }
        }
    }
}

/// A key's row; `env_tag`: mark its environment by the name (when no group heading does).
fn row(k: &KeyView, owners: &HashMap<String, String>, total_requests: i64, env_tag: bool) -> Markup {
    let status = k.status.as_str();
    let share =
        if total_requests > 0 { (k.request_count as f64 / total_requests as f64 * 100.0).min(100.0) } else { 0.0 };
    html! {
        tr data-key-id=(k.id) data-key-name=(k.name) data-key-status=(status) {
            td {
                button.linklike.open-detail type="button" { (k.name) }
                @if let Some(env) = environment(&k.name).filter(|_| env_tag) { " " span.env-tag title="Environment, from the name's prefix" { (env) } }
            }
            td { (owners.get(&k.owner_id).map_or(k.owner_id.as_str(), String::as_str)) }
            td.mono {
                span.preview { (k.preview) }
                button.icon-btn.copy type="button" data-copy=(k.preview) aria-label=(format!("Copy key preview of {}", k.name)) title="Copy preview" { (icon_copy()) }
            }
            td { (status_badge(status)) }
            td { (day(k.expires_at.as_deref())) }
            td { (when(k.last_used_at.as_deref())) }
            td { (day(Some(&k.created_at))) }
            td.num { (k.request_count) }
            td.num {
                span.meter title=(format!("{share:.1}% of requests in the last year")) { span style=(format!("width:{share:.0}%")) {} }
                (format!("{share:.1}%"))
            }
            td.num { (usd(k.spend_usd)) @if let Some(b) = k.budget_usd { span.muted { " / " (usd(b)) } } }
            td.row-actions {
                button.icon-btn.delete-key type="button" aria-label=(format!("Delete {}", k.name)) title="Delete" { (icon_trash()) }
            }
        }
    }
}

/// The environments a key name's prefix can name.
const ENVIRONMENTS: &[&str] = &["prod", "staging", "dev"];

/// A key's environment by its name: `prod-…`, `staging-…` or `dev-…`, or the same followed
/// by `/` (`prod/billing`), case-insensitively. Sorted by name, such keys are adjacent,
/// so the table can head each run with its environment.
pub(crate) fn environment(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    ENVIRONMENTS.iter().copied().find(|env| {
        lower.strip_prefix(env).is_some_and(|rest| rest.len() > 1 && (rest.starts_with('-') || rest.starts_with('/')))
    })
}

/// The provider names of the configured channels, sorted, each once.
fn provider_names(state: &WebState) -> Vec<String> {
    let mut names: Vec<String> =
        state.channels.as_ref().map(|report| report().into_iter().map(|c| c.provider).collect()).unwrap_or_default();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::environment;

    #[test]
    fn environment_comes_from_a_known_name_prefix() {
        assert_eq!(environment("prod-billing"), Some("prod"));
        assert_eq!(environment("Staging-search"), Some("staging"));
        assert_eq!(environment("dev/notebook"), Some("dev"));
        assert_eq!(environment("production api"), None);
        assert_eq!(environment("prod-"), None, "a prefix alone names no key");
        assert_eq!(environment("devops-bot"), None);
        assert_eq!(environment("Production API"), None);
    }
}
