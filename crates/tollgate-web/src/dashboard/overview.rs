//! The Overview page: the current balance, 30-day totals, server-drawn SVG charts (no
//! chart library, no script) of daily spend and requests, spend and requests by key and
//! by model, and the top keys. Everything is read through the service layer as the
//! signed-in user, so members see only their own keys' traffic.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};
use tollgate_core::MicroUsd;
use tollgate_service::{BreakdownView, DailyUsage, DailyView, ServiceError, UsageBreakdown};

use super::{Ctx, Nav, alert, encode, layout, usd};
use crate::WebState;

/// How many keys and models the breakdowns show.
const TOP: i64 = 8;

pub(crate) async fn page(State(state): State<Arc<WebState>>, ctx: Ctx) -> Response {
    let services = &state.services;
    let days = services.usage_daily(&ctx.actor, DailyUsage { from: None, to: None, key_id: None, model: None }).await;
    let balance = services.billing_summary(&ctx.actor, None, state.balance_enforced).await.ok();
    let breakdown = |by: &str, rank: &str| {
        services.usage_breakdown(
            &ctx.actor,
            UsageBreakdown { by: by.into(), rank: Some(rank.into()), limit: Some(TOP), ..Default::default() },
        )
    };
    let (keys_by_spend, keys_by_requests, models_by_spend, models_by_requests) = tokio::join!(
        breakdown("key", "spend"),
        breakdown("key", "requests"),
        breakdown("model", "spend"),
        breakdown("model", "requests"),
    );
    let body = match days {
        Err(e) => alert(&e),
        Ok(days) => {
            let requests: i64 = days.iter().map(|d| d.requests).sum();
            let errors: i64 = days.iter().map(|d| d.errors).sum();
            let spend = days.iter().fold(MicroUsd::ZERO, |a, d| a.saturating_add(d.cost_usd));
            html! {
                div.cards {
                    @if let Some(b) = &balance {
                        div.stat { span.stat-label { "Current balance" } span.stat-value #balance { (usd(b.balance_usd)) } a href="/dashboard/billing" { "Billing →" } }
                    }
                    div.stat { span.stat-label { "Spend, last 30 days" } span.stat-value { (usd(spend)) } }
                    div.stat { span.stat-label { "Requests, last 30 days" } span.stat-value { (requests) } }
                    div.stat { span.stat-label { "Errors" } span.stat-value { (errors) } }
                }
                section.panel {
                    h2 { "Daily spend (USD)" }
                    (bars(&days, |d| d.cost_micros as f64 / 1e6, |v| format!("${v:.4}")))
                }
                section.panel {
                    h2 { "Daily requests" }
                    (bars(&days, |d| d.requests as f64, |v| format!("{v:.0}")))
                }
                div.grid-panels #breakdown-keys {
                    (breakdown_panel("spend-by-key", "Spend by key", &keys_by_spend, Measure::Spend))
                    (breakdown_panel("requests-by-key", "Requests by key", &keys_by_requests, Measure::Requests))
                }
                div.grid-panels #breakdown-models {
                    (breakdown_panel("spend-by-model", "Spend by model", &models_by_spend, Measure::Spend))
                    (breakdown_panel("requests-by-model", "Requests by model", &models_by_requests, Measure::Requests))
                }
                (top_keys(&keys_by_spend, spend))
            }
        }
    };
    layout(&ctx, Nav::Overview, "Overview", html! { a.btn.btn-primary href="/dashboard/keys" { "API Keys" } }, body)
}

#[derive(Clone, Copy)]
enum Measure {
    Spend,
    Requests,
}

impl Measure {
    fn value(self, row: &BreakdownView) -> f64 {
        match self {
            Self::Spend => row.cost_micros as f64,
            Self::Requests => row.requests as f64,
        }
    }

    fn label(self, row: &BreakdownView) -> String {
        match self {
            Self::Spend => usd(row.cost_usd),
            Self::Requests => row.requests.to_string(),
        }
    }
}

fn breakdown_panel(id: &str, title: &str, rows: &Result<Vec<BreakdownView>, ServiceError>, measure: Measure) -> Markup {
    html! {
        section.panel #(id) {
            h2 { (title) " · last 30 days" }
            @match rows {
                Err(e) => (alert(e)),
                Ok(rows) if rows.iter().all(|r| measure.value(r) == 0.0) => p.muted { "No usage in the last 30 days." },
                Ok(rows) => (hbars(&rows.iter().filter(|r| measure.value(r) > 0.0).cloned().collect::<Vec<_>>(), measure)),
            }
        }
    }
}

