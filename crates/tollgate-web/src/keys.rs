//! `/api/v1/keys` and `/api/v1/audit`: the key lifecycle of PRODUCT §9. Secrets appear
//! only in the answers to create, rotate and duplicate.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Deserializer};
use tollgate_core::{ApiError, ErrorCode, PeerAddr};
use tollgate_service::{Actor, CreatedKey, EphemeralRequest, KeyPatch, ListAudit, ListKeys, NewKey, SettingsInput};

use crate::WebState;
use crate::auth::SessionAuth;
use crate::error::{api_error, parse_json};
use crate::session::{source_ip, throttled};

pub(crate) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/keys", get(list).post(create))
        .route("/keys/{id}", get(get_one).patch(update).delete(delete))
        .route("/keys/{id}/disable", post(disable))
        .route("/keys/{id}/enable", post(enable))
        .route("/keys/{id}/revoke", post(revoke))
        .route("/keys/{id}/rotate", post(rotate))
        .route("/keys/{id}/duplicate", post(duplicate))
        .route("/keys/{id}/ephemeral", post(ephemeral))
        .route("/keys/{id}/reveal", post(reveal))
        .route("/audit", get(audit))
}

/// `absent` → `None`, `null` → `Some(None)`, value → `Some(Some(v))`.
pub(crate) fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The scope and limit fields shared by create and patch.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeyFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
    #[serde(default)]
    owner_id: Option<String>,
    #[serde(default)]
    expires_in: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_usd: Option<Option<f64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_alert_thresholds: Option<Option<Vec<i64>>>,
    #[serde(default, deserialize_with = "nullable")]
    token_quota: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    rpm: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    model_scope: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    allowed_endpoints: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    allowed_providers: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    ip_allowlist: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    group: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    metadata: Option<Option<serde_json::Value>>,
    #[serde(default, deserialize_with = "nullable")]
    mcp: Option<Option<serde_json::Value>>,
}

impl KeyFields {
    fn settings(&mut self) -> SettingsInput {
        SettingsInput {
            budget_usd: self.budget_usd.take(),
            budget_alert_thresholds: self.budget_alert_thresholds.take(),
            token_quota: self.token_quota.take(),
            rpm: self.rpm.take(),
            tpm: self.tpm.take(),
            model_scope: self.model_scope.take(),
            models: self.models.take(),
            allowed_endpoints: self.allowed_endpoints.take(),
            allowed_providers: self.allowed_providers.take(),
            ip_allowlist: self.ip_allowlist.take(),
            group: self.group.take(),
            metadata: self.metadata.take(),
            mcp: self.mcp.take(),
        }
    }
}

fn with_secret(created: CreatedKey, status: StatusCode) -> Result<Response, ApiError> {
    let mut json = serde_json::to_value(&created.key).map_err(|_| ApiError::internal())?;
    json["key"] = created.secret.into();
    Ok((status, Json(json)).into_response())
}

async fn create(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut f: KeyFields = parse_json(&body)?;
    let settings = f.settings();
    let name = f.name.ok_or_else(|| ApiError::invalid_request("name: is required").with_param("name"))?;
    let new = NewKey {
        name,
        expires_in: f.expires_in,
        expires_at: f.expires_at.flatten(),
        team_id: f.team_id,
        owner_id: f.owner_id,
        settings,
    };
    with_secret(state.services.create_key(&actor, new).await.map_err(api_error)?, StatusCode::CREATED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    sort: Option<String>,
    order: Option<String>,
    search: Option<String>,
    team_id: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    let q = ListKeys {
        sort: p.sort,
        order: p.order,
        search: p.search,
        team_id: p.team_id,
        status: p.status,
        cursor: p.cursor,
        limit: p.limit,
    };
    Ok(Json(state.services.list_keys(&actor, q).await.map_err(api_error)?).into_response())
}

async fn get_one(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.services.get_key(&actor, &id).await.map_err(api_error)?).into_response())
}

async fn update(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut f: KeyFields = parse_json(&body)?;
    let settings = f.settings();
    let patch = KeyPatch {
        name: f.name,
        team_id: f.team_id,
        owner_id: f.owner_id,
        expires_in: f.expires_in,
        expires_at: f.expires_at,
        settings,
    };
    Ok(Json(state.services.update_key(&actor, &id, patch).await.map_err(api_error)?).into_response())
}

