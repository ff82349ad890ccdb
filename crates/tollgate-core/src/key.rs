//! API keys: the secret's format, its checksum, its digest, and the key record that the
//! store keeps and the data plane checks.
//!
//! Format: `prefix` (default `sk-tg-`), then 30 base62 characters of randomness (178
//! bits), then 6 base62 characters encoding the CRC32 of those 30. A typo or a random string fails
//! the checksum and is rejected without any lookup. The secret itself is never stored:
//! only `HMAC-SHA256(pepper, secret)`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::{BASE62, random_base62};
use crate::time::UnixMillis;

pub const DEFAULT_PREFIX: &str = "sk-tg-";
const BODY_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;

/// The key format in use (the prefix is configurable).
#[derive(Debug, Clone)]
pub struct KeyFormat {
    prefix: String,
}

impl Default for KeyFormat {
    fn default() -> Self {
        Self { prefix: DEFAULT_PREFIX.to_owned() }
    }
}

impl KeyFormat {
    /// A prefix is 1–16 characters of `[A-Za-z0-9_-]`.
    pub fn new(prefix: &str) -> Result<Self, String> {
        let ok = (1..=16).contains(&prefix.len())
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self { prefix: prefix.to_owned() })
        } else {
            Err("must be 1-16 characters of letters, digits, '-' or '_'".to_owned())
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Mints a new secret. Shown to its owner once, then only its digest exists.
    pub fn generate(&self) -> String {
        let body = random_base62(BODY_LEN);
        let mut s = String::with_capacity(self.prefix.len() + BODY_LEN + CHECKSUM_LEN);
        s.push_str(&self.prefix);
        s.push_str(&body);
        s.push_str(&checksum(body.as_bytes()));
        s
    }

    /// A secret derived from `seed` (at least 32 bytes of keyed-hash output). Used for
    /// idempotent rotation: a retried request with the same idempotency key re-derives the
    /// same secret instead of minting another. The seed must be unpredictable.
    pub fn derive(&self, seed: &[u8; 32]) -> String {
        let mut body = String::with_capacity(BODY_LEN);
        let mut counter = 0u8;
        while body.len() < BODY_LEN {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(seed).unwrap_or_else(|_| unreachable_hmac());
            mac.update(&[counter]);
            for b in mac.finalize().into_bytes() {
                if b < 248 && body.len() < BODY_LEN {
                    body.push(BASE62[usize::from(b % 62)] as char);
                }
            }
            counter = counter.wrapping_add(1);
        }
        let mut s = String::with_capacity(self.prefix.len() + BODY_LEN + CHECKSUM_LEN);
        s.push_str(&self.prefix);
        s.push_str(&body);
        s.push_str(&checksum(body.as_bytes()));
        s
    }

    /// Whether `candidate` has this format and a correct checksum. Pure CPU, no lookup.
    pub fn is_well_formed(&self, candidate: &str) -> bool {
        let Some(rest) = candidate.strip_prefix(self.prefix.as_str()) else {
            return false;
        };
        if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return false;
        }
        let (body, sum) = rest.split_at(BODY_LEN);
        checksum(body.as_bytes()) == sum
    }

    /// What tables show instead of the secret: `sk-tg-…last4`.
    pub fn preview(&self, secret: &str) -> String {
        let tail = secret.get(secret.len().saturating_sub(4)..).unwrap_or("");
        format!("{}…{tail}", self.prefix)
    }
}

