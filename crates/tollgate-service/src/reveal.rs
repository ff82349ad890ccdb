//! Optional reveal (`keys.reveal = true`): key secrets are also stored sealed with
//! AES-256-GCM under an operator-held key, a random 96-bit nonce per seal, and the key id
//! as associated data (a ciphertext cannot be moved to another key). Off by default:
//! then a secret exists only in the one answer that created it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

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
