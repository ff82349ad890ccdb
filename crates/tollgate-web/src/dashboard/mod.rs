//! The dashboard: server-rendered pages (maud, escaped by default) under `/dashboard`,
//! with one embedded stylesheet and script. Pages read through the service layer as the
//! signed-in user's [`Actor`]; every change the script makes goes through the JSON API
//! (`/api/v1/…`) with the session cookie and the `x-csrf-token` the page carries, so the
//! UI is authorized by exactly the rules of the API. No session: redirect to sign in.

mod account;
mod audit;
mod billing;
mod channels;
mod keys;
mod keys_dialogs;
mod login;
mod models;
mod overview;
mod playground;
mod providers;
mod signup;
mod teams;
mod usage;
mod usage_detail;

use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::{HeaderValue, header};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use tollgate_core::PeerAddr;
use tollgate_service::Actor;

use crate::WebState;
use crate::session::{session_cookie, source_ip};

const APP_CSS: &str = include_str!("assets/app.css");
// A script route may serve several source files joined, each wrapped in its own function:
// a page still loads one script per route, while each file keeps to one part of the UI.
const APP_JS: &str = concat!(include_str!("assets/app.js"), include_str!("assets/teams.js"));
const KEYS_JS: &str = concat!(include_str!("assets/keys.js"), include_str!("assets/keys_detail.js"));
const JS: &str = "text/javascript; charset=utf-8";

pub(crate) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/dashboard", get(overview::page))
        .route("/dashboard/login", get(login::page))
        .route("/dashboard/signup", get(signup::page))
        .route("/dashboard/keys", get(keys::page))
        .route("/dashboard/usage", get(usage::page))
        .route("/dashboard/usage/{request_id}", get(usage_detail::page))
        .route("/dashboard/account", get(account::page))
        .route("/dashboard/billing", get(billing::page))
        .route("/dashboard/playground", get(playground::page))
        .route("/dashboard/playground/run", post(playground::run))
        .route("/dashboard/teams", get(teams::page))
        .route("/dashboard/models", get(models::page))
        .route("/dashboard/audit", get(audit::page))
        .route("/dashboard/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/dashboard/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/dashboard/assets/signup.js", get(|| async { asset(JS, signup::SIGNUP_JS) }))
        .route("/dashboard/assets/keys.js", get(|| async { asset(JS, KEYS_JS) }))
        .layer(axum::middleware::map_response(with_security_headers))
}

/// The page's scripts and styles come only from the dashboard itself: no inline script
/// runs (the pages have none; the one inline allowance is `style` attributes for widths),
/// nothing is framed, and no response is sniffed as another type.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Every dashboard response (pages, assets, redirects) carries the security headers.
async fn with_security_headers(mut res: Response) -> Response {
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    res
}

/// Assets are small and change only with the binary: cache them for an hour, and bust
/// the cache across upgrades with the `?v=` the layout appends.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
    ];
    (headers, body).into_response()
}

/// The signed-in user of a page request: the actor, the session's CSRF token (rendered
/// into the page for the script) and what the top bar shows.
pub(crate) struct Ctx {
    pub actor: Actor,
    pub csrf: String,
    pub org_name: String,
    pub user_label: String,
    pub manages: bool,
}

impl axum::extract::FromRequestParts<Arc<WebState>> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &Arc<WebState>) -> Result<Self, Response> {
        let back = parts.uri.to_string();
        let to_login = || Redirect::to(&format!("/dashboard/login?next={}", encode(&back))).into_response();
        let Some(secret) = session_cookie(&parts.headers) else { return Err(to_login()) };
        let ip = source_ip(state, parts.extensions.get::<PeerAddr>(), &parts.headers);
        let (actor, csrf) = match state.services.session_actor(&secret, ip).await {
            Ok(Some(found)) => found,
            Ok(None) => return Err(to_login()),
            Err(e) => return Err(error_page(&e.to_string())),
        };
        let services = &state.services;
        let org_name = services
            .list_organizations(&actor)
            .await
            .ok()
            .and_then(|orgs| orgs.into_iter().next().map(|o| o.name))
            .unwrap_or_default();
        let manages = actor.user_principal().is_some_and(|u| u.role.manages_org());
        let user_label = match services.list_members(&actor).await {
            Ok(members) => members.into_iter().find(|m| m.id == actor.id).map_or_else(|| actor.id.clone(), |m| m.email),
            Err(_) => "Member".to_owned(),
        };
        Ok(Self { actor, csrf, org_name, user_label, manages })
    }
}

