//! Routing managed through the API, judged by the config file's rules: the service layer
//! asks [`ConfigRules`] whether a provider or channel would be valid in the file, and the
//! server turns stored providers, models and channels into the same [`ProviderConfig`]s
//! and [`ModelConfig`]s that the file yields, so both reach the data plane one way.

use tollgate_core::key::Digester;
use tollgate_core::model::ModelType;
use tollgate_service::{ChannelInput, ChannelView, ProviderInput, ProviderView, RoutingRules, RoutingSetup, Sealer};
use tollgate_store::{ChannelRecord, ModelRecord};

use super::providers::{channel_problems, provider_configs};
use super::{ChannelConfig, Config, Credentials, ModelConfig, ProviderConfig, ProviderConfigKind, RawProvider};

/// The domain of the key that seals managed provider credentials, derived from the pepper
/// (so every instance that shares the pepper can open them, and nothing else is needed).
const CREDENTIALS_KEY_LABEL: &[u8] = b"tollgate/provider-credentials/v1";

/// The config file's providers and channels, its rules, and the credentials' key.
pub fn routing_setup(config: &Config, digester: &Digester) -> anyhow::Result<RoutingSetup> {
    let sealer = Sealer::new(&digester.keyed(&[CREDENTIALS_KEY_LABEL])).map_err(anyhow::Error::msg)?;
    let config_channels = config
        .models
        .iter()
        .flat_map(|m| {
            m.channels.iter().map(|c| ChannelView {
                id: None,
                model: m.id.clone(),
                provider: c.provider.clone(),
                upstream_model: c.model.clone(),
                priority: c.priority,
                weight: c.weight,
                groups: c.groups.clone(),
                source: "config",
            })
        })
        .collect();
    Ok(RoutingSetup {
        config_providers: config.providers.iter().map(config_provider_view).collect(),
        config_channels,
        rules: Box::new(ConfigRules),
        sealer,
    })
}

fn config_provider_view(p: &ProviderConfig) -> ProviderView {
    let (base_url, api_version, anthropic_version, headers, key_set) = match &p.kind {
        ProviderConfigKind::Demo { .. } => (None, None, None, Vec::new(), false),
        ProviderConfigKind::OpenAi { base_url, api_key, headers } => {
            (Some(base_url.clone()), None, None, headers.clone(), !api_key.expose().is_empty())
        }
        ProviderConfigKind::Azure { base_url, api_version, api_key, headers } => {
            (Some(base_url.clone()), Some(api_version.clone()), None, headers.clone(), !api_key.expose().is_empty())
        }
        ProviderConfigKind::Anthropic { base_url, api_key, version } => {
            (Some(base_url.clone()), None, Some(version.clone()), Vec::new(), !api_key.expose().is_empty())
        }
        ProviderConfigKind::Gemini { base_url, api_version, api_key } => {
            (Some(base_url.clone()), Some(api_version.clone()), None, Vec::new(), !api_key.expose().is_empty())
        }
    };
    ProviderView {
        name: p.name.clone(),
        kind: kind_name(&p.kind).to_owned(),
        base_url,
        api_version,
        anthropic_version,
        organization: None,
        project: None,
        header_names: headers.into_iter().map(|(n, _)| n).collect(),
        api_key_set: key_set,
        source: "config",
        created_at: None,
        updated_at: None,
    }
}

pub fn kind_name(kind: &ProviderConfigKind) -> &'static str {
    match kind {
        ProviderConfigKind::Demo { .. } => "demo",
        ProviderConfigKind::OpenAi { .. } => "openai",
        ProviderConfigKind::Azure { .. } => "azure",
        ProviderConfigKind::Anthropic { .. } => "anthropic",
        ProviderConfigKind::Gemini { .. } => "gemini",
    }
}

/// The config file's validation, applied to definitions that arrive through the API.
struct ConfigRules;

impl RoutingRules for ConfigRules {
    fn provider_errors(&self, p: &ProviderInput) -> Vec<(&'static str, String)> {
        if p.kind == "demo" {
            return vec![("kind", "demo providers come only from the config file".to_owned())];
        }
        let mut errors = Vec::new();
        if !tollgate_core::model::valid_route_name(&p.name) {
            errors.push(("name", "must be 1-64 characters of letters, digits, '-', '_' or '.'".to_owned()));
        }
        let mut messages = Vec::new();
        provider_configs(&[raw_provider(p)], false, &|_| None, Credentials::Required, &mut messages);
        errors.extend(messages.iter().map(|m| field_message(m)));
        errors
    }

