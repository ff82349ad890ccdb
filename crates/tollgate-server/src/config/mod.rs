//! Configuration: defaults in code → TOML file → `TOLLGATE_*` environment, then
//! validation into [`Config`]. Unknown fields are errors that name the field; every
//! problem found is reported at once. `tollgate config check` runs the same code.
//!
//! Environment overrides: `TOLLGATE_<FIELD>` for top-level fields (`TOLLGATE_LISTEN`),
//! `TOLLGATE_<SECTION>__<FIELD>` for nested ones (`TOLLGATE_UPSTREAM__CONNECT_TIMEOUT_MS`).
//! Values are typed by the field they override. Providers and models come from the file.

mod auth;
mod env;
mod managed;
mod notifications;
mod providers;
mod raw;
mod sections;
#[cfg(test)]
mod tests;

pub use auth::RawAuth;
pub use managed::{kind_name, routing_setup, with_managed};
pub use notifications::{NotificationsConfig, SmtpConfig, WebhookConfig, valid_email_address};
pub use raw::{
    RawBilling, RawChangeFeed, RawChannel, RawConfig, RawKeys, RawLimits, RawMetrics, RawModel, RawNotifications,
    RawProvider, RawServer, RawUpstream, RawUsage,
};
pub use sections::{MetricsConfig, RevealKey, ServerConfig};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tollgate_core::Secret;
use tollgate_core::key::KeyFormat;
use tollgate_core::model::ModelType;
use tollgate_core::money::Pricing;

use env::apply_env;
use notifications::notifications_config;
use providers::{model_configs, provider_configs};
use sections::{check_upstream_and_limits, metrics_config, server_config};

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Resolved: the embedded SQLite file unless a URL was given.
    pub database_url: String,
    pub admin_token: Option<Secret>,
    pub pepper: Option<Secret>,
    pub owner_email: String,
    pub owner_password: Option<Secret>,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub log_json: bool,
    pub key_format: KeyFormat,
    /// Set when `keys.reveal = true`.
    pub reveal_key: Option<RevealKey>,
    pub trusted_proxies: Vec<tollgate_core::scope::IpNet>,
    pub secure_cookies: bool,
    /// `[auth] signup`: who may create an account.
    pub signup_policy: tollgate_service::SignupPolicy,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    /// The longest silence between two chunks of an upstream response.
    pub stream_idle_timeout: Duration,
    pub failover_deadline: Duration,
    pub retry_base: Duration,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    pub usage_batch_size: usize,
    pub usage_flush_interval: Duration,
    pub usage_queue_capacity: usize,
    pub change_poll_interval: Duration,
    pub notifications: NotificationsConfig,
    pub metrics: MetricsConfig,
    /// `[server]`: client connection limits.
    pub server: ServerConfig,
    pub redis_url: Option<Secret>,
    pub redis_prefix: String,
    pub redis_timeout: Duration,
    pub fallback_share: u64,
    pub counter_refresh: Duration,
    /// `[limits] auth_failures_per_minute` (0: no throttle) and `auth_failure_addresses`.
    pub auth_failures_per_minute: u64,
    pub auth_failure_addresses: usize,
    pub enforce_balance: bool,
    pub providers: Vec<ProviderConfig>,
    pub models: Vec<ModelConfig>,
}

#[derive(Debug, Clone)]
pub enum ProviderConfigKind {
    Demo {
        word_delay: Duration,
    },
    OpenAi {
        base_url: String,
        api_key: Secret,
        /// `OpenAI-Organization`, `OpenAI-Project` and the configured `headers`, checked.
        headers: Vec<(String, Secret)>,
    },
    /// Azure OpenAI: `{base_url}/openai/deployments/{channel model}/…?api-version=…`, the
    /// key in the `api-key` header.
    Azure {
        base_url: String,
        api_version: String,
        api_key: Secret,
        headers: Vec<(String, Secret)>,
    },
    /// `base_url` is the API root (default `https://api.anthropic.com`).
    Anthropic {
        base_url: String,
        api_key: Secret,
        version: String,
    },
    /// `{base_url}/{api_version}/models/{model}:generateContent` (default base URL
    /// `https://generativelanguage.googleapis.com`, version `v1beta`).
    Gemini {
        base_url: String,
        api_version: String,
        api_key: Secret,
    },
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderConfigKind,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub id: String,
    pub model_type: ModelType,
    pub pricing: Pricing,
    pub max_output_tokens: u64,
    pub channels: Vec<ChannelConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    pub provider: String,
    /// The model's name at the provider.
    pub model: String,
    pub priority: i32,
    pub weight: u32,
    /// Never empty: `["default"]` unless configured.
    pub groups: Vec<String>,
}

impl ChannelConfig {
    fn plain(provider: &str, model: &str) -> Self {
        Self { provider: provider.into(), model: model.into(), priority: 0, weight: 1, groups: vec!["default".into()] }
    }
}

/// Every problem found in a configuration, one line each, naming the field.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Whether a missing `api_key_env` variable is an error. Serving and `config check`
/// need every credential; commands that only touch the database (keys, migrate) do not,
/// so an operator can run them without the providers' secrets in their shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    Required,
    Optional,
}

/// Loads from an optional file plus the given environment (pass `std::env::vars()`).
pub fn load(
    file: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
    credentials: Credentials,
) -> Result<Config, ConfigErrors> {
    let one = |m: String| ConfigErrors(vec![m]);
    let mut table = match file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| one(format!("{}: cannot read: {e}", path.display())))?;
            text.parse::<toml::Table>().map_err(|e| one(format!("{}: {}", path.display(), e.message())))?
        }
        None => toml::Table::new(),
    };
    apply_env(&mut table, env)?;
    let raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        one(if path == "." { e.into_inner().to_string() } else { format!("{path}: {}", e.into_inner()) })
    })?;
    validate(raw, &|name| std::env::var(name).ok(), credentials)
}

