//! `/api/v1/keys`: create (the secret is in this one answer) and list (never secrets).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use tollgate_core::ApiError;
use tollgate_service::{ListKeys, NewKey};

use crate::WebState;
use crate::error::{api_error, parse_json};

pub(crate) fn routes() -> Router<Arc<WebState>> {
    Router::new().route("/keys", get(list).post(create))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    expires_in: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

async fn create(State(state): State<Arc<WebState>>, body: Bytes) -> Result<Response, ApiError> {
    let body: CreateBody = parse_json(&body)?;
    let new = NewKey {
        name: body.name,
        expires_in: body.expires_in,
        expires_at: body.expires_at,
    };
    let created = state.services.create_key(new).await.map_err(api_error)?;
    let mut json = serde_json::to_value(&created.key).map_err(|_| ApiError::internal())?;
    json["key"] = created.secret.into();
    Ok((http::StatusCode::CREATED, axum::Json(json)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    search: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<Arc<WebState>>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    let q = ListKeys {
        search: p.search,
        status: p.status,
        cursor: p.cursor,
        limit: p.limit,
    };
    let list = state.services.list_keys(q).await.map_err(api_error)?;
    Ok(axum::Json(list).into_response())
}
