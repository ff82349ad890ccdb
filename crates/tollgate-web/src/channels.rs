//! `/api/v1/channels`: every model's channels with their routing settings and circuit
//! health, as this instance sees them (owners, admins and the operator; the data plane
//! owns the state and the server hands the web layer a function that reads it), and the
//! operator's managed channels: `POST`, `PATCH /{id}`, `DELETE /{id}`.

use std::sync::Arc;

use axum::extract::Path;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::StatusCode;
use tollgate_core::{ApiError, ErrorCode};
use tollgate_service::{Actor, ChannelInput, ChannelPatch, ServiceError};

use crate::WebState;
use crate::error::{api_error, parse_json};

/// One channel of one model, as `GET /channels` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelStatus {
    /// The id of a channel managed through the API; `None` for the config file's.
    pub id: Option<String>,
    /// `config` or `api`.
    pub source: &'static str,
    pub model: String,
    pub provider: String,
    pub upstream_model: String,
    pub priority: i32,
    pub weight: u32,
    pub groups: Vec<String>,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub successes: u64,
    pub failures: u64,
}

/// Reads the channels' current state (given by the server).
pub type ChannelsReport = Arc<dyn Fn() -> Vec<ChannelStatus> + Send + Sync>;

pub(crate) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/channels", get(list).post(create))
        .route("/channels/{id}", axum::routing::patch(update).delete(delete))
}

async fn list(State(s): State<Arc<WebState>>, Extension(a): Extension<Actor>) -> Result<Response, ApiError> {
    if a.user_principal().is_some_and(|u| !u.role.manages_org()) {
        return Err(ApiError::new(ErrorCode::Forbidden, "Channel health is for owners and admins."));
    }
    let data = channel_statuses(&s, &a).await.map_err(api_error)?;
    Ok(Json(serde_json::json!({ "data": data })).into_response())
}

/// Every channel as the data plane reports it, the managed ones named by their id (so
/// that they can be changed), for a caller allowed to list channels.
pub(crate) async fn channel_statuses(s: &WebState, a: &Actor) -> Result<Vec<ChannelStatus>, ServiceError> {
    let mut data = s.channels.as_ref().map(|report| report()).unwrap_or_default();
    if s.services.routing.is_some() {
        let managed = s.services.list_channels(a).await?;
        for c in &mut data {
            let found = managed.iter().find(|m| {
                m.id.is_some() && m.model == c.model && m.provider == c.provider && m.upstream_model == c.upstream_model
            });
            if let Some(m) = found {
                c.id = m.id.clone();
                c.source = "api";
            }
        }
    }
    Ok(data)
}

async fn create(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: ChannelInput = parse_json(&body)?;
    if input.model.is_empty() {
        return Err(
            ApiError::invalid_request("model: Field required (the model the channel serves).").with_param("model")
        );
    }
    let view = s.services.create_channel(&a, input).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn update(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let patch: ChannelPatch = parse_json(&body)?;
    let view = s.services.update_channel(&a, &id, patch).await.map_err(api_error)?;
    Ok(Json(view).into_response())
}

async fn delete(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    s.services.delete_channel(&a, &id).await.map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
