//! Password and client-secret hashing: argon2id in PHC string form (`$argon2id$v=19$m=…`).
//!
//! Verifying argon2id costs tens of milliseconds and, with the default cost, 19 MiB of memory,
//! by design. That memory is a [`WorkArea`] the caller owns and reuses (the issuer keeps one per
//! check it lets run at once, see `hash_gate`), so what checks cost in memory is bounded by how
//! many run, not by what the allocator keeps after each one.
//!
//! Client secrets are presented on every token request, so a secret that verified once is
//! remembered as an HMAC under a per-process key: the next request with the same secret costs
//! one HMAC and a constant-time comparison. Failures are never remembered, so guessing still
//! pays the full argon2 price each time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::OnceCell;

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

/// The memory one argon2 check works in (1 KiB blocks, `m` of them), kept between checks. It
/// grows to the largest cost it has served and never shrinks.
#[derive(Default)]
pub struct WorkArea(Vec<Block>);

/// Checks `secret` against `phc` in the time argon2 takes, whatever the outcome. Hashing in
/// `area` is what `Argon2::verify_password` does, minus the allocation of its memory.
pub fn verify(secret: &str, phc: &str, area: &mut WorkArea) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) =
        (Algorithm::try_from(hash.algorithm), Params::try_from(&hash))
    else {
        return false;
    };
    let Ok(version) = hash
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if area.0.len() < blocks {
        area.0.resize(blocks, Block::default());
    }
    let mut computed = [0u8; argon2::password_hash::Output::MAX_LENGTH];
    let Some(computed) = computed.get_mut(..expected.len()) else {
        return false;
    };
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(secret.as_bytes(), salt, computed, &mut area.0[..blocks])
        .is_ok()
        && bool::from(computed.ct_eq(expected.as_bytes()))
}

/// A hash of the default cost that no presented secret is checked against for real: unknown
/// users and clients are checked against it, so the response time does not tell an attacker
/// which usernames or client ids exist.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash("dummy-password").unwrap_or_default())
}

/// Remembers client secrets that verified, keyed by client id, and lets requests that present
/// the same secret for the same client at once share one check.
pub struct SecretCache {
    key: [u8; 32],
    verified: Mutex<HashMap<String, ([u8; 32], String)>>,
    checking: ChecksUnderWay,
}

/// Checks under way, by client id and HMAC of the secret; the cell gets the check's answer.
type ChecksUnderWay = Mutex<HashMap<(String, [u8; 32]), Arc<OnceCell<bool>>>>;

const CACHE_LIMIT: usize = 10_000;

impl Default for SecretCache {
    fn default() -> Self {
        Self {
            key: rand::random(),
            verified: Mutex::new(HashMap::new()),
            checking: Mutex::new(HashMap::new()),
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

    /// Runs `check` (is `secret` right for `client_id`?) once for all the requests presenting
    /// them at the same time: the others wait and take its answer. A service that starts sends
    /// its first token requests in parallel, before its secret is remembered; each running its
    /// own check would hold one lockout slot each, and the lockout refuses once `max_failures`
    /// are in flight. An error (refused, not checked) is not shared: the next waiter checks.
    pub async fn check_once<E, F, Fut>(
        &self,
        client_id: &str,
        secret: &str,
        check: F,
    ) -> Result<bool, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, E>>,
    {
        let Some(mac) = self.mac(secret) else {
            return check().await;
        };
        let key = (client_id.to_string(), mac);
        let cell = {
            let mut checking = self.checking.lock().unwrap_or_else(|p| p.into_inner());
            checking.entry(key.clone()).or_default().clone()
        };
        // Removes the entry when the last request sharing it is done or gone.
        let share = CheckShare {
            checking: &self.checking,
            key,
            cell,
        };
        let answer = share.cell.get_or_try_init(check).await.copied();
        answer
    }
}

/// One request's share of a check under way.
struct CheckShare<'a> {
    checking: &'a ChecksUnderWay,
    key: (String, [u8; 32]),
    cell: Arc<OnceCell<bool>>,
}

impl Drop for CheckShare<'_> {
    fn drop(&mut self) {
        let mut checking = self.checking.lock().unwrap_or_else(|p| p.into_inner());
        // Two references left, the map's and this one: nobody else shares the check.
        if checking
            .get(&self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell) && Arc::strong_count(c) == 2)
        {
            checking.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use argon2::PasswordVerifier;

    #[test]
    fn hashes_verify_and_plaintext_is_rejected() {
        let mut area = WorkArea::default();
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("s3cret", &h, &mut area));
        assert!(!verify("s3cret ", &h, &mut area));
        assert!(!verify("s3cret", "s3cret", &mut area));
        assert!(check_hash(dummy_hash()).is_ok());
        assert!(check_hash(&h).is_ok());
        assert!(check_hash("s3cret").is_err());
    }

    #[test]
    fn a_reused_work_area_agrees_with_the_library_for_any_cost() {
        // Other costs, versions and output lengths than the default, in one area used for all:
        // the area grows for the larger cost and is reused, smaller, for the others.
        let mut area = WorkArea::default();
        let costs = [
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(4096, 3, 2, Some(16)).unwrap(),
            ),
            (
                Algorithm::Argon2id,
                Version::V0x10,
                Params::new(8, 1, 1, Some(64)).unwrap(),
            ),
            (Algorithm::Argon2id, Version::V0x13, Params::default()),
        ];
        for (alg, version, params) in costs {
            let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
            let phc = Argon2::new(alg, version, params)
                .hash_password(b"right", &salt)
                .unwrap()
                .to_string();
            let parsed = PasswordHash::new(&phc).unwrap();
            for secret in ["right", "wrong"] {
                let library = Argon2::default()
                    .verify_password(secret.as_bytes(), &parsed)
                    .is_ok();
                assert_eq!(verify(secret, &phc, &mut area), library, "{phc} {secret}");
            }
            assert!(verify("right", &phc, &mut area));
        }
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

    #[tokio::test]
    async fn requests_with_the_same_secret_at_once_share_one_check() {
        let cache = SecretCache::default();
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let check = || async {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok::<_, ()>(true)
        };
        let (a, b, c) = tokio::join!(
            cache.check_once("c", "s", check),
            cache.check_once("c", "s", check),
            cache.check_once("d", "s", check),
        );
        assert_eq!((a, b, c), (Ok(true), Ok(true), Ok(true)));
        // c and d: two checks; and nothing is left behind.
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(cache.checking.lock().unwrap().is_empty());
        // A refusal is not shared: the next request checks again.
        let refused = cache
            .check_once("c", "s", || async { Err::<bool, _>("busy") })
            .await;
        assert_eq!(refused, Err("busy"));
        assert_eq!(cache.check_once("c", "s", check).await, Ok(true));
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