async fn delete(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.services.delete_key(&actor, &id).await.map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn disable(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(s.services.disable_key(&a, &id).await.map_err(api_error)?).into_response())
}

async fn enable(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(s.services.enable_key(&a, &id).await.map_err(api_error)?).into_response())
}

async fn revoke(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(s.services.revoke_key(&a, &id).await.map_err(api_error)?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    grace_seconds: u64,
    /// Asked of dashboard sessions (a person at a browser), throttled like sign-ins.
    #[serde(default)]
    password: Option<String>,
}

async fn rotate(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    session: Option<Extension<SessionAuth>>,
    peer: Option<Extension<PeerAddr>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: RotateBody = if body.is_empty() { RotateBody::default() } else { parse_json(&body)? };
    if session.is_some() {
        confirm_password(&state, &actor, body.password, "rotate a key", peer.as_deref(), &headers).await?;
    }
    let idem = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| ApiError::invalid_request("Idempotency-Key: must be printable ASCII"))?),
    };
    let rotated = state.services.rotate_key(&actor, &id, body.grace_seconds, idem).await.map_err(api_error)?;
    with_secret(rotated, StatusCode::OK)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DuplicateBody {
    #[serde(default)]
    name: Option<String>,
}

async fn duplicate(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: DuplicateBody = if body.is_empty() { DuplicateBody::default() } else { parse_json(&body)? };
    with_secret(state.services.duplicate_key(&actor, &id, body.name).await.map_err(api_error)?, StatusCode::CREATED)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EphemeralBody {
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    allowed_endpoints: Vec<String>,
    #[serde(default)]
    allowed_providers: Vec<String>,
    #[serde(default)]
    ip_allowlist: Vec<String>,
}

async fn ephemeral(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: EphemeralBody = if body.is_empty() { EphemeralBody::default() } else { parse_json(&body)? };
    let req = EphemeralRequest {
        ttl_seconds: b.ttl_seconds,
        models: b.models,
        allowed_endpoints: b.allowed_endpoints,
        allowed_providers: b.allowed_providers,
        ip_allowlist: b.ip_allowlist,
    };
    let token = state.services.create_ephemeral(&actor, &id, req).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(token)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevealBody {
    #[serde(default)]
    password: Option<String>,
}

async fn reveal(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    peer: Option<Extension<PeerAddr>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: RevealBody = if body.is_empty() { RevealBody::default() } else { parse_json(&body)? };
    // Users give their password again (the service checks it too); wrong ones are throttled.
    if actor.user_principal().is_some() && state.services.sealer.is_some() {
        confirm_password(&state, &actor, b.password.clone(), "reveal a key", peer.as_deref(), &headers).await?;
    }
    let secret = state.services.reveal_key(&actor, &id, b.password).await.map_err(api_error)?;
    Ok(Json(serde_json::json!({ "key": secret })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn audit(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    let q = ListAudit {
        actor: p.actor,
        action: p.action,
        target: p.target,
        from: p.from,
        to: p.to,
        cursor: p.cursor,
        limit: p.limit,
    };
    let page = state.services.list_audit(&actor, q).await.map_err(api_error)?;
    Ok(Json(page).into_response())
}

/// The person's password, asked again before `what` (a rotation from the dashboard, a
/// reveal): missing is a 400, wrong a 403, both naming `password`; wrong ones count against
/// the sign-in throttle (per user and address), so a stolen session cannot guess it.
async fn confirm_password(
    state: &WebState,
    actor: &Actor,
    password: Option<String>,
    what: &str,
    peer: Option<&PeerAddr>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let password = password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::invalid_request(format!("Enter your password to {what}.")).with_param("password"))?;
    let ip = source_ip(state, peer, headers);
    let check = async {
        match state.services.confirms_password(actor, password).await {
            Ok(true) => Ok(Some(())),
            Ok(false) => Ok(None),
            Err(e) => Err(api_error(e)),
        }
    };
    throttled(state, &actor.id, ip.as_deref(), check)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "That is not your password.").with_param("password"))
}
