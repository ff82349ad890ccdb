//! The Usage Logs page: filters (request id, model, key, team, status, date range), the
//! table read through `list_usage` as the signed-in user, keyset "next page" links (fast
//! at any depth), a link to the CSV export of the same filters, and each row linking to
//! its request's detail page (`usage_detail`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use tollgate_service::{ListKeys, ListUsage, UsageFilters};

use super::{Ctx, Nav, alert, encode, layout, query_string, usd_exact, when};
use crate::WebState;

const PAGE_SIZE: i64 = 50;

#[derive(Deserialize, Default)]
pub(crate) struct UsageQuery {
    request_id: Option<String>,
    model: Option<String>,
    key_id: Option<String>,
    team_id: Option<String>,
    status: Option<String>,
    /// `YYYY-MM-DD` from the date inputs; sent on as the start of that day (UTC).
    from: Option<String>,
    /// `YYYY-MM-DD`; sent on as the end of that day (UTC).
    to: Option<String>,
    cursor: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// A date input's value as an RFC 3339 instant; anything else is passed through for the
/// service to judge (and name in its error).
fn day_bound(v: &Option<String>, end: bool) -> Option<String> {
    nonempty(v).map(|d| {
        if d.len() == 10 { if end { format!("{d}T23:59:59.999Z") } else { format!("{d}T00:00:00Z") } } else { d }
    })
}

pub(crate) async fn page(State(state): State<Arc<WebState>>, ctx: Ctx, Query(q): Query<UsageQuery>) -> Response {
    let filters = UsageFilters {
        request_id: nonempty(&q.request_id),
        model: nonempty(&q.model),
        key_id: nonempty(&q.key_id),
        team_id: nonempty(&q.team_id),
        user_id: None,
        status: nonempty(&q.status),
        from: day_bound(&q.from, false),
        to: day_bound(&q.to, true),
    };
    let csv = format!(
        "/api/v1/usage.csv{}",
        query_string(&[
            ("request_id", filters.request_id.as_deref()),
            ("model", filters.model.as_deref()),
            ("key_id", filters.key_id.as_deref()),
            ("team_id", filters.team_id.as_deref()),
            ("status", filters.status.as_deref()),
            ("from", filters.from.as_deref()),
            ("to", filters.to.as_deref()),
        ])
    );
    let page = state
        .services
        .list_usage(&ctx.actor, ListUsage { filters, cursor: nonempty(&q.cursor), limit: Some(PAGE_SIZE) })
        .await;
    // The key picker: the caller's keys by name (the first page is enough for a picker).
    let keys = state
        .services
        .list_keys(&ctx.actor, ListKeys { limit: Some(200), ..Default::default() })
        .await
        .map(|l| l.data)
        .unwrap_or_default();
    let teams = state.services.list_teams(&ctx.actor).await.unwrap_or_default();
    let href = |cursor: Option<&str>| {
        format!(
            "/dashboard/usage{}",
            query_string(&[
                ("request_id", q.request_id.as_deref()),
                ("model", q.model.as_deref()),
                ("key_id", q.key_id.as_deref()),
                ("team_id", q.team_id.as_deref()),
                ("status", q.status.as_deref()),
                ("from", q.from.as_deref()),
                ("to", q.to.as_deref()),
                ("cursor", cursor),
            ])
        )
    };
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let filtered = [&q.request_id, &q.model, &q.key_id, &q.team_id, &q.status, &q.from, &q.to]
        .iter()
        .any(|f| nonempty(f).is_some());
    let actions = html! { a.btn #export-csv href=(csv) download="usage.csv" { "Export CSV" } };
    let body = html! {
        form.toolbar.filters method="get" action="/dashboard/usage" role="search" {
            input name="request_id" placeholder="Request ID" aria-label="Request ID" value=(v(&q.request_id));
            input name="model" placeholder="Model" aria-label="Model" value=(v(&q.model));
            select name="key_id" aria-label="API key" {
                option value="" { "All keys" }
                @for k in &keys { option value=(k.id) selected[q.key_id.as_deref() == Some(k.id.as_str())] { (k.name) } }
            }
            @if !teams.is_empty() {
                select name="team_id" aria-label="Team" {
                    option value="" { "All teams" }
                    @for t in &teams { option value=(t.id) selected[q.team_id.as_deref() == Some(t.id.as_str())] { (t.name) } }
                }
            }
            select name="status" aria-label="Status" {
                option value="" { "Any status" }
                option value="success" selected[q.status.as_deref() == Some("success")] { "Success" }
                option value="error" selected[q.status.as_deref() == Some("error")] { "Error" }
            }
            label.inline { span { "From" } input type="date" name="from" value=(v(&q.from)); }
            label.inline { span { "To" } input type="date" name="to" value=(v(&q.to)); }
            button.btn type="submit" { "Filter" }
            @if filtered { a.btn.btn-ghost href="/dashboard/usage" { "Clear" } }
        }
        @match page {
            Err(e) => (alert(&e)),
            Ok(page) if page.data.is_empty() => {
                div.empty {
                    @if filtered {
                        h2 { "No requests match these filters" }
                        p { a href="/dashboard/usage" { "Clear the filters" } " to see every request." }
                    } @else {
                        h2 { "No requests yet" }
                        p { "Requests made with your API keys appear here within seconds. "
                            a href="/dashboard/keys" { "Create a key" } " and call " code { "/v1/chat/completions" } "." }
                    }
                }
            }
            Ok(page) => {
                div.table-wrap {
                    table.data #usage-table {
                        thead { tr {
                            th { "Time" } th { "Key" } th { "Model" } th.num { "Prompt" } th.num { "Completion" }
                            th.num { "Cost" } th.num { "Latency" } th.num { "TTFT" } th { "Request ID" } th { "Status" }
                        } }
                        tbody {
                            @for r in &page.data {
                                @let detail = format!("/dashboard/usage/{}", encode(&r.request_id));
                                tr.clickable data-request-id=(r.request_id) data-href=(detail) {
                                    td { (when(Some(&r.created_at))) }
                                    td { (r.key_name.as_deref().unwrap_or("—")) }
                                    td.mono { (r.model.as_deref().unwrap_or("—")) }
                                    td.num { (r.prompt_tokens) }
                                    td.num { (r.completion_tokens) }
                                    td.num { (usd_exact(r.cost_usd)) }
                                    td.num { (r.latency_ms) " ms" }
                                    td.num { @if let Some(t) = r.ttft_ms { (t) " ms" } @else { span.muted { "—" } } }
                                    td.mono.request-id { a.request-link href=(detail) title="Request details" { (r.request_id) } }
                                    td {
                                        @if r.status < 400 { span.badge.badge-active { (r.status) } }
                                        @else {
                                            details.error-detail {
                                                summary { span.badge.badge-revoked { (r.status) } }
                                                div { strong { (r.error_code.as_deref().unwrap_or("error")) } " " (r.error.as_deref().unwrap_or("")) }
                                            }
                                        }
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
    layout(&ctx, Nav::Usage, "Usage Logs", actions, body)
}
