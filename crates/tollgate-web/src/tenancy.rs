//! `/api/v1/me`, `/organizations`, `/users`, `/teams`, `/tokens`: who is who, and the
//! caller's personal access tokens (their secret appears once, in the create answer).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use tollgate_core::ApiError;
use tollgate_core::tenancy::Role;
use tollgate_service::{Actor, TeamInput};

use crate::WebState;
use crate::error::{api_error, parse_json};

pub(crate) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/me", get(me))
        .route("/me/password", post(crate::session::change_password))
        .route("/organizations", get(organizations).post(create_organization))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", patch(update_user))
        .route("/teams", get(list_teams).post(create_team))
        .route("/teams/{id}", get(get_team).patch(update_team))
        .route("/teams/{id}/members", post(add_team_member))
        .route("/teams/{id}/members/{user_id}", delete(remove_team_member))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", delete(delete_token))
}

type Ctx = (State<Arc<WebState>>, Extension<Actor>);

async fn me((State(s), Extension(a)): Ctx) -> Response {
    Json(s.services.me(&a).await).into_response()
}

async fn organizations(State(s): State<Arc<WebState>>, Extension(a): Extension<Actor>) -> Result<Response, ApiError> {
    let orgs = s.services.list_organizations(&a).await.map_err(api_error)?;
    Ok(Json(serde_json::json!({ "data": orgs })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOrganization {
    name: String,
    owner_email: String,
    #[serde(default)]
    owner_password: Option<String>,
}

async fn create_organization(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CreateOrganization = parse_json(&body)?;
    let (org, generated) =
        s.services.create_organization(&a, &b.name, &b.owner_email, b.owner_password).await.map_err(api_error)?;
    let mut json = serde_json::to_value(&org).map_err(|_| ApiError::internal())?;
    if let Some(p) = generated {
        json["owner_password"] = p.into();
    }
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
    name: String,
    #[serde(default)]
    expires_in: Option<String>,
}

/// `POST /api/v1/auth/token`: email and password for a personal access token (shown
/// once). Failed attempts all answer the same 401, slowed by the password check itself.
pub(crate) async fn token_for_password(
    State(s): State<Arc<WebState>>,
    peer: Option<Extension<tollgate_core::PeerAddr>>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: Login = parse_json(&body)?;
    let source_ip = tollgate_core::scope::client_ip(peer.map(|p| p.0.0.ip()), &headers, &s.trusted_proxies)
        .map(|ip| ip.to_string());
    let services = &s.services;
    let check =
        async { services.authenticate_password(&b.email, &b.password, source_ip.clone()).await.map_err(api_error) };
    let actor = crate::session::throttled(&s, &b.email, source_ip.as_deref(), check)
        .await?
        .ok_or_else(|| ApiError::new(tollgate_core::ErrorCode::Unauthorized, "Wrong email or password."))?;
    let (view, secret) =
        s.services.create_access_token(&actor, &b.name, b.expires_in.as_deref()).await.map_err(api_error)?;
    let mut json = serde_json::to_value(&view).map_err(|_| ApiError::internal())?;
    json["token"] = secret.into();
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

fn role(field: &str, r: Option<&str>) -> Result<Option<Role>, ApiError> {
    r.map(|r| {
        Role::parse(r).ok_or_else(|| {
            ApiError::invalid_request(format!("{field}: must be owner, admin or member")).with_param(field)
        })
    })
    .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    email: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    team_ids: Vec<String>,
}

async fn create_user(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CreateUser = parse_json(&body)?;
    let role = role("role", b.role.as_deref())?.unwrap_or(Role::Member);
    let (view, generated) =
        s.services.create_member(&a, &b.email, b.password, role, b.team_ids).await.map_err(api_error)?;
    let mut json = serde_json::to_value(&view).map_err(|_| ApiError::internal())?;
    if let Some(p) = generated {
        // Shown this once, like a key.
        json["password"] = p.into();
    }
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

async fn list_users(State(s): State<Arc<WebState>>, Extension(a): Extension<Actor>) -> Result<Response, ApiError> {
    let members = s.services.list_members(&a).await.map_err(api_error)?;
    Ok(Json(serde_json::json!({ "data": members })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUser {
    role: String,
}

async fn update_user(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: UpdateUser = parse_json(&body)?;
    let role = role("role", Some(&b.role))?.unwrap_or(Role::Member);
    s.services.set_role(&a, &id, role).await.map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    allowed_models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::keys::nullable")]
    budget_usd: Option<Option<f64>>,
    #[serde(default, deserialize_with = "crate::keys::nullable")]
    rpm: Option<Option<i64>>,
    #[serde(default, deserialize_with = "crate::keys::nullable")]
    tpm: Option<Option<i64>>,
    #[serde(default, deserialize_with = "crate::keys::nullable")]
    token_quota: Option<Option<i64>>,
}

impl From<TeamBody> for TeamInput {
    fn from(b: TeamBody) -> Self {
        Self {
            name: b.name,
            allowed_models: b.allowed_models,
            budget_usd: b.budget_usd,
            rpm: b.rpm,
            tpm: b.tpm,
            token_quota: b.token_quota,
        }
    }
}

async fn create_team(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: TeamBody = parse_json(&body)?;
    // The service answers a missing name with 400 naming the field.
    let team = s.services.create_team(&a, TeamInput::from(b)).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(team)).into_response())
}

async fn list_teams(State(s): State<Arc<WebState>>, Extension(a): Extension<Actor>) -> Result<Response, ApiError> {
    let teams = s.services.list_teams(&a).await.map_err(api_error)?;
    Ok(Json(serde_json::json!({ "data": teams })).into_response())
}

async fn get_team(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(s.services.get_team(&a, &id).await.map_err(api_error)?).into_response())
}

async fn update_team(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: TeamBody = parse_json(&body)?;
    Ok(Json(s.services.update_team(&a, &id, TeamInput::from(b)).await.map_err(api_error)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    user_id: String,
}

async fn add_team_member(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: MemberBody = parse_json(&body)?;
    s.services.set_team_member(&a, &id, &b.user_id, true).await.map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_team_member(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    s.services.set_team_member(&a, &id, &user_id, false).await.map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    #[serde(default)]
    expires_in: Option<String>,
}

async fn create_token(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: TokenBody = parse_json(&body)?;
    let (view, secret) =
        s.services.create_access_token(&a, &b.name, b.expires_in.as_deref()).await.map_err(api_error)?;
    let mut json = serde_json::to_value(&view).map_err(|_| ApiError::internal())?;
    json["token"] = secret.into();
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

async fn list_tokens(State(s): State<Arc<WebState>>, Extension(a): Extension<Actor>) -> Result<Response, ApiError> {
    let tokens = s.services.list_access_tokens(&a).await.map_err(api_error)?;
    Ok(Json(serde_json::json!({ "data": tokens })).into_response())
}

async fn delete_token(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    s.services.delete_access_token(&a, &id).await.map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
