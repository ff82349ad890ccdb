//! Providers, models and channels managed at runtime, beside the config file's. They apply
//! to every organization, so only the operator (admin token, CLI) changes them; owners and
//! admins may read them. Provider credentials are sealed (AES-256-GCM, the provider name
//! as associated data) before they reach the store and are never shown again. A
//! definition is checked by the same rules as the config file's ([`RoutingRules`], given
//! by the server), and every change reaches each instance's routes through the change feed.

use std::sync::Arc;

use tollgate_core::money::Pricing;
use tollgate_core::{MicroUsd, Secret};
use tollgate_store::{ChannelRecord, ModelRecord, ProviderRecord};

use crate::models::require_operator;
use crate::{Actor, Result, Sealer, ServiceError, Services};

/// The config-file rules a managed definition must also pass (the server implements them).
pub trait RoutingRules: Send + Sync {
    /// Problems with a provider definition, each as (field, message).
    fn provider_errors(&self, p: &ProviderInput) -> Vec<(&'static str, String)>;
    /// Problems with a channel served by a provider of `kind`.
    fn channel_errors(&self, kind: &str, c: &ChannelInput) -> Vec<(&'static str, String)>;
}

/// What the server tells the service layer about routing: the config file's providers and
/// channels (read-only through the API), the rules, and the credentials' sealing key.
pub struct RoutingSetup {
    pub config_providers: Vec<ProviderView>,
    pub config_channels: Vec<ChannelView>,
    pub rules: Box<dyn RoutingRules>,
    pub sealer: Sealer,
}

/// A whole provider definition (create), or the result of applying a patch.
#[derive(Debug, Clone, Default)]
pub struct ProviderInput {
    pub name: String,
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    pub api_version: Option<String>,
    pub anthropic_version: Option<String>,
    pub organization: Option<String>,
    pub project: Option<String>,
    pub headers: Vec<(String, Secret)>,
}

/// Changes to a provider; `None` keeps a field. `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default)]
pub struct ProviderPatch {
    pub base_url: Option<Option<String>>,
    pub api_key: Option<Option<Secret>>,
    pub api_version: Option<Option<String>>,
    pub anthropic_version: Option<Option<String>>,
    pub organization: Option<Option<String>>,
    pub project: Option<Option<String>>,
    /// Replaces every extra header.
    pub headers: Option<Vec<(String, Secret)>>,
}

/// A provider as the API shows it: never its credentials.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderView {
    pub name: String,
    pub kind: String,
    pub base_url: Option<String>,
    pub api_version: Option<String>,
    pub anthropic_version: Option<String>,
    pub organization: Option<String>,
    pub project: Option<String>,
    pub header_names: Vec<String>,
    pub api_key_set: bool,
    /// `config` (read-only here) or `api`.
    pub source: &'static str,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// A channel to create: `model` is a config or managed model, `provider` a config or
/// managed provider; `upstream_model` defaults to the model's id. The API's body as it is
/// (inside a new model's `channels`, `model` is left out).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelInput {
    #[serde(default)]
    pub model: String,
    pub provider: String,
    pub upstream_model: Option<String>,
    pub priority: Option<i32>,
    pub weight: Option<u32>,
    pub groups: Option<Vec<String>>,
}

/// Changes to a channel; a field left out keeps its value.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatch {
    pub upstream_model: Option<String>,
    pub priority: Option<i32>,
    pub weight: Option<u32>,
    pub groups: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelView {
    /// `None` for the config file's channels.
    pub id: Option<String>,
    pub model: String,
    pub provider: String,
    pub upstream_model: String,
    pub priority: i32,
    pub weight: u32,
    pub groups: Vec<String>,
    pub source: &'static str,
}

/// A model to create with its first channels (`model` of each is ignored): the API's
/// body as it is, prices in USD (left out: free).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInput {
    pub id: String,
    #[serde(rename = "type")]
    pub model_type: String,
    #[serde(default)]
    pub input_price_per_mtok: f64,
    #[serde(default)]
    pub output_price_per_mtok: f64,
    #[serde(default)]
    pub price_per_image: f64,
    pub max_output_tokens: Option<u64>,
    pub channels: Vec<ChannelInput>,
}

/// Provider credentials as sealed together.
#[derive(serde::Serialize, serde::Deserialize)]
struct Secrets {
    api_key: Option<String>,
    headers: Vec<(String, String)>,
}

const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

impl RoutingSetup {
    fn aad(name: &str) -> String {
        format!("provider:{name}")
    }

