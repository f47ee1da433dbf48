//! What a client may ask for, shared by the token endpoint and `/authorize`: scopes
//! (RFC 6749 §3.3) and the token's audience (RFC 8707 resource indicators).

use crate::config::Client;
use crate::reply::OAuthError;
use crate::request::Params;

/// The requested scopes, each one the client is allowed (RFC 6749 §3.3). No `scope` parameter
/// means everything the client is allowed.
pub fn resolve_scope(client: &Client, params: &Params) -> Result<Vec<String>, OAuthError> {
    let Some(requested) = params.get("scope") else {
        return Ok(client.scopes.iter().cloned().collect());
    };
    let mut scope: Vec<String> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !client.scopes.contains(s) {
            return Err(OAuthError::invalid_scope(format!(
                "scope `{s}` is not allowed for this client"
            )));
        }
        if !scope.iter().any(|x| x == s) {
            scope.push(s.to_string());
        }
    }
    Ok(scope)
}

/// The token's audience: `audience` (or RFC 8707 `resource`) if the client may ask for it,
/// else the client's first allowed audience.
pub fn resolve_audience(client: &Client, params: &Params) -> Result<String, OAuthError> {
    let requested = match (params.get("audience"), params.get("resource")) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "send `audience` or `resource`, not both".into(),
            ))
        }
        (Some(a), None) | (None, Some(a)) => Some(a),
        (None, None) => None,
    };
    match requested {
        Some(a) if client.audiences.iter().any(|x| x == a) => Ok(a.to_string()),
        Some(a) => Err(OAuthError::invalid_target(format!(
            "audience `{a}` is not allowed for this client"
        ))),
        None => client.audiences.first().cloned().ok_or_else(|| {
            OAuthError::invalid_target("this client has no audience configured".into())
        }),
    }
}
