//! `[notifications]` validation: the webhook and SMTP settings and their checks.

use std::time::Duration;

use tollgate_core::Secret;

use super::RawNotifications;

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

pub(super) fn notifications_config(raw: &RawNotifications, errors: &mut Vec<String>) -> NotificationsConfig {
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