    fn channel_errors(&self, kind: &str, c: &ChannelInput) -> Vec<(&'static str, String)> {
        // Only the kind matters to the channel rules; a placeholder of that kind stands in.
        let placeholder = placeholder_kind(kind);
        let upstream = c.upstream_model.clone().unwrap_or_else(|| c.model.clone());
        channel_problems(placeholder.as_ref(), &upstream, c.weight.unwrap_or(1), c.groups.as_deref().unwrap_or(&[]))
            .into_iter()
            .map(|(field, m)| (if field == "model" { "upstream_model" } else { field }, m))
            .collect()
    }
}

fn placeholder_kind(kind: &str) -> Option<ProviderConfigKind> {
    let secret = tollgate_core::Secret::default;
    match kind {
        "gemini" => {
            Some(ProviderConfigKind::Gemini { base_url: String::new(), api_version: String::new(), api_key: secret() })
        }
        "azure" => Some(ProviderConfigKind::Azure {
            base_url: String::new(),
            api_version: String::new(),
            api_key: secret(),
            headers: Vec::new(),
        }),
        _ => None,
    }
}

/// `providers[0].base_url: must …` → (`base_url`, `must …`).
fn field_message(m: &str) -> (&'static str, String) {
    let rest = m.strip_prefix("providers[0]").unwrap_or(m);
    let (field, message) = match rest.strip_prefix('.') {
        Some(r) => r.split_once(": ").unwrap_or(("provider", r)),
        None => ("provider", rest.trim_start_matches(": ")),
    };
    const FIELDS: &[&str] = &[
        "name",
        "kind",
        "base_url",
        "api_key",
        "api_version",
        "anthropic_version",
        "organization",
        "project",
        "headers",
    ];
    let field = match FIELDS.iter().find(|f| **f == field) {
        Some(f) => f,
        // "api_key or api_key_env is required …" is said of the provider as a whole.
        None if message.starts_with("api_key") => "api_key",
        None => "provider",
    };
    // The file offers api_key_env; the API takes the key itself.
    (field, message.replace("api_key or api_key_env is", "api_key is"))
}

fn raw_provider(p: &ProviderInput) -> RawProvider {
    RawProvider {
        name: p.name.clone(),
        kind: p.kind.clone(),
        base_url: p.base_url.clone(),
        api_key: p.api_key.clone(),
        api_key_env: None,
        word_delay_ms: None,
        anthropic_version: p.anthropic_version.clone(),
        api_version: p.api_version.clone(),
        organization: p.organization.clone(),
        project: p.project.clone(),
        headers: p.headers.iter().cloned().collect(),
    }
}

/// The config file's providers and models with the managed ones added: managed providers
/// after the file's, managed channels of a file model appended to its channels, managed
/// models after the file's. A stored definition that no longer passes the rules (the rules
/// tightened in an upgrade) is skipped and logged, never served half-valid.
pub fn with_managed(
    config: &Config,
    providers: &[ProviderInput],
    models: &[ModelRecord],
    channels: &[ChannelRecord],
) -> (Vec<ProviderConfig>, Vec<ModelConfig>) {
    let mut all_providers = config.providers.clone();
    for p in providers {
        let mut errors = Vec::new();
        let built = provider_configs(&[raw_provider(p)], false, &|_| None, Credentials::Required, &mut errors);
        match (built.into_iter().next(), errors.is_empty()) {
            (Some(built), true) => all_providers.push(built),
            _ => tracing::warn!(provider = %p.name, problems = ?errors, "skipping a stored provider"),
        }
    }
    let channel = |c: &ChannelRecord| ChannelConfig {
        provider: c.provider.clone(),
        model: c.upstream_model.clone(),
        priority: c.priority,
        weight: c.weight,
        groups: c.groups.clone(),
    };
    let mut all_models = config.models.clone();
    for m in &mut all_models {
        m.channels.extend(channels.iter().filter(|c| c.model_id == m.id).map(channel));
    }
    for m in models {
        let Some(model_type) = ModelType::parse(&m.model_type) else {
            tracing::warn!(model = %m.id, "skipping a stored model of an unknown type");
            continue;
        };
        all_models.push(ModelConfig {
            id: m.id.clone(),
            model_type,
            pricing: m.pricing,
            max_output_tokens: m.max_output_tokens,
            channels: channels.iter().filter(|c| c.model_id == m.id).map(channel).collect(),
        });
    }
    (all_providers, all_models)
}
