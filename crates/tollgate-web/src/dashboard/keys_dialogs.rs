//! The API Keys page's dialogs, rendered empty and driven by `assets/keys.js` and
//! `assets/keys_detail.js`: the key form (Create Key, and Edit from the detail dialog;
//! its Advanced tab holds the scopes, metadata and MCP access), the one-shot secret box,
//! the detail dialog with its actions, the password prompt of Reveal, and the delete
//! confirmation.
//! Nothing here ever holds a secret: the script fills the one-shot box from an API answer.

use maud::{Markup, html};

use super::icon_copy;

/// What the key form offers the signed-in user.
pub(crate) struct KeyFormChoices {
    /// `(user id, email)` of the organization's members: the owner picker, for owners and
    /// admins only (members create keys for themselves).
    pub owners: Option<Vec<(String, String)>>,
    /// The signed-in user's id (the owner picker's default).
    pub me: String,
    /// `(team id, name)` of the teams the user can place a key in.
    pub teams: Vec<(String, String)>,
    /// Provider names from the configured channels.
    pub providers: Vec<String>,
    /// `keys.reveal` is on: the detail dialog offers Reveal.
    pub reveal: bool,
}

pub(crate) const ENDPOINTS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/images/generations",
    "/v1/responses",
    "/v1/models",
];

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

