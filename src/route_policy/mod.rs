//! What a route demands of a request between routing and the upstream, compiled once per route.
//!
//! A [`RoutePolicy`] is an ordered list of checks, each in its own module and each a plain
//! function of the request's facts and the snapshot, answering continue or reject:
//!
//! 1. [`rate_limit`]: limits keyed on the client ip, a header or the route (429)
//! 2. [`jwt`]: the bearer token, verified against the issuer's keys → [`VerifiedIdentity`]
//! 3. [`rate_limit`]: limits keyed on verified claims (429)
//! 4. [`authz`]: the policy decision point's allow or deny (cached in [`decision_cache`])
//!
//! and what the upstream is told: [`identity_headers`] (strip the namespace, inject verified
//! claims) and the gateway assertion. The upstream target is chosen after the checks, so
//! consistent hashing can use verified claims.

pub mod authz;
pub mod decision_cache;
pub mod identity_headers;
pub mod issuer;
pub mod jose;
pub mod jwt;
pub mod rate_limit;
pub mod token_cache;

use std::sync::Arc;

use serde_json::{Map, Value};

pub use identity_headers::IdentityHeaders;
pub use issuer::{IssuerRevocations, TrustedIssuer};
pub use jwt::RouteAuth;

/// A route's compiled policy.
#[derive(Debug, Default)]
pub struct RoutePolicy {
    /// `None`: the route does not look at tokens (`auth.mode: none`).
    pub auth: Option<RouteAuth>,
    /// `None`: no authorization callout (`authz.mode: off` or no `authz:`).
    pub authz: Option<authz::RouteAuthz>,
    pub identity_headers: IdentityHeaders,
    /// `aud` of the gateway assertion, when the route sends one.
    pub assertion_audience: Option<Arc<str>>,
    pub strip_authorization: bool,
    /// `rate_limits` (or `rate_limiting.default`), split into the two stages.
    pub rate_limits: rate_limit::RouteRateLimits,
}

impl RoutePolicy {
    /// Whether a request on the route goes through any stage (rate limits, JWT, authorization).
    pub fn has_stages(&self) -> bool {
        self.auth.is_some() || self.authz.is_some() || !self.rate_limits.is_empty()
    }
}

/// Who the request speaks for, as proven by a verified token. Set by the [`jwt`] stage only.
#[derive(Debug)]
pub struct VerifiedIdentity {
    /// The token, kept to key per-token caches (the gateway assertion); never logged.
    pub token: Arc<str>,
    /// The issuer's name in the config.
    pub issuer: Arc<str>,
    pub subject: String,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub expires_at: u64,
    pub claims: Map<String, Value>,
}

/// Why the auth stage answered as it did: the `outcome` label of `gatehouse_auth_outcomes_total`
/// and the access log's `auth` field. A fixed set, never client text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthOutcome {
    Verified,
    Anonymous,
    Missing,
    TooLarge,
    Malformed,
    UnsupportedAlgorithm,
    UnknownKid,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    NotYetValid,
    WrongType,
    InsufficientScope,
    NoKeySet,
    /// The issuer's revocation feed lists the token (`jti`) or its subject (`sub`, `iat`).
    Revoked,
    /// The issuer has a revocation feed that has not been read in full yet: which tokens are
    /// revoked is unknown, so none passes (503, like [`AuthOutcome::NoKeySet`]).
    RevocationsUnknown,
}

const _: () = assert!(AuthOutcome::ALL.len() <= crate::metrics::AUTH_OUTCOME_SLOTS);

impl AuthOutcome {
    pub const ALL: [AuthOutcome; 17] = [
        AuthOutcome::Verified,
        AuthOutcome::Anonymous,
        AuthOutcome::Missing,
        AuthOutcome::TooLarge,
        AuthOutcome::Malformed,
        AuthOutcome::UnsupportedAlgorithm,
        AuthOutcome::UnknownKid,
        AuthOutcome::BadSignature,
        AuthOutcome::WrongIssuer,
        AuthOutcome::WrongAudience,
        AuthOutcome::Expired,
        AuthOutcome::NotYetValid,
        AuthOutcome::WrongType,
        AuthOutcome::InsufficientScope,
        AuthOutcome::NoKeySet,
        AuthOutcome::Revoked,
        AuthOutcome::RevocationsUnknown,
    ];

    /// Its fixed position, for the route's metric handles.
    pub fn slot(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            AuthOutcome::Verified => "verified",
            AuthOutcome::Anonymous => "anonymous",
            AuthOutcome::Missing => "missing",
            AuthOutcome::TooLarge => "too_large",
            AuthOutcome::Malformed => "malformed",
            AuthOutcome::UnsupportedAlgorithm => "unsupported_algorithm",
            AuthOutcome::UnknownKid => "unknown_kid",
            AuthOutcome::BadSignature => "bad_signature",
            AuthOutcome::WrongIssuer => "wrong_issuer",
            AuthOutcome::WrongAudience => "wrong_audience",
            AuthOutcome::Expired => "expired",
            AuthOutcome::NotYetValid => "not_yet_valid",
            AuthOutcome::WrongType => "wrong_type",
            AuthOutcome::InsufficientScope => "insufficient_scope",
            AuthOutcome::NoKeySet => "no_key_set",
            AuthOutcome::Revoked => "revoked",
            AuthOutcome::RevocationsUnknown => "revocations_unknown",
        }
    }

    /// The `error_description` of the 401 (RFC 6750 §3): says what is wrong, never echoes the token.
    pub fn description(self) -> &'static str {
        match self {
            AuthOutcome::Verified | AuthOutcome::Anonymous => "",
            AuthOutcome::Missing => "a bearer token is required",
            AuthOutcome::TooLarge => "token too large",
            AuthOutcome::Malformed => "token malformed",
            AuthOutcome::UnsupportedAlgorithm => "token signing algorithm not accepted",
            AuthOutcome::UnknownKid => "token signed by an unknown key",
            AuthOutcome::BadSignature => "token signature invalid",
            AuthOutcome::WrongIssuer => "token issuer not accepted here",
            AuthOutcome::WrongAudience => "token audience not accepted here",
            AuthOutcome::Expired => "token expired",
            AuthOutcome::NotYetValid => "token not yet valid",
            AuthOutcome::WrongType => "token type not accepted",
            AuthOutcome::InsufficientScope => "token lacks a required scope or role",
            AuthOutcome::NoKeySet => "the issuer's keys are not available yet",
            AuthOutcome::Revoked => "the token has been revoked",
            AuthOutcome::RevocationsUnknown => "the issuer's revocations are not known yet",
        }
    }
}
