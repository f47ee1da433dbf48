//! An issuer the gateway trusts and the rules its tokens must meet.

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::{AuthOutcome, VerifiedIdentity};
use crate::jwks::KeySource;
use crate::revocations::{FeedTuning, RevocationFeed};

/// An issuer the gateway trusts, with the rules its tokens must meet. Rebuilt on every reload;
/// its [`KeySource`] and [`RevocationFeed`] are carried over when their settings did not change.
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
    /// `revocations:`, when the issuer publishes a feed.
    pub revocations: Option<IssuerRevocations>,
}

/// The issuer's revocation feed, and how this snapshot wants it polled.
#[derive(Debug)]
pub struct IssuerRevocations {
    pub feed: Arc<RevocationFeed>,
    pub tuning: FeedTuning,
}

impl TrustedIssuer {
    /// Whether the issuer revoked this (verified) token: its `jti` is listed, or its subject is
    /// revoked for tokens issued up to a time at or after its `iat`. Before the feed has been
    /// read in full the answer is unknown, and the token is refused (fail closed). While nothing
    /// is revoked this is two atomic loads; otherwise two claim lookups and at most two hash
    /// lookups.
    pub fn revoked(&self, identity: &VerifiedIdentity) -> Result<(), AuthOutcome> {
        let Some(revocations) = &self.revocations else {
            return Ok(());
        };
        if !revocations.feed.synced() {
            return Err(AuthOutcome::RevocationsUnknown);
        }
        let set = revocations.feed.current();
        if set.is_empty() {
            return Ok(());
        }
        let jti = identity.claims.get("jti").and_then(Value::as_str);
        // Verified as a NumericDate already (a fraction allowed); whole seconds compare.
        let iat = identity
            .claims
            .get("iat")
            .and_then(Value::as_f64)
            .map(|t| t as u64);
        if set.revokes(jti, &identity.subject, iat) {
            return Err(AuthOutcome::Revoked);
        }
        Ok(())
    }
}
