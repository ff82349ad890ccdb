//! `/api/v1/invites` (owners and admins invite people into their organization; the token
//! appears once, in the create answer) and the public `POST /api/v1/auth/signup`, which
//! applies the sign-up policy and ends in a session exactly like `POST /auth/login`.
//! Sign-ups that fail on a bad invitation or a taken email count against the sign-in
//! throttle of the caller's address, so neither can be probed at speed.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::{StatusCode, header};
use serde::Deserialize;
use tollgate_core::tenancy::Role;
use tollgate_core::{ApiError, ErrorCode, PeerAddr};
use tollgate_service::{Actor, NewInvite, SESSION_TTL_MS, ServiceError, SignupRequest};

use crate::WebState;
use crate::error::{api_error, parse_json};
use crate::session::{cookie, is_tls, source_ip};

pub(crate) fn routes() -> Router<Arc<WebState>> {
    Router::new().route("/invites", get(list_invites).post(create_invite)).route("/invites/{id}", delete(revoke_invite))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
    #[serde(default)]
    ttl_hours: Option<u32>,
}

async fn create_invite(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: InviteBody = parse_json(&body)?;
    let role = match b.role.as_deref() {
        None => Role::Member,
        Some(r) => Role::parse(r)
            .filter(|r| *r != Role::Owner)
            .ok_or_else(|| ApiError::invalid_request("role: must be admin or member").with_param("role"))?,
    };
    let req = NewInvite { email: b.email, role, team_id: b.team_id.filter(|t| !t.is_empty()), ttl_hours: b.ttl_hours };
    let (view, token) = s.services.create_invite(&a, req).await.map_err(api_error)?;
    let mut json = serde_json::to_value(&view).map_err(|_| ApiError::internal())?;
    json["url"] = format!("/dashboard/signup?invite={token}").into();
    json["token"] = token.into();
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

async fn list_invites(State(s): State<Arc<WebState>>, Extension(a): Extension<Actor>) -> Result<Response, ApiError> {
    let invites = s.services.list_invites(&a).await.map_err(api_error)?;
    Ok(Json(serde_json::json!({ "data": invites })).into_response())
}

async fn revoke_invite(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    s.services.revoke_invite(&a, &id).await.map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignupBody {
    email: String,
    password: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    invite: Option<String>,
}

/// `POST /api/v1/auth/signup`: a new account under the sign-up policy, signed in.
pub(crate) async fn signup(State(state): State<Arc<WebState>>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| ApiError::invalid_request("Body too large."))?;
    let b: SignupBody = parse_json(&body)?;
    let peer = parts.extensions.get::<PeerAddr>();
    let ip = source_ip(&state, peer, &parts.headers);
    let who = format!("signup|{}", ip.as_deref().unwrap_or("-"));
    if let Err(wait) = state.login_throttle.check(&who) {
        return Err(ApiError::new(
            ErrorCode::RateLimitExceeded { retry_after_secs: wait },
            "Too many failed sign-ups from this address; try again later.",
        ));
    }
    let request = SignupRequest { email: b.email, password: b.password, name: b.name, invite: b.invite };
    let done = match state.services.signup(request, ip).await {
        Ok(done) => done,
        Err(e) => {
            // Guessing invitations and probing for registered emails both fail here.
            if matches!(e, ServiceError::Conflict | ServiceError::Invalid { field: "invite", .. }) {
                state.login_throttle.record(&who, false);
            }
            return Err(match e {
                ServiceError::Conflict => {
                    ApiError::new(ErrorCode::Conflict, "An account with this email already exists; sign in instead.")
                }
                other => api_error(other),
            });
        }
    };
    let me = state.services.me(&done.actor).await;
    let answer = serde_json::json!({
        "user_id": me.actor,
        "email": done.email,
        "org_id": me.org_id,
        "role": me.role,
        "team_ids": me.team_ids,
        "csrf_token": done.csrf,
    });
    let mut res = (StatusCode::CREATED, Json(answer)).into_response();
    if let Some(c) = cookie(&done.session_secret, SESSION_TTL_MS / 1000, is_tls(&state, &parts.headers, peer)) {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(res)
}