    /// A stored provider's whole definition, its credentials opened.
    pub fn open(&self, r: &ProviderRecord) -> Result<ProviderInput> {
        let secrets = match &r.secrets_sealed {
            None => Secrets { api_key: None, headers: Vec::new() },
            Some(sealed) => {
                let text = self
                    .sealer
                    .open(&Self::aad(&r.name), sealed)
                    .ok_or(ServiceError::Internal("provider credentials did not open (was the pepper changed?)"))?;
                serde_json::from_str(&text).map_err(|_| ServiceError::Internal("provider credentials are malformed"))?
            }
        };
        Ok(ProviderInput {
            name: r.name.clone(),
            kind: r.kind.clone(),
            base_url: r.base_url.clone(),
            api_key: secrets.api_key.map(Secret::new),
            api_version: r.api_version.clone(),
            anthropic_version: r.anthropic_version.clone(),
            organization: r.organization.clone(),
            project: r.project.clone(),
            headers: secrets.headers.into_iter().map(|(n, v)| (n, Secret::new(v))).collect(),
        })
    }

    fn seal(&self, p: &ProviderInput) -> Result<Option<Vec<u8>>> {
        if p.api_key.is_none() && p.headers.is_empty() {
            return Ok(None);
        }
        let secrets = Secrets {
            api_key: p.api_key.as_ref().map(|k| k.expose().to_owned()),
            headers: p.headers.iter().map(|(n, v)| (n.clone(), v.expose().to_owned())).collect(),
        };
        let text = serde_json::to_string(&secrets).map_err(|_| ServiceError::Internal("sealing credentials"))?;
        self.sealer.seal(&Self::aad(&p.name), &text).map(Some).ok_or(ServiceError::Internal("sealing credentials"))
    }
}

impl Services {
    /// Declares the config's routing and the rules (at start); without it, routing cannot
    /// be managed through the API.
    pub fn with_routing(mut self, setup: RoutingSetup) -> Self {
        self.routing = Some(Arc::new(setup));
        self
    }

    fn routing(&self) -> Result<&RoutingSetup> {
        self.routing.as_deref().ok_or(ServiceError::invalid("routing", "routing is not managed by this process"))
    }

    /// Config and managed providers (operator, owners and admins).
    pub async fn list_providers(&self, actor: &Actor) -> Result<Vec<ProviderView>> {
        require_manager(actor)?;
        let setup = self.routing()?;
        let mut out = setup.config_providers.clone();
        out.extend(self.store.routing_providers().await?.iter().map(|r| provider_view(setup, r)));
        Ok(out)
    }

    /// Config and managed channels (operator, owners and admins).
    pub async fn list_channels(&self, actor: &Actor) -> Result<Vec<ChannelView>> {
        require_manager(actor)?;
        let setup = self.routing()?;
        let mut out = setup.config_channels.clone();
        out.extend(self.store.routing_channels().await?.into_iter().map(channel_view));
        Ok(out)
    }

    /// Adds a provider (operator only), audited as `provider.create`.
    pub async fn create_provider(&self, actor: &Actor, input: ProviderInput) -> Result<ProviderView> {
        require_operator(actor)?;
        let setup = self.routing()?;
        check_provider(setup, &input)?;
        if setup.config_providers.iter().any(|p| p.name == input.name) {
            return Err(ServiceError::invalid("name", "the config file defines a provider by this name"));
        }
        let now = tollgate_core::time::now_millis();
        let record = provider_record(setup, &input, now, now)?;
        let view = provider_view(setup, &record);
        let entry = actor
            .audit("", "provider.create", "provider", &input.name)
            .gateway_wide()
            .with_after(Some(serde_json::to_value(&view).unwrap_or_default()));
        self.store.put_routing_provider(&record, false, &entry).await?;
        Ok(view)
    }

