//! The `Raw*` structs: the configuration as written (file plus environment), with the
//! defaults of every field, before validation.

use serde::{Deserialize, Serialize};
use tollgate_core::Secret;
use tollgate_core::model::ModelType;

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
    /// Sign-up policy (`[auth] signup`).
    pub auth: super::auth::RawAuth,
    pub keys: RawKeys,
    pub upstream: RawUpstream,
    pub usage: RawUsage,
    pub limits: RawLimits,
    pub billing: RawBilling,
    pub change_feed: RawChangeFeed,
    pub notifications: RawNotifications,
    pub metrics: RawMetrics,
    /// `[server]`: client connections (timeouts, the connection cap, HTTP/2 limits).
    pub server: RawServer,
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
            auth: Default::default(),
            keys: RawKeys::default(),
            upstream: RawUpstream::default(),
            usage: RawUsage::default(),
            limits: RawLimits::default(),
            billing: RawBilling::default(),
            change_feed: RawChangeFeed::default(),
            notifications: RawNotifications::default(),
            metrics: RawMetrics::default(),
            server: RawServer::default(),
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

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub connect_timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
    /// The longest silence between two chunks of an upstream response (a stream that
    /// keeps sending is never cut); past it the response ends as interrupted.
    pub stream_idle_timeout_ms: u64,
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
            stream_idle_timeout_ms: 300_000,
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
    /// Requests without a known key an address may make in a minute before its further
    /// failing requests are answered `429` (0: never); a valid key always passes.
    pub auth_failures_per_minute: u64,
    /// Addresses whose failures are counted apart at once; past it they share `other`.
    pub auth_failure_addresses: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            redis_prefix: "tg:".into(),
            redis_timeout_ms: 250,
            fallback_share: 1,
            counter_refresh_ms: 1_000,
            auth_failures_per_minute: 60,
            auth_failure_addresses: 65_536,
        }
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

/// `[server]`: what a client connection may cost the gateway. Timeouts never apply while a
/// response is being sent (a long stream is legitimate).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// A request head must arrive whole within this time: from the accept for the first
    /// request, from the end of the previous response on a kept-alive HTTP/1.1 connection.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout_ms: u64,
    /// The longest silence within a request body.
    pub body_idle_timeout_ms: u64,
    /// The slowest average a request body may arrive at once `body_idle_timeout_ms` has
    /// passed, in bytes per second (0: no minimum).
    pub body_min_bytes_per_sec: u64,
    /// Open client connections at once; past it a new one is answered `503` and closed.
    pub max_connections: u64,
    pub http2_max_concurrent_streams: u32,
    pub http2_max_header_list_size: u32,
    /// HTTP/2 keep-alive pings on an otherwise silent connection (0: none).
    pub http2_keep_alive_interval_ms: u64,
    /// A ping unanswered this long closes the connection.
    pub http2_keep_alive_timeout_ms: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            body_idle_timeout_ms: 30_000,
            body_min_bytes_per_sec: 1_024,
            max_connections: 10_000,
            http2_max_concurrent_streams: 100,
            http2_max_header_list_size: 64 << 10,
            http2_keep_alive_interval_ms: 30_000,
            http2_keep_alive_timeout_ms: 20_000,
        }
    }
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