fn checksum(body: &[u8]) -> String {
    let mut n = crc32fast::hash(body);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// `HMAC-SHA256(pepper, secret)`: the only form in which a key is stored or looked up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Eight hex characters identify a digest in debugging without being useful to anyone.
        write!(f, "KeyDigest({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

impl KeyDigest {
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }
}

/// Computes key digests with the server's pepper.
#[derive(Clone)]
pub struct Digester {
    mac: Hmac<Sha256>,
}

impl Digester {
    pub fn new(pepper: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper).unwrap_or_else(|_| unreachable_hmac());
        Self { mac }
    }

    /// A keyed hash of `parts` under the pepper, for derivations other than key digests
    /// (each caller passes its own domain label first).
    pub fn keyed(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for p in parts {
            mac.update(&(p.len() as u64).to_le_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    pub fn digest(&self, secret: &str) -> KeyDigest {
        let mut mac = self.mac.clone();
        mac.update(secret.as_bytes());
        KeyDigest(mac.finalize().into_bytes().into())
    }
}

#[expect(clippy::panic, reason = "HMAC::new_from_slice never fails")]
fn unreachable_hmac() -> Hmac<Sha256> {
    panic!("HMAC rejected its key")
}

/// Lifecycle status as stored. `expired` is never stored: it is derived from the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Inactive,
    Expired,
    Revoked,
    Exhausted,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Exhausted => "exhausted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => Self::Active,
            "inactive" => Self::Inactive,
            "expired" => Self::Expired,
            "revoked" => Self::Revoked,
            "exhausted" => Self::Exhausted,
            _ => return None,
        })
    }
}

/// A key as the store keeps it (never the secret).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub org_id: String,
    pub team_id: String,
    /// The member the key belongs to.
    pub owner_id: String,
    pub digest: KeyDigest,
    pub preview: String,
    pub status: KeyStatus,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    pub last_used_at: Option<UnixMillis>,
    pub request_count: i64,
    pub tokens_used: i64,
    pub spend: crate::MicroUsd,
    pub settings: KeySettings,
    /// After a rotation with a grace period: the old secret's digest and when it stops.
    pub previous_digest: Option<(KeyDigest, UnixMillis)>,
    /// SHA-256 (hex) of the `Idempotency-Key` of the last rotation, to recognise retries.
    pub rotation_key: Option<String>,
    /// Only with `keys.reveal = true`: the secret sealed with AES-256-GCM.
    pub secret_sealed: Option<Vec<u8>>,
}

/// A key's scopes and limits as stored (one JSON document). Every list empty and every
/// limit `None` means an unrestricted key. Validated by the service layer before storing.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct KeySettings {
    pub model_scope: crate::scope::ModelScope,
    pub models: Vec<String>,
    /// Paths such as `/v1/embeddings`.
    pub allowed_endpoints: Vec<String>,
    pub allowed_providers: Vec<String>,
    /// IPs and CIDRs, normalised (`10.0.0.0/8`).
    pub ip_allowlist: Vec<String>,
    pub group: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub mcp: serde_json::Map<String, serde_json::Value>,
    /// Hard USD cap in micro-USD; `None` draws on the organization's balance.
    pub budget_micros: Option<i64>,
    pub budget_alert_thresholds: Vec<u8>,
    pub token_quota: Option<i64>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
}

impl KeySettings {
    /// The checkable form. Settings are validated before they are stored; should an
    /// entry still not parse, an allow-list only ever becomes narrower, never open.
    pub fn scopes(&self) -> crate::scope::KeyScopes {
        use crate::scope::{IpNet, KeyScopes, parse_endpoint};
        KeyScopes {
            model_scope: self.model_scope,
            models: self.models.iter().cloned().collect(),
            endpoints: self.allowed_endpoints.iter().filter_map(|e| parse_endpoint(e).ok()).collect(),
            endpoints_restricted: !self.allowed_endpoints.is_empty(),
            providers: self.allowed_providers.iter().cloned().collect(),
            ip_allowlist: self.ip_allowlist.iter().filter_map(|s| IpNet::parse(s).ok()).collect(),
            ip_restricted: !self.ip_allowlist.is_empty(),
        }
    }
}

impl KeyRecord {
    /// The status a caller sees at `now`: a stored `active` past its expiry is `expired`;
    /// an active key whose token quota or budget is used up is `exhausted` (raising the
    /// limit brings it back — nothing is written).
    pub fn effective_status(&self, now: UnixMillis) -> KeyStatus {
        match effective_status(self.status, self.expires_at, now) {
            KeyStatus::Active if self.is_spent() => KeyStatus::Exhausted,
            s => s,
        }
    }

    /// Whether the key's counters have reached its token quota or budget.
    pub fn is_spent(&self) -> bool {
        self.settings.token_quota.is_some_and(|q| self.tokens_used >= q)
            || self.settings.budget_micros.is_some_and(|b| self.spend.0 >= b)
    }
}