    /// Changes a managed provider (operator only), audited as `provider.update`; the config
    /// file's providers are read-only here.
    pub async fn update_provider(&self, actor: &Actor, name: &str, patch: ProviderPatch) -> Result<ProviderView> {
        require_operator(actor)?;
        let setup = self.routing()?;
        let current = self.managed_provider(setup, name).await?;
        let before = provider_view(setup, &current);
        let mut p = setup.open(&current)?;
        let ProviderPatch { base_url, api_key, api_version, anthropic_version, organization, project, headers } = patch;
        let set = |field: &mut Option<String>, v: Option<Option<String>>| {
            if let Some(v) = v {
                *field = v;
            }
        };
        set(&mut p.base_url, base_url);
        set(&mut p.api_version, api_version);
        set(&mut p.anthropic_version, anthropic_version);
        set(&mut p.organization, organization);
        set(&mut p.project, project);
        if let Some(k) = api_key {
            p.api_key = k;
        }
        if let Some(h) = headers {
            p.headers = h;
        }
        check_provider(setup, &p)?;
        let channels = self.store.routing_channels().await?;
        for c in channels.iter().filter(|c| c.provider == name) {
            check_channel(setup, &p.kind, &channel_input(c))?;
        }
        let record = provider_record(setup, &p, current.created_at, tollgate_core::time::now_millis())?;
        let view = provider_view(setup, &record);
        let entry = actor
            .audit("", "provider.update", "provider", name)
            .gateway_wide()
            .with_before(Some(serde_json::to_value(&before).unwrap_or_default()))
            .with_after(Some(serde_json::to_value(&view).unwrap_or_default()));
        self.store.put_routing_provider(&record, true, &entry).await?;
        Ok(view)
    }

    /// Removes a managed provider no channel uses (operator only), audited.
    pub async fn delete_provider(&self, actor: &Actor, name: &str) -> Result<()> {
        require_operator(actor)?;
        let setup = self.routing()?;
        let current = self.managed_provider(setup, name).await?;
        if self.store.routing_channels().await?.iter().any(|c| c.provider == name) {
            return Err(ServiceError::invalid("name", "channels still use this provider; delete them first"));
        }
        let entry = actor
            .audit("", "provider.delete", "provider", name)
            .gateway_wide()
            .with_before(Some(serde_json::to_value(provider_view(setup, &current)).unwrap_or_default()));
        self.store.delete_routing_provider(name, &entry).await.map_err(|e| match e {
            tollgate_store::StoreError::Conflict => {
                ServiceError::invalid("name", "channels still use this provider; delete them first")
            }
            other => other.into(),
        })
    }

    /// Adds a model with its first channels (operator only), audited as `model.create`.
    pub async fn create_model(&self, actor: &Actor, input: ModelInput) -> Result<ChannelsOfModel> {
        require_operator(actor)?;
        let setup = self.routing()?;
        if !tollgate_core::model::valid_model_id(&input.id) {
            return Err(ServiceError::invalid("id", "must be 1-256 characters without spaces"));
        }
        if self.catalog.iter().any(|m| m.id == input.id) {
            return Err(ServiceError::invalid("id", "the config file defines a model by this id"));
        }
        if !matches!(input.model_type.as_str(), "chat" | "embedding" | "image") {
            return Err(ServiceError::invalid("type", "must be chat, embedding or image"));
        }
        let usd = |field: &'static str, v: f64| MicroUsd::from_usd(v).map_err(|m| ServiceError::invalid(field, m));
        let pricing = Pricing {
            input_per_mtok: usd("input_price_per_mtok", input.input_price_per_mtok)?,
            output_per_mtok: usd("output_price_per_mtok", input.output_price_per_mtok)?,
            per_image: usd("price_per_image", input.price_per_image)?,
        };
        let max_output_tokens = input.max_output_tokens.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        if max_output_tokens > 10_000_000 {
            return Err(ServiceError::invalid("max_output_tokens", "at most 10000000"));
        }
        if input.channels.is_empty() {
            return Err(ServiceError::invalid("channels", "a model needs at least one channel"));
        }
        let now = tollgate_core::time::now_millis();
        let mut channels = Vec::new();
        for c in &input.channels {
            let c = ChannelInput { model: input.id.clone(), ..c.clone() };
            let record = self.channel_record(setup, &c, now).await?;
            if channels.iter().any(|o: &ChannelRecord| same_route(o, &record)) {
                return Err(ServiceError::invalid("channels", "the same provider and upstream model twice"));
            }
            channels.push(record);
        }
        let model = ModelRecord {
            id: input.id.clone(),
            model_type: input.model_type.clone(),
            pricing,
            max_output_tokens,
            created_at: now,
            updated_at: now,
        };
        let out = ChannelsOfModel {
            id: model.id.clone(),
            model_type: model.model_type.clone(),
            channels: channels.iter().cloned().map(channel_view).collect(),
        };
        let entry = actor
            .audit("", "model.create", "model", &input.id)
            .gateway_wide()
            .with_after(Some(serde_json::to_value(&out).unwrap_or_default()));
        self.store.insert_routing_model(&model, &channels, &entry).await?;
        Ok(out)
    }

