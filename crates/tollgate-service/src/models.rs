//! The public models and their prices: the config file declares the models and their
//! base prices (the catalog, given at start), the operator may add more (routing.rs); the operator may override a model's prices
//! through the API or CLI — gateway-wide, so only the operator (admin token, CLI) may —
//! and reset them to the config's. Every authenticated caller may read the list.

use std::sync::Arc;

use tollgate_core::MicroUsd;
use tollgate_core::model::ModelType;
use tollgate_core::money::Pricing;

use crate::{Actor, Principal, Result, ServiceError, Services};

/// A model as the config file declares it.
#[derive(Debug, Clone)]
pub struct CatalogModel {
    pub id: String,
    pub model_type: ModelType,
    pub pricing: Pricing,
    pub max_output_tokens: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct ModelView {
    pub id: String,
    #[serde(rename = "type")]
    pub model_type: ModelType,
    pub input_price_per_mtok: MicroUsd,
    pub output_price_per_mtok: MicroUsd,
    pub price_per_image: MicroUsd,
    /// `config` or `api` (an override set through the API or CLI).
    pub price_source: &'static str,
    /// Where the model is declared: `config` (the config file) or `api` (managed).
    pub source: &'static str,
    pub max_output_tokens: u64,
}

/// New prices in USD; a field left out keeps its current value.
#[derive(Debug, Default, Clone)]
pub struct PriceInput {
    pub input_price_per_mtok: Option<f64>,
    pub output_price_per_mtok: Option<f64>,
    pub price_per_image: Option<f64>,
}

impl Services {
    /// Declares the config's models (at start).
    pub fn with_catalog(mut self, catalog: Vec<CatalogModel>) -> Self {
        self.catalog = Arc::new(catalog);
        self
    }

    pub async fn list_models(&self, _actor: &Actor) -> Result<Vec<ModelView>> {
        let overrides = self.store.model_prices().await?;
        let managed = self.store.routing_models().await?;
        let config = self.catalog.iter().map(|m| (m.clone(), "config"));
        let mut models: Vec<_> = config.chain(managed.iter().filter_map(managed_model).map(|m| (m, "api"))).collect();
        models.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(models
            .iter()
            .map(|(m, source)| {
                let mut v = view(m, overrides.iter().find(|(id, _)| *id == m.id).map(|(_, p)| *p));
                v.source = source;
                v
            })
            .collect())
    }

    /// A model of the config file or managed through the API.
    async fn find_model(&self, id: &str) -> Result<CatalogModel> {
        if let Some(m) = self.catalog.iter().find(|m| m.id == id) {
            return Ok(m.clone());
        }
        let managed = self.store.routing_models().await?;
        managed.iter().filter(|m| m.id == id).find_map(managed_model).ok_or(ServiceError::NotFound)
    }

    /// Overrides a model's prices (operator only), audited as `model.price`.
    pub async fn set_model_price(&self, actor: &Actor, model_id: &str, input: PriceInput) -> Result<ModelView> {
        require_operator(actor)?;
        let model = &self.find_model(model_id).await?;
        let current = self
            .store
            .model_prices()
            .await?
            .into_iter()
            .find(|(id, _)| id == model_id)
            .map_or(model.pricing, |(_, p)| p);
        let usd = |field: &'static str, v: Option<f64>, keep: MicroUsd| -> Result<MicroUsd> {
            v.map_or(Ok(keep), |usd| MicroUsd::from_usd(usd).map_err(|m| ServiceError::invalid(field, m)))
        };
        let pricing = Pricing {
            input_per_mtok: usd("input_price_per_mtok", input.input_price_per_mtok, current.input_per_mtok)?,
            output_per_mtok: usd("output_price_per_mtok", input.output_price_per_mtok, current.output_per_mtok)?,
            per_image: usd("price_per_image", input.price_per_image, current.per_image)?,
        };
        let entry = actor
            .audit("", "model.price", "model", model_id)
            .gateway_wide()
            .with_before(Some(price_json(&current)))
            .with_after(Some(price_json(&pricing)));
        self.store.set_model_price(model_id, Some(pricing), &entry).await?;
        Ok(view(model, Some(pricing)))
    }

    /// Back to the config file's prices (operator only), audited as `model.price_reset`.
    pub async fn reset_model_price(&self, actor: &Actor, model_id: &str) -> Result<ModelView> {
        require_operator(actor)?;
        let model = &self.find_model(model_id).await?;
        let entry = actor
            .audit("", "model.price_reset", "model", model_id)
            .gateway_wide()
            .with_after(Some(price_json(&model.pricing)));
        self.store.set_model_price(model_id, None, &entry).await?;
        Ok(view(model, None))
    }
}

/// Deployment-wide objects (prices, routing, authentication failures) belong to no
/// organization: only the operator (the admin token, the CLI) touches them.
pub(crate) fn require_operator(actor: &Actor) -> Result<()> {
    match actor.principal {
        Principal::Operator => Ok(()),
        Principal::User(_) => Err(ServiceError::Forbidden("this applies to every organization: operator only")),
    }
}

/// A managed model as the catalog describes models (`None`: an unknown type).
fn managed_model(m: &tollgate_store::ModelRecord) -> Option<CatalogModel> {
    Some(CatalogModel {
        id: m.id.clone(),
        model_type: ModelType::parse(&m.model_type)?,
        pricing: m.pricing,
        max_output_tokens: m.max_output_tokens,
    })
}

fn view(m: &CatalogModel, over: Option<Pricing>) -> ModelView {
    let p = over.unwrap_or(m.pricing);
    ModelView {
        id: m.id.clone(),
        model_type: m.model_type,
        input_price_per_mtok: p.input_per_mtok,
        output_price_per_mtok: p.output_per_mtok,
        price_per_image: p.per_image,
        price_source: if over.is_some() { "api" } else { "config" },
        source: "config",
        max_output_tokens: m.max_output_tokens,
    }
}

fn price_json(p: &Pricing) -> serde_json::Value {
    serde_json::json!({
        "input_micros_per_mtok": p.input_per_mtok.0,
        "output_micros_per_mtok": p.output_per_mtok.0,
        "per_image_micros": p.per_image.0,
    })
}
