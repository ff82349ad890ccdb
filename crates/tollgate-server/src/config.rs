//! Configuration: defaults in code → TOML file → `TOLLGATE_*` environment, then
//! validation into [`Config`]. Unknown fields are errors that name the field; every
//! problem found is reported at once. `tollgate config check` runs the same code.
//!
//! Environment overrides: `TOLLGATE_<FIELD>` for top-level fields (`TOLLGATE_LISTEN`),
//! `TOLLGATE_<SECTION>__<FIELD>` for nested ones (`TOLLGATE_UPSTREAM__CONNECT_TIMEOUT_MS`).
//! Values are typed by the field they override. Providers and models come from the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tollgate_core::Secret;
use tollgate_core::key::KeyFormat;
use tollgate_core::model::ModelType;
use tollgate_core::money::{MicroUsd, Pricing};

/// The file as written (after environment overrides), before validation.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listen: String,
    pub data_dir: String,
    pub database_url: Option<String>,
    pub admin_token: Option<Secret>,
    pub pepper: Option<Secret>,
    /// The owner created at first start.
    pub owner_email: String,
    /// The owner's password at first start; generated and printed once if unset.
    pub owner_password: Option<Secret>,
    pub max_body_bytes: u64,
    pub shutdown_grace_secs: u64,
    pub log_format: String,
    /// Serve the built-in demo provider and models. Default: only when no models are
    /// configured.
    pub demo: Option<bool>,
    /// Load balancers whose `X-Forwarded-For` is believed, as IPs or CIDRs.
    pub trusted_proxies: Vec<String>,
    /// Mark the dashboard session cookie `Secure` (set when TLS ends in front of
    /// Tollgate; `X-Forwarded-Proto: https` from a trusted proxy also does it).
    pub secure_cookies: bool,
    /// Redis for limits and budgets shared by several instances (`TOLLGATE_REDIS_URL`).
    pub redis_url: Option<Secret>,
    pub keys: RawKeys,
    pub upstream: RawUpstream,
    pub usage: RawUsage,
    pub limits: RawLimits,
    pub billing: RawBilling,
    pub change_feed: RawChangeFeed,
    pub notifications: RawNotifications,
    pub metrics: RawMetrics,
    pub providers: Vec<RawProvider>,
    pub models: Vec<RawModel>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: "./tollgate-data".into(),
            database_url: None,
            admin_token: None,
            pepper: None,
            owner_email: "admin@localhost".into(),
            owner_password: None,
            max_body_bytes: 32 << 20,
            shutdown_grace_secs: 30,
            log_format: "text".into(),
            demo: None,
            trusted_proxies: Vec::new(),
            secure_cookies: false,
            redis_url: None,
            keys: RawKeys::default(),
            upstream: RawUpstream::default(),
            usage: RawUsage::default(),
            limits: RawLimits::default(),
            billing: RawBilling::default(),
            change_feed: RawChangeFeed::default(),
            notifications: RawNotifications::default(),
            metrics: RawMetrics::default(),
            providers: Vec::new(),
            models: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKeys {
    pub prefix: String,
    /// Also store secrets sealed (AES-256-GCM) so that they can be revealed later.
    pub reveal: bool,
    /// The 32-byte sealing key, base64 or hex (`TOLLGATE_KEYS__REVEAL_KEY`).
    pub reveal_key: Option<Secret>,
    /// Or a file holding it.
    pub reveal_key_file: Option<String>,
}

impl Default for RawKeys {
    fn default() -> Self {
        Self {
            prefix: tollgate_core::key::DEFAULT_PREFIX.into(),
            reveal: false,
            reveal_key: None,
            reveal_key_file: None,
        }
    }
}

/// The key that seals revealable secrets. Never printed.
#[derive(Clone)]
pub struct RevealKey(pub [u8; 32]);

impl std::fmt::Debug for RevealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevealKey(***)")
    }
}

fn parse_reveal_key(text: &str) -> Result<RevealKey, String> {
    use base64::Engine;
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32).filter_map(|i| u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()).collect::<Vec<u8>>()
    } else {
        base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| "is neither hex nor base64".to_owned())?
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map(RevealKey)
        .map_err(|_| "must be 32 bytes (64 hex characters or 44 base64)".to_owned())
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub connect_timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
    /// Every attempt of one request (failover across channels) ends by this time.
    pub failover_deadline_ms: u64,
    /// Backoff before the second attempt; doubles, with full jitter, up to 2 s.
    pub retry_base_ms: u64,
    /// Consecutive failures that open a channel's circuit, and for how long.
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5_000,
            first_byte_timeout_ms: 600_000,
            failover_deadline_ms: 600_000,
            retry_base_ms: 100,
            breaker_failures: 5,
            breaker_open_ms: 30_000,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUsage {
    pub batch_size: u64,
    pub flush_interval_ms: u64,
    pub queue_capacity: u64,
}