    /// Removes a managed model and its channels (operator only), audited.
    pub async fn delete_model(&self, actor: &Actor, id: &str) -> Result<()> {
        require_operator(actor)?;
        if self.catalog.iter().any(|m| m.id == id) {
            return Err(ServiceError::invalid("id", "the config file defines this model; remove it there"));
        }
        let entry = actor.audit("", "model.delete", "model", id).gateway_wide();
        self.store.delete_routing_model(id, &entry).await.map_err(Into::into)
    }

    /// Adds a channel to a config or managed model (operator only), audited.
    pub async fn create_channel(&self, actor: &Actor, input: ChannelInput) -> Result<ChannelView> {
        require_operator(actor)?;
        let setup = self.routing()?;
        if !self.model_exists(&input.model).await? {
            return Err(ServiceError::invalid("model", format!("no model {:?}", input.model)));
        }
        let record = self.channel_record(setup, &input, tollgate_core::time::now_millis()).await?;
        let view = channel_view(record.clone());
        let entry = actor
            .audit("", "channel.create", "channel", &record.id)
            .gateway_wide()
            .with_after(Some(serde_json::to_value(&view).unwrap_or_default()));
        self.store.put_routing_channel(&record, false, &entry).await?;
        Ok(view)
    }

    /// Changes a managed channel's upstream model, priority, weight or groups.
    pub async fn update_channel(&self, actor: &Actor, id: &str, patch: ChannelPatch) -> Result<ChannelView> {
        require_operator(actor)?;
        let setup = self.routing()?;
        let current =
            self.store.routing_channels().await?.into_iter().find(|c| c.id == id).ok_or(ServiceError::NotFound)?;
        let mut input = channel_input(&current);
        input.upstream_model = patch.upstream_model.or(input.upstream_model);
        input.priority = patch.priority.or(input.priority);
        input.weight = patch.weight.or(input.weight);
        input.groups = patch.groups.or(input.groups);
        let kind = self.provider_kind(setup, &current.provider).await?;
        check_channel(setup, &kind, &input)?;
        let record = channel_from_input(&input, &current.id, current.created_at, tollgate_core::time::now_millis());
        let entry = actor
            .audit("", "channel.update", "channel", id)
            .gateway_wide()
            .with_before(Some(serde_json::to_value(channel_view(current)).unwrap_or_default()))
            .with_after(Some(serde_json::to_value(channel_view(record.clone())).unwrap_or_default()));
        self.store.put_routing_channel(&record, true, &entry).await?;
        Ok(channel_view(record))
    }

    /// Removes a managed channel; a managed model keeps at least one.
    pub async fn delete_channel(&self, actor: &Actor, id: &str) -> Result<()> {
        require_operator(actor)?;
        let channels = self.store.routing_channels().await?;
        let current = channels.iter().find(|c| c.id == id).ok_or(ServiceError::NotFound)?;
        let managed_model = self.store.routing_models().await?.iter().any(|m| m.id == current.model_id);
        if managed_model && channels.iter().filter(|c| c.model_id == current.model_id).count() == 1 {
            return Err(ServiceError::invalid("id", "the model's last channel; delete the model instead"));
        }
        let entry = actor
            .audit("", "channel.delete", "channel", id)
            .gateway_wide()
            .with_before(Some(serde_json::to_value(channel_view(current.clone())).unwrap_or_default()));
        self.store.delete_routing_channel(id, &entry).await.map_err(Into::into)
    }

    async fn managed_provider(&self, setup: &RoutingSetup, name: &str) -> Result<ProviderRecord> {
        if setup.config_providers.iter().any(|p| p.name == name) {
            return Err(ServiceError::invalid("name", "the config file defines this provider; change it there"));
        }
        self.store.routing_providers().await?.into_iter().find(|p| p.name == name).ok_or(ServiceError::NotFound)
    }

    /// The kind of a config or managed provider.
    async fn provider_kind(&self, setup: &RoutingSetup, name: &str) -> Result<String> {
        if let Some(p) = setup.config_providers.iter().find(|p| p.name == name) {
            return Ok(p.kind.clone());
        }
        let stored = self.store.routing_providers().await?;
        stored
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| p.kind)
            .ok_or_else(|| ServiceError::invalid("provider", format!("no provider named {name:?}")))
    }

    /// A new channel, checked: its provider exists, the rules pass and the config file does
    /// not route the model there already (the store refuses a second managed one).
    async fn channel_record(&self, setup: &RoutingSetup, c: &ChannelInput, now: i64) -> Result<ChannelRecord> {
        let kind = self.provider_kind(setup, &c.provider).await?;
        check_channel(setup, &kind, c)?;
        let id = tollgate_core::ids::new_id("chn");
        let record = channel_from_input(c, &id, now, now);
        let in_config = setup.config_channels.iter().any(|o| {
            o.model == record.model_id && o.provider == record.provider && o.upstream_model == record.upstream_model
        });
        if in_config {
            return Err(ServiceError::invalid("provider", "the config file already routes this model there"));
        }
        Ok(record)
    }

    /// Whether `id` names a model (config or managed); the channel API needs it.
    pub async fn model_exists(&self, id: &str) -> Result<bool> {
        Ok(self.catalog.iter().any(|m| m.id == id) || self.store.routing_models().await?.iter().any(|m| m.id == id))
    }
}

