//! Password and client-secret hashing: argon2id in PHC string form (`$argon2id$v=19$m=…`).
//!
//! Verifying argon2id costs tens of milliseconds by design. Client secrets are presented on every
//! token request, so a secret that verified once is remembered as an HMAC under a per-process key:
//! the next request with the same secret costs one HMAC and a constant-time comparison. Failures
//! are never remembered, so guessing still pays the full argon2 price each time.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Hashes `secret` with argon2id and the crate's default (OWASP-recommended) cost.
pub fn hash(secret: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Accepts only argon2id PHC strings, so a plaintext secret pasted into the YAML is an error.
pub fn check_hash(phc: &str) -> Result<(), String> {
    match PasswordHash::new(phc) {
        Ok(h) if h.algorithm.as_str() == "argon2id" => Ok(()),
        Ok(h) => Err(format!(
            "uses {}; only argon2id is accepted (make one with `gatehouse-identity hash`)",
            h.algorithm
        )),
        Err(_) => {
            Err("is not an argon2id PHC string (make one with `gatehouse-identity hash`)".into())
        }
    }
}

/// Checks `secret` against `phc` in the time argon2 takes, whatever the outcome.
pub fn verify(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Spends the same time as a real verification, for unknown users: the response time must not
/// tell an attacker which usernames exist.
pub fn verify_dummy(secret: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash("dummy-password").unwrap_or_default());
    let _ = verify(secret, phc);
}

/// Remembers client secrets that verified, keyed by client id.
pub struct SecretCache {
    key: [u8; 32],
    verified: Mutex<HashMap<String, ([u8; 32], String)>>,
}

const CACHE_LIMIT: usize = 10_000;

impl Default for SecretCache {
    fn default() -> Self {
        Self {
            key: rand::random(),
            verified: Mutex::new(HashMap::new()),
        }
    }
}

impl SecretCache {
    fn mac(&self, secret: &str) -> Option<[u8; 32]> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).ok()?;
        mac.update(secret.as_bytes());
        Some(mac.finalize().into_bytes().into())
    }

    /// True if `secret` verified for `client_id` before against the same `phc`.
    pub fn cached(&self, client_id: &str, secret: &str, phc: &str) -> bool {
        let (Some(mac), Ok(map)) = (self.mac(secret), self.verified.lock()) else {
            return false;
        };
        // The stored hash is part of the entry: a secret rotated in the YAML invalidates it.
        map.get(client_id)
            .is_some_and(|(known, known_phc)| known_phc == phc && bool::from(known.ct_eq(&mac)))
    }

    /// Records a secret that just verified with [`verify`].
    pub fn remember(&self, client_id: &str, secret: &str, phc: &str) {
        let (Some(mac), Ok(mut map)) = (self.mac(secret), self.verified.lock()) else {
            return;
        };
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(client_id.to_string(), (mac, phc.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_plaintext_is_rejected() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("s3cret", &h));
        assert!(!verify("s3cret ", &h));
        assert!(check_hash(&h).is_ok());
        assert!(check_hash("s3cret").is_err());
    }

    #[test]
    fn cache_never_accepts_a_wrong_secret_and_follows_rotation() {
        let cache = SecretCache::default();
        let h1 = hash("one").unwrap();
        assert!(!cache.cached("c", "one", &h1));
        cache.remember("c", "one", &h1);
        assert!(cache.cached("c", "one", &h1));
        assert!(!cache.cached("c", "two", &h1));
        assert!(!cache.cached("d", "one", &h1));
        let h2 = hash("two").unwrap();
        assert!(!cache.cached("c", "one", &h2));
    }
}
