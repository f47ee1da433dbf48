//! The JWT stage: find the bearer token, verify it against its issuer's keys, check what the
//! route requires. Produces the request's [`VerifiedIdentity`].
//!
//! Checks, in order (RFC 7519 §7.2, RFC 8725): size; structure ([`jose`]); the issuer named by
//! `iss` among the route's; the algorithm against the issuer's allow-list; `typ` where configured;
//! the key named by `kid` (one refetch when unknown) and that key's own algorithms; the signature;
//! then `exp`, `nbf`, `iat` (with leeway), `aud`, `sub`. Only a token that passed all of them is
//! cached. Last, on every request (cache hits included), the issuer's revocations (`jti`, or
//! `sub` with `iat`), then the route's scopes and roles.

use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName};
use serde_json::Value;

use super::issuer::TrustedIssuer;
use super::jose::{self, JoseError};
use super::token_cache::TokenCache;
use super::{AuthOutcome, VerifiedIdentity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Required,
    Optional,
}

/// A route's `auth:` section, compiled.
#[derive(Debug)]
pub struct RouteAuth {
    pub mode: Mode,
    pub issuers: Vec<Arc<TrustedIssuer>>,
    /// Every one is required.
    pub scopes: Vec<String>,
    /// Any one is required.
    pub roles: Vec<String>,
    pub token_cookie: Option<String>,
    pub token_header: Option<HeaderName>,
    pub max_token_bytes: usize,
    pub cache: Arc<TokenCache>,
}

/// The stage's answer when it lets the request on.
pub enum Passed {
    Verified(Arc<VerifiedIdentity>),
    Anonymous,
}

impl RouteAuth {
    /// Runs the stage for a request with these headers at unix time `now`.
    pub async fn check(&self, headers: &HeaderMap, now: u64) -> Result<Passed, AuthOutcome> {
        let Some(token) = self.token(headers) else {
            return match self.mode {
                Mode::Required => Err(AuthOutcome::Missing),
                Mode::Optional => Ok(Passed::Anonymous),
            };
        };
        let (identity, issuer) = match self.cache.get(token, &self.issuers, now) {
            Some(hit) => hit,
            None => self.verify(token, now).await?,
        };
        // Every time, cache hit or not: a token verified before may have been revoked since.
        issuer.revoked(&identity)?;
        self.authorize(&identity)?;
        Ok(Passed::Verified(identity))
    }

    /// The token from `Authorization: Bearer` (RFC 6750 §2.1), else the route's cookie, else its
    /// header. Another `Authorization` scheme is no token here.
    fn token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let from_cookie = || {
            let name = self.token_cookie.as_deref()?;
            headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.trim())
        };
        let from_header = || {
            let name = self.token_header.as_ref()?;
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        bearer
            .or_else(from_cookie)
            .or_else(from_header)
            .filter(|t| !t.is_empty())
    }

    /// The token's identity and the issuer that vouched for it.
    async fn verify(
        &self,
        token: &str,
        now: u64,
    ) -> Result<(Arc<VerifiedIdentity>, Arc<TrustedIssuer>), AuthOutcome> {
        if token.len() > self.max_token_bytes {
            return Err(AuthOutcome::TooLarge);
        }
        let parsed = jose::parse(token).map_err(|e| match e {
            JoseError::Algorithm => AuthOutcome::UnsupportedAlgorithm,
            _ => AuthOutcome::Malformed,
        })?;
        let iss = parsed.claims.get("iss").and_then(Value::as_str);
        let issuer = self
            .issuers
            .iter()
            .find(|i| Some(i.issuer.as_str()) == iss)
            .ok_or(AuthOutcome::WrongIssuer)?;
        if !issuer.algorithms.contains(&parsed.alg) {
            return Err(AuthOutcome::UnsupportedAlgorithm);
        }
        if !issuer.token_types.is_empty()
            && !type_accepted(parsed.typ.as_deref(), &issuer.token_types)
        {
            return Err(AuthOutcome::WrongType);
        }
        let kid = parsed.kid.as_deref();
        let mut keys = issuer.keys.keys().ok_or(AuthOutcome::NoKeySet)?;
        if keys.find(kid).is_none() {
            keys = issuer
                .keys
                .refetch_for_unknown_kid()
                .await
                .ok_or(AuthOutcome::NoKeySet)?;
        }
        let key = keys.find(kid).ok_or(AuthOutcome::UnknownKid)?;
        if !key.accepts(parsed.alg) {
            return Err(AuthOutcome::UnsupportedAlgorithm);
        }
        let valid = jsonwebtoken::crypto::verify(
            parsed.signature,
            parsed.signing_input.as_bytes(),
            &key.key,
            parsed.alg,
        );
        if !matches!(valid, Ok(true)) {
            return Err(AuthOutcome::BadSignature);
        }
        let claims = parsed.claims;
        let expires_at = check_times(&claims, now, issuer.leeway)?;
        if !audience_accepted(claims.get("aud"), &issuer.audiences) {
            return Err(AuthOutcome::WrongAudience);
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(AuthOutcome::Malformed),
        };
        let identity = Arc::new(VerifiedIdentity {
            token: Arc::from(token),
            issuer: issuer.name.clone(),
            subject,
            scopes: strings(claims.get(&issuer.scope_claim), ' '),
            roles: strings(claims.get(&issuer.roles_claim), ','),
            expires_at,
            claims,
        });
        self.cache
            .insert(identity.clone(), issuer.clone(), key.clone());
        Ok((identity, issuer.clone()))
    }

    /// The route's scope and role requirements.
    fn authorize(&self, identity: &VerifiedIdentity) -> Result<(), AuthOutcome> {
        let has_scopes = self
            .scopes
            .iter()
            .all(|s| identity.scopes.iter().any(|g| g == s));
        let has_role =
            self.roles.is_empty() || self.roles.iter().any(|r| identity.roles.contains(r));
        if has_scopes && has_role {
            Ok(())
        } else {
            Err(AuthOutcome::InsufficientScope)
        }
    }
}

