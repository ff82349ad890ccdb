//! Who is calling the management API: the admin token (`TOLLGATE_ADMIN_TOKEN`, compared
//! in constant time via digests so that neither content nor length leaks) acts as the
//! operator; a personal access token (`tgp_…`) acts as its user, with their current
//! role; without a bearer token, a dashboard session cookie (see `session`). The
//! resolved [`Actor`] travels to handlers as a request extension.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_core::scope::client_ip;
use tollgate_core::{ApiError, ErrorCode, PeerAddr};
use tollgate_service::{ACCESS_TOKEN_PREFIX, Actor};

use crate::WebState;
use crate::error::api_error;
use crate::session::session_cookie;

/// Marks a request authenticated by a dashboard session cookie (not a bearer token):
/// actions that ask a person for their password again (rotation) look for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionAuth;

pub(crate) async fn require_actor(State(state): State<Arc<WebState>>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let source_ip = client_ip(peer, req.headers(), &state.trusted_proxies).map(|ip| ip.to_string());
    let unauthorized =
        || ApiError::new(ErrorCode::Unauthorized, "Missing or invalid management token.").into_response();
    let Some(presented) = presented else {
        // No bearer token: a dashboard session cookie, with CSRF protection on writes.
        let Some(secret) = session_cookie(req.headers()) else { return unauthorized() };
        let (actor, csrf) = match state.services.session_actor(&secret, source_ip).await {
            Ok(Some(found)) => found,
            Ok(None) => return unauthorized(),
            Err(e) => return api_error(e).into_response(),
        };
        let safe = matches!(*req.method(), http::Method::GET | http::Method::HEAD | http::Method::OPTIONS);
        let presented_csrf = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !safe && !bool::from(presented_csrf.as_bytes().ct_eq(csrf.as_bytes())) {
            return ApiError::new(ErrorCode::Forbidden, "Missing or wrong x-csrf-token for a session request.")
                .into_response();
        }
        req.extensions_mut().insert(actor);
        req.extensions_mut().insert(SessionAuth);
        return next.run(req).await;
    };

    let actor = if presented.starts_with(ACCESS_TOKEN_PREFIX) {
        match state.services.authenticate_access_token(&presented, source_ip).await {
            Ok(Some(actor)) => actor,
            Ok(None) => return unauthorized(),
            Err(e) => return api_error(e).into_response(),
        }
    } else {
        let Some(expected) = state.admin_token.as_ref().filter(|t| !t.is_empty()) else {
            return ApiError::new(
                ErrorCode::Unauthorized,
                "Admin-token access is disabled: set TOLLGATE_ADMIN_TOKEN (or admin_token in the config), \
                 or use a personal access token.",
            )
            .into_response();
        };
        let matches: bool =
            Sha256::digest(presented.as_bytes()).ct_eq(&Sha256::digest(expected.expose().as_bytes())).into();
        if !matches {
            return unauthorized();
        }
        Actor::admin_token(source_ip)
    };
    req.extensions_mut().insert(actor);
    next.run(req).await
}
