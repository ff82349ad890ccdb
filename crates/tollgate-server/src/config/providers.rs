//! `[[providers]]` and `[[models]]` validation: provider kinds, credentials and headers,
//! models, their prices and channels.

use std::time::Duration;

use tollgate_core::Secret;
use tollgate_core::model::ModelType;
use tollgate_core::model::valid_route_name as valid_name;
use tollgate_core::money::{MicroUsd, Pricing};

use super::{ChannelConfig, Credentials, ModelConfig, ProviderConfig, ProviderConfigKind, RawModel, RawProvider};

const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;
const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";
const GEMINI_API_VERSION: &str = "v1beta";

/// The built-in demo provider (when `demo` is on) and the configured providers, checked.
pub(crate) fn provider_configs(
    raw: &[RawProvider],
    demo: bool,
    lookup_env: &dyn Fn(&str) -> Option<String>,
    credentials: Credentials,
    errors: &mut Vec<String>,
) -> Vec<ProviderConfig> {
    let mut providers = Vec::new();
    if demo {
        providers.push(ProviderConfig {
            name: "demo".into(),
            kind: ProviderConfigKind::Demo { word_delay: Duration::from_millis(15) },
        });
    }
    for (i, p) in raw.iter().enumerate() {
        let at = format!("providers[{i}]");
        if !valid_name(&p.name) {
            errors.push(format!("{at}.name: must be 1-64 characters of letters, digits, '-', '_' or '.'"));
        }
        if providers.iter().any(|q: &ProviderConfig| q.name == p.name) {
            errors.push(format!(
                "{at}.name: provider {:?} is defined twice (\"demo\" is built in while demo is on)",
                p.name
            ));
        }
        if p.anthropic_version.is_some() && p.kind != "anthropic" {
            errors.push(format!("{at}.anthropic_version: only for kind \"anthropic\""));
        }
        if p.api_version.is_some() && !matches!(p.kind.as_str(), "gemini" | "azure") {
            errors.push(format!("{at}.api_version: only for kinds \"gemini\" and \"azure\""));
        }
        for (field, value) in [("organization", &p.organization), ("project", &p.project)] {
            if value.is_some() && p.kind != "openai" {
                errors.push(format!("{at}.{field}: only for kind \"openai\""));
            }
        }
        if !p.headers.is_empty() && !matches!(p.kind.as_str(), "openai" | "azure") {
            errors.push(format!("{at}.headers: only for kinds \"openai\" and \"azure\""));
        }
        let kind = match p.kind.as_str() {
            "demo" => {
                if p.base_url.is_some() || p.api_key.is_some() || p.api_key_env.is_some() {
                    errors.push(format!("{at}: a demo provider takes no base_url or api key"));
                }
                ProviderConfigKind::Demo { word_delay: Duration::from_millis(p.word_delay_ms.unwrap_or(15)) }
            }
            "openai" => {
                if p.word_delay_ms.is_some() {
                    errors.push(format!("{at}.word_delay_ms: only for kind \"demo\""));
                }
                let base_url = match p.base_url.as_deref().map(normalize_base_url) {
                    Some(Ok(u)) => u,
                    Some(Err(m)) => {
                        errors.push(format!("{at}.base_url: {m}"));
                        String::new()
                    }
                    None => {
                        errors.push(format!("{at}.base_url: is required for kind \"openai\""));
                        String::new()
                    }
                };
                // Local servers (vLLM, llama.cpp, Ollama) often need no key.
                let api_key = provider_api_key(p, &at, lookup_env, credentials, errors);
                let headers = provider_headers(p, &at, errors);
                ProviderConfigKind::OpenAi { base_url, api_key, headers }
            }
            "azure" => {
                if p.word_delay_ms.is_some() {
                    errors.push(format!("{at}.word_delay_ms: only for kind \"demo\""));
                }
                let base_url = match p.base_url.as_deref().map(normalize_base_url) {
                    Some(Ok(u)) => u,
                    Some(Err(m)) => {
                        errors.push(format!("{at}.base_url: {m}"));
                        String::new()
                    }
                    None => {
                        errors.push(format!(
                            "{at}.base_url: is required for kind \"azure\" (https://{{resource}}.openai.azure.com)"
                        ));
                        String::new()
                    }
                };
                let api_version = p.api_version.clone().unwrap_or_default();
                if p.api_version.is_none() {
                    errors.push(format!("{at}.api_version: is required for kind \"azure\" (e.g. \"2024-10-21\")"));
                } else if let Err(m) = tollgate_proxy::AzureUpstream::check_api_version(&api_version) {
                    errors.push(format!("{at}.api_version: {m}"));
                }
                if p.api_key.is_none() && p.api_key_env.is_none() {
                    errors.push(format!("{at}: api_key or api_key_env is required for kind \"azure\""));
                }
                let api_key = provider_api_key(p, &at, lookup_env, credentials, errors);
                let headers = provider_headers(p, &at, errors);
                ProviderConfigKind::Azure { base_url, api_version, api_key, headers }
            }
            "anthropic" => {
                if p.word_delay_ms.is_some() {
                    errors.push(format!("{at}.word_delay_ms: only for kind \"demo\""));
                }
                let base_url = match p.base_url.as_deref().map(normalize_base_url) {
                    Some(Ok(u)) => u,
                    Some(Err(m)) => {
                        errors.push(format!("{at}.base_url: {m}"));
                        String::new()
                    }
                    None => tollgate_proxy::AnthropicUpstream::DEFAULT_BASE_URL.to_owned(),
                };
                // Only a local Anthropic-compatible server (its own base_url) may go keyless.
                if p.base_url.is_none() && p.api_key.is_none() && p.api_key_env.is_none() {
                    errors.push(format!("{at}: api_key or api_key_env is required for api.anthropic.com"));
                }
                let api_key = provider_api_key(p, &at, lookup_env, credentials, errors);
                let version = p
                    .anthropic_version
                    .clone()
                    .unwrap_or_else(|| tollgate_proxy::AnthropicUpstream::DEFAULT_VERSION.to_owned());
                if !(1..=32).contains(&version.len())
                    || !version.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    errors.push(format!("{at}.anthropic_version: must look like \"2023-06-01\""));
                }
                ProviderConfigKind::Anthropic { base_url, api_key, version }
            }
            "gemini" => {
                if p.word_delay_ms.is_some() {
                    errors.push(format!("{at}.word_delay_ms: only for kind \"demo\""));
                }
                let base_url = match p.base_url.as_deref().map(normalize_base_url) {
                    Some(Ok(u)) => u,
                    Some(Err(m)) => {
                        errors.push(format!("{at}.base_url: {m}"));
                        String::new()
                    }
                    None => GEMINI_BASE_URL.to_owned(),
                };
                let api_version = p.api_version.clone().unwrap_or_else(|| GEMINI_API_VERSION.to_owned());
                if let Err(m) = tollgate_proxy::GeminiUpstream::check_api_version(&api_version) {
                    errors.push(format!("{at}.api_version: {m}"));
                }
                if p.api_key.is_none() && p.api_key_env.is_none() {
                    errors.push(format!("{at}: api_key or api_key_env is required for kind \"gemini\""));
                }
                let api_key = provider_api_key(p, &at, lookup_env, credentials, errors);
                ProviderConfigKind::Gemini { base_url, api_version, api_key }
            }
            other => {
                errors.push(format!(
                    "{at}.kind: unknown provider kind {other:?} (known: openai, azure, anthropic, gemini, demo)"
                ));
                continue;
            }
        };
        providers.push(ProviderConfig { name: p.name.clone(), kind });
    }
    providers
}