/// A model created through the API and its channels.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelsOfModel {
    pub id: String,
    #[serde(rename = "type")]
    pub model_type: String,
    pub channels: Vec<ChannelView>,
}

fn require_manager(actor: &Actor) -> Result<()> {
    if actor.user_principal().is_some_and(|u| !u.role.manages_org()) {
        return Err(ServiceError::Forbidden("providers and channels are for owners and admins"));
    }
    Ok(())
}

fn check_provider(setup: &RoutingSetup, p: &ProviderInput) -> Result<()> {
    match setup.rules.provider_errors(p).into_iter().next() {
        Some((field, message)) => Err(ServiceError::invalid(field, message)),
        None => Ok(()),
    }
}

fn check_channel(setup: &RoutingSetup, kind: &str, c: &ChannelInput) -> Result<()> {
    match setup.rules.channel_errors(kind, c).into_iter().next() {
        Some((field, message)) => Err(ServiceError::invalid(field, message)),
        None => Ok(()),
    }
}

fn provider_record(
    setup: &RoutingSetup,
    p: &ProviderInput,
    created_at: i64,
    updated_at: i64,
) -> Result<ProviderRecord> {
    Ok(ProviderRecord {
        name: p.name.clone(),
        kind: p.kind.clone(),
        base_url: p.base_url.clone(),
        api_version: p.api_version.clone(),
        anthropic_version: p.anthropic_version.clone(),
        organization: p.organization.clone(),
        project: p.project.clone(),
        header_names: p.headers.iter().map(|(n, _)| n.clone()).collect(),
        secrets_sealed: setup.seal(p)?,
        created_at,
        updated_at,
    })
}

/// `setup` opens the credentials to tell whether a key is set (they may hold headers only).
fn provider_view(setup: &RoutingSetup, r: &ProviderRecord) -> ProviderView {
    ProviderView {
        name: r.name.clone(),
        kind: r.kind.clone(),
        base_url: r.base_url.clone(),
        api_version: r.api_version.clone(),
        anthropic_version: r.anthropic_version.clone(),
        organization: r.organization.clone(),
        project: r.project.clone(),
        header_names: r.header_names.clone(),
        api_key_set: r.secrets_sealed.is_some() && setup.open(r).is_ok_and(|p| p.api_key.is_some()),
        source: "api",
        created_at: Some(r.created_at),
        updated_at: Some(r.updated_at),
    }
}

fn channel_input(c: &ChannelRecord) -> ChannelInput {
    ChannelInput {
        model: c.model_id.clone(),
        provider: c.provider.clone(),
        upstream_model: Some(c.upstream_model.clone()),
        priority: Some(c.priority),
        weight: Some(c.weight),
        groups: Some(c.groups.clone()),
    }
}

fn channel_from_input(c: &ChannelInput, id: &str, created_at: i64, updated_at: i64) -> ChannelRecord {
    ChannelRecord {
        id: id.to_owned(),
        model_id: c.model.clone(),
        provider: c.provider.clone(),
        upstream_model: c.upstream_model.clone().unwrap_or_else(|| c.model.clone()),
        priority: c.priority.unwrap_or(0),
        weight: c.weight.unwrap_or(1),
        groups: c.groups.clone().filter(|g| !g.is_empty()).unwrap_or_else(|| vec!["default".to_owned()]),
        created_at,
        updated_at,
    }
}

fn channel_view(c: ChannelRecord) -> ChannelView {
    ChannelView {
        id: Some(c.id),
        model: c.model_id,
        provider: c.provider,
        upstream_model: c.upstream_model,
        priority: c.priority,
        weight: c.weight,
        groups: c.groups,
        source: "api",
    }
}

fn same_route(a: &ChannelRecord, b: &ChannelRecord) -> bool {
    a.provider == b.provider && a.upstream_model == b.upstream_model
}