/// The side navigation's entries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Keys,
    Usage,
    Billing,
    Playground,
    Teams,
    Models,
    Audit,
    /// The password change, reached from the top bar (not in the side navigation).
    Account,
}

const NAV: &[(Nav, &str, &str)] = &[
    (Nav::Overview, "Overview", "/dashboard"),
    (Nav::Keys, "API Keys", "/dashboard/keys"),
    (Nav::Usage, "Usage Logs", "/dashboard/usage"),
    (Nav::Billing, "Billing", "/dashboard/billing"),
    (Nav::Playground, "Playground", "/dashboard/playground"),
    (Nav::Teams, "Teams", "/dashboard/teams"),
    (Nav::Models, "Models", "/dashboard/models"),
    (Nav::Audit, "Audit Log", "/dashboard/audit"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Tollgate" }
            link rel="stylesheet" href=(format!("/dashboard/assets/app.css?v={}", env!("CARGO_PKG_VERSION")));
            script src=(format!("/dashboard/assets/app.js?v={}", env!("CARGO_PKG_VERSION"))) defer {}
        }
    }
}

/// A signed-in page: top bar, side navigation, and `body` under a title.
pub(crate) fn layout(ctx: &Ctx, active: Nav, title: &str, actions: Markup, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body data-page=(NAV.iter().find(|n| n.0 == active).map_or("", |n| n.2)) {
                meta name="csrf-token" content=(ctx.csrf);
                @if active == Nav::Keys {
                    script src=(format!("/dashboard/assets/keys.js?v={}", env!("CARGO_PKG_VERSION"))) defer {}
                }
                header.topbar {
                    button.nav-toggle type="button" aria-label="Menu" aria-controls="sidenav" aria-expanded="false" { "☰" }
                    a.brand href="/dashboard" { span.logo aria-hidden="true" { "T" } "Tollgate" }
                    span.org title="Organization" { (ctx.org_name) }
                    div.spacer {}
                    details.usermenu {
                        summary { span.avatar aria-hidden="true" { (initial(&ctx.user_label)) } span.user-label { (ctx.user_label) } }
                        div.menu {
                            div.menu-note { "Signed in as " strong { (ctx.user_label) } }
                            a #account-link href="/dashboard/account" { "Change password" }
                            button #sign-out type="button" { "Sign out" }
                        }
                    }
                }
                div.shell {
                    nav #sidenav .sidenav aria-label="Main" {
                        @for (nav, label, href) in NAV {
                            a href=(href) aria-current=[(*nav == active).then_some("page")] { (label) }
                        }
                    }
                    main #main {
                        div.page-head {
                            h1 { (title) }
                            div.page-actions { (actions) }
                        }
                        (body)
                    }
                }
            }
        }
    };
    html_response(markup)
}

fn initial(label: &str) -> String {
    label.chars().next().map(|c| c.to_uppercase().to_string()).unwrap_or_default()
}

pub(crate) fn html_response(markup: Markup) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    (headers, markup.into_string()).into_response()
}

fn error_page(message: &str) -> Response {
    tracing::error!(error = message, "dashboard page failed");
    let markup = html! {
        (DOCTYPE)
        html lang="en" { (head("Error")) body.center { div.card { h1 { "Something went wrong" } p { "Try again shortly." } } } }
    };
    (http::StatusCode::SERVICE_UNAVAILABLE, html_response(markup)).into_response()
}

