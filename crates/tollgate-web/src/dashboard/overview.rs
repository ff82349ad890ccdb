//! The Overview page: the balance, 30-day totals and a server-drawn SVG bar chart of daily
//! spend and requests (no chart library, no script).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};
use tollgate_service::{DailyUsage, DailyView};

use super::{Ctx, Nav, alert, layout, usd};
use crate::WebState;

pub(crate) async fn page(State(state): State<Arc<WebState>>, ctx: Ctx) -> Response {
    let services = &state.services;
    let days = services.usage_daily(&ctx.actor, DailyUsage { from: None, to: None, key_id: None, model: None }).await;
    let balance = services.billing_summary(&ctx.actor, None, state.balance_enforced).await.ok();
    let body = match days {
        Err(e) => alert(&e),
        Ok(days) => {
            let requests: i64 = days.iter().map(|d| d.requests).sum();
            let errors: i64 = days.iter().map(|d| d.errors).sum();
            let spend = days.iter().fold(tollgate_core::MicroUsd::ZERO, |a, d| a.saturating_add(d.cost_usd));
            html! {
                div.cards {
                    div.stat { span.stat-label { "Spend, last 30 days" } span.stat-value { (usd(spend)) } }
                    div.stat { span.stat-label { "Requests, last 30 days" } span.stat-value { (requests) } }
                    div.stat { span.stat-label { "Errors" } span.stat-value { (errors) } }
                    @if let Some(b) = &balance {
                        div.stat { span.stat-label { "Balance" } span.stat-value { (usd(b.balance_usd)) } a href="/dashboard/billing" { "Billing →" } }
                    }
                }
                section.panel {
                    h2 { "Daily spend (USD)" }
                    (bars(&days, |d| d.cost_micros as f64 / 1e6, |v| format!("${v:.4}")))
                }
                section.panel {
                    h2 { "Daily requests" }
                    (bars(&days, |d| d.requests as f64, |v| format!("{v:.0}")))
                }
            }
        }
    };
    layout(&ctx, Nav::Overview, "Overview", html! { a.btn.btn-primary href="/dashboard/keys" { "API Keys" } }, body)
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
