//! The Models page: the public models, their prices and where each is declared (config
//! file or API), and for owners and admins the Channels and Providers sections
//! (`channels.rs`, `providers.rs`). Read-only:
//! the operator changes models, prices and channels through the config file, API or CLI.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use maud::html;
use tollgate_core::MicroUsd;

use super::channels::{section, source_badge};
use super::{Ctx, Nav, alert, layout};
use crate::WebState;

/// A per-million-token or per-image price: up to four decimals, trailing zeros trimmed.
fn price(m: MicroUsd) -> String {
    let v = m.as_usd_f64();
    if v == 0.0 {
        return "—".to_owned();
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0');
    let s = s.strip_suffix('.').map_or_else(|| s.to_owned(), |w| format!("{w}.00"));
    let s = if s.split('.').nth(1).is_some_and(|d| d.len() == 1) { format!("{s}0") } else { s };
    format!("${s}")
}

pub(crate) async fn page(State(state): State<Arc<WebState>>, ctx: Ctx) -> Response {
    let models = state.services.list_models(&ctx.actor).await;
    let channels = if ctx.manages { Some(section(&state, &ctx.actor).await) } else { None };
    let providers = if ctx.manages { Some(super::providers::section(&state, &ctx.actor).await) } else { None };
    let body = html! {
        p.muted.lead { "The models this gateway serves, with the prices every request is billed at. Call them at "
            code { "/v1" } " with any key allowed to use them." }
        @match &models {
            Err(e) => (alert(e)),
            Ok(list) if list.is_empty() => div.empty {
                h2 { "No models configured" }
                p { "Declare models under " code { "[[models]]" } " in the server's config file and restart, or have the operator add them with "
                    code { "POST /api/v1/models" } "." }
            },
            Ok(list) => div.table-wrap {
                table.data #models-table {
                    thead { tr {
                        th { "Model" } th { "Type" } th.num { "Input / Mtok" } th.num { "Output / Mtok" }
                        th.num { "Per image" } th.num { "Max output" } th { "Price source" } th { "Model source" }
                    } }
                    tbody {
                        @for m in list {
                            tr data-model=(m.id) {
                                td.mono { (m.id) }
                                td { span.badge { (m.model_type.as_str()) } }
                                td.num { (price(m.input_price_per_mtok)) }
                                td.num { (price(m.output_price_per_mtok)) }
                                td.num { (price(m.price_per_image)) }
                                td.num { @if m.max_output_tokens > 0 { (m.max_output_tokens) } @else { span.muted { "—" } } }
                                td { @if m.price_source == "api" { span.badge.badge-expired title="Overridden through the API or CLI" { "override" } }
                                     @else { span.badge title="From the config file" { "config" } } }
                                td.model-source { (source_badge(m.source)) }
                            }
                        }
                    }
                }
            },
        }
        @if let Some(section) = channels { (section) }
        @if let Some(section) = providers { (section) }
    };
    layout(&ctx, Nav::Models, "Models", html! {}, body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prices_read_like_money() {
        assert_eq!(price(MicroUsd::from_usd(0.15).unwrap()), "$0.15");
        assert_eq!(price(MicroUsd::from_usd(2.0).unwrap()), "$2.00");
        assert_eq!(price(MicroUsd::from_usd(0.075).unwrap()), "$0.075");
        assert_eq!(price(MicroUsd::from_usd(0.0).unwrap()), "—");
    }
}
