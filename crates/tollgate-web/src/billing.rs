//! `/api/v1/billing`: the organization's balance and recent spend, its ledger, and admin
//! credits (owners, admins and the operator; members get 403).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use tollgate_core::ApiError;
use tollgate_service::{Actor, Credit};

use crate::WebState;
use crate::error::{api_error, parse_json};

pub(crate) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/billing", get(summary))
        .route("/billing/credits", post(credit))
        .route("/billing/ledger", get(ledger))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgQuery {
    #[serde(default)]
    organization_id: Option<String>,
}

async fn summary(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Query(q): Query<OrgQuery>,
) -> Result<Response, ApiError> {
    let summary = s.services.billing_summary(&a, q.organization_id, s.balance_enforced).await.map_err(api_error)?;
    Ok(Json(summary).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditBody {
    amount_usd: f64,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    organization_id: Option<String>,
}

async fn credit(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CreditBody = parse_json(&body)?;
    let credit = Credit { org_id: b.organization_id, amount_usd: b.amount_usd, kind: b.kind, note: b.note };
    let entry = s.services.add_credit(&a, credit).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerParams {
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

async fn ledger(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Query(q): Query<LedgerParams>,
) -> Result<Response, ApiError> {
    let page =
        s.services.list_ledger(&a, q.organization_id, q.kind.as_deref(), q.cursor, q.limit).await.map_err(api_error)?;
    Ok(Json(page).into_response())
}
