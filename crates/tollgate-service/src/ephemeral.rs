//! Minting ephemeral tokens: short-lived, derived from an active key, with its scopes or
//! narrower; they count against the key and die with it. The token format and its
//! verification live in `tollgate_core::ephemeral`; nothing is stored but an audit entry.

use serde::Serialize;
use tollgate_core::ephemeral::EphemeralClaims;
use tollgate_core::ids::random_base62;
use tollgate_core::key::{KeySettings, KeyStatus};
use tollgate_core::scope::{IpNet, ModelScope};
use tollgate_core::time::{now_millis, to_rfc3339};

use crate::principal::Actor;
use crate::settings::SettingsInput;
use crate::{Result, ServiceError, Services};

/// What an ephemeral token may be narrowed to (each list empty: as the parent).
#[derive(Debug, Clone, Default)]
pub struct EphemeralRequest {
    /// Default 3600; at most [`MAX_EPHEMERAL_TTL_SECS`]; never beyond the parent's expiry.
    pub ttl_seconds: Option<u64>,
    pub models: Vec<String>,
    pub allowed_endpoints: Vec<String>,
    pub allowed_providers: Vec<String>,
    pub ip_allowlist: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct EphemeralToken {
    pub token: String,
    pub expires_at: String,
    pub key_id: String,
}

pub const DEFAULT_EPHEMERAL_TTL_SECS: u64 = 3600;
pub const MAX_EPHEMERAL_TTL_SECS: u64 = 86_400;

impl Services {
    /// A short-lived token derived from an active key, with its scopes or narrower; it
    /// counts against the key and dies with it (see `tollgate_core::ephemeral`).
    pub async fn create_ephemeral(&self, actor: &Actor, id: &str, req: EphemeralRequest) -> Result<EphemeralToken> {
        let key = self.visible_key(actor, id).await?;
        let now = now_millis();
        if key.effective_status(now) != KeyStatus::Active {
            return Err(ServiceError::invalid("status", "ephemeral tokens come only from active keys"));
        }
        let ttl = req.ttl_seconds.unwrap_or(DEFAULT_EPHEMERAL_TTL_SECS);
        if !(1..=MAX_EPHEMERAL_TTL_SECS).contains(&ttl) {
            return Err(ServiceError::invalid("ttl_seconds", format!("must be from 1 to {MAX_EPHEMERAL_TTL_SECS}")));
        }
        let mut expires_at = now + i64::try_from(ttl).unwrap_or(0) * 1000;
        if let Some(parent_expiry) = key.expires_at {
            expires_at = expires_at.min(parent_expiry);
        }
        // Validate and normalise exactly as key settings are, then require each list to
        // stay inside the parent's where the parent is restricted.
        let narrowed = SettingsInput {
            models: Some(Some(req.models)),
            allowed_endpoints: Some(Some(req.allowed_endpoints)),
            allowed_providers: Some(Some(req.allowed_providers)),
            ip_allowlist: Some(Some(req.ip_allowlist)),
            ..Default::default()
        }
        .apply(&KeySettings::default())?;
        let parent = &key.settings;
        let wider = |field: &'static str| ServiceError::invalid(field, "may not be wider than the parent key's");
        if parent.model_scope == ModelScope::List && narrowed.models.iter().any(|m| !parent.models.contains(m)) {
            return Err(wider("models"));
        }
        let outside =
            |mine: &[String], theirs: &[String]| !theirs.is_empty() && mine.iter().any(|x| !theirs.contains(x));
        if outside(&narrowed.allowed_endpoints, &parent.allowed_endpoints) {
            return Err(wider("allowed_endpoints"));
        }
        if outside(&narrowed.allowed_providers, &parent.allowed_providers) {
            return Err(wider("allowed_providers"));
        }
        let parent_nets: Vec<IpNet> = parent.ip_allowlist.iter().filter_map(|n| IpNet::parse(n).ok()).collect();
        let net_outside =
            |n: &String| IpNet::parse(n).map_or(true, |net| !parent_nets.iter().any(|p| net.is_within(p)));
        if !parent_nets.is_empty() && narrowed.ip_allowlist.iter().any(net_outside) {
            return Err(wider("ip_allowlist"));
        }
        let claims = EphemeralClaims {
            key_id: key.id.clone(),
            expires_at,
            nonce: random_base62(12),
            models: narrowed.models,
            endpoints: narrowed.allowed_endpoints,
            providers: narrowed.allowed_providers,
            ip_allowlist: narrowed.ip_allowlist,
        };
        let token = claims.encode(self.key_format.prefix(), &self.digester);
        let entry = actor.audit(&key.org_id, "key.ephemeral", "key", id).with_after(Some(serde_json::json!({
            "expires_at": to_rfc3339(expires_at),
            "models": claims.models,
            "allowed_endpoints": claims.endpoints,
            "allowed_providers": claims.providers,
            "ip_allowlist": claims.ip_allowlist,
        })));
        self.store.record_audit(&entry).await?;
        Ok(EphemeralToken { token, expires_at: to_rfc3339(expires_at), key_id: key.id })
    }
}
