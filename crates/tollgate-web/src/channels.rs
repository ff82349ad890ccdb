//! `GET /api/v1/channels`: every model's channels with their routing settings and circuit
//! health, as this instance sees them (owners, admins and the operator). The data plane
//! owns the state; the server hands the web layer a function that reads it.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use tollgate_core::{ApiError, ErrorCode};
use tollgate_service::Actor;

use crate::WebState;

/// One channel of one model, as `GET /channels` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelStatus {
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
    Router::new().route("/channels", get(list))
}

async fn list(State(s): State<Arc<WebState>>, Extension(a): Extension<Actor>) -> Result<Response, ApiError> {
    if a.user_principal().is_some_and(|u| !u.role.manages_org()) {
        return Err(ApiError::new(ErrorCode::Forbidden, "Channel health is for owners and admins."));
    }
    let data = s.channels.as_ref().map(|report| report()).unwrap_or_default();
    Ok(Json(serde_json::json!({ "data": data })).into_response())
}