/// An inline alert for a service error (bad filter input, forbidden, …).
pub(crate) fn alert(e: &tollgate_service::ServiceError) -> Markup {
    let text = match e {
        tollgate_service::ServiceError::Invalid { field, message } => format!("{field}: {message}"),
        tollgate_service::ServiceError::Forbidden(why) => format!("Not allowed: {why}."),
        tollgate_service::ServiceError::NotFound => "Not found.".to_owned(),
        _ => {
            tracing::error!(error = %e, "dashboard page failed");
            "The data could not be loaded; try again shortly.".to_owned()
        }
    };
    html! { div.alert.alert-error role="alert" { (text) } }
}

/// Percent-encodes a query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string from the non-empty pairs.
pub(crate) fn query_string(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> =
        pairs.iter().filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| format!("{k}={}", encode(v)))).collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

/// `2025-01-02T03:04:05.678Z` → `2025-01-02 03:04` (UTC), with the exact time as a tooltip.
pub(crate) fn when(t: Option<&str>) -> Markup {
    match t {
        None => html! { span.muted { "—" } },
        Some(t) => {
            let short = t.get(..16).unwrap_or(t).replace('T', " ");
            html! { time datetime=(t) title=(t) { (short) } }
        }
    }
}

/// The day alone (`2025-01-02`), with the exact time as a tooltip: for dense columns.
pub(crate) fn day(t: Option<&str>) -> Markup {
    match t {
        None => html! { span.muted { "—" } },
        Some(t) => html! { time datetime=(t) title=(t) { (t.get(..10).unwrap_or(t)) } },
    }
}

/// USD for display, from integer micro-USD (no float): cents, rounded half up, from one
/// cent on; below a cent the exact amount (`$0.000004`), since a gateway's requests often
/// cost less than a cent and showing them as zero would hide real spend.
pub(crate) fn usd(m: tollgate_core::MicroUsd) -> String {
    let abs = m.0.unsigned_abs();
    if abs == 0 {
        return "$0.00".to_owned();
    }
    if abs < 10_000 {
        return m.to_string();
    }
    let sign = if m.0 < 0 { "-" } else { "" };
    let cents = (abs + 5_000) / 10_000;
    format!("{sign}${}.{:02}", cents / 100, cents % 100)
}

/// USD with six decimals, exact, for per-request costs.
pub(crate) fn usd_exact(m: tollgate_core::MicroUsd) -> String {
    m.to_string()
}

pub(crate) fn status_badge(status: &str) -> Markup {
    html! { span class=(format!("badge badge-{status}")) { (status) } }
}

/// Script-free icon glyphs kept as inline SVG so that nothing loads from elsewhere.
pub(crate) fn icon_copy() -> PreEscaped<&'static str> {
    PreEscaped(
        r#"<svg aria-hidden="true" width="14" height="14" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><rect x="9" y="9" width="13" height="13" rx="2"/><path d="M5 15H4a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2h9a2 2 0 0 1 2 2v1"/></svg>"#,
    )
}

pub(crate) fn icon_trash() -> PreEscaped<&'static str> {
    PreEscaped(
        r#"<svg aria-hidden="true" width="14" height="14" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><path d="M3 6h18M8 6V4h8v2M19 6l-1 14H6L5 6"/></svg>"#,
    )
}

#[cfg(test)]
mod money_tests {
    use super::*;
    use tollgate_core::MicroUsd;

    #[test]
    fn dashboard_money_is_exact_below_a_cent_and_rounded_cents_above() {
        assert_eq!(usd(MicroUsd(0)), "$0.00");
        assert_eq!(usd(MicroUsd(4)), "$0.000004");
        assert_eq!(usd(MicroUsd(-4)), "-$0.000004");
        assert_eq!(usd(MicroUsd(9_999)), "$0.009999");
        assert_eq!(usd(MicroUsd(10_000)), "$0.01");
        assert_eq!(usd(MicroUsd(1_234_567)), "$1.23");
        assert_eq!(usd(MicroUsd(1_235_000)), "$1.24");
        assert_eq!(usd(MicroUsd(-25_000_000)), "-$25.00");
        assert_eq!(usd_exact(MicroUsd(26)), "$0.000026");
    }
}
