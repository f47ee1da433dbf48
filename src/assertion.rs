//! The gateway assertion: a short-lived JWT, signed with the gateway's own ES256 key, that tells a
//! backend "this request came through the gateway, for this verified identity, on this route".
//! Sent upstream in `X-Gatehouse-Assertion` on routes with `assertion:`; backends check it
//! against the JWKS the admin listener serves at `/.well-known/jwks.json`.
//!
//! Signing costs tens of microseconds, so an assertion is cached per (token, route, audience) and
//! reused until close to its expiry: a client sending the same token pays for one signature per
//! `ttl - margin`, not one per request. The cache is bounded in bytes, so a flood of distinct
//! tokens evicts old entries instead of growing memory. A reused assertion keeps its `jti`: it
//! names the assertion, not the request, and is no replay nonce.
//!
//! The key is generated and persisted by the issuer's [`KeyRing`] (PKCS#8 PEM 0600 in a 0700
//! directory, `keyring.json` beside it), in a directory of the gateway's own.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_identity::keys::{KeyError, KeyRing, SigningAlg};
use http::HeaderValue;
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};
use serde_json::{Map, Value};

use crate::clock::unix_now;
use crate::metrics;

/// The request header the assertion travels in.
pub const ASSERTION_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-gatehouse-assertion");

/// `typ` of the assertion's JOSE header (explicit typing, RFC 8725 §3.11): a backend can tell an
/// assertion from an access token signed by a key it also trusts.
pub const ASSERTION_TYPE: &str = "gatehouse-assertion+jwt";

const ALGORITHM: SigningAlg = SigningAlg::ES256;

/// Claims the gateway sets itself; a verified token's claims of the same name are not copied.
const GATEWAY_CLAIMS: [&str; 8] = [
    "iss",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "route",
    "token_iss",
];

/// Bytes the cache may hold (tokens and assertions both count): about 10 000 entries for tokens
/// of 1 KiB, fewer for fat tokens, never more memory.
pub const CACHE_BYTES: u64 = 32 * 1024 * 1024;
const CACHE_ESTIMATED_ENTRIES: usize = 10_000;
/// Per-entry bookkeeping counted on top of the strings (key, value, cache slot).
const ENTRY_OVERHEAD: u64 = 160;

/// An assertion is re-signed once less than `ttl / 4` (at least this) is left, so a backend never
/// receives one about to expire in flight.
const MIN_REUSE_MARGIN: u64 = 5;

/// Written into a key directory the gateway created, so that it never adopts another key ring.
const OWNER_FILE: &str = "OWNER";
const OWNER_TEXT: &str = "gatehouse gateway assertion key (auth.assertion.key_dir)\n";
/// The issuer's key-ring index ([`KeyRing`] writes it).
const KEYRING_FILE: &str = "keyring.json";

#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Opening the issuer's ring with ES256 alone would retire its other keys and race its writes.
    #[error("{0} holds another key ring (no {OWNER_FILE} file of the gateway); give auth.assertion.key_dir a directory of its own")]
    ForeignKeyRing(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A compact JWS is base64url and dots; this would be a bug of the signing library.
    #[error("the signed assertion is not a valid header value")]
    NotAHeaderValue,
}

/// Signs and caches gateway assertions. One per process: created when a route first asks for an
/// assertion and carried across reloads (its settings apply at restart).
pub struct AssertionSigner {
    ring: KeyRing,
    key_dir: PathBuf,
    issuer: String,
    ttl: u64,
    /// Reuse a cached assertion while more than this many seconds are left.
    reuse_margin: u64,
    cache: Cache<CacheKey, CachedAssertion, EntryWeight>,
}

