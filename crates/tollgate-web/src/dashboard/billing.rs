//! The Billing page: balance and 30-day spend, the ledger, and for owners and admins the
//! admin credit form (`POST /api/v1/billing/credits`): packages of $5, $20 and $100 or a
//! custom amount. No payment provider is wired yet, and the button says so.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{Ctx, Nav, alert, layout, usd, when};
use crate::WebState;

/// The top-up packages, in USD; any other amount goes in the amount field.
const PACKAGES: [&str; 3] = ["5", "20", "100"];

pub(crate) async fn page(State(state): State<Arc<WebState>>, ctx: Ctx) -> Response {
    let services = &state.services;
    let summary = services.billing_summary(&ctx.actor, None, state.balance_enforced).await;
    let ledger = services.list_ledger(&ctx.actor, None, None, None, Some(50)).await;
    let body = html! {
        @match &summary {
            Err(e) => (alert(e)),
            Ok(s) => div.cards {
                div.stat { span.stat-label { "Current balance" } span.stat-value #balance { (usd(s.balance_usd)) } }
                div.stat { span.stat-label { "Credited in total" } span.stat-value { (usd(s.credit_usd)) } }
                div.stat { span.stat-label { "Spend, last 30 days" } span.stat-value { (usd(s.spend_usd)) } }
                div.stat { span.stat-label { "Balance enforced" } span.stat-value { @if s.balance_enforced { "Yes" } @else { "No" } } }
            }
        }
        @if ctx.manages {
            section.panel {
                h2 { "Add credit" }
                p.muted { "Online payment is not connected yet. Owners and admins can record a credit here (for example after an invoice is paid); it is added to the balance and to the ledger." }
                form #credit-form .credit-form novalidate {
                    fieldset.field.packages {
                        legend { "Package" }
                        div.chips {
                            @for amount in PACKAGES {
                                label.chip { input type="radio" name="package" value=(amount); span { "$" (amount) } }
                            }
                            label.chip { input type="radio" name="package" value="custom"; span { "Custom amount" } }
                        }
                    }
                    div.grid2 {
                        div.field data-field="credit-amount" {
                            label for="credit-amount" { "Amount (USD)" }
                            input #credit-amount name="amount_usd" type="number" min="0.01" step="0.01" required;
                            p.field-error hidden {}
                        }
                        div.field {
                            label for="credit-note" { "Note" }
                            input #credit-note name="note" maxlength="200" placeholder="e.g. Invoice 2025-014";
                        }
                    }
                    button.btn.btn-primary type="submit" { "Add admin credit (no payment is taken)" }
                }
            }
        }
        section.panel {
            h2 { "Ledger" }
            @match &ledger {
                Err(e) => (alert(e)),
                Ok(page) if page.data.is_empty() => div.empty.empty-sm { p { "No credits or adjustments yet." } },
                Ok(page) => div.table-wrap {
                    table.data #ledger-table {
                        thead { tr { th { "Time" } th { "Kind" } th.num { "Amount" } th.num { "Balance after" } th { "Note" } th { "By" } } }
                        tbody {
                            @for e in &page.data {
                                tr {
                                    td { (when(Some(&e.created_at))) }
                                    td { span.badge { (e.kind) } }
                                    td.num { (usd(e.amount_usd)) }
                                    td.num { (usd(e.balance_after_usd)) }
                                    td { (e.note.as_deref().unwrap_or("")) }
                                    td.muted { (e.actor.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&ctx, Nav::Billing, "Billing", html! {}, body)
}