/// The demo models (when `demo` is on) and the configured models, their channels checked
/// against `providers`.
pub(super) fn model_configs(
    raw: &[RawModel],
    demo: bool,
    providers: &[ProviderConfig],
    errors: &mut Vec<String>,
) -> Vec<ModelConfig> {
    let mut models: Vec<ModelConfig> = Vec::new();
    if demo {
        let price = |usd: f64| MicroUsd::from_usd(usd).unwrap_or_default();
        models.push(ModelConfig {
            id: "demo-chat".into(),
            model_type: ModelType::Chat,
            pricing: Pricing { input_per_mtok: price(0.5), output_per_mtok: price(1.5), per_image: MicroUsd::ZERO },
            max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
            channels: vec![ChannelConfig::plain("demo", "demo-chat")],
        });
        models.push(ModelConfig {
            id: "demo-embed".into(),
            model_type: ModelType::Embedding,
            pricing: Pricing { input_per_mtok: price(0.02), ..Pricing::default() },
            max_output_tokens: 0,
            channels: vec![ChannelConfig::plain("demo", "demo-embed")],
        });
    }
    for (i, m) in raw.iter().enumerate() {
        let at = format!("models[{i}]");
        if !tollgate_core::model::valid_model_id(&m.id) {
            errors.push(format!("{at}.id: must be 1-256 characters without spaces"));
        }
        if models.iter().any(|q| q.id == m.id) {
            errors.push(format!("{at}.id: model {:?} is defined twice", m.id));
        }
        let mut price = |field: &str, usd: f64| {
            MicroUsd::from_usd(usd).unwrap_or_else(|msg| {
                errors.push(format!("{at}.{field}: {msg}"));
                MicroUsd::ZERO
            })
        };
        let pricing = Pricing {
            input_per_mtok: price("input_price_per_mtok", m.input_price_per_mtok),
            output_per_mtok: price("output_price_per_mtok", m.output_price_per_mtok),
            per_image: price("price_per_image", m.price_per_image),
        };
        if m.channels.is_empty() {
            errors.push(format!("{at}.channels: needs at least one channel"));
        }
        let mut channels = Vec::new();
        for (j, c) in m.channels.iter().enumerate() {
            if !providers.iter().any(|p| p.name == c.provider) {
                errors.push(format!("{at}.channels[{j}].provider: no provider named {:?}", c.provider));
            }
            let upstream_model = c.model.clone().unwrap_or_else(|| m.id.clone());
            let kind = providers.iter().find(|p| p.name == c.provider).map(|p| &p.kind);
            for (field, msg) in channel_problems(kind, &upstream_model, c.weight, &c.groups) {
                errors.push(format!("{at}.channels[{j}].{field}: {msg}"));
            }
            let groups = if c.groups.is_empty() { vec!["default".to_owned()] } else { c.groups.clone() };
            channels.push(ChannelConfig {
                provider: c.provider.clone(),
                model: upstream_model,
                priority: c.priority,
                weight: c.weight,
                groups,
            });
        }
        let max_output_tokens = m.max_output_tokens.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        if max_output_tokens > 10_000_000 {
            errors.push(format!("{at}.max_output_tokens: at most 10000000"));
        }
        models.push(ModelConfig { id: m.id.clone(), model_type: m.model_type, pricing, max_output_tokens, channels });
    }
    models
}