impl Default for RawUsage {
    fn default() -> Self {
        Self { batch_size: 500, flush_interval_ms: 200, queue_capacity: 65_536 }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Prefix of every Redis key Tollgate writes (put a `{hash tag}` in it on Redis Cluster).
    pub redis_prefix: String,
    /// Per-call timeout of the shared limiter; past it the instance uses its own limits.
    pub redis_timeout_ms: u64,
    /// Without Redis (none configured, or unreachable), each instance allows this fraction
    /// (1/n) of every rate limit: set it to the number of instances.
    pub fallback_share: u64,
    /// How often an instance on PostgreSQL re-reads the spend counters other instances
    /// wrote (budgets without Redis).
    pub counter_refresh_ms: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self { redis_prefix: "tg:".into(), redis_timeout_ms: 250, fallback_share: 1, counter_refresh_ms: 1_000 }
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBilling {
    /// Refuse requests the organization's balance (its ledger) cannot cover.
    pub enforce_balance: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawChangeFeed {
    pub poll_interval_ms: u64,
}

impl Default for RawChangeFeed {
    fn default() -> Self {
        Self { poll_interval_ms: 250 }
    }
}

/// `[notifications]`: budget alerts, quota/budget exhaustion and expiry reminders, sent
/// to a webhook and/or by email to the key's owner. Neither channel set: no notifier runs.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNotifications {
    /// How often keys are checked for alerts that are due.
    pub sweep_interval_ms: u64,
    /// POSTed a signed JSON event (`TOLLGATE_NOTIFICATIONS__WEBHOOK_URL`).
    pub webhook_url: Option<String>,
    /// The HMAC-SHA256 key of `x-tollgate-signature`; required with `webhook_url`.
    pub webhook_secret: Option<Secret>,
    /// Email to key owners through this SMTP server (unset: no email).
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<Secret>,
    /// `alerts@example.com` or `Tollgate <alerts@example.com>`; required with `smtp_host`.
    pub smtp_from: Option<String>,
    /// Upgrade the connection with STARTTLS before anything else is sent (and refuse to
    /// send if the server does not offer it). Turn off only for a trusted local relay.
    pub smtp_starttls: bool,
    /// Attempts per delivery before it is marked failed.
    pub max_attempts: u32,
    /// The first retry waits this long; each next one twice as long, up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Per attempt: connect, send and get the answer (webhook or whole SMTP exchange).
    pub timeout_ms: u64,
}

impl Default for RawNotifications {
    fn default() -> Self {
        Self {
            sweep_interval_ms: 30_000,
            webhook_url: None,
            webhook_secret: None,
            smtp_host: None,
            smtp_port: 587,
            smtp_username: None,
            smtp_password: None,
            smtp_from: None,
            smtp_starttls: true,
            max_attempts: 5,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            timeout_ms: 10_000,
        }
    }
}

/// Validated `[notifications]`.
#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    pub sweep_interval: Duration,
    pub webhook: Option<WebhookConfig>,
    pub smtp: Option<SmtpConfig>,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub timeout: Duration,
}

/// Where events are POSTed. `Debug` shows only scheme and host: webhook URLs often carry
/// a token in their path.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: http::Uri,
    pub secret: Secret,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.url.scheme_str().unwrap_or("");
        let host = self.url.host().unwrap_or("");
        write!(f, "WebhookConfig {{ url: {scheme}://{host}/***, secret: *** }}")
    }
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// With the password: `AUTH PLAIN`.
    pub credentials: Option<(String, Secret)>,
    /// The `From:` header as configured.
    pub from_header: String,
    /// The bare address of `from_header` (`MAIL FROM`).
    pub from_address: String,
    pub starttls: bool,
}

/// `local@domain`: printable ASCII, no spaces, brackets or line breaks.
pub fn valid_email_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    (3..=254).contains(&a.len())
        && !local.is_empty()
        && !domain.is_empty()
        && !domain.starts_with('.')
        && a.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'(' | b')' | b',' | b';' | b'"'))
}

/// `addr` or `Display Name <addr>` → `(header, address)`.
fn parse_mailbox(s: &str) -> Result<(String, String), String> {
    let s = s.trim();
    if s.bytes().any(|b| !(b.is_ascii_graphic() || b == b' ')) {
        return Err("must be printable ASCII on one line".into());
    }
    let address = match (s.find('<'), s.strip_suffix('>')) {
        (Some(open), Some(inner)) => inner[open + 1..].trim().to_owned(),
        (None, None) => s.to_owned(),
        _ => return Err(format!("{s:?} is not an address or `Name <address>`")),
    };
    if !valid_email_address(&address) {
        return Err(format!("{address:?} is not an email address"));
    }
    Ok((s.to_owned(), address))
}