impl fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("key_dir", &self.key_dir)
            .field("issuer", &self.issuer)
            .field("ttl", &self.ttl)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl AssertionSigner {
    /// Loads the gateway's key from `key_dir`, generating and persisting one on first use.
    pub fn open(key_dir: &Path, issuer: &str, ttl: Duration) -> Result<Self, AssertionError> {
        Self::with_cache_bytes(key_dir, issuer, ttl, CACHE_BYTES)
    }

    /// As [`AssertionSigner::open`], with a cache budget of `cache_bytes`.
    pub fn with_cache_bytes(
        key_dir: &Path,
        issuer: &str,
        ttl: Duration,
        cache_bytes: u64,
    ) -> Result<Self, AssertionError> {
        claim_key_dir(key_dir)?;
        let ring = KeyRing::open(key_dir, &[ALGORITHM], unix_now())?;
        mark_key_dir(key_dir)?;
        let ttl = ttl.as_secs().max(1);
        Ok(Self {
            ring,
            key_dir: key_dir.to_path_buf(),
            issuer: issuer.to_string(),
            ttl,
            reuse_margin: (ttl / 4).max(MIN_REUSE_MARGIN).min(ttl / 2),
            cache: Cache::with_weighter(CACHE_ESTIMATED_ENTRIES, cache_bytes, EntryWeight),
        })
    }

    /// The public key set (RFC 7517) backends verify assertions with; never a private part.
    pub fn jwks(&self) -> Vec<u8> {
        self.ring.current().jwks.clone()
    }

    /// The `kid` assertions are signed with now.
    pub fn kid(&self) -> Option<String> {
        self.ring
            .current()
            .active(ALGORITHM)
            .map(|k| k.kid().to_string())
    }

    /// The assertion for a verified request, ready to insert as [`ASSERTION_HEADER`].
    ///
    /// `token` is the verified bearer token: the cache key with `route` and `audience`, compared
    /// whole and never logged. `claims` are its verified claims and `token_exp` its `exp`; the
    /// assertion never outlives the token. `now` is Unix seconds.
    ///
    /// A token accepted within the verifier's leeway after its `exp` gets an assertion that has
    /// already expired too (its `exp` stays the token's): the backend applies its own leeway.
    pub fn assertion(
        &self,
        token: &str,
        claims: &Map<String, Value>,
        token_exp: u64,
        route: &str,
        audience: &str,
        now: u64,
    ) -> Result<HeaderValue, AssertionError> {
        let query = CacheQuery {
            token,
            route,
            audience,
        };
        if let Some(cached) = self.cache.get(&query) {
            if cached.reusable(now, self.reuse_margin) {
                metrics::ASSERTION_CACHE_HIT.inc();
                return Ok(cached.value);
            }
        }
        metrics::ASSERTION_CACHE_MISS.inc();
        // Signed without any cache lock held: two requests missing together both sign, and the
        // later insert wins; both answers are valid.
        let fresh = self.sign(claims, token_exp, route, audience, now)?;
        self.cache.insert(
            CacheKey {
                token: token.into(),
                route: route.into(),
                audience: audience.into(),
            },
            fresh.clone(),
        );
        Ok(fresh.value)
    }

    fn sign(
        &self,
        claims: &Map<String, Value>,
        token_exp: u64,
        route: &str,
        audience: &str,
        now: u64,
    ) -> Result<CachedAssertion, AssertionError> {
        let exp = now.saturating_add(self.ttl).min(token_exp);
        let mut body = Map::with_capacity(claims.len() + GATEWAY_CLAIMS.len());
        for (name, value) in claims {
            if !GATEWAY_CLAIMS.contains(&name.as_str()) {
                body.insert(name.clone(), value.clone());
            }
        }
        body.insert("iss".into(), self.issuer.as_str().into());
        body.insert("aud".into(), audience.into());
        body.insert("iat".into(), now.into());
        body.insert("exp".into(), exp.into());
        body.insert(
            "jti".into(),
            format!("{:032x}", rand::random::<u128>()).into(),
        );
        body.insert("route".into(), route.into());
        if let Some(iss) = claims.get("iss") {
            body.insert("token_iss".into(), iss.clone());
        }
        let (jws, _kid) = self.ring.sign(ALGORITHM, ASSERTION_TYPE, &body)?;
        metrics::ASSERTIONS_SIGNED.inc();
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(jws))
            .map_err(|_| AssertionError::NotAHeaderValue)?;
        Ok(CachedAssertion {
            value,
            exp,
            capped: exp == token_exp,
        })
    }
}

/// What the cache holds per (token, route, audience). Cloning it is a reference-count increment.
#[derive(Clone)]
struct CachedAssertion {
    value: HeaderValue,
    exp: u64,
    /// `exp` is the token's own: a fresh signature could not last longer.
    capped: bool,
}

impl CachedAssertion {
    fn reusable(&self, now: u64, margin: u64) -> bool {
        self.capped || now.saturating_add(margin) < self.exp
    }
}

/// The cache key, compared whole: a token's hash alone could collide into another identity.
#[derive(PartialEq, Eq)]
struct CacheKey {
    token: Box<str>,
    route: Box<str>,
    audience: Box<str>,
}

/// A borrowed key for lookups, so a cache hit allocates nothing. Hashes exactly as [`CacheKey`].
struct CacheQuery<'a> {
    token: &'a str,
    route: &'a str,
    audience: &'a str,
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (&*self.token, &*self.route, &*self.audience).hash(state);
    }
}

