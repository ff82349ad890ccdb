//! `/api/v1/providers`: the config file's and the managed providers (owners, admins and
//! the operator read; only the operator writes). Credentials go in, never come out.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use tollgate_core::{ApiError, Secret};
use tollgate_service::{Actor, ProviderInput, ProviderPatch};

use crate::WebState;
use crate::error::{api_error, parse_json};

pub(crate) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/providers", get(list).post(create))
        .route("/providers/{name}", axum::routing::patch(update).delete(delete))
}

async fn list(State(s): State<Arc<WebState>>, Extension(a): Extension<Actor>) -> Result<Response, ApiError> {
    let data = s.services.list_providers(&a).await.map_err(api_error)?;
    Ok(Json(serde_json::json!({ "data": data })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    kind: String,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    anthropic_version: Option<String>,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn headers(h: BTreeMap<String, String>) -> Vec<(String, Secret)> {
    h.into_iter().map(|(n, v)| (n, Secret::new(v))).collect()
}

async fn create(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CreateBody = parse_json(&body)?;
    let input = ProviderInput {
        name: b.name,
        kind: b.kind,
        base_url: b.base_url,
        api_key: b.api_key.filter(|k| !k.is_empty()).map(Secret::new),
        api_version: b.api_version,
        anthropic_version: b.anthropic_version,
        organization: b.organization,
        project: b.project,
        headers: headers(b.headers),
    };
    let view = s.services.create_provider(&a, input).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// A field present with `null` clears it; absent keeps it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default, deserialize_with = "present")]
    base_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    api_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    api_version: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    anthropic_version: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    organization: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    project: Option<Option<String>>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

async fn update(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: PatchBody = parse_json(&body)?;
    let patch = ProviderPatch {
        base_url: b.base_url,
        api_key: b.api_key.map(|k| k.filter(|k| !k.is_empty()).map(Secret::new)),
        api_version: b.api_version,
        anthropic_version: b.anthropic_version,
        organization: b.organization,
        project: b.project,
        headers: b.headers.map(headers),
    };
    let view = s.services.update_provider(&a, &name, patch).await.map_err(api_error)?;
    Ok(Json(view).into_response())
}

async fn delete(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    s.services.delete_provider(&a, &name).await.map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
