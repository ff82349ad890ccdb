//! Who is calling: the key from `Authorization: Bearer` or `x-api-key`, checked in order
//! of cost — format and checksum (pure CPU, no lookup), then the snapshot by digest
//! (including a rotated-out secret still in its grace period), then status and expiry
//! against the clock, then the source address against the key's allowlist.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use tollgate_core::ephemeral::EphemeralClaims;
use tollgate_core::key::{KeyStatus, effective_status};
use tollgate_core::time::UnixMillis;
use tollgate_core::{ApiError, ErrorCode};

use crate::DataPlane;
use crate::snapshot::KeyEntry;

/// The presented secret, if any. Never logged.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

/// Why a request was refused at authentication.
pub(crate) enum Refusal {
    /// It named no known key: missing, malformed, bad checksum, unknown digest, unknown
    /// ephemeral parent, or a rotated-out secret past its grace (counted, not logged).
    Unknown,
    /// A known key, refused (disabled, expired, revoked, address not allowed): its row is
    /// attributed to the key.
    Known(Arc<KeyEntry>, ApiError),
}

/// The calling key, checked for status, expiry and source address.
pub(crate) fn authenticate(
    dp: &DataPlane,
    headers: &HeaderMap,
    client_ip: Option<IpAddr>,
    now: UnixMillis,
) -> Result<Arc<KeyEntry>, Refusal> {
    let secret = presented_key(headers).ok_or(Refusal::Unknown)?;
    let key = match secret.strip_prefix(dp.ephemeral_prefix.as_str()) {
        Some(body) => ephemeral_key(dp, body, now)?,
        None => {
            if !dp.key_format.is_well_formed(secret) {
                return Err(Refusal::Unknown);
            }
            let digest = dp.digester.digest(secret);
            let auth = dp.snapshot.load().keys.get(&digest).cloned().ok_or(Refusal::Unknown)?;
            if auth.valid_until.is_some_and(|until| until <= now) {
                // A secret rotated out whose grace period is over.
                return Err(Refusal::Unknown);
            }
            auth.key
        }
    };
    let refuse = |err: ApiError| Err(Refusal::Known(key.clone(), err));
    match effective_status(key.status, key.expires_at, now) {
        KeyStatus::Active => {}
        KeyStatus::Expired => return refuse(ApiError::new(ErrorCode::KeyExpired, "This API key has expired.")),
        KeyStatus::Inactive => return refuse(ApiError::new(ErrorCode::KeyDisabled, "This API key is disabled.")),
        KeyStatus::Revoked => return refuse(ApiError::invalid_api_key()),
        KeyStatus::Exhausted => {
            return refuse(ApiError::new(
                ErrorCode::InsufficientQuota,
                "This API key has used its whole budget or token quota.",
            ));
        }
    }
    if key.ip_restricted() && !client_ip.is_some_and(|ip| key.allows_ip(ip)) {
        return refuse(ApiError::new(
            ErrorCode::IpNotAllowed,
            "Requests from this address are not allowed for this API key.",
        ));
    }
    Ok(key)
}

/// The parent key of a genuine ephemeral token, carrying the token's narrowing. An
/// expired token of a known parent is refused as that key's; the parent's own status is
/// checked by the caller like any key's.
fn ephemeral_key(dp: &DataPlane, body: &str, now: UnixMillis) -> Result<Arc<KeyEntry>, Refusal> {
    let claims = EphemeralClaims::decode(body, &dp.digester).ok_or(Refusal::Unknown)?;
    let parent = dp.snapshot.load().keys_by_id.get(&claims.key_id).cloned().ok_or(Refusal::Unknown)?;
    if claims.expires_at <= now {
        return Err(Refusal::Known(parent, ApiError::new(ErrorCode::KeyExpired, "This ephemeral token has expired.")));
    }
    let mut entry = (*parent).clone();
    entry.narrowing = Some(Arc::new(claims.scopes()));
    Ok(Arc::new(entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn key_comes_from_bearer_or_x_api_key() {
        assert_eq!(presented_key(&headers("authorization", "Bearer sk-1")), Some("sk-1"));
        assert_eq!(presented_key(&headers("authorization", "bearer  sk-1 ")), Some("sk-1"));
        assert_eq!(presented_key(&headers("authorization", "Basic abc")), None);
        assert_eq!(presented_key(&headers("x-api-key", "sk-2")), Some("sk-2"));
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }
}
