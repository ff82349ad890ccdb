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
    let owners: HashMap<String, String> = if ctx.manages {
        services
            .list_members(&ctx.actor)
            .await
            .map(|m| m.into_iter().map(|m| (m.id, m.email)).collect())
            .unwrap_or_default()
    } else {
        HashMap::from([(ctx.actor.id.clone(), ctx.user_label.clone())])
    };
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
                            @for k in &list.data { (row(k, &owners, total_requests)) }
                        }
                    }
                }
                div.pager {
                    @if q.cursor.is_some() { a.btn href=(q.href(q.sort.as_deref(), q.order.as_deref(), None)) { "← First page" } }
                    @if let Some(next) = &list.next_cursor {
                        a.btn #next-page href=(q.href(q.sort.as_deref(), q.order.as_deref(), Some(next))) { "Next page →" }
                    }
                }
            }
        }
        (create_dialog())
        (secret_dialog())
        (detail_dialog())
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

fn row(k: &KeyView, owners: &HashMap<String, String>, total_requests: i64) -> Markup {
    let status = k.status.as_str();
    let share =
        if total_requests > 0 { (k.request_count as f64 / total_requests as f64 * 100.0).min(100.0) } else { 0.0 };
    html! {
        tr data-key-id=(k.id) data-key-name=(k.name) data-key-status=(status) {
            td { button.linklike.open-detail type="button" { (k.name) } }
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

fn field(id: &str, label: &str, input: Markup, hint: Option<&str>) -> Markup {
    html! {
        div.field data-field=(id) {
            label for=(id) { (label) }
            (input)
            @if let Some(h) = hint { p.hint { (h) } }
            p.field-error hidden {}
        }
    }
}

fn create_dialog() -> Markup {
    html! {
        dialog #create-dialog .modal aria-labelledby="create-title" {
            form #create-form method="dialog" novalidate {
                header.modal-head {
                    h2 #create-title { "Create API key" }
                    button.icon-btn.close type="button" data-close aria-label="Close" { "✕" }
                }
                div.tabs role="tablist" aria-label="Key settings" {
                    button #tab-basic role="tab" type="button" aria-selected="true" aria-controls="panel-basic" { "Basic" }
                    button #tab-advanced role="tab" type="button" aria-selected="false" aria-controls="panel-advanced" tabindex="-1" { "Advanced" }
                }
                div.alert.alert-error.form-error role="alert" hidden {}
                section #panel-basic role="tabpanel" aria-labelledby="tab-basic" {
                    (field("key-name", "Key name", html! { input #key-name name="name" required maxlength="200" placeholder="e.g. Production API"; }, None))
                    div.grid2 {
                        (field("key-expiry", "Expiration", html! {
                            select #key-expiry name="expires_in" {
                                option value="never" { "Never" }
                                option value="30d" { "30 days" }
                                option value="60d" { "60 days" }
                                option value="90d" { "90 days" }
                                option value="180d" { "180 days" }
                                option value="365d" { "1 year" }
                                option value="custom" { "Custom date…" }
                            }
                        }, None))
                        (field("key-expires-at", "Expires on", html! { input #key-expires-at name="expires_at" type="date" disabled; }, Some("Only for a custom date.")))
                    }
                    fieldset.field data-field="key-budget" {
                        legend { "Budget" }
                        div.chips {
                            @for (value, label) in [("", "Workspace balance"), ("5", "$5"), ("20", "$20"), ("100", "$100"), ("custom", "Custom")] {
                                label.chip { input type="radio" name="budget" value=(value) checked[value.is_empty()]; span { (label) } }
                            }
                        }
                        input #key-budget-custom name="budget_custom" type="number" min="0" step="0.01" placeholder="USD" aria-label="Custom budget in USD" hidden;
                        p.field-error hidden {}
                    }
                    (field("key-thresholds", "Budget alert thresholds (%)", html! { input #key-thresholds name="thresholds" placeholder="50, 80, 100"; }, Some("Comma-separated percentages; notifications fire as spend crosses them.")))
                    div.grid3 {
                        (field("key-rpm", "Requests / min", html! { input #key-rpm name="rpm" type="number" min="1" placeholder="Unlimited"; }, None))
                        (field("key-tpm", "Tokens / min", html! { input #key-tpm name="tpm" type="number" min="1" placeholder="Unlimited"; }, None))
                        (field("key-quota", "Token quota", html! { input #key-quota name="token_quota" type="number" min="1" placeholder="Unlimited"; }, None))
                    }
                }
                section #panel-advanced role="tabpanel" aria-labelledby="tab-advanced" hidden {
                    fieldset.field data-field="key-scope" {
                        legend { "Allowed models" }
                        div.chips {
                            label.chip { input type="radio" name="model_scope" value="all" checked; span { "All models" } }
                            label.chip { input type="radio" name="model_scope" value="chat"; span { "Chat models" } }
                            label.chip { input type="radio" name="model_scope" value="list"; span { "Only these…" } }
                        }
                        input #key-models name="models" placeholder="gpt-4o-mini, demo" aria-label="Model ids, comma-separated" hidden;
                        p.field-error hidden {}
                    }
                    fieldset.field data-field="key-endpoints" {
                        legend { "Allowed endpoints" }
                        p.hint { "None checked: every endpoint." }
                        div.checks {
                            @for ep in ["/v1/chat/completions", "/v1/messages", "/v1/completions", "/v1/embeddings", "/v1/images/generations", "/v1/responses", "/v1/models"] {
                                label { input type="checkbox" name="allowed_endpoints" value=(ep); code { (ep) } }
                            }
                        }
                        p.field-error hidden {}
                    }
                    (field("key-ips", "IP allowlist", html! { textarea #key-ips name="ip_allowlist" rows="2" placeholder="192.168.1.0/24, 10.0.0.1" {} }, Some("CIDRs or addresses, comma- or line-separated. Empty: any address.")))
                    (field("key-metadata", "Metadata (JSON)", html! { textarea.mono #key-metadata name="metadata" rows="3" placeholder=r#"{"team": "backend", "env": "production"}"# {} }, Some("A JSON object, echoed in usage logs.")))
                }
                footer.modal-foot {
                    button.btn type="button" data-close { "Cancel" }
                    button.btn.btn-primary #create-submit type="submit" { "Create Key" }
                }
            }
        }
    }
}

/// The one-shot box: shows a fresh secret (after create or rotate) exactly once.
fn secret_dialog() -> Markup {
    html! {
        dialog #secret-dialog .modal aria-labelledby="secret-title" {
            div.success-box {
                h2 #secret-title { "API Key created! Copy it now" }
                pre.secret #secret-value tabindex="0" aria-label="The full API key" {}
                div.secret-actions {
                    button.btn.btn-primary #secret-copy type="button" { (icon_copy()) " " span { "Copy" } }
                }
                p.warning { "This key will not be shown again. Make sure to save it securely." }
            }
            footer.modal-foot { button.btn #secret-done type="button" data-close { "Done" } }
        }
    }
}

fn detail_dialog() -> Markup {
    html! {
        dialog #detail-dialog .modal aria-labelledby="detail-title" {
            header.modal-head {
                h2 #detail-title { "Key" }
                button.icon-btn.close type="button" data-close aria-label="Close" { "✕" }
            }
            div.alert.alert-error.form-error role="alert" hidden {}
            dl.detail #detail-body {}
            div.detail-rotate {
                label for="rotate-grace" { "When rotating, keep the old secret working for" }
                select #rotate-grace {
                    option value="0" { "No grace (stops now)" }
                    option value="3600" { "1 hour" }
                    option value="86400" { "24 hours" }
                    option value="604800" { "7 days" }
                }
            }
            footer.modal-foot.wrap {
                button.btn #act-disable type="button" data-action="disable" { "Deactivate" }
                button.btn #act-enable type="button" data-action="enable" { "Activate" }
                button.btn #act-rotate type="button" data-action="rotate" { "Rotate Key" }
                button.btn.btn-danger-outline #act-revoke type="button" data-action="revoke" { "Revoke" }
                button.btn.btn-danger #act-delete type="button" data-action="delete" { "Delete" }
            }
        }
    }
}

fn confirm_dialog() -> Markup {
    html! {
        dialog #confirm-dialog .modal.modal-sm aria-labelledby="confirm-title" {
            h2 #confirm-title { "Delete API Key" }
            p #confirm-text {}
            footer.modal-foot {
                button.btn type="button" data-close { "Cancel" }
                button.btn.btn-danger #confirm-ok type="button" { "Delete" }
            }
        }
    }
}
