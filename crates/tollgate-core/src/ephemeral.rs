//! Ephemeral tokens: short-lived credentials derived from a key, with the key's scopes
//! or narrower, that count against the key. They are stateless: `{prefix}eph_` +
//! base64url(JSON claims) + `.` + base64url(HMAC-SHA256 under a pepper-derived key). The
//! data plane verifies the MAC, the expiry and the parent (which must still be active),
//! so revoking or disabling the parent ends every token derived from it at once.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::key::Digester;
use crate::scope::{IpNet, KeyScopes, ModelScope, parse_endpoint};
use crate::time::UnixMillis;

/// What a token says. Empty lists narrow nothing (the parent's scopes still apply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EphemeralClaims {
    /// The parent key's id.
    #[serde(rename = "k")]
    pub key_id: String,
    #[serde(rename = "x")]
    pub expires_at: UnixMillis,
    /// Random, so that two tokens minted in the same millisecond differ.
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "m", default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(rename = "e", default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
    #[serde(rename = "i", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allowlist: Vec<String>,
}

const DOMAIN: &[u8] = b"tollgate-ephemeral-v1";

/// The token prefix for a key prefix: `sk-tg-` → `sk-tg-eph_`.
pub fn token_prefix(key_prefix: &str) -> String {
    format!("{key_prefix}eph_")
}

impl EphemeralClaims {
    /// The full token.
    pub fn encode(&self, key_prefix: &str, digester: &Digester) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default());
        let mac = URL_SAFE_NO_PAD.encode(digester.keyed(&[DOMAIN, payload.as_bytes()]));
        format!("{}{payload}.{mac}", token_prefix(key_prefix))
    }

    /// The claims of a genuine token body (what follows the prefix), or `None`. Does
    /// not check the expiry: the caller compares with its clock.
    pub fn decode(body: &str, digester: &Digester) -> Option<Self> {
        let (payload, mac) = body.split_once('.')?;
        if payload.len() > 8192 {
            return None;
        }
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = digester.keyed(&[DOMAIN, payload.as_bytes()]);
        if !bool::from(expected.as_slice().ct_eq(&mac)) {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }

    /// The narrowing, as scopes to check in addition to the parent's.
    pub fn scopes(&self) -> KeyScopes {
        KeyScopes {
            model_scope: if self.models.is_empty() { ModelScope::All } else { ModelScope::List },
            models: self.models.iter().cloned().collect(),
            endpoints: self.endpoints.iter().filter_map(|e| parse_endpoint(e).ok()).collect(),
            endpoints_restricted: !self.endpoints.is_empty(),
            providers: self.providers.iter().cloned().collect(),
            ip_allowlist: self.ip_allowlist.iter().filter_map(|s| IpNet::parse(s).ok()).collect(),
            ip_restricted: !self.ip_allowlist.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> EphemeralClaims {
        EphemeralClaims {
            key_id: "key_1".into(),
            expires_at: 5_000,
            nonce: "n".into(),
            models: vec!["m".into()],
            endpoints: vec![],
            providers: vec![],
            ip_allowlist: vec![],
        }
    }

    #[test]
    fn round_trips_and_rejects_tampering() {
        let d = Digester::new(b"pepper");
        let token = claims().encode("sk-tg-", &d);
        let body = token.strip_prefix("sk-tg-eph_").unwrap();
        assert_eq!(EphemeralClaims::decode(body, &d), Some(claims()));
        assert_eq!(EphemeralClaims::decode(body, &Digester::new(b"other")), None, "another pepper");
        let mut forged = claims();
        forged.expires_at = i64::MAX;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let mac = body.split_once('.').unwrap().1;
        assert_eq!(EphemeralClaims::decode(&format!("{forged_payload}.{mac}"), &d), None, "claims changed");
        assert_eq!(EphemeralClaims::decode("garbage", &d), None);
    }
}