pub(crate) fn key_dialog(c: &KeyFormChoices) -> Markup {
    html! {
        dialog #key-dialog .modal aria-labelledby="key-dialog-title" {
            form #key-form method="dialog" novalidate {
                header.modal-head {
                    h2 #key-dialog-title { "Create API key" }
                    button.icon-btn.close type="button" data-close aria-label="Close" { "✕" }
                }
                div.tabs role="tablist" aria-label="Key settings" {
                    button #tab-basic role="tab" type="button" aria-selected="true" aria-controls="panel-basic" { "Basic" }
                    button #tab-advanced role="tab" type="button" aria-selected="false" aria-controls="panel-advanced" tabindex="-1" { "Advanced" }
                }
                div.alert.alert-error.form-error role="alert" hidden {}
                section #panel-basic role="tabpanel" aria-labelledby="tab-basic" {
                    (field("key-name", "Key name", html! { input #key-name name="name" required maxlength="128" placeholder="e.g. prod-billing-api"; },
                        Some("Start with prod-, staging- or dev- (or prod/…) to group keys by environment.")))
                    @if c.owners.is_some() || !c.teams.is_empty() {
                        div.grid2 {
                            @if let Some(owners) = &c.owners {
                                (field("key-owner", "Owner", html! {
                                    select #key-owner name="owner_id" {
                                        @for (id, email) in owners { option value=(id) selected[*id == c.me] { (email) } }
                                    }
                                }, Some("Admins can create a key for another member; it is then theirs.")))
                            }
                            @if !c.teams.is_empty() {
                                (field("key-team", "Team", html! {
                                    select #key-team name="team_id" {
                                        option value="" { "Default team" }
                                        @for (id, name) in &c.teams { option value=(id) { (name) } }
                                    }
                                }, None))
                            }
                        }
                    }
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
                    fieldset.field data-field="key-providers" {
                        legend { "Allowed providers" }
                        p.hint { "None checked: every provider." }
                        div.checks #key-providers-list {
                            @for p in &c.providers {
                                label { input type="checkbox" name="allowed_providers" value=(p); code { (p) } }
                            }
                        }
                        p.field-error hidden {}
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
                            @for ep in ENDPOINTS {
                                label { input type="checkbox" name="allowed_endpoints" value=(ep); code { (ep) } }
                            }
                        }
                        p.field-error hidden {}
                    }
                    (field("key-ips", "IP allowlist", html! { textarea #key-ips name="ip_allowlist" rows="2" placeholder="192.168.1.0/24, 10.0.0.1" {} }, Some("CIDRs or addresses, comma- or line-separated. Empty: any address.")))
                    (field("key-metadata", "Metadata (JSON)", html! { textarea.mono #key-metadata name="metadata" rows="3" placeholder=r#"{"team": "backend", "env": "production"}"# {} }, Some("A JSON object, echoed in usage logs.")))
                    (mcp_fields())
                }
                footer.modal-foot {
                    button.btn type="button" data-close { "Cancel" }
                    button.btn.btn-primary #key-submit type="submit" { "Create Key" }
                }
            }
        }
    }
}

/// The `mcp` object of a key: enabled, mode, servers, and tools per server (written
/// `server:tool`). The API names only `mcp` in its errors; the script puts each under
/// the control its message is about.
fn mcp_fields() -> Markup {
    html! {
        fieldset.subgroup #key-mcp {
            legend { "MCP access" }
            div.field data-field="key-mcp" {
                label.check { input #key-mcp-enabled name="mcp_enabled" type="checkbox"; span { "Enabled: the key may use MCP tools" } }
                p.field-error hidden {}
            }
            (field("key-mcp-mode", "Mode", html! {
                select #key-mcp-mode name="mcp_mode" {
                    @for (value, label) in MCP_MODES { option value=(value) { (label) } }
                }
            }, Some("The lists below are what an allow-list allows or a deny-list denies.")))
            div.grid2 {
                (field("key-mcp-servers", "Servers", html! { textarea #key-mcp-servers name="mcp_servers" rows="2" placeholder="github, jira" {} },
                    Some("Server names, comma- or line-separated.")))
                (field("key-mcp-tools", "Tools", html! { textarea #key-mcp-tools name="mcp_tools" rows="2" placeholder="github:create_issue, jira:search" {} },
                    Some("server:tool, comma- or line-separated.")))
            }
        }
    }
}

/// `mcp.mode` values and their labels; the first is the default.
const MCP_MODES: &[(&str, &str)] = &[
    ("allow_all", "Allow all servers and tools"),
    ("deny_all", "Deny all"),
    ("allow_list", "Allow only the listed ones"),
    ("deny_list", "Deny the listed ones"),
];

/// The one-shot box: shows a fresh secret (create, rotate, duplicate, ephemeral token,
/// reveal) once; the script sets the heading, the warning and the expiry.
pub(crate) fn secret_dialog() -> Markup {
    html! {
        dialog #secret-dialog .modal aria-labelledby="secret-title" {
            div.success-box {
                h2 #secret-title { "API Key created! Copy it now" }
                pre.secret #secret-value tabindex="0" aria-label="The full API key" {}
                p.secret-expiry #secret-expiry hidden {}
                div.secret-actions {
                    button.btn.btn-primary #secret-copy type="button" { (icon_copy()) " " span { "Copy" } }
                }
                p.warning { "This key will not be shown again. Make sure to save it securely." }
            }
            footer.modal-foot { button.btn #secret-done type="button" data-close { "Done" } }
        }
    }
}

pub(crate) fn detail_dialog(reveal: bool) -> Markup {
    html! {
        dialog #detail-dialog .modal aria-labelledby="detail-title" {
            header.modal-head {
                h2 #detail-title { "Key" }
                button.icon-btn.close type="button" data-close aria-label="Close" { "✕" }
            }
            div.alert.alert-error.form-error role="alert" hidden {}
            dl.detail #detail-body {}
            div.detail-options {
                div.detail-rotate {
                    label for="rotate-grace" { "When rotating, keep the old secret working for" }
                    select #rotate-grace {
                        option value="0" { "No grace (stops now)" }
                        option value="3600" { "1 hour" }
                        option value="86400" { "24 hours" }
                        option value="604800" { "7 days" }
                    }
                    div.field data-field="rotate-password" {
                        label for="rotate-password" { "Your password, to rotate" }
                        input #rotate-password type="password" autocomplete="current-password";
                        p.field-error hidden {}
                    }
                }
                div.detail-ephemeral {
                    label for="ephemeral-ttl" { "Ephemeral token lifetime" }
                    select #ephemeral-ttl {
                        option value="900" { "15 minutes" }
                        option value="3600" selected { "1 hour" }
                        option value="28800" { "8 hours" }
                        option value="86400" { "24 hours" }
                    }
                }
            }
            footer.modal-foot.wrap {
                button.btn #act-edit type="button" data-action="edit" { "Edit" }
                @if reveal { button.btn #act-reveal type="button" data-action="reveal" { "Reveal key" } }
                button.btn #act-duplicate type="button" data-action="duplicate" { "Duplicate" }
                button.btn #act-ephemeral type="button" data-action="ephemeral" { "Ephemeral token" }
                button.btn #act-disable type="button" data-action="disable" { "Deactivate" }
                button.btn #act-enable type="button" data-action="enable" { "Activate" }
                button.btn #act-rotate type="button" data-action="rotate" { "Rotate Key" }
                button.btn.btn-danger-outline #act-revoke type="button" data-action="revoke" { "Revoke" }
                button.btn.btn-danger #act-delete type="button" data-action="delete" { "Delete" }
            }
        }
    }
}

/// Reveal asks for the signed-in user's password again (the API requires it).
pub(crate) fn reveal_dialog() -> Markup {
    html! {
        dialog #reveal-dialog .modal.modal-sm aria-labelledby="reveal-title" {
            form #reveal-form method="dialog" novalidate {
                h2 #reveal-title { "Reveal " span #reveal-key-name {} }
                p.muted { "Enter your password to show the full key." }
                div.alert.alert-error.form-error role="alert" hidden {}
                (field("reveal-password", "Password", html! { input #reveal-password type="password" autocomplete="current-password" required; }, None))
                footer.modal-foot {
                    button.btn type="button" data-close { "Cancel" }
                    button.btn.btn-primary type="submit" { "Reveal" }
                }
            }
        }
    }
}

pub(crate) fn confirm_dialog() -> Markup {
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
