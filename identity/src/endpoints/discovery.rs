//! `/.well-known/openid-configuration` (OIDC Discovery §3, RFC 8414 §2) and `/jwks.json` (RFC 7517).
//! The document lists only what this server really does.

use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use crate::config::{GrantType, Settings};
use crate::issuer::Issuer;
use crate::reply::{json, respond, Reply};

pub fn document(settings: &Settings) -> Reply {
    let base = &settings.process.issuer;
    let mut grants = vec!["authorization_code", "refresh_token", "client_credentials"];
    if settings
        .clients
        .values()
        .any(|c| c.grant_types.contains(&GrantType::Password))
    {
        grants.push("password");
    }
    let algs: Vec<&str> = settings
        .process
        .algorithms
        .iter()
        .map(|a| a.as_str())
        .collect();
    let mut scopes: Vec<&str> = settings
        .clients
        .values()
        .flat_map(|c| c.scopes.iter().map(String::as_str))
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
    let doc = json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/jwks.json"),
        "introspection_endpoint": format!("{base}/introspect"),
        "revocation_endpoint": format!("{base}/revoke"),
        "end_session_endpoint": format!("{base}/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grants,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        // Public clients revoke their own tokens with no secret (RFC 7009 §2.1), so `none` too.
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": scopes,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "azp", "email", "name", "roles"],
        "prompt_values_supported": ["none", "login"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    });
    cacheable(
        json(StatusCode::OK, &doc),
        settings.process.jwks_max_age.as_secs(),
    )
}

/// The published keys, cacheable for `keys.jwks_max_age`: a next key is listed that long before
/// it signs, and a retired one that long past the last token it signed, so a cached copy never
/// misses a live key.
pub fn jwks(issuer: &Issuer, settings: &Settings) -> Reply {
    let set = issuer.keys.current();
    let r = respond(StatusCode::OK, "application/jwk-set+json", set.jwks.clone());
    cacheable(r, settings.process.jwks_max_age.as_secs())
}

fn cacheable(mut r: Reply, max_age: u64) -> Reply {
    r.headers_mut().remove(header::PRAGMA);
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    r
}
