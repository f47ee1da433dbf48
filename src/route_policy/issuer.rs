//! An issuer the gateway trusts and the rules its tokens must meet.

use std::sync::Arc;

use jsonwebtoken::Algorithm;

use crate::jwks::KeySource;

/// An issuer the gateway trusts, with the rules its tokens must meet. Rebuilt on every reload;
/// its [`KeySource`] is carried over when its settings did not change.
#[derive(Debug)]
pub struct TrustedIssuer {
    pub name: Arc<str>,
    /// The exact `iss` value.
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    /// Seconds of clock skew allowed on `exp`, `nbf`, `iat`.
    pub leeway: u64,
    /// Accepted `typ` values, lower case; empty = not checked.
    pub token_types: Vec<String>,
    pub scope_claim: String,
    pub roles_claim: String,
    pub keys: Arc<KeySource>,
}