/// `typ` is a media type whose `application/` prefix may be left out (RFC 7515 §4.1.9).
fn type_accepted(typ: Option<&str>, accepted: &[String]) -> bool {
    let Some(typ) = typ else { return false };
    let lower = typ.to_ascii_lowercase();
    let bare = lower.strip_prefix("application/").unwrap_or(&lower);
    accepted.iter().any(|a| a == bare)
}

/// `exp` is required; `nbf` and `iat`, when present, may not lie in the future beyond `leeway`.
/// Returns `exp`.
fn check_times(
    claims: &serde_json::Map<String, Value>,
    now: u64,
    leeway: u64,
) -> Result<u64, AuthOutcome> {
    let time = |name: &str| match claims.get(name) {
        None => Ok(None),
        // NumericDate may carry a fraction (RFC 7519 §2); whole seconds are enough here.
        Some(v) => v
            .as_f64()
            .filter(|t| *t >= 0.0)
            .map(|t| Some(t as u64))
            .ok_or(AuthOutcome::Malformed),
    };
    let exp = time("exp")?.ok_or(AuthOutcome::Malformed)?;
    if now > exp.saturating_add(leeway) {
        return Err(AuthOutcome::Expired);
    }
    for name in ["nbf", "iat"] {
        if time(name)?.is_some_and(|t| t > now.saturating_add(leeway)) {
            return Err(AuthOutcome::NotYetValid);
        }
    }
    Ok(exp)
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3); one must be accepted.
fn audience_accepted(aud: Option<&Value>, accepted: &[String]) -> bool {
    match aud {
        Some(Value::String(a)) => accepted.contains(a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| accepted.iter().any(|x| x == a)),
        _ => false,
    }
}

/// A claim holding names: an array of strings, or one string split on `sep` (OAuth's `scope` is
/// space-separated, RFC 8693 §4.2).
fn strings(claim: Option<&Value>, sep: char) -> Vec<String> {
    match claim {
        Some(Value::String(s)) => s
            .split(sep)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn times_are_checked_with_leeway() {
        let c = claims(json!({"exp": 100}));
        assert_eq!(check_times(&c, 100, 0), Ok(100));
        assert_eq!(check_times(&c, 101, 0), Err(AuthOutcome::Expired));
        assert_eq!(check_times(&c, 130, 30), Ok(100));
        let c = claims(json!({"exp": 1000, "nbf": 200}));
        assert_eq!(check_times(&c, 100, 30), Err(AuthOutcome::NotYetValid));
        assert_eq!(check_times(&c, 180, 30), Ok(1000));
        let c = claims(json!({"exp": 1000, "iat": 500}));
        assert_eq!(check_times(&c, 100, 30), Err(AuthOutcome::NotYetValid));
        assert_eq!(
            check_times(&claims(json!({})), 1, 0),
            Err(AuthOutcome::Malformed)
        );
        assert_eq!(
            check_times(&claims(json!({"exp": "soon"})), 1, 0),
            Err(AuthOutcome::Malformed)
        );
    }

    #[test]
    fn audience_may_be_a_string_or_a_list() {
        let ok = vec!["api".to_string()];
        assert!(audience_accepted(Some(&json!("api")), &ok));
        assert!(audience_accepted(Some(&json!(["x", "api"])), &ok));
        assert!(!audience_accepted(Some(&json!("other")), &ok));
        assert!(!audience_accepted(None, &ok));
    }

    #[test]
    fn typ_may_leave_out_application() {
        let at = vec!["at+jwt".to_string()];
        assert!(type_accepted(Some("at+jwt"), &at));
        assert!(type_accepted(Some("application/AT+JWT"), &at));
        assert!(!type_accepted(Some("JWT"), &at));
        assert!(!type_accepted(None, &at));
    }

    #[test]
    fn scopes_and_roles_are_read_from_strings_or_lists() {
        assert_eq!(strings(Some(&json!("a b  c")), ' '), ["a", "b", "c"]);
        assert_eq!(strings(Some(&json!(["x", 1, "y"])), ' '), ["x", "y"]);
        assert!(strings(None, ' ').is_empty());
    }
}