fn notifications_config(raw: &RawNotifications, errors: &mut Vec<String>) -> NotificationsConfig {
    let mut error = |m: String| errors.push(format!("notifications.{m}"));
    if !(50..=86_400_000).contains(&raw.sweep_interval_ms) {
        error("sweep_interval_ms: must be between 50 and 86400000".into());
    }
    let webhook = match (raw.webhook_url.as_deref().filter(|u| !u.is_empty()), raw.webhook_secret.as_ref()) {
        (None, Some(s)) if !s.is_empty() => {
            error("webhook_secret: set without webhook_url".into());
            None
        }
        (None, _) => None,
        (Some(url), secret) => {
            let uri = url.parse::<http::Uri>().map_err(|_| "is not a URL".to_owned()).and_then(|u| {
                if !matches!(u.scheme_str(), Some("http" | "https")) {
                    Err("must start with http:// or https://".to_owned())
                } else if u.host().is_none_or(str::is_empty) {
                    Err("must include a host".to_owned())
                } else if u.authority().is_some_and(|a| a.as_str().contains('@')) {
                    Err("must not contain credentials".to_owned())
                } else {
                    Ok(u)
                }
            });
            let secret = match secret.filter(|s| !s.is_empty()) {
                None => Err("webhook_secret: required when webhook_url is set".to_owned()),
                Some(s) if s.expose().len() < 16 => Err("webhook_secret: must be at least 16 characters".to_owned()),
                Some(s) => Ok(s.clone()),
            };
            // The URL is not echoed: it may carry a token.
            match (uri.map_err(|m| format!("webhook_url: {m}")), secret) {
                (Ok(url), Ok(secret)) => Some(WebhookConfig { url, secret }),
                (u, s) => {
                    u.err().into_iter().chain(s.err()).for_each(&mut error);
                    None
                }
            }
        }
    };
    let username = raw.smtp_username.clone().filter(|u| !u.is_empty());
    let password = raw.smtp_password.clone().filter(|p| !p.is_empty());
    let smtp = match raw.smtp_host.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
        None => {
            if username.is_some() || password.is_some() || raw.smtp_from.is_some() {
                error("smtp_host: required when other smtp_* fields are set".into());
            }
            None
        }
        Some(host) => {
            let mut ok = true;
            if host.bytes().any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))) {
                error(format!("smtp_host: {host:?} is not a host name or IP address"));
                ok = false;
            }
            if raw.smtp_port == 0 {
                error("smtp_port: must be between 1 and 65535".into());
                ok = false;
            }
            let credentials = match (username, password) {
                (Some(u), Some(p)) => Some((u, p)),
                (None, None) => None,
                (Some(_), None) => {
                    error("smtp_password: required when smtp_username is set".into());
                    None
                }
                (None, Some(_)) => {
                    error("smtp_username: required when smtp_password is set".into());
                    None
                }
            };
            let from = match raw.smtp_from.as_deref().map(parse_mailbox) {
                Some(Ok(f)) => Some(f),
                Some(Err(m)) => {
                    error(format!("smtp_from: {m}"));
                    None
                }
                None => {
                    error("smtp_from: required when smtp_host is set".into());
                    None
                }
            };
            match from {
                Some((from_header, from_address)) if ok => Some(SmtpConfig {
                    host: host.to_owned(),
                    port: raw.smtp_port,
                    credentials,
                    from_header,
                    from_address,
                    starttls: raw.smtp_starttls,
                }),
                _ => None,
            }
        }
    };
    if !(1..=100).contains(&raw.max_attempts) {
        error("max_attempts: must be between 1 and 100".into());
    }
    if raw.retry_base_ms == 0 {
        error("retry_base_ms: must be greater than 0".into());
    }
    if raw.retry_max_ms < raw.retry_base_ms {
        error("retry_max_ms: must be at least retry_base_ms".into());
    }
    if !(100..=600_000).contains(&raw.timeout_ms) {
        error("timeout_ms: must be between 100 and 600000".into());
    }
    NotificationsConfig {
        sweep_interval: Duration::from_millis(raw.sweep_interval_ms),
        webhook,
        smtp,
        max_attempts: raw.max_attempts,
        retry_base: Duration::from_millis(raw.retry_base_ms),
        retry_max: Duration::from_millis(raw.retry_max_ms),
        timeout: Duration::from_millis(raw.timeout_ms),
    }
}

/// `[metrics]`: Prometheus text on `GET /metrics`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    pub enabled: bool,
    /// Serve `/metrics` on its own listener (e.g. `127.0.0.1:9090`) instead of the main one.
    pub listen: Option<String>,
    /// Add `tollgate_key_*` series labelled by key id: one series set per key ever seen.
    pub key_labels: bool,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self { enabled: true, listen: None, key_labels: false }
    }
}

/// Validated `[metrics]`.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// `None`: served on the main listener.
    pub listen: Option<SocketAddr>,
    pub key_labels: bool,
}

fn metrics_config(raw: &RawMetrics, main_listen: SocketAddr, errors: &mut Vec<String>) -> MetricsConfig {
    let listen = raw.listen.as_deref().map(str::trim).filter(|l| !l.is_empty()).and_then(|l| match l.parse() {
        Ok(addr) if addr == main_listen && main_listen.port() != 0 => {
            errors.push(format!("metrics.listen: {l} is the main listen address; leave it unset to serve there"));
            None
        }
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.push(format!("metrics.listen: {l:?} is not an address such as 127.0.0.1:9090"));
            None
        }
    });
    MetricsConfig { enabled: raw.enabled, listen, key_labels: raw.key_labels }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_key: Option<Secret>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// `demo` only: pause between streamed words.
    #[serde(default)]
    pub word_delay_ms: Option<u64>,
    /// `anthropic` only: the `anthropic-version` header (default `2023-06-01`).
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// `gemini`: the API version path segment (default `v1beta`); `azure`: the
    /// `api-version` query (required, e.g. `2024-10-21`).
    #[serde(default)]
    pub api_version: Option<String>,
    /// `openai` only: sent as `OpenAI-Organization`.
    #[serde(default)]
    pub organization: Option<String>,
    /// `openai` only: sent as `OpenAI-Project`.
    #[serde(default)]
    pub project: Option<String>,
    /// `openai` and `azure`: static headers sent with every request (values are secrets:
    /// a custom header may carry a credential).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Secret>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub id: String,
    #[serde(rename = "type")]
    pub model_type: ModelType,
    #[serde(default)]
    pub input_price_per_mtok: f64,
    #[serde(default)]
    pub output_price_per_mtok: f64,
    #[serde(default)]
    pub price_per_image: f64,
    /// The output a request without `max_tokens` is assumed to reach when its cost is
    /// reserved (default 4096).
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    pub channels: Vec<RawChannel>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    pub provider: String,
    /// The model's name at the provider; defaults to the public id.
    #[serde(default)]
    pub model: Option<String>,
    /// Higher first; channels of equal priority share requests by `weight`.
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The groups this channel belongs to; a key pinned to a group uses only its channels.
    /// Empty: the `default` group.
    #[serde(default)]
    pub groups: Vec<String>,
}

fn default_weight() -> u32 {
    1
}

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
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
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
    pub redis_url: Option<Secret>,
    pub redis_prefix: String,
    pub redis_timeout: Duration,
    pub fallback_share: u64,
    pub counter_refresh: Duration,
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

