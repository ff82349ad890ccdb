//! `/api/v1/models`: the public models with their prices (every caller), the operator's
//! price overrides (`PATCH` sets, `DELETE …/price` goes back to the config), and the
//! operator's managed models (`POST` with their first channels, `DELETE`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use tollgate_core::ApiError;
use tollgate_service::{Actor, ModelInput, PriceInput};

use crate::WebState;
use crate::error::{api_error, parse_json};

pub(crate) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/models", get(list).post(create))
        .route("/models/{id}", patch(set_price).delete(delete_model))
        .route("/models/{id}/price", delete(reset_price))
}

async fn list(State(s): State<Arc<WebState>>, Extension(a): Extension<Actor>) -> Result<Response, ApiError> {
    let models = s.services.list_models(&a).await.map_err(api_error)?;
    Ok(Json(serde_json::json!({ "data": models })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    #[serde(default)]
    input_price_per_mtok: Option<f64>,
    #[serde(default)]
    output_price_per_mtok: Option<f64>,
    #[serde(default)]
    price_per_image: Option<f64>,
}

async fn set_price(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: PriceBody = parse_json(&body)?;
    let input = PriceInput {
        input_price_per_mtok: b.input_price_per_mtok,
        output_price_per_mtok: b.output_price_per_mtok,
        price_per_image: b.price_per_image,
    };
    let view = s.services.set_model_price(&a, &id, input).await.map_err(api_error)?;
    Ok(Json(view).into_response())
}

async fn reset_price(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let view = s.services.reset_model_price(&a, &id).await.map_err(api_error)?;
    Ok(Json(view).into_response())
}

async fn create(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: ModelInput = parse_json(&body)?;
    let created = s.services.create_model(&a, input).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn delete_model(
    State(s): State<Arc<WebState>>,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    s.services.delete_model(&a, &id).await.map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
