//! Tokens already verified, so a busy client costs one signature check, not one per request.
//!
//! Keyed by the whole token (compared in full, not by a hash of it). An entry is used only while
//! the token is unexpired and the key that verified it is still the one its issuer publishes under
//! that `kid`: a key that leaves the JWKS takes its tokens with it. Bounded by entry count.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::issuer::TrustedIssuer;
use super::VerifiedIdentity;
use crate::jwks::VerifyingKey;
use crate::metrics;

#[derive(Clone)]
struct Entry {
    identity: Arc<VerifiedIdentity>,
    issuer: Arc<TrustedIssuer>,
    key: Arc<VerifyingKey>,
}

/// Shared by every route of one snapshot; a reload starts a new one (issuer rules may change).
pub struct TokenCache {
    entries: Option<Cache<Arc<str>, Entry>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

impl TokenCache {
    /// `capacity` 0 turns the cache off.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            entries: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    /// The identity `token` proved before, and the issuer that vouched for it, if it still
    /// holds at `now` for one of `issuers`. Revocation is not judged here: the caller checks it
    /// on every use.
    pub fn get(
        &self,
        token: &str,
        issuers: &[Arc<TrustedIssuer>],
        now: u64,
    ) -> Option<(Arc<VerifiedIdentity>, Arc<TrustedIssuer>)> {
        let entries = self.entries.as_ref()?;
        let Some(entry) = entries.get(token) else {
            metrics::TOKEN_CACHE_MISSES.inc();
            return None;
        };
        let key_still_published = || {
            let keys = entry.issuer.keys.keys();
            let current = keys.as_ref().and_then(|k| k.find(entry.key.kid.as_deref()));
            current.is_some_and(|k| Arc::ptr_eq(k, &entry.key))
        };
        if now
            > entry
                .identity
                .expires_at
                .saturating_add(entry.issuer.leeway)
            || !key_still_published()
        {
            entries.remove(token);
            metrics::TOKEN_CACHE_MISSES.inc();
            return None;
        }
        if !issuers.iter().any(|i| Arc::ptr_eq(i, &entry.issuer)) {
            // Verified for another route's issuer: this route must judge it itself.
            metrics::TOKEN_CACHE_MISSES.inc();
            return None;
        }
        metrics::TOKEN_CACHE_HITS.inc();
        Some((entry.identity, entry.issuer))
    }

    pub fn insert(
        &self,
        identity: Arc<VerifiedIdentity>,
        issuer: Arc<TrustedIssuer>,
        key: Arc<VerifyingKey>,
    ) {
        if let Some(entries) = &self.entries {
            let token = identity.token.clone();
            entries.insert(
                token,
                Entry {
                    identity,
                    issuer,
                    key,
                },
            );
        }
    }
}