const ENV_PREFIX: &str = "TOLLGATE_";
const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;
const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";
const GEMINI_API_VERSION: &str = "v1beta";
/// Variables with the prefix that are not config fields.
const NON_FIELD_VARS: &[&str] = &["TOLLGATE_CONFIG", "TOLLGATE_LOG"];

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

/// Overlays `TOLLGATE_*` variables on the file's table, typed by the field's default.
fn apply_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigErrors> {
    let defaults = serde_json::to_value(RawConfig::default()).unwrap_or_default();
    let mut errors = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if NON_FIELD_VARS.contains(&name.as_str()) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let Some(default) = path.iter().try_fold(&defaults, |v, k| v.get(k)) else {
            tracing::warn!(variable = %name, "ignoring environment variable: no such config field");
            continue;
        };
        let typed = match default {
            serde_json::Value::Bool(_) | serde_json::Value::Null if matches!(value.as_str(), "true" | "false") => {
                toml::Value::Boolean(value == "true")
            }
            serde_json::Value::Number(_) => match value.trim().parse::<i64>() {
                Ok(n) => toml::Value::Integer(n),
                Err(_) => {
                    errors.push(format!("{name}: must be an integer, got {value:?}"));
                    continue;
                }
            },
            serde_json::Value::Bool(_) => {
                errors.push(format!("{name}: must be true or false, got {value:?}"));
                continue;
            }
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                errors.push(format!("{name}: this section is set in the config file, not the environment"));
                continue;
            }
            serde_json::Value::String(_) | serde_json::Value::Null => toml::Value::String(value),
        };
        if let Err(section) = insert_path(table, &path, typed) {
            errors.push(format!("{name}: `{section}` is not a section in the config file"));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
}

