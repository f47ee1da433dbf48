//! One issuer's published keys, parsed once per fetch into what verification needs: per `kid`,
//! the public key and the algorithms it may verify. The algorithm is pinned here, by the JWK
//! (`alg`, else `kty`/`crv`) and the issuer's allow-list, never by the token (RFC 8725 §3.1).

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;

/// A public key and the algorithms a token signed with it may name.
pub struct VerifyingKey {
    pub kid: Option<Arc<str>>,
    /// The JWK as published, to recognise an unchanged key in the next fetch.
    jwk: serde_json::Value,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl VerifyingKey {
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

/// An immutable set of keys, replaced as a whole when the JWKS changes.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<Arc<str>, Arc<VerifyingKey>>,
    /// Keys published without a `kid`: usable only by tokens without one.
    anonymous: Vec<Arc<VerifyingKey>>,
}

/// Why a JWKS document was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("not a JWK set: {0}")]
    NotAJwkSet(serde_json::Error),
    #[error("the JWK set holds no key usable with the allowed algorithms ({skipped} skipped)")]
    NoUsableKey { skipped: usize },
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS (RFC 7517 §5). Keys that cannot sign with an allowed asymmetric algorithm
    /// (symmetric keys, encryption keys, unknown types or curves) are skipped, not fatal: an
    /// issuer may publish keys for other parties. A key published unchanged since `previous` is
    /// the same `Arc`, so tokens it verified stay cached across a rotation.
    pub fn parse(
        document: &[u8],
        allowed: &[Algorithm],
        previous: Option<&KeySet>,
    ) -> Result<KeySet, KeySetError> {
        let raw: RawSet = serde_json::from_slice(document).map_err(KeySetError::NotAJwkSet)?;
        let mut set = KeySet::default();
        let mut skipped = 0;
        for value in raw.keys {
            let unchanged = previous.and_then(|p| {
                let kid = value.get("kid").and_then(|k| k.as_str());
                p.find(kid)
                    .filter(|k| k.kid.is_some() && k.jwk == value)
                    .cloned()
            });
            if let Some(key) = unchanged {
                if let Some(kid) = &key.kid {
                    set.by_kid.insert(kid.clone(), key);
                }
                continue;
            }
            let Some(key) = serde_json::from_value::<Jwk>(value.clone())
                .ok()
                .and_then(|jwk| verifying_key(&jwk, value, allowed))
            else {
                skipped += 1;
                continue;
            };
            let key = Arc::new(key);
            match &key.kid {
                Some(kid) => {
                    set.by_kid.insert(kid.clone(), key);
                }
                None => set.anonymous.push(key),
            }
        }
        if set.is_empty() {
            return Err(KeySetError::NoUsableKey { skipped });
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key a token names. A token without `kid` may only use the one key published without
    /// one; with several candidates the choice would be a guess.
    pub fn find(&self, kid: Option<&str>) -> Option<&Arc<VerifyingKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None if self.anonymous.len() == 1 => self.anonymous.first(),
            None => None,
        }
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}

/// The key with its pinned algorithms, or `None` when it cannot verify any allowed algorithm.
fn verifying_key(
    jwk: &Jwk,
    published: serde_json::Value,
    allowed: &[Algorithm],
) -> Option<VerifyingKey> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        // Never HMAC: a "secret" published in a JWKS is no secret (and HS with a public key as
        // the secret is the classic confusion attack).
        AlgorithmParameters::OctetKey(_) => return None,
        AlgorithmParameters::RSA(_) => allowed
            .iter()
            .copied()
            .filter(|a| a.family() == AlgorithmFamily::Rsa)
            .collect(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return None,
        },
    };
    let mut algorithms: Vec<Algorithm> = by_type
        .into_iter()
        .filter(|a| allowed.contains(a))
        .collect();
    if let Some(declared) = jwk.common.key_algorithm {
        // The JWK's own `alg` narrows the choice to exactly that algorithm.
        let declared = declared.to_string().parse::<Algorithm>().ok()?;
        algorithms.retain(|a| *a == declared);
    }
    if algorithms.is_empty() {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyingKey {
        kid: jwk.common.key_id.as_deref().map(Arc::from),
        jwk: published,
        algorithms,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWED: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

    fn ec_key(kid: &str, alg: Option<&str>) -> serde_json::Value {
        let mut k = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        });
        if let Some(a) = alg {
            k["alg"] = a.into();
        }
        k
    }

    fn parse(keys: Vec<serde_json::Value>) -> Result<KeySet, KeySetError> {
        KeySet::parse(
            serde_json::json!({ "keys": keys }).to_string().as_bytes(),
            &ALLOWED,
            None,
        )
    }

    #[test]
    fn an_unchanged_key_is_kept_across_fetches_and_a_changed_one_replaced() {
        let first = parse(vec![ec_key("a", None), ec_key("b", None)]).unwrap();
        let mut changed = ec_key("b", None);
        changed["x"] = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4".into();
        let doc = serde_json::json!({ "keys": [ec_key("a", None), changed] }).to_string();
        let second = KeySet::parse(doc.as_bytes(), &ALLOWED, Some(&first)).unwrap();
        let same = |kid| {
            Arc::ptr_eq(
                first.find(Some(kid)).unwrap(),
                second.find(Some(kid)).unwrap(),
            )
        };
        assert!(same("a"));
        assert!(!same("b"));
    }

    #[test]
    fn an_ec_key_verifies_only_its_curves_algorithm() {
        let set = parse(vec![ec_key("a", None)]).unwrap();
        let key = set.find(Some("a")).unwrap();
        assert_eq!(key.algorithms, vec![Algorithm::ES256]);
        assert!(!key.accepts(Algorithm::RS256));
        assert!(!key.accepts(Algorithm::HS256));
    }

    #[test]
    fn symmetric_and_encryption_keys_are_never_used() {
        let oct = serde_json::json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0", "alg": "HS256"});
        let mut enc = ec_key("e", None);
        enc["use"] = "enc".into();
        let set = parse(vec![oct, enc, ec_key("a", None)]).unwrap();
        assert!(set.find(Some("s")).is_none());
        assert!(set.find(Some("e")).is_none());
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn a_key_whose_algorithm_is_not_allowed_is_skipped() {
        let err = parse(vec![ec_key("a", Some("ES384"))]).err().unwrap();
        assert!(matches!(err, KeySetError::NoUsableKey { skipped: 1 }));
    }

    #[test]
    fn garbage_is_not_a_key_set() {
        assert!(KeySet::parse(b"<html>", &ALLOWED, None).is_err());
        assert!(KeySet::parse(b"{\"keys\": []}", &ALLOWED, None).is_err());
    }

    #[test]
    fn a_token_without_kid_uses_the_only_anonymous_key() {
        let mut k = ec_key("x", None);
        k.as_object_mut().unwrap().remove("kid");
        let set = parse(vec![k.clone()]).unwrap();
        assert!(set.find(None).is_some());
        let set = parse(vec![k.clone(), k]).unwrap();
        assert!(set.find(None).is_none());
    }
}
