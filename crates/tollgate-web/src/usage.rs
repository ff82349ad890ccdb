//! `/api/v1/usage…`: the usage log of PRODUCT §6 and §9 — pages, one request's row, the
//! CSV export (streamed: the body is produced as the client reads it) and daily totals —
//! and `/api/v1/auth-failures`, what the log holds instead of a row for each request that
//! named no known key. Filters are checked before the CSV body starts, so bad input is a
//! JSON error.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use http::{HeaderValue, header};
use serde::Deserialize;
use tollgate_core::ApiError;
use tollgate_service::{Actor, DailyUsage, ListAuthFailures, ListUsage, UsageFilters};

use crate::WebState;
use crate::error::api_error;

pub(crate) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/usage", get(list))
        .route("/usage.csv", get(csv))
        .route("/usage/daily", get(daily))
        .route("/usage/{request_id}", get(get_one))
        .route("/auth-failures", get(auth_failures))
}

/// The filters of `GET /usage` and `GET /usage.csv`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterParams {
    request_id: Option<String>,
    model: Option<String>,
    key_id: Option<String>,
    team_id: Option<String>,
    user_id: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

impl From<FilterParams> for UsageFilters {
    fn from(p: FilterParams) -> Self {
        Self {
            request_id: p.request_id,
            model: p.model,
            key_id: p.key_id,
            team_id: p.team_id,
            user_id: p.user_id,
            status: p.status,
            from: p.from,
            to: p.to,
        }
    }
}

/// The filters plus a page (serde cannot flatten with `deny_unknown_fields`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    request_id: Option<String>,
    model: Option<String>,
    key_id: Option<String>,
    team_id: Option<String>,
    user_id: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

fn query<T>(params: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    params.map(|Query(p)| p).map_err(|e| ApiError::invalid_request(e.body_text()))
}

async fn list(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    let filters = FilterParams {
        request_id: p.request_id,
        model: p.model,
        key_id: p.key_id,
        team_id: p.team_id,
        user_id: p.user_id,
        status: p.status,
        from: p.from,
        to: p.to,
    };
    let q = ListUsage { filters: filters.into(), cursor: p.cursor, limit: p.limit };
    Ok(Json(state.services.list_usage(&actor, q).await.map_err(api_error)?).into_response())
}

async fn get_one(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    Path(request_id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.services.get_usage(&actor, &request_id).await.map_err(api_error)?).into_response())
}

async fn csv(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    params: Result<Query<FilterParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let filters = query(params)?.into();
    let export = state.services.usage_csv(&actor, filters).await.map_err(api_error)?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
        (header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"usage.csv\"")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    Ok((headers, Body::from_stream(export)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DailyParams {
    from: Option<String>,
    to: Option<String>,
    key_id: Option<String>,
    model: Option<String>,
}

async fn daily(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    params: Result<Query<DailyParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    let q = DailyUsage { from: p.from, to: p.to, key_id: p.key_id, model: p.model };
    let days = state.services.usage_daily(&actor, q).await.map_err(api_error)?;
    Ok(Json(serde_json::json!({ "data": days })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFailureParams {
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
}

async fn auth_failures(
    State(state): State<Arc<WebState>>,
    Extension(actor): Extension<Actor>,
    params: Result<Query<AuthFailureParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    let q = ListAuthFailures { from: p.from, to: p.to, limit: p.limit };
    let rows = state.services.list_auth_failures(&actor, q).await.map_err(api_error)?;
    Ok(Json(serde_json::json!({ "data": rows })).into_response())
}