/// A horizontal bar per key or model, scaled to the largest, each labelled with its
/// name and value (with a `<title>` tooltip for long names).
fn hbars(rows: &[BreakdownView], measure: Measure) -> Markup {
    const W: f64 = 560.0;
    const ROW: f64 = 28.0;
    const LABEL_W: f64 = 170.0;
    const VALUE_W: f64 = 90.0;
    let max = rows.iter().map(|r| measure.value(r)).fold(0.0_f64, f64::max);
    let track = W - LABEL_W - VALUE_W;
    let height = rows.len() as f64 * ROW;
    html! {
        svg.hbars viewBox=(format!("0 0 {W} {height}")) role="img"
            aria-label=(format!("Bar chart: {}", rows.iter().map(|r| format!("{} {}", r.label, measure.label(r))).collect::<Vec<_>>().join(", "))) {
            @for (i, r) in rows.iter().enumerate() {
                @let y = i as f64 * ROW;
                @let v = measure.value(r);
                @let w = if max > 0.0 { (v / max * track).max(if v > 0.0 { 2.0 } else { 0.0 }) } else { 0.0 };
                g data-label=(r.label) {
                    title { (r.label) ": " (measure.label(r)) }
                    text x="0" y=(format!("{:.1}", y + 18.0)) { (truncate(&r.label, 24)) }
                    rect.track x=(LABEL_W) y=(format!("{:.1}", y + 7.0)) width=(format!("{track:.1}")) height="14" rx="3" {}
                    rect.bar.(if matches!(measure, Measure::Requests) { "alt" } else { "" })
                        x=(LABEL_W) y=(format!("{:.1}", y + 7.0)) width=(format!("{w:.1}")) height="14" rx="3" {}
                    text.val x=(W) y=(format!("{:.1}", y + 18.0)) text-anchor="end" { (measure.label(r)) }
                }
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_owned() } else { format!("{}…", s.chars().take(max - 1).collect::<String>()) }
}

fn top_keys(rows: &Result<Vec<BreakdownView>, ServiceError>, total: MicroUsd) -> Markup {
    let Ok(rows) = rows else { return html! {} };
    html! {
        section.panel #top-keys {
            h2 { "Top keys · last 30 days" }
            @if rows.is_empty() {
                p.muted { "No key has been used in the last 30 days. " a href="/dashboard/playground" { "Try one in the Playground" } "." }
            } @else {
                div.table-wrap {
                    table.data {
                        thead { tr {
                            th { "Key" } th.num { "Requests" } th.num { "Errors" } th.num { "Tokens" } th.num { "Spend" } th.num { "Share of spend" }
                        } }
                        tbody {
                            @for r in rows {
                                @let share = if total.0 > 0 { r.cost_micros as f64 / total.0 as f64 * 100.0 } else { 0.0 };
                                tr data-key-id=(r.id) {
                                    td { a href=(format!("/dashboard/usage?key_id={}", encode(&r.id))) title="This key's requests" { (r.label) } }
                                    td.num { (r.requests) }
                                    td.num { (r.errors) }
                                    td.num { (r.prompt_tokens + r.completion_tokens) }
                                    td.num { (usd(r.cost_usd)) }
                                    td.num { span.meter { span style=(format!("width:{:.0}%", share.min(100.0))) {} } (format!("{share:.1}%")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A bar per day, scaled to the largest; each bar's `<title>` is its tooltip.
fn bars(days: &[DailyView], value: impl Fn(&DailyView) -> f64, label: impl Fn(f64) -> String) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 160.0;
    let max = days.iter().map(&value).fold(0.0_f64, f64::max);
    let n = days.len().max(1) as f64;
    let slot = W / n;
    html! {
        svg.chart viewBox=(format!("0 0 {W} {}", H + 20.0)) role="img" aria-label="Bar chart by day" preserveAspectRatio="none" {
            line x1="0" y1=(H) x2=(W) y2=(H) class="axis" {}
            @for (i, d) in days.iter().enumerate() {
                @let v = value(d);
                @let h = if max > 0.0 { (v / max * (H - 10.0)).max(if v > 0.0 { 2.0 } else { 0.0 }) } else { 0.0 };
                rect x=(format!("{:.1}", i as f64 * slot + slot * 0.15)) y=(format!("{:.1}", H - h))
                    width=(format!("{:.1}", slot * 0.7)) height=(format!("{h:.1}")) {
                    title { (d.day) ": " (label(v)) }
                }
                @if i % 7 == 0 || (i + 1 == days.len() && i % 7 >= 3) {
                    text x=(format!("{:.1}", i as f64 * slot + slot / 2.0)) y=(H + 15.0) text-anchor="middle" { (d.day.get(5..).unwrap_or(&d.day)) }
                }
            }
            @if max == 0.0 { text x=(W / 2.0) y=(H / 2.0) text-anchor="middle" class="chart-empty" { "No usage in the last 30 days" } }
        }
    }
}
