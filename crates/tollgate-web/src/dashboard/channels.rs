//! The Models page's Channels section (owners and admins): every model's channels with
//! their routing settings and circuit health, from the same data as `GET /api/v1/channels`
//! (the data plane's report, with the API-managed channels named by `list_channels`).
//! Read-only: the operator changes channels in the config file or through the API.

use maud::{Markup, html};
use tollgate_service::Actor;

use super::alert;
use crate::WebState;
use crate::channels::ChannelStatus;

/// What `GET /api/v1/channels` answers, for a manager; sorted by model, then the order
/// attempts take (highest priority first).
async fn channels(state: &WebState, actor: &Actor) -> Result<Vec<ChannelStatus>, tollgate_service::ServiceError> {
    let mut data = crate::channels::channel_statuses(state, actor).await?;
    data.sort_by(|a, b| a.model.cmp(&b.model).then(b.priority.cmp(&a.priority)));
    Ok(data)
}

/// The section, for owners and admins (callers check); one table, a heading row per model.
pub(crate) async fn section(state: &WebState, actor: &Actor) -> Markup {
    let list = channels(state, actor).await;
    html! {
        section.panel #channels {
            h2 { "Channels" }
            p.muted { "Where each model's requests go, tried by priority and shared by weight, and each channel's circuit. The operator changes channels in the config file or through "
                code { "/api/v1/channels" } "." }
            @match &list {
                Err(e) => (alert(e)),
                Ok(list) if list.is_empty() => div.empty.empty-sm {
                    p { "No channels yet. The operator adds them under a model's " code { "channels" }
                        " in the config file, or with " code { "POST /api/v1/channels" } "." }
                },
                Ok(list) => div.table-wrap {
                    table.data #channels-table {
                        thead { tr {
                            th { "Provider" } th { "Upstream model" } th { "Circuit" } th.num { "Priority" } th.num { "Weight" }
                            th { "Groups" } th.num { "Successes" } th.num { "Failures" } th { "Source" }
                        } }
                        tbody {
                            @for (i, c) in list.iter().enumerate() {
                                @if i == 0 || list[i - 1].model != c.model {
                                    tr.group-row data-model=(c.model) {
                                        th colspan="9" scope="rowgroup" { span.mono { (c.model) } }
                                    }
                                }
                                (row(c))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn row(c: &ChannelStatus) -> Markup {
    let streak = if c.consecutive_failures > 0 {
        Some(format!("{} consecutive failures", c.consecutive_failures))
    } else {
        None
    };
    html! {
        tr.channel data-model=(c.model) data-provider=(c.provider) data-upstream=(c.upstream_model) data-state=(c.state) data-source=(c.source) {
            td { (c.provider) }
            td.mono { (c.upstream_model) }
            td { span class=(format!("badge badge-circuit-{}", c.state)) title=[streak] { (c.state.replace('_', " ")) } }
            td.num { (c.priority) }
            td.num { (c.weight) }
            td { @if c.groups.is_empty() { span.muted { "All keys" } } @else { (c.groups.join(", ")) } }
            td.num { (c.successes) }
            td.num { (c.failures) }
            td { (source_badge(c.source)) }
        }
    }
}

/// `config` (the config file) or `api` (managed through the API).
pub(crate) fn source_badge(source: &str) -> Markup {
    if source == "api" {
        html! { span.badge.badge-api title="Managed through the API" { "API" } }
    } else {
        html! { span.badge title="From the config file" { "config" } }
    }
}