impl Hash for CacheQuery<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.token, self.route, self.audience).hash(state);
    }
}

impl Equivalent<CacheKey> for CacheQuery<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        *key.token == *self.token && *key.route == *self.route && *key.audience == *self.audience
    }
}

/// Weighs an entry by the bytes it keeps alive.
#[derive(Clone)]
struct EntryWeight;

impl Weighter<CacheKey, CachedAssertion> for EntryWeight {
    fn weight(&self, key: &CacheKey, value: &CachedAssertion) -> u64 {
        let bytes = key.token.len() + key.route.len() + key.audience.len() + value.value.len();
        bytes as u64 + ENTRY_OVERHEAD
    }
}

/// Refuses a directory that holds a key ring the gateway did not create (the issuer's, most
/// likely): [`KeyRing::open`] with ES256 alone would retire its other keys.
fn claim_key_dir(dir: &Path) -> Result<(), AssertionError> {
    if dir.join(KEYRING_FILE).exists() && !dir.join(OWNER_FILE).exists() {
        return Err(AssertionError::ForeignKeyRing(dir.to_path_buf()));
    }
    Ok(())
}

fn mark_key_dir(dir: &Path) -> Result<(), AssertionError> {
    let path = dir.join(OWNER_FILE);
    if path.exists() {
        return Ok(());
    }
    std::fs::write(&path, OWNER_TEXT).map_err(|source| AssertionError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jwt_simple::algorithms::{ECDSAP256PublicKeyLike, ES256PublicKey};
    use jwt_simple::common::VerificationOptions;
    use jwt_simple::token::Token;
    use serde_json::json;

    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn signer(dir: &Path) -> AssertionSigner {
        AssertionSigner::open(dir, "gatehouse", TTL).expect("open the signer")
    }

    fn claims() -> Map<String, Value> {
        let value = json!({
            "iss": "http://127.0.0.1:9400",
            "sub": "alice",
            "aud": ["documents-api"],
            "exp": 4_000_000_000u64,
            "iat": 1_000,
            "nbf": 1_000,
            "jti": "token-jti",
            "roles": ["editor"],
            "scope": "documents:read",
            "email": "alice@example.com",
            "route": "forged-route",
            "token_iss": "forged",
        });
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    /// The ES256 key of `jwks` named by the assertion's `kid`, as jwt-simple reads it.
    fn public_key(jwks: &[u8], token: &str) -> ES256PublicKey {
        let kid = Token::decode_metadata(token)
            .unwrap()
            .key_id()
            .unwrap()
            .to_string();
        let jwks: Value = serde_json::from_slice(jwks).unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .expect("the assertion's kid is in the JWKS");
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert!(jwk.get("d").is_none(), "no private part in the JWKS");
        let mut sec1 = vec![4u8];
        for coordinate in ["x", "y"] {
            sec1.extend(
                URL_SAFE_NO_PAD
                    .decode(jwk[coordinate].as_str().unwrap())
                    .unwrap(),
            );
        }
        ES256PublicKey::from_bytes(&sec1).unwrap()
    }

    fn verify(signer: &AssertionSigner, token: &str, audience: &str) -> Map<String, Value> {
        let options = VerificationOptions {
            required_signature_type: Some(ASSERTION_TYPE.into()),
            allowed_issuers: Some(HashSet::from(["gatehouse".to_string()])),
            allowed_audiences: Some(HashSet::from([audience.to_string()])),
            ..Default::default()
        };
        public_key(&signer.jwks(), token)
            .verify_token::<Map<String, Value>>(token, Some(options))
            .expect("jwt-simple accepts the assertion");
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    fn text(value: &HeaderValue) -> &str {
        value.to_str().unwrap()
    }

    #[test]
    fn an_assertion_verifies_against_the_jwks_and_carries_the_verified_claims() {
        let dir = tempfile::tempdir().unwrap();
        let signer = signer(dir.path());
        let now = unix_now();
        let value = signer
            .assertion(
                "tok",
                &claims(),
                now + 3600,
                "documents",
                "docs-backend",
                now,
            )
            .unwrap();
        let body = verify(&signer, text(&value), "docs-backend");

        assert_eq!(body["iss"], "gatehouse");
        assert_eq!(body["aud"], "docs-backend");
        assert_eq!(body["iat"], now);
        assert_eq!(body["exp"], now + 60);
        assert_eq!(body["route"], "documents");
        assert_eq!(body["token_iss"], "http://127.0.0.1:9400");
        assert_eq!(body["sub"], "alice");
        assert_eq!(body["roles"], json!(["editor"]));
        assert_eq!(body["scope"], "documents:read");
        assert_eq!(body["email"], "alice@example.com");
        // Registered claims are the gateway's own, never the token's.
        assert!(body.get("nbf").is_none());
        let jti = body["jti"].as_str().unwrap();
        assert_eq!(jti.len(), 32);
        assert_ne!(jti, "token-jti");

        let meta = Token::decode_metadata(text(&value)).unwrap();
        assert_eq!(meta.algorithm(), "ES256");
        assert_eq!(meta.key_id(), signer.kid().as_deref());
    }

    #[test]
    fn the_same_token_reuses_its_assertion_until_near_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let signer = signer(dir.path());
        let c = claims();
        let first = signer
            .assertion("tok", &c, 10_000, "documents", "backend", 1000)
            .unwrap();
        let again = signer
            .assertion("tok", &c, 10_000, "documents", "backend", 1030)
            .unwrap();
        assert_eq!(first, again, "cached");
        // 15 s (ttl / 4) before its exp it is re-signed.
        let renewed = signer
            .assertion("tok", &c, 10_000, "documents", "backend", 1045)
            .unwrap();
        assert_ne!(first, renewed);

        let other_route = signer
            .assertion("tok", &c, 10_000, "admin", "backend", 1045)
            .unwrap();
        let other_audience = signer
            .assertion("tok", &c, 10_000, "documents", "other", 1045)
            .unwrap();
        let other_token = signer
            .assertion("tok2", &c, 10_000, "documents", "backend", 1045)
            .unwrap();
        for other in [&other_route, &other_audience, &other_token] {
            assert_ne!(other, &renewed);
        }
        // A key whose parts run together differently is another key.
        let shifted = signer
            .assertion("to", &c, 10_000, "kdocuments", "backend", 1045)
            .unwrap();
        assert_ne!(shifted, renewed);
    }

    #[test]
    fn an_assertion_never_outlives_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let signer = signer(dir.path());
        let c = claims();
        let exp_of = |v: &HeaderValue| {
            let payload = text(v).split('.').nth(1).unwrap();
            let body: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
            body["exp"].as_u64().unwrap()
        };
        let short = signer
            .assertion("tok", &c, 1010, "documents", "backend", 1000)
            .unwrap();
        assert_eq!(exp_of(&short), 1010);
        // Capped by the token, a new signature could not last longer: it is reused to the end.
        let later = signer
            .assertion("tok", &c, 1010, "documents", "backend", 1009)
            .unwrap();
        assert_eq!(later, short);
        // Accepted within the verifier's leeway after exp: the assertion's exp stays the token's.
        let late = signer
            .assertion("late", &c, 990, "documents", "backend", 1000)
            .unwrap();
        assert_eq!(exp_of(&late), 990);
    }

    #[test]
    fn the_cache_stays_within_its_byte_budget_under_a_flood_of_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let budget = 256 * 1024;
        let signer =
            AssertionSigner::with_cache_bytes(dir.path(), "gatehouse", TTL, budget).unwrap();
        let c = claims();
        let token_tail = "x".repeat(1000);
        for i in 0..2000 {
            let token = format!("{i}.{token_tail}");
            signer
                .assertion(&token, &c, 10_000, "documents", "backend", 1000)
                .unwrap();
        }
        assert!(signer.cache.weight() <= budget, "{}", signer.cache.weight());
        assert!(signer.cache.len() < 2000);
        assert!(!signer.cache.is_empty());
    }

    #[test]
    fn the_key_persists_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("var/gateway/keys");
        let kid = signer(&keys).kid().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&keys), 0o700);
        assert_eq!(mode(&keys.join(format!("{kid}.pem"))), 0o600);
        assert_eq!(
            signer(&keys).kid().unwrap(),
            kid,
            "reopened, not regenerated"
        );
        let jwks = String::from_utf8(signer(&keys).jwks()).unwrap();
        assert!(jwks.contains(&kid));
        assert!(!jwks.contains("\"d\""));
    }

    #[test]
    fn a_directory_holding_another_key_ring_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let algs = [SigningAlg::RS256, SigningAlg::ES256];
        KeyRing::open(dir.path(), &algs, 100).unwrap();
        let before = std::fs::read(dir.path().join(KEYRING_FILE)).unwrap();
        let err = AssertionSigner::open(dir.path(), "gatehouse", TTL).unwrap_err();
        assert!(matches!(err, AssertionError::ForeignKeyRing(_)), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join(KEYRING_FILE)).unwrap(),
            before
        );
    }
}