/// Checks everything and resolves defaults. `lookup_env` resolves `api_key_env`.
pub fn validate(
    raw: RawConfig,
    lookup_env: &dyn Fn(&str) -> Option<String>,
    credentials: Credentials,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let listen = raw.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        errors.push(format!("listen: {:?} is not an address such as 127.0.0.1:8080", raw.listen));
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    if raw.data_dir.trim().is_empty() {
        errors.push("data_dir: must not be empty".into());
    }
    let data_dir = PathBuf::from(&raw.data_dir);
    let database_url = match raw.database_url.filter(|u| !u.is_empty()) {
        Some(u) if u.starts_with("sqlite:") || u.starts_with("postgres://") || u.starts_with("postgresql://") => u,
        Some(_) => {
            errors.push("database_url: must start with sqlite:, postgres:// or postgresql://".into());
            String::new()
        }
        None => tollgate_store::Store::sqlite_url(&data_dir.join("tollgate.db")),
    };
    let key_format = KeyFormat::new(&raw.keys.prefix).unwrap_or_else(|m| {
        errors.push(format!("keys.prefix: {m}"));
        KeyFormat::default()
    });
    let reveal_key = sections::reveal_key(&raw.keys, &mut errors);
    let log_json = match raw.log_format.as_str() {
        "text" => false,
        "json" => true,
        other => {
            errors.push(format!("log_format: must be \"text\" or \"json\", got {other:?}"));
            false
        }
    };
    let mut positive = |field: &str, v: u64| {
        if v == 0 {
            errors.push(format!("{field}: must be greater than 0"));
        }
        v
    };
    let max_body_bytes = positive("max_body_bytes", raw.max_body_bytes);
    let connect_timeout = positive("upstream.connect_timeout_ms", raw.upstream.connect_timeout_ms);
    let first_byte_timeout = positive("upstream.first_byte_timeout_ms", raw.upstream.first_byte_timeout_ms);
    let stream_idle_timeout = positive("upstream.stream_idle_timeout_ms", raw.upstream.stream_idle_timeout_ms);
    let batch = positive("usage.batch_size", raw.usage.batch_size);
    let flush = positive("usage.flush_interval_ms", raw.usage.flush_interval_ms);
    let capacity = positive("usage.queue_capacity", raw.usage.queue_capacity);
    let poll = positive("change_feed.poll_interval_ms", raw.change_feed.poll_interval_ms);
    let notifications = notifications_config(&raw.notifications, &mut errors);
    let metrics = metrics_config(&raw.metrics, listen, &mut errors);
    let server = server_config(&raw.server, &mut errors);
    let signup_policy = auth::signup_policy(&raw.auth, &mut errors);

    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
        match tollgate_core::scope::IpNet::parse(p) {
            Ok(net) => trusted_proxies.push(net),
            Err(m) => errors.push(format!("trusted_proxies[{i}]: {m}")),
        }
    }
    let demo = raw.demo.unwrap_or(raw.models.is_empty());
    let providers = provider_configs(&raw.providers, demo, lookup_env, credentials, &mut errors);
    let models = model_configs(&raw.models, demo, &providers, &mut errors);
    check_upstream_and_limits(&raw.upstream, &raw.limits, &mut errors);
    let redis_url = raw.redis_url.filter(|u| !u.is_empty());
    if let Some(u) = &redis_url
        && !(u.expose().starts_with("redis://") || u.expose().starts_with("rediss://"))
    {
        errors.push("redis_url: must start with redis:// or rediss://".into());
    }

    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        listen,
        data_dir,
        database_url,
        admin_token: raw.admin_token.filter(|t| !t.is_empty()),
        pepper: raw.pepper.filter(|p| !p.is_empty()),
        owner_email: raw.owner_email,
        owner_password: raw.owner_password.filter(|p| !p.is_empty()),
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs),
        log_json,
        key_format,
        reveal_key,
        trusted_proxies,
        secure_cookies: raw.secure_cookies,
        signup_policy,
        connect_timeout: Duration::from_millis(connect_timeout),
        first_byte_timeout: Duration::from_millis(first_byte_timeout),
        stream_idle_timeout: Duration::from_millis(stream_idle_timeout),
        failover_deadline: Duration::from_millis(raw.upstream.failover_deadline_ms),
        retry_base: Duration::from_millis(raw.upstream.retry_base_ms),
        breaker_failures: raw.upstream.breaker_failures,
        breaker_open: Duration::from_millis(raw.upstream.breaker_open_ms),
        usage_batch_size: usize::try_from(batch).unwrap_or(500),
        usage_flush_interval: Duration::from_millis(flush),
        usage_queue_capacity: usize::try_from(capacity).unwrap_or(65_536),
        change_poll_interval: Duration::from_millis(poll),
        notifications,
        metrics,
        server,
        redis_url,
        redis_prefix: raw.limits.redis_prefix.clone(),
        redis_timeout: Duration::from_millis(raw.limits.redis_timeout_ms),
        fallback_share: raw.limits.fallback_share.max(1),
        counter_refresh: Duration::from_millis(raw.limits.counter_refresh_ms),
        auth_failures_per_minute: raw.limits.auth_failures_per_minute,
        auth_failure_addresses: usize::try_from(raw.limits.auth_failure_addresses).unwrap_or(usize::MAX),
        enforce_balance: raw.billing.enforce_balance,
        providers,
        models,
    })
}