/// What is wrong with a channel served by a provider of `kind`, as (field, message).
pub(super) fn channel_problems(
    kind: Option<&ProviderConfigKind>,
    upstream_model: &str,
    weight: u32,
    groups: &[String],
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    // A Gemini model name and an Azure deployment become path segments of their URLs.
    let checked = match kind {
        Some(ProviderConfigKind::Gemini { .. }) => tollgate_proxy::GeminiUpstream::check_model(upstream_model),
        Some(ProviderConfigKind::Azure { .. }) => tollgate_proxy::AzureUpstream::check_deployment(upstream_model),
        _ => Ok(()),
    };
    if let Err(msg) = checked {
        out.push(("model", msg));
    }
    if upstream_model.is_empty() || upstream_model.len() > 256 {
        out.push(("model", "must be 1-256 characters".to_owned()));
    }
    if !(1..=1000).contains(&weight) {
        out.push(("weight", "must be between 1 and 1000".to_owned()));
    }
    for g in groups {
        if !valid_name(g) {
            out.push(("groups", format!("{g:?} is not a group name (letters, digits, - _ .)")));
        }
    }
    out
}

/// `api_key` or the variable named by `api_key_env` (empty when neither is given).
fn provider_api_key(
    p: &RawProvider,
    at: &str,
    lookup_env: &dyn Fn(&str) -> Option<String>,
    credentials: Credentials,
    errors: &mut Vec<String>,
) -> Secret {
    match (&p.api_key, &p.api_key_env) {
        (Some(_), Some(_)) => {
            errors.push(format!("{at}: give api_key or api_key_env, not both"));
            Secret::default()
        }
        (Some(k), None) => k.clone(),
        (None, Some(var)) => match lookup_env(var).filter(|v| !v.is_empty()) {
            Some(v) => Secret::new(v),
            None if credentials == Credentials::Optional => Secret::default(),
            None => {
                errors.push(format!("{at}.api_key_env: environment variable {var} is not set"));
                Secret::default()
            }
        },
        (None, None) => Secret::default(),
    }
}

/// `organization`, `project` and `headers` as the provider's extra headers, each name
/// checked by [`tollgate_proxy::ExtraHeaders::check_name`] and given once.
fn provider_headers(p: &RawProvider, at: &str, errors: &mut Vec<String>) -> Vec<(String, Secret)> {
    let mut out: Vec<(String, Secret)> = Vec::new();
    let ids = [("OpenAI-Organization", &p.organization), ("OpenAI-Project", &p.project)];
    for (name, value) in ids.into_iter().filter_map(|(n, v)| Some((n, v.as_ref()?))) {
        out.push((name.to_owned(), Secret::new(value.clone())));
    }
    for (name, value) in &p.headers {
        if let Err(m) = tollgate_proxy::ExtraHeaders::check_name(name) {
            errors.push(format!("{at}.headers: {m}"));
        } else if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            errors.push(format!("{at}.headers: {name:?} is given twice (organization and project set their own)"));
        } else {
            out.push((name.clone(), value.clone()));
        }
    }
    let pairs = out.iter().map(|(n, v)| (n.as_str(), v.expose()));
    if let Err(m) = tollgate_proxy::ExtraHeaders::new(pairs) {
        errors.push(format!("{at}.headers: {m}"));
    }
    out
}

/// `http(s)://host[:port][/path]` without credentials, query or fragment; no trailing `/`.
pub(super) fn normalize_base_url(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("must start with http:// or https://".into());
    }
    let authority = uri.authority().ok_or("must include a host")?;
    if authority.as_str().contains('@') {
        return Err("must not contain credentials; use api_key or api_key_env".into());
    }
    if uri.query().is_some() || url.contains('#') {
        return Err("must not contain a query or fragment".into());
    }
    Ok(url.trim_end_matches('/').to_owned())
}
