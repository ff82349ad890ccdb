//! Who may call the management API. For now: the admin token (`TOLLGATE_ADMIN_TOKEN`),
//! compared in constant time via digests so that neither content nor length leaks.
//! Users, sessions and personal access tokens come with the organizations work.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_core::scope::client_ip;
use tollgate_core::{ApiError, ErrorCode, PeerAddr};
use tollgate_service::Actor;

use crate::WebState;

pub(crate) async fn require_admin(State(state): State<Arc<WebState>>, mut req: Request, next: Next) -> Response {
    let Some(expected) = state.admin_token.as_ref().filter(|t| !t.is_empty()) else {
        return ApiError::new(
            ErrorCode::Unauthorized,
            "The management API is disabled: set TOLLGATE_ADMIN_TOKEN (or admin_token in the config).",
        )
        .into_response();
    };
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let ok = presented
        .is_some_and(|p| Sha256::digest(p.as_bytes()).ct_eq(&Sha256::digest(expected.expose().as_bytes())).into());
    if !ok {
        return ApiError::new(ErrorCode::Unauthorized, "Missing or invalid management token.").into_response();
    }
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let source_ip = client_ip(peer, req.headers(), &state.trusted_proxies).map(|ip| ip.to_string());
    req.extensions_mut().insert(Actor { id: "admin-token".into(), source_ip });
    next.run(req).await
}
