//! Optional reveal (`keys.reveal = true`): key secrets are also stored sealed with
//! AES-256-GCM under an operator-held key, a random 96-bit nonce per seal, and the key id
//! as associated data (a ciphertext cannot be moved to another key). Off by default:
//! then a secret exists only in the one answer that created it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::principal::Actor;
use crate::{Result, ServiceError, Services};

const NONCE_LEN: usize = 12;

pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    /// `key` must be exactly 32 bytes.
    pub fn new(key: &[u8]) -> Result<Self, String> {
        let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| "must be exactly 32 bytes".to_owned())?;
        Ok(Self { cipher })
    }

    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, key_id: &str, secret: &str) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        tollgate_core::ids::fill_random(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret.as_bytes(), aad: key_id.as_bytes() })
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend(ct);
        Some(out)
    }

    pub fn open(&self, key_id: &str, sealed: &[u8]) -> Option<String> {
        if sealed.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: key_id.as_bytes() }).ok()?;
        String::from_utf8(plain).ok()
    }
}

impl Services {
    pub(crate) fn seal(&self, key_id: &str, secret: &str) -> Option<Vec<u8>> {
        self.sealer.as_ref().and_then(|s| s.seal(key_id, secret))
    }

    /// The secret of a key, when reveal is on. Users must give their password again;
    /// the operator need not. Audited as `key.reveal`.
    pub async fn reveal_key(&self, actor: &Actor, id: &str, password: Option<String>) -> Result<String> {
        let Some(sealer) = &self.sealer else {
            return Err(ServiceError::invalid("reveal", "revealing keys is disabled (keys.reveal = false)"));
        };
        let key = self.visible_key(actor, id).await?;
        if let Some(u) = actor.user_principal() {
            let password =
                password.ok_or_else(|| ServiceError::invalid("password", "enter your password to reveal a key"))?;
            if !self.check_password(&u.user_id, password).await? {
                return Err(ServiceError::Forbidden("wrong password"));
            }
        }
        let sealed = key.secret_sealed.as_deref().ok_or_else(|| {
            ServiceError::invalid("reveal", "this key was created before reveal was enabled; rotate it to reveal it")
        })?;
        let secret = sealer.open(id, sealed).ok_or(ServiceError::Internal("a sealed key secret did not open"))?;
        let entry = actor.audit(&key.org_id, "key.reveal", "key", id);
        self.store.record_audit(&entry).await?;
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_bound_to_the_key_id_with_fresh_nonces() {
        let s = Sealer::new(&[7; 32]).unwrap();
        let a = s.seal("key_1", "sk-tg-secret").unwrap();
        let b = s.seal("key_1", "sk-tg-secret").unwrap();
        assert_ne!(a, b, "a random nonce per seal");
        assert_eq!(s.open("key_1", &a).as_deref(), Some("sk-tg-secret"));
        assert_eq!(s.open("key_2", &a), None, "bound to its key id");
        assert_eq!(Sealer::new(&[8; 32]).unwrap().open("key_1", &a), None, "another reveal key");
        assert!(!a.windows(12).any(|w| w == b"sk-tg-secret"));
        assert!(Sealer::new(&[0; 16]).is_err());
    }
}