/// The status a caller sees at `now`: `expired` is derived from the clock at every
/// request, never written by a sweeper.
pub fn effective_status(stored: KeyStatus, expires_at: Option<UnixMillis>, now: UnixMillis) -> KeyStatus {
    match (stored, expires_at) {
        (KeyStatus::Active, Some(exp)) if exp <= now => KeyStatus::Expired,
        (s, _) => s,
    }
}

/// Expiry presets offered by the API, CLI and dashboard.
pub fn parse_expires_in(preset: &str) -> Result<Option<i64>, String> {
    const DAY: i64 = 86_400_000;
    Ok(Some(match preset {
        "never" => return Ok(None),
        "30d" => 30 * DAY,
        "60d" => 60 * DAY,
        "90d" => 90 * DAY,
        "180d" => 180 * DAY,
        "365d" | "1y" => 365 * DAY,
        _ => return Err("must be one of never, 30d, 60d, 90d, 180d, 365d".to_owned()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let f = KeyFormat::default();
        let a = f.generate();
        assert!(a.starts_with("sk-tg-") && a.len() == 6 + 36, "{a}");
        assert!(f.is_well_formed(&a));
        assert_ne!(a, f.generate());
    }

    #[test]
    fn a_single_typo_fails_the_checksum() {
        let f = KeyFormat::default();
        let key = f.generate();
        for i in 6..key.len() {
            let mut bytes = key.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap_or_default();
            assert!(!f.is_well_formed(&typo), "accepted typo at {i}: {typo}");
        }
        assert!(!f.is_well_formed("sk-tg-short"));
        assert!(!f.is_well_formed(&key.replace("sk-tg-", "sk-xx-")));
        assert!(!f.is_well_formed(""));
    }

    #[test]
    fn derived_secrets_are_stable_well_formed_and_seed_bound() {
        let f = KeyFormat::default();
        let a = f.derive(&[1; 32]);
        assert_eq!(a, f.derive(&[1; 32]));
        assert_ne!(a, f.derive(&[2; 32]));
        assert!(f.is_well_formed(&a));
    }

    #[test]
    fn custom_prefix() {
        let f = KeyFormat::new("acme-").unwrap_or_default();
        let key = f.generate();
        assert!(key.starts_with("acme-") && f.is_well_formed(&key));
        assert!(!KeyFormat::default().is_well_formed(&key));
        assert!(KeyFormat::new("bad prefix").is_err());
    }

    #[test]
    fn digest_depends_on_pepper_and_secret() {
        let a = Digester::new(b"pepper-a");
        let b = Digester::new(b"pepper-b");
        assert_eq!(a.digest("k1"), a.digest("k1"));
        assert_ne!(a.digest("k1"), a.digest("k2"));
        assert_ne!(a.digest("k1"), b.digest("k1"));
    }

    #[test]
    fn preview_shows_last_four() {
        let f = KeyFormat::default();
        assert_eq!(f.preview("sk-tg-abcdefWXYZ"), "sk-tg-…WXYZ");
    }

    #[test]
    fn expiry_is_derived_from_the_clock() {
        let mut k = KeyRecord {
            id: "key_1".into(),
            name: "n".into(),
            org_id: "org_1".into(),
            team_id: "team_1".into(),
            owner_id: "usr_1".into(),
            digest: KeyDigest([0; 32]),
            preview: String::new(),
            status: KeyStatus::Active,
            created_at: 0,
            updated_at: 0,
            expires_at: Some(1000),
            last_used_at: None,
            request_count: 0,
            tokens_used: 0,
            spend: crate::MicroUsd::ZERO,
            settings: KeySettings::default(),
            previous_digest: None,
            rotation_key: None,
            secret_sealed: None,
        };
        assert_eq!(k.effective_status(999), KeyStatus::Active);
        assert_eq!(k.effective_status(1000), KeyStatus::Expired);
        k.status = KeyStatus::Revoked;
        assert_eq!(k.effective_status(5000), KeyStatus::Revoked);
    }
}
