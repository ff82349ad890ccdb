//! The Models page's Providers section (owners and admins): where requests can go — each
//! provider's kind, base URL, versions, whether an API key is set and which extra headers
//! are sent (names only: credentials never reach a page), from the config file or added by
//! the operator through the API or CLI. Read-only, like `GET /api/v1/providers`.

use maud::{Markup, html};
use tollgate_service::{Actor, ProviderView};

use super::alert;
use super::channels::source_badge;
use crate::WebState;

/// The section, for owners and admins (callers check).
pub(crate) async fn section(state: &WebState, actor: &Actor) -> Markup {
    let list = state.services.list_providers(actor).await;
    html! {
        section.panel #providers {
            h2 { "Providers" }
            p.muted { "The upstreams channels send requests to. The operator adds them in the config file, with "
                code { "tollgate providers add" } " or through " code { "/api/v1/providers" }
                "; API keys are stored sealed and never shown." }
            @match &list {
                Err(e) => (alert(e)),
                Ok(list) if list.is_empty() => div.empty.empty-sm { p { "No providers yet." } },
                Ok(list) => div.table-wrap {
                    table.data #providers-table {
                        thead { tr {
                            th { "Name" } th { "Kind" } th { "Base URL" } th { "API key" } th { "Extra headers" } th { "Source" }
                        } }
                        tbody { @for p in list { (row(p)) } }
                    }
                }
            }
        }
    }
}

fn row(p: &ProviderView) -> Markup {
    let version = p.api_version.as_deref().or(p.anthropic_version.as_deref());
    html! {
        tr.provider data-provider=(p.name) data-source=(p.source) {
            td { (p.name) }
            td.mono { (p.kind) @if let Some(v) = version { " " span.muted { (v) } } }
            td.mono { @if let Some(url) = &p.base_url { (url) } @else { span.muted { "—" } } }
            td { @if p.api_key_set { "Set" } @else { span.muted { "None" } } }
            td.mono { @if p.header_names.is_empty() { span.muted { "—" } } @else { (p.header_names.join(", ")) } }
            td { (source_badge(p.source)) }
        }
    }
}
