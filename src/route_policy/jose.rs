//! The compact JWS serialization (RFC 7515 §7.1), read strictly: three base64url parts without
//! padding, a header and a payload that are JSON objects without duplicate member names
//! (RFC 7515 §5.2 step 4 lets us refuse them: duplicates are how parser differentials smuggle a
//! second `alg` or `sub` past one reader), and no `crit` extension we would have to understand.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Why the token's structure was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("not a compact JWS")]
    NotCompact,
    #[error("bad base64url")]
    Base64,
    #[error("not a JSON object")]
    Json,
    #[error("duplicate JSON member")]
    DuplicateMember,
    #[error("no alg")]
    NoAlg,
    #[error("alg not accepted")]
    Algorithm,
    #[error("critical header extension not understood")]
    Critical,
}

/// A token split and decoded, signature not yet checked.
#[derive(Debug)]
pub struct UnverifiedToken<'t> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub claims: Map<String, Value>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'t str,
    pub signature: &'t str,
}

pub fn parse(token: &str) -> Result<UnverifiedToken<'_>, JoseError> {
    let (signing_input, signature) = token.rsplit_once('.').ok_or(JoseError::NotCompact)?;
    let (header, payload) = signing_input.split_once('.').ok_or(JoseError::NotCompact)?;
    if payload.contains('.') || signature.is_empty() {
        return Err(JoseError::NotCompact);
    }
    let mut header = object(header)?;
    let alg = match header.remove("alg") {
        Some(Value::String(alg)) => algorithm(&alg)?,
        _ => return Err(JoseError::NoAlg),
    };
    if header.contains_key("crit") {
        return Err(JoseError::Critical);
    }
    let text = |v: Option<Value>| match v {
        Some(Value::String(s)) => Ok(Some(s)),
        None => Ok(None),
        Some(_) => Err(JoseError::Json),
    };
    Ok(UnverifiedToken {
        alg,
        kid: text(header.remove("kid"))?,
        typ: text(header.remove("typ"))?,
        claims: object(payload)?,
        signing_input,
        signature,
    })
}

/// Asymmetric algorithms only: `none` and the HMAC family are never accepted from a token, so a
/// public key can never be used as an HMAC secret.
fn algorithm(name: &str) -> Result<Algorithm, JoseError> {
    let alg = name
        .parse::<Algorithm>()
        .map_err(|_| JoseError::Algorithm)?;
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Err(JoseError::Algorithm),
        _ => Ok(alg),
    }
}

fn object(part: &str) -> Result<Map<String, Value>, JoseError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JoseError::Base64)?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let object = StrictObject::deserialize(&mut de).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE) {
            JoseError::DuplicateMember
        } else {
            JoseError::Json
        }
    })?;
    de.end().map_err(|_| JoseError::Json)?;
    Ok(object.0)
}

const DUPLICATE: &str = "duplicate member";

/// A JSON object whose top-level member names are unique.
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                while let Some((name, value)) = access.next_entry::<String, Value>()? {
                    if map.insert(name, value).is_some() {
                        return Err(serde::de::Error::custom(DUPLICATE));
                    }
                }
                Ok(StrictObject(map))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    #[test]
    fn a_well_formed_token_is_split_and_decoded() {
        let t = token(
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#,
            r#"{"sub":"a"}"#,
        );
        let parsed = parse(&t).unwrap();
        assert_eq!(parsed.alg, Algorithm::ES256);
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.typ.as_deref(), Some("at+jwt"));
        assert_eq!(parsed.claims["sub"], "a");
        assert_eq!(parsed.signature, "c2ln");
    }

    #[test]
    fn none_and_hmac_are_refused() {
        for alg in ["none", "None", "HS256", "HS512", "XYZ"] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            assert_eq!(parse(&t).unwrap_err(), JoseError::Algorithm, "{alg}");
        }
    }

    #[test]
    fn duplicate_members_are_refused_in_header_and_payload() {
        let t = token(r#"{"alg":"ES256","alg":"none"}"#, "{}");
        assert_eq!(parse(&t).unwrap_err(), JoseError::DuplicateMember);
        let t = token(r#"{"alg":"ES256"}"#, r#"{"sub":"a","sub":"admin"}"#);
        assert_eq!(parse(&t).unwrap_err(), JoseError::DuplicateMember);
    }

    #[test]
    fn structure_problems_are_named() {
        assert_eq!(parse("abc").unwrap_err(), JoseError::NotCompact);
        assert_eq!(parse("a.b.c.d.e").unwrap_err(), JoseError::NotCompact);
        assert_eq!(parse("!!.e30.c2ln").unwrap_err(), JoseError::Base64);
        let padded = format!("{}=.e30.c2ln", b64(r#"{"alg":"ES256"}"#));
        assert!(parse(&padded).is_err());
        assert_eq!(parse(&token("[1]", "{}")).unwrap_err(), JoseError::Json);
        assert_eq!(
            parse(&token(r#"{"alg":"ES256"}"#, "{} x")).unwrap_err(),
            JoseError::Json
        );
        assert_eq!(
            parse(&token(r#"{"typ":"JWT"}"#, "{}")).unwrap_err(),
            JoseError::NoAlg
        );
        assert_eq!(
            parse(&token(r#"{"alg":"ES256","crit":["exp"]}"#, "{}")).unwrap_err(),
            JoseError::Critical
        );
        assert_eq!(
            parse(&format!("{}.{}.", b64(r#"{"alg":"ES256"}"#), b64("{}"))).unwrap_err(),
            JoseError::NotCompact
        );
    }
}
