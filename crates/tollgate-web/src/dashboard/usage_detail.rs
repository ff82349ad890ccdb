//! One request of the usage log (`/dashboard/usage/{request_id}`): every field of its row
//! as `get_usage` shows it to the signed-in user — timing, tokens, cost, the error the
//! client saw, the key's metadata at the time — plus the raw record. Rows the user may not
//! see answer "not found", exactly like `GET /api/v1/usage/{request_id}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use tollgate_service::{ServiceError, UsageView};

use super::{Ctx, Nav, alert, encode, layout, status_badge, usd_exact, when};
use crate::WebState;

pub(crate) async fn page(State(state): State<Arc<WebState>>, ctx: Ctx, Path(request_id): Path<String>) -> Response {
    let found = state.services.get_usage(&ctx.actor, &request_id).await;
    let actions = html! { a.btn href="/dashboard/usage" { "← Usage Logs" } };
    let body = match &found {
        Ok(row) => detail(row),
        Err(ServiceError::NotFound) => html! {
            div.empty {
                h2 { "No such request" }
                p { "There is no request " code { (request_id) } " among the ones you can see." }
                a.btn href="/dashboard/usage" { "Back to Usage Logs" }
            }
        },
        Err(e) => alert(e),
    };
    let response = layout(&ctx, Nav::Usage, "Request", actions, body);
    match found {
        Err(ServiceError::NotFound) => (http::StatusCode::NOT_FOUND, response).into_response(),
        _ => response,
    }
}

fn detail(r: &UsageView) -> Markup {
    let dash = || html! { span.muted { "—" } };
    let text = |v: &Option<String>| match v.as_deref() {
        Some(s) if !s.is_empty() => html! { (s) },
        _ => dash(),
    };
    let failed = r.status >= 400;
    let raw = serde_json::to_string_pretty(r).unwrap_or_default();
    html! {
        div.cards #usage-detail data-request-id=(r.request_id) {
            div.stat { span.stat-label { "Status" } span.stat-value {
                @if failed { span.badge.badge-revoked { (r.status) } } @else { span.badge.badge-active { (r.status) } }
            } }
            div.stat { span.stat-label { "Cost" } span.stat-value #detail-cost { (usd_exact(r.cost_usd)) } }
            div.stat { span.stat-label { "Tokens" } span.stat-value { (r.total_tokens) } }
            div.stat { span.stat-label { "Latency" } span.stat-value { (r.latency_ms) " ms" } }
        }
        @if failed || r.error.is_some() {
            section.panel #usage-error {
                h2 { "Error" }
                pre.block.error-box {
                    (r.error_code.as_deref().unwrap_or("error"))
                    @if let Some(e) = &r.error { ": " (e) }
                }
            }
        }
        div.grid-panels {
            section.panel {
                h2 { "Request" }
                dl.kv #usage-fields {
                    dt { "Request ID" } dd.mono { (r.request_id) }
                    dt { "Time" } dd { (when(Some(&r.created_at))) }
                    dt { "Endpoint" } dd.mono { (r.endpoint) }
                    dt { "Model" } dd.mono { (text(&r.model)) }
                    dt { "Provider" } dd { (text(&r.provider)) }
                    dt { "Streamed" } dd { @if r.stream { "Yes" } @else { "No" } }
                    dt { "Time to first token" } dd { @if let Some(t) = r.ttft_ms { (t) " ms" } @else { (dash()) } }
                    dt { "Client IP" } dd.mono { (text(&r.client_ip)) }
                    dt { "Billing" } dd { (status_badge(&r.billing_reason)) }
                }
            }
            section.panel {
                h2 { "Tokens and cost" }
                dl.kv {
                    dt { "Prompt tokens" } dd { (r.prompt_tokens) }
                    dt { "Completion tokens" } dd { (r.completion_tokens) }
                    dt { "Total tokens" } dd { (r.total_tokens) }
                    dt { "Cost (USD)" } dd { (usd_exact(r.cost_usd)) }
                    dt { "Cost (micro-USD)" } dd { (r.cost_micros) }
                }
                h2.sub { "Key" }
                dl.kv {
                    dt { "Name" } dd {
                        @match (&r.key_id, &r.key_name) {
                            (Some(id), name) => a href=(format!("/dashboard/usage?key_id={}", encode(id))) title="This key's requests" {
                                (name.as_deref().unwrap_or(id))
                            },
                            (None, _) => span.muted { "Rejected before a key was identified" },
                        }
                    }
                    dt { "Key ID" } dd.mono { (text(&r.key_id)) }
                    dt { "Team" } dd.mono { (text(&r.team_id)) }
                    dt { "Owner" } dd.mono { (text(&r.user_id)) }
                }
            }
        }
        section.panel #usage-metadata {
            h2 { "Key metadata" }
            @match &r.key_metadata {
                Some(m) if m.as_object().is_some_and(|o| !o.is_empty()) => pre.block { (serde_json::to_string_pretty(m).unwrap_or_default()) },
                _ => p.muted { "The key had no metadata when this request was made." },
            }
        }
        details.panel.raw-record {
            summary { "Raw record (JSON, as " code { "GET /api/v1/usage/{request_id}" } " returns it)" }
            pre.block { (raw) }
        }
    }
}
