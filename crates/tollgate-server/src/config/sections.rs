//! Validation of the smaller sections: `[keys]` (the reveal key), `[metrics]`, `[upstream]`,
//! `[limits]` and `[server]`.

use std::net::SocketAddr;
use std::time::Duration;

use super::{RawKeys, RawLimits, RawMetrics, RawServer, RawUpstream};

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

/// The sealing key when `keys.reveal = true`, from `reveal_key` or `reveal_key_file`.
pub(super) fn reveal_key(keys: &RawKeys, errors: &mut Vec<String>) -> Option<RevealKey> {
    if keys.reveal {
        let text = match (&keys.reveal_key, &keys.reveal_key_file) {
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

pub(super) fn metrics_config(raw: &RawMetrics, main_listen: SocketAddr, errors: &mut Vec<String>) -> MetricsConfig {
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

/// The `[upstream]` and `[limits]` bounds not checked where their values are read.
pub(super) fn check_upstream_and_limits(up: &RawUpstream, limits: &RawLimits, errors: &mut Vec<String>) {
    if up.breaker_failures == 0 {
        errors.push("upstream.breaker_failures: must be at least 1".into());
    }
    if !(1..=600_000).contains(&up.retry_base_ms) {
        errors.push("upstream.retry_base_ms: must be between 1 and 600000".into());
    }
    if up.failover_deadline_ms == 0 {
        errors.push("upstream.failover_deadline_ms: must be at least 1".into());
    }
    if limits.fallback_share == 0 {
        errors.push("limits.fallback_share: must be at least 1".into());
    }
    if !(10..=10_000).contains(&limits.redis_timeout_ms) {
        errors.push("limits.redis_timeout_ms: must be between 10 and 10000".into());
    }
    if !(1..=10_000_000).contains(&limits.auth_failure_addresses) {
        errors.push("limits.auth_failure_addresses: must be between 1 and 10000000".into());
    }
    if !(100..=600_000).contains(&limits.counter_refresh_ms) {
        errors.push("limits.counter_refresh_ms: must be between 100 and 600000".into());
    }
}

/// Validated `[server]`: the limits every client connection is held to.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_idle_timeout: Duration,
    /// 0: no minimum rate.
    pub body_min_bytes_per_sec: u64,
    pub max_connections: usize,
    pub http2_max_concurrent_streams: u32,
    pub http2_max_header_list_size: u32,
    pub http2_keep_alive_interval: Option<Duration>,
    pub http2_keep_alive_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let mut errors = Vec::new();
        server_config(&RawServer::default(), &mut errors)
    }
}

pub(super) fn server_config(raw: &RawServer, errors: &mut Vec<String>) -> ServerConfig {
    let mut ms = |field: &str, v: u64| {
        if !(1..=3_600_000).contains(&v) {
            errors.push(format!("server.{field}: must be between 1 and 3600000"));
        }
        Duration::from_millis(v)
    };
    let header_read_timeout = ms("header_read_timeout_ms", raw.header_read_timeout_ms);
    let idle_timeout = ms("idle_timeout_ms", raw.idle_timeout_ms);
    let body_idle_timeout = ms("body_idle_timeout_ms", raw.body_idle_timeout_ms);
    let http2_keep_alive_timeout = ms("http2_keep_alive_timeout_ms", raw.http2_keep_alive_timeout_ms);
    if raw.max_connections == 0 {
        errors.push("server.max_connections: must be at least 1".into());
    }
    if raw.http2_max_concurrent_streams == 0 {
        errors.push("server.http2_max_concurrent_streams: must be at least 1".into());
    }
    if raw.http2_max_header_list_size < 1024 {
        errors.push("server.http2_max_header_list_size: must be at least 1024".into());
    }
    ServerConfig {
        header_read_timeout,
        idle_timeout,
        body_idle_timeout,
        body_min_bytes_per_sec: raw.body_min_bytes_per_sec,
        max_connections: usize::try_from(raw.max_connections).unwrap_or(usize::MAX),
        http2_max_concurrent_streams: raw.http2_max_concurrent_streams,
        http2_max_header_list_size: raw.http2_max_header_list_size,
        http2_keep_alive_interval: (raw.http2_keep_alive_interval_ms > 0)
            .then(|| Duration::from_millis(raw.http2_keep_alive_interval_ms)),
        http2_keep_alive_timeout,
    }
}
