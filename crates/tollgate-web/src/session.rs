//! Dashboard sessions over the management API: `POST /api/v1/auth/login` sets the
//! `tg_session` cookie (`HttpOnly`, `SameSite=Strict`, `Secure` when served over TLS) and
//! returns the session's CSRF token, which every cookie-authenticated request that
//! changes something must echo in `x-csrf-token`. Logout and password changes end
//! sessions. Failed sign-ins are throttled per email and source address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use tollgate_core::{ApiError, ErrorCode, PeerAddr};
use tollgate_service::{Actor, SESSION_TTL_MS};

use crate::WebState;
use crate::error::{api_error, parse_json};

pub(crate) const COOKIE: &str = "tg_session";
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Failed sign-ins per `email|ip`, forgotten after the window.
#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginThrottle {
    /// `Err(seconds to wait)` while too many recent failures stand against the pair.
    pub(crate) fn check(&self, who: &str) -> Result<(), u64> {
        let mut map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let recent = map.entry(who.to_owned()).or_default();
        recent.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
        if recent.len() >= MAX_FAILURES {
            let oldest = recent.first().copied().unwrap_or(now);
            return Err(FAILURE_WINDOW.saturating_sub(now.duration_since(oldest)).as_secs().max(1));
        }
        Ok(())
    }

    pub(crate) fn record(&self, who: &str, success: bool) {
        let mut map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if success {
            map.remove(who);
        } else {
            map.entry(who.to_owned()).or_default().push(Instant::now());
        }
        // Keep the map from growing without bound under a spray of random emails.
        if map.len() > 100_000 {
            map.clear();
        }
    }
}

/// The caller's address as the audit log and the throttle see it.
pub(crate) fn source_ip(state: &WebState, peer: Option<&PeerAddr>, headers: &HeaderMap) -> Option<String> {
    tollgate_core::scope::client_ip(peer.map(|p| p.0.ip()), headers, &state.trusted_proxies).map(|ip| ip.to_string())
}

/// Runs a password check under the throttle: 429 while the pair is locked out.
pub(crate) async fn throttled<T, F>(
    state: &WebState,
    email: &str,
    ip: Option<&str>,
    check: F,
) -> Result<Option<T>, ApiError>
where
    F: std::future::Future<Output = Result<Option<T>, ApiError>>,
{
    let who = format!("{}|{}", email.trim().to_lowercase(), ip.unwrap_or("-"));
    if let Err(wait) = state.login_throttle.check(&who) {
        return Err(ApiError::new(
            ErrorCode::RateLimitExceeded { retry_after_secs: wait },
            "Too many failed sign-ins; try again later.",
        ));
    }
    let result = check.await?;
    state.login_throttle.record(&who, result.is_some());
    Ok(result)
}

pub(crate) fn is_tls(state: &WebState, req_headers: &HeaderMap, peer: Option<&PeerAddr>) -> bool {
    let from_trusted_proxy = peer.is_some_and(|p| state.trusted_proxies.iter().any(|n| n.contains(p.0.ip())));
    state.secure_cookies
        || (from_trusted_proxy
            && req_headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https")))
}

pub(crate) fn cookie(value: &str, max_age_secs: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .ok()
}

/// The session secret from the `Cookie` header, if any.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

pub(crate) async fn login(State(state): State<Arc<WebState>>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| ApiError::invalid_request("Body too large."))?;
    let b: LoginBody = parse_json(&body)?;
    let peer = parts.extensions.get::<PeerAddr>();
    let ip = source_ip(&state, peer, &parts.headers);
    let services = &state.services;
    let check = async { services.login(&b.email, &b.password, ip.clone()).await.map_err(api_error) };
    let (secret, csrf, actor) = throttled(&state, &b.email, ip.as_deref(), check)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "Wrong email or password."))?;
    let me = state.services.me(&actor).await;
    let mut res =
        Json(serde_json::json!({ "user_id": me.actor, "org_id": me.org_id, "role": me.role, "csrf_token": csrf }))
            .into_response();
    if let Some(c) = cookie(&secret, SESSION_TTL_MS / 1000, is_tls(&state, &parts.headers, peer)) {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(res)
}

pub(crate) async fn logout(
    State(state): State<Arc<WebState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(secret) = session_cookie(&headers) {
        state.services.logout(&secret).await.map_err(api_error)?;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    if let Some(c) = cookie("", 0, is_tls(&state, &headers, peer.as_deref())) {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(res)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// `POST /api/v1/me/password`: ends every session of the user, this one included. Wrong
/// current passwords count against the same sign-in throttle (per user and address).
pub(crate) async fn change_password(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: PasswordBody = parse_json(&body)?;
    let ip = source_ip(&state, peer.as_deref(), &headers);
    let services = &state.services;
    let check = async {
        match services.change_password(&actor, b.current_password, b.new_password).await {
            Ok(()) => Ok(Some(())),
            Err(tollgate_service::ServiceError::Forbidden(_)) => Ok(None),
            Err(e) => Err(api_error(e)),
        }
    };
    throttled(&state, &actor.id, ip.as_deref(), check)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "Not allowed: the current password is wrong."))?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    if let Some(c) = cookie("", 0, is_tls(&state, &headers, peer.as_deref())) {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(res)
}