/// Sets `path` in `table`, creating sections; fails with the name of a path element that
/// exists but is not a section.
fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Ok(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            match table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
                toml::Value::Table(t) => insert_path(t, rest, value),
                _ => Err(first.clone()),
            }
        }
    }
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
    let reveal_key = if raw.keys.reveal {
        let text = match (&raw.keys.reveal_key, &raw.keys.reveal_key_file) {
            (Some(k), None) => Ok(k.expose().to_owned()),
            (None, Some(path)) => {
                std::fs::read_to_string(path).map_err(|e| format!("keys.reveal_key_file: cannot read {path}: {e}"))
            }
            (Some(_), Some(_)) => Err("keys.reveal_key: give reveal_key or reveal_key_file, not both".to_owned()),
            (None, None) => {
                Err("keys.reveal_key: required when keys.reveal = true (or keys.reveal_key_file)".to_owned())
            }
        };
        match text.and_then(|t| parse_reveal_key(&t).map_err(|m| format!("keys.reveal_key: {m}"))) {
            Ok(k) => Some(k),
            Err(m) => {
                errors.push(m);
                None
            }
        }
    } else {
        None
    };
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
    let batch = positive("usage.batch_size", raw.usage.batch_size);
    let flush = positive("usage.flush_interval_ms", raw.usage.flush_interval_ms);
    let capacity = positive("usage.queue_capacity", raw.usage.queue_capacity);
    let poll = positive("change_feed.poll_interval_ms", raw.change_feed.poll_interval_ms);
    let notifications = notifications_config(&raw.notifications, &mut errors);
    let metrics = metrics_config(&raw.metrics, listen, &mut errors);

    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
        match tollgate_core::scope::IpNet::parse(p) {
            Ok(net) => trusted_proxies.push(net),
            Err(m) => errors.push(format!("trusted_proxies[{i}]: {m}")),
        }
    }
    let demo = raw.demo.unwrap_or(raw.models.is_empty());
    let mut providers = Vec::new();
    if demo {
        providers.push(ProviderConfig {
            name: "demo".into(),
            kind: ProviderConfigKind::Demo { word_delay: Duration::from_millis(15) },
        });
    }
    for (i, p) in raw.providers.iter().enumerate() {
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
                let api_key = provider_api_key(p, &at, lookup_env, credentials, &mut errors);
                let headers = provider_headers(p, &at, &mut errors);
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
                let api_key = provider_api_key(p, &at, lookup_env, credentials, &mut errors);
                let headers = provider_headers(p, &at, &mut errors);
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
                let api_key = provider_api_key(p, &at, lookup_env, credentials, &mut errors);
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
                let api_key = provider_api_key(p, &at, lookup_env, credentials, &mut errors);
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
    for (i, m) in raw.models.iter().enumerate() {
        let at = format!("models[{i}]");
        if m.id.is_empty() || m.id.len() > 256 || m.id.chars().any(|c| c.is_whitespace() || c.is_control()) {
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
            // A Gemini model name becomes a path segment of the provider's URLs.
            let gemini =
                providers.iter().any(|p| p.name == c.provider && matches!(p.kind, ProviderConfigKind::Gemini { .. }));
            if let (true, Err(msg)) = (gemini, tollgate_proxy::GeminiUpstream::check_model(&upstream_model)) {
                errors.push(format!("{at}.channels[{j}].model: {msg}"));
            }
            // An Azure channel's model is the deployment name, a path segment of its URLs.
            let azure =
                providers.iter().any(|p| p.name == c.provider && matches!(p.kind, ProviderConfigKind::Azure { .. }));
            if let (true, Err(msg)) = (azure, tollgate_proxy::AzureUpstream::check_deployment(&upstream_model)) {
                errors.push(format!("{at}.channels[{j}].model: {msg}"));
            }
            if !(1..=1000).contains(&c.weight) {
                errors.push(format!("{at}.channels[{j}].weight: must be between 1 and 1000"));
            }
            for g in &c.groups {
                if !valid_name(g) {
                    errors
                        .push(format!("{at}.channels[{j}].groups: {g:?} is not a group name (letters, digits, - _ .)"));
                }
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

    let up = &raw.upstream;
    if up.breaker_failures == 0 {
        errors.push("upstream.breaker_failures: must be at least 1".into());
    }
    if !(1..=600_000).contains(&up.retry_base_ms) {
        errors.push("upstream.retry_base_ms: must be between 1 and 600000".into());
    }
    if up.failover_deadline_ms == 0 {
        errors.push("upstream.failover_deadline_ms: must be at least 1".into());
    }
    let limits = &raw.limits;
    if limits.fallback_share == 0 {
        errors.push("limits.fallback_share: must be at least 1".into());
    }
    if !(10..=10_000).contains(&limits.redis_timeout_ms) {
        errors.push("limits.redis_timeout_ms: must be between 10 and 10000".into());
    }
    if !(100..=600_000).contains(&limits.counter_refresh_ms) {
        errors.push("limits.counter_refresh_ms: must be between 100 and 600000".into());
    }
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
        connect_timeout: Duration::from_millis(connect_timeout),
        first_byte_timeout: Duration::from_millis(first_byte_timeout),
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
        redis_url,
        redis_prefix: raw.limits.redis_prefix.clone(),
        redis_timeout: Duration::from_millis(raw.limits.redis_timeout_ms),
        fallback_share: raw.limits.fallback_share.max(1),
        counter_refresh: Duration::from_millis(raw.limits.counter_refresh_ms),
        enforce_balance: raw.billing.enforce_balance,
        providers,
        models,
    })
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

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `http(s)://host[:port][/path]` without credentials, query or fragment; no trailing `/`.
fn normalize_base_url(url: &str) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, text).unwrap();
        load(Some(&path), env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())), Credentials::Required)
    }

    fn errors(r: Result<Config, ConfigErrors>) -> String {
        r.map(|_| String::new()).unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn zero_config_serves_the_demo() {
        let c = load(None, Vec::new(), Credentials::Required).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.database_url.starts_with("sqlite://./tollgate-data/tollgate.db"));
        let ids: Vec<_> = c.models.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["demo-chat", "demo-embed"]);
    }

    #[test]
    fn the_issue_example_loads_with_prices_in_micro_usd() {
        let c = from_toml(
            r#"
            listen = "127.0.0.1:9999"
            [[providers]]
            name = "local"
            kind = "openai"
            base_url = "http://127.0.0.1:9000/v1/"
            api_key = "sk-up"
            [[models]]
            id = "gpt-4o-mini"
            type = "chat"
            input_price_per_mtok = 0.15
            output_price_per_mtok = 0.60
            channels = [{ provider = "local", model = "gpt-4o-mini" }]
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(c.models.len(), 1, "demo is off when models are configured");
        assert_eq!(c.models[0].pricing.input_per_mtok, MicroUsd(150_000));
        assert_eq!(c.models[0].pricing.output_per_mtok, MicroUsd(600_000));
        match &c.providers[0].kind {
            ProviderConfigKind::OpenAi { base_url, api_key, headers } => {
                assert!(headers.is_empty());
                assert_eq!(base_url, "http://127.0.0.1:9000/v1");
                assert_eq!(api_key.expose(), "sk-up");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        assert!(errors(from_toml("lissen = \"x\"", &[])).contains("unknown field `lissen`"));
        let e = errors(from_toml("[[models]]\nid = \"m\"\ntype = \"chat\"\nchannels = []\nprice = 1", &[]));
        assert!(e.contains("models[0]") && e.contains("unknown field `price`"), "{e}");
        let e = errors(from_toml("[upstream]\nconnect_timeout_ms = \"soon\"", &[]));
        assert!(e.contains("upstream.connect_timeout_ms"), "{e}");
    }

    #[test]
    fn bad_values_are_all_reported_by_field() {
        let e = errors(from_toml(
            r#"
            listen = "nowhere"
            [[providers]]
            name = "p"
            kind = "openai"
            base_url = "ftp://x"
            api_key_env = "TOLLGATE_TEST_SURELY_UNSET_VAR"
            [[providers]]
            name = "q"
            kind = "magic"
            [[models]]
            id = "m"
            type = "chat"
            input_price_per_mtok = -1
            channels = [{ provider = "nope" }]
            "#,
            &[],
        ));
        for needle in [
            "listen:",
            "providers[0].base_url",
            "providers[0].api_key_env: environment variable TOLLGATE_TEST_SURELY_UNSET_VAR is not set",
            "providers[1].kind",
            "models[0].input_price_per_mtok",
            "models[0].channels[0].provider",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
    }

    #[test]
    fn environment_overrides_the_file_with_types() {
        let c = from_toml(
            "listen = \"127.0.0.1:1\"\n[usage]\nbatch_size = 5",
            &[
                ("TOLLGATE_LISTEN", "127.0.0.1:2"),
                ("TOLLGATE_USAGE__BATCH_SIZE", "7"),
                ("TOLLGATE_ADMIN_TOKEN", "12345"),
                ("TOLLGATE_DEMO", "false"),
                ("TOLLGATE_NOT_A_FIELD", "x"),
                ("UNRELATED", "y"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:2");
        assert_eq!(c.usage_batch_size, 7);
        assert_eq!(c.admin_token.as_ref().map(Secret::expose), Some("12345"));
        assert!(c.models.is_empty());
        let e = errors(from_toml("", &[("TOLLGATE_MAX_BODY_BYTES", "lots")]));
        assert!(e.contains("TOLLGATE_MAX_BODY_BYTES: must be an integer"), "{e}");
    }

    #[test]
    fn reveal_needs_a_32_byte_key() {
        let e = errors(from_toml("[keys]\nreveal = true", &[]));
        assert!(e.contains("keys.reveal_key: required"), "{e}");
        let e = errors(from_toml("[keys]\nreveal = true\nreveal_key = \"c2hvcnQ=\"", &[]));
        assert!(e.contains("must be 32 bytes"), "{e}");
        let hex = "ab".repeat(32);
        let c = from_toml("", &[("TOLLGATE_KEYS__REVEAL", "true"), ("TOLLGATE_KEYS__REVEAL_KEY", &hex)]).unwrap();
        assert_eq!(c.reveal_key.map(|k| k.0), Some([0xab; 32]));
        assert!(
            !format!(
                "{:?}",
                from_toml("", &[("TOLLGATE_KEYS__REVEAL", "true"), ("TOLLGATE_KEYS__REVEAL_KEY", &hex)]).unwrap()
            )
            .contains("ab, ab")
        );
    }

    #[test]
    fn anthropic_providers_default_their_url_and_version() {
        let c = from_toml(
            r#"
            [[providers]]
            name = "claude"
            kind = "anthropic"
            api_key_env = "ANTHROPIC_KEY"
            [[providers]]
            name = "local-claude"
            kind = "anthropic"
            base_url = "http://127.0.0.1:9001/"
            anthropic_version = "2023-01-01"
            "#,
            &[],
        );
        let e = errors(c);
        assert!(e.contains("providers[0].api_key_env: environment variable ANTHROPIC_KEY is not set"), "{e}");
        let c = super::validate(
            toml::from_str(
                "demo = false\n[[providers]]\nname = \"claude\"\nkind = \"anthropic\"\napi_key_env = \"ANTHROPIC_KEY\"\n\
                 [[providers]]\nname = \"local\"\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9001/\"\n\
                 anthropic_version = \"2023-01-01\"",
            )
            .unwrap(),
            &|v| (v == "ANTHROPIC_KEY").then(|| "sk-ant-x".to_owned()),
            Credentials::Required,
        )
        .unwrap();
        match (&c.providers[0].kind, &c.providers[1].kind) {
            (
                ProviderConfigKind::Anthropic { base_url, api_key, version },
                ProviderConfigKind::Anthropic { base_url: local_url, api_key: local_key, version: local_version },
            ) => {
                assert_eq!(
                    (base_url.as_str(), api_key.expose(), version.as_str()),
                    ("https://api.anthropic.com", "sk-ant-x", "2023-06-01")
                );
                assert_eq!(
                    (local_url.as_str(), local_key.is_empty(), local_version.as_str()),
                    ("http://127.0.0.1:9001", true, "2023-01-01")
                );
            }
            other => panic!("{other:?}"),
        }

        let e = errors(from_toml(
            r#"
            [[providers]]
            name = "a"
            kind = "anthropic"
            anthropic_version = "yesterday, please"
            word_delay_ms = 1
            [[providers]]
            name = "b"
            kind = "openai"
            base_url = "http://127.0.0.1:1/v1"
            anthropic_version = "2023-06-01"
            "#,
            &[],
        ));
        for needle in [
            "providers[0]: api_key or api_key_env is required for api.anthropic.com",
            "providers[0].anthropic_version: must look like",
            "providers[0].word_delay_ms: only for kind \"demo\"",
            "providers[1].anthropic_version: only for kind \"anthropic\"",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
    }

    #[test]
    fn gemini_providers_default_their_url_and_version_and_take_plain_model_ids() {
        let raw = r#"
            [[providers]]
            name = "g"
            kind = "gemini"
            api_key_env = "GEMINI_KEY"
            [[models]]
            id = "flash"
            type = "chat"
            channels = [{ provider = "g", model = "gemini-2.5-flash" }]
            "#;
        let lookup = |v: &str| (v == "GEMINI_KEY").then(|| "AIza-test".to_owned());
        let c = super::validate(toml::from_str(raw).unwrap(), &lookup, Credentials::Required).unwrap();
        match &c.providers[0].kind {
            ProviderConfigKind::Gemini { base_url, api_version, api_key } => assert_eq!(
                (base_url.as_str(), api_version.as_str(), api_key.expose()),
                ("https://generativelanguage.googleapis.com", "v1beta", "AIza-test")
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.models[0].channels, [ChannelConfig::plain("g", "gemini-2.5-flash")]);

        let e = errors(from_toml(
            r#"
            [[providers]]
            name = "g"
            kind = "gemini"
            api_version = "v1/../x"
            [[providers]]
            name = "o"
            kind = "openai"
            base_url = "http://127.0.0.1:1/v1"
            api_version = "v1"
            [[models]]
            id = "m"
            type = "chat"
            channels = [{ provider = "g", model = "models/gemini-2.5-flash" }, { provider = "o", model = "org/any" }]
            "#,
            &[],
        ));
        for needle in [
            "providers[0].api_version: \"v1/../x\" is not an API version",
            "providers[0]: api_key or api_key_env is required for kind \"gemini\"",
            "providers[1].api_version: only for kinds \"gemini\" and \"azure\"",
            "models[0].channels[0].model: \"models/gemini-2.5-flash\" is not a plain Gemini model id",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
        assert!(!e.contains("channels[1].model"), "other providers' model names are theirs: {e}");
    }

    #[test]
    fn azure_providers_need_a_version_a_key_and_plain_deployments() {
        let raw = r#"
            [[providers]]
            name = "az"
            kind = "azure"
            base_url = "https://res.openai.azure.com/"
            api_version = "2025-01-01-preview"
            api_key_env = "AZ_KEY"
            headers = { "X-Tenant" = "t1" }
            [[models]]
            id = "gpt-4o"
            type = "chat"
            channels = [{ provider = "az", model = "gpt-4o-deploy.v2" }]
            "#;
        let lookup = |v: &str| (v == "AZ_KEY").then(|| "az-secret".to_owned());
        let c = super::validate(toml::from_str(raw).unwrap(), &lookup, Credentials::Required).unwrap();
        match &c.providers[0].kind {
            ProviderConfigKind::Azure { base_url, api_version, api_key, headers } => {
                assert_eq!(
                    (base_url.as_str(), api_version.as_str(), api_key.expose()),
                    ("https://res.openai.azure.com", "2025-01-01-preview", "az-secret")
                );
                assert_eq!((headers[0].0.as_str(), headers[0].1.expose()), ("X-Tenant", "t1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.models[0].channels[0].model, "gpt-4o-deploy.v2");

        let e = errors(from_toml(
            r#"
            [[providers]]
            name = "az"
            kind = "azure"
            base_url = "https://key:pw@res.openai.azure.com"
            [[providers]]
            name = "az2"
            kind = "azure"
            base_url = "https://res.openai.azure.com"
            api_version = "latest"
            api_key = "k"
            organization = "org-1"
            [[models]]
            id = "m"
            type = "chat"
            channels = [{ provider = "az2", model = "../admin" }, { provider = "az2" }]
            "#,
            &[],
        ));
        for needle in [
            "providers[0].base_url: must not contain credentials",
            "providers[0].api_version: is required for kind \"azure\"",
            "providers[0]: api_key or api_key_env is required for kind \"azure\"",
            "providers[1].api_version: \"latest\" is not an Azure api-version",
            "providers[1].organization: only for kind \"openai\"",
            "models[0].channels[0].model: \"../admin\" is not an Azure deployment name",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
        assert!(!e.contains("channels[1]"), "the public id \"m\" is a fine deployment name:\n{e}");
    }

    #[test]
    fn openai_providers_take_organization_project_and_safe_extra_headers() {
        let c = from_toml(
            r#"
            [[providers]]
            name = "oa"
            kind = "openai"
            base_url = "https://api.openai.com/v1"
            organization = "org-abc"
            project = "proj_123"
            headers = { "X-Custom" = "v", "HTTP-Referer" = "https://example.com" }
            [[models]]
            id = "m"
            type = "chat"
            channels = [{ provider = "oa" }]
            "#,
            &[],
        )
        .unwrap();
        let ProviderConfigKind::OpenAi { headers, .. } = &c.providers[0].kind else {
            panic!("{:?}", c.providers[0].kind);
        };
        let pairs: Vec<_> = headers.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
        assert_eq!(
            pairs,
            [
                ("OpenAI-Organization", "org-abc"),
                ("OpenAI-Project", "proj_123"),
                ("HTTP-Referer", "https://example.com"),
                ("X-Custom", "v")
            ]
        );
        assert!(!format!("{c:?}").contains("https://example.com"), "header values are redacted in Debug");

        for forbidden in [
            "Authorization",
            "api-key",
            "X-Api-Key",
            "Host",
            "Content-Length",
            "Connection",
            "Proxy-Authorization",
            "TE",
        ] {
            let e = errors(from_toml(
                &format!(
                    "[[providers]]\nname = \"oa\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
                     headers = {{ \"{forbidden}\" = \"x\" }}\n"
                ),
                &[],
            ));
            let needle = format!("providers[0].headers: header \"{forbidden}\" may not be configured");
            assert!(e.contains(&needle), "missing {needle:?} in:\n{e}");
        }
        let e = errors(from_toml(
            r#"
            [[providers]]
            name = "oa"
            kind = "openai"
            base_url = "http://127.0.0.1:1/v1"
            organization = "org-abc"
            headers = { "openai-organization" = "org-other", "Bad Name" = "x", "X-Newline" = "a\nb" }
            [[providers]]
            name = "g"
            kind = "gemini"
            api_key = "k"
            headers = { "X-Custom" = "v" }
            "#,
            &[],
        ));
        for needle in [
            "providers[0].headers: \"openai-organization\" is given twice",
            "providers[0].headers: \"Bad Name\" is not a header name",
            "providers[0].headers: the value of header \"x-newline\" is not a valid header value",
            "providers[1].headers: only for kinds \"openai\" and \"azure\"",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
    }

    #[test]
    fn base_urls_never_carry_credentials() {
        assert!(normalize_base_url("https://user:pw@api.example.com/v1").is_err());
        assert!(normalize_base_url("https://api.example.com/v1?x=1").is_err());
        assert_eq!(normalize_base_url("https://api.example.com/v1/").as_deref(), Ok("https://api.example.com/v1"));
    }

    #[test]
    fn metrics_are_on_the_main_listener_by_default_and_validated() {
        let c = load(None, Vec::new(), Credentials::Required).unwrap();
        assert!(c.metrics.enabled && c.metrics.listen.is_none() && !c.metrics.key_labels);

        let c = from_toml("[metrics]\nlisten = \"127.0.0.1:9090\"\nkey_labels = true", &[]).unwrap();
        assert_eq!(c.metrics.listen.map(|a| a.to_string()).as_deref(), Some("127.0.0.1:9090"));
        assert!(c.metrics.key_labels);
        let c = from_toml(
            "[metrics]\nlisten = \"127.0.0.1:9090\"",
            &[("TOLLGATE_METRICS__ENABLED", "false"), ("TOLLGATE_METRICS__LISTEN", "0.0.0.0:9100")],
        )
        .unwrap();
        assert!(!c.metrics.enabled);
        assert_eq!(c.metrics.listen.map(|a| a.to_string()).as_deref(), Some("0.0.0.0:9100"));
        let c = from_toml("", &[("TOLLGATE_METRICS__KEY_LABELS", "true"), ("TOLLGATE_METRICS__LISTEN", "")]).unwrap();
        assert!(c.metrics.key_labels && c.metrics.listen.is_none());

        let e = errors(from_toml("[metrics]\nlisten = \"nowhere\"", &[]));
        assert!(e.contains("metrics.listen: \"nowhere\" is not an address"), "{e}");
        let e = errors(from_toml("listen = \"127.0.0.1:8080\"\n[metrics]\nlisten = \"127.0.0.1:8080\"", &[]));
        assert!(e.contains("metrics.listen: 127.0.0.1:8080 is the main listen address"), "{e}");
        let e = errors(from_toml("[metrics]\nenable = true", &[]));
        assert!(e.contains("metrics") && e.contains("unknown field `enable`"), "{e}");
        let e = errors(from_toml("", &[("TOLLGATE_METRICS__ENABLED", "yes")]));
        assert!(e.contains("TOLLGATE_METRICS__ENABLED: must be true or false"), "{e}");
    }

    #[test]
    fn notifications_are_off_by_default_and_validated_by_field() {
        let c = load(None, Vec::new(), Credentials::Required).unwrap();
        assert!(c.notifications.webhook.is_none() && c.notifications.smtp.is_none());
        assert_eq!(c.notifications.sweep_interval, Duration::from_secs(30));
        assert_eq!((c.notifications.max_attempts, c.notifications.retry_base), (5, Duration::from_secs(1)));

        let e = errors(from_toml(
            r#"
            [notifications]
            sweep_interval_ms = 0
            webhook_url = "ftp://hooks.example.com/x"
            smtp_host = "smtp.example.com"
            smtp_username = "u"
            smtp_from = "not an address"
            max_attempts = 0
            retry_base_ms = 10
            retry_max_ms = 5
            "#,
            &[],
        ));
        for needle in [
            "notifications.sweep_interval_ms",
            "notifications.webhook_url: must start with http:// or https://",
            "notifications.webhook_secret: required when webhook_url is set",
            "notifications.smtp_password: required when smtp_username is set",
            "notifications.smtp_from:",
            "notifications.max_attempts",
            "notifications.retry_max_ms",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
        let e = errors(from_toml("[notifications]\nwebhook_secret = \"0123456789abcdef\"", &[]));
        assert!(e.contains("notifications.webhook_secret: set without webhook_url"), "{e}");
        let e = errors(from_toml("[notifications]\nsmtp_from = \"a@b.c\"", &[]));
        assert!(e.contains("notifications.smtp_host: required"), "{e}");
        let e = errors(from_toml(
            "[notifications]\nwebhook_url = \"https://h.example/x\"\nwebhook_secret = \"short\"",
            &[],
        ));
        assert!(e.contains("at least 16 characters") && !e.contains("short"), "{e}");
        let e = errors(from_toml("[notifications]\nsmtp_hots = \"x\"", &[]));
        assert!(e.contains("unknown field `smtp_hots`"), "{e}");
    }

    #[test]
    fn notifications_come_from_the_environment_and_keep_their_secrets() {
        let c = from_toml(
            "[notifications]\nsmtp_from = \"Tollgate <alerts@example.com>\"",
            &[
                ("TOLLGATE_NOTIFICATIONS__WEBHOOK_URL", "https://hooks.example.com/T0KEN-in-path"),
                ("TOLLGATE_NOTIFICATIONS__WEBHOOK_SECRET", "whsec-0123456789abcdef"),
                ("TOLLGATE_NOTIFICATIONS__SMTP_HOST", "smtp.example.com"),
                ("TOLLGATE_NOTIFICATIONS__SMTP_PORT", "2525"),
                ("TOLLGATE_NOTIFICATIONS__SMTP_USERNAME", "mailer"),
                ("TOLLGATE_NOTIFICATIONS__SMTP_PASSWORD", "smtp-pass-xyz"),
                ("TOLLGATE_NOTIFICATIONS__SMTP_STARTTLS", "false"),
                ("TOLLGATE_NOTIFICATIONS__SWEEP_INTERVAL_MS", "200"),
                ("TOLLGATE_NOTIFICATIONS__RETRY_BASE_MS", "50"),
            ],
        )
        .unwrap();
        let n = &c.notifications;
        let webhook = n.webhook.as_ref().unwrap();
        assert_eq!(webhook.url.to_string(), "https://hooks.example.com/T0KEN-in-path");
        assert_eq!(webhook.secret.expose(), "whsec-0123456789abcdef");
        let smtp = n.smtp.as_ref().unwrap();
        assert_eq!((smtp.host.as_str(), smtp.port, smtp.starttls), ("smtp.example.com", 2525, false));
        assert_eq!(smtp.from_address, "alerts@example.com");
        assert_eq!(smtp.from_header, "Tollgate <alerts@example.com>");
        assert_eq!(smtp.credentials.as_ref().map(|(u, p)| (u.as_str(), p.expose())), Some(("mailer", "smtp-pass-xyz")));
        assert_eq!((n.sweep_interval, n.retry_base), (Duration::from_millis(200), Duration::from_millis(50)));
        let shown = format!("{c:?}");
        for secret in ["whsec-0123456789abcdef", "smtp-pass-xyz", "T0KEN-in-path"] {
            assert!(!shown.contains(secret), "{secret} leaked into Debug");
        }
    }
}
