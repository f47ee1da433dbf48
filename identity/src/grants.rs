//! What stands behind the opaque values the issuer hands out: authorization codes, refresh
//! tokens (in families), SSO sessions and pending authorization requests. They are kept in the
//! state store (`state/`), keyed by the SHA-256 of the value, so a database dump yields nothing
//! a client could present.
//!
//! A family is everything issued from one authorization grant (a code, or a password login):
//! its refresh tokens and the ids of its access tokens. Revoking it revokes all of them, which
//! is what a replayed code (RFC 6749 §4.1.2), a replayed refresh token (RFC 9700 §4.14.2) and a
//! revoked refresh token (RFC 7009 §2.1) call for.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// A fresh 256-bit random value, base64url without padding.
pub fn random_value() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Whether `value` is 256 bits in base64url without padding (43 characters): the shape of
/// [`random_value`]'s output and of an S256 `code_challenge` (RFC 7636 §4.2).
pub fn is_base64url_256(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub username: String,
    pub scope: Vec<String>,
    pub audience: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub auth_time: u64,
    /// When the code was issued: a "logout everywhere" at or after it revokes the code. `None`
    /// in a code stored before this field existed (see [`AuthorizationCode::issued_not_before`]).
    #[serde(default)]
    pub issued_at: Option<u64>,
    pub expires_at: u64,
}

impl AuthorizationCode {
    /// A time the code was issued at or after: `issued_at`, or for an older code its
    /// `auth_time` (the login always comes before the code). Erring early is erring safe: a
    /// revocation at or after this time refuses the code.
    pub fn issued_not_before(&self) -> u64 {
        self.issued_at.unwrap_or(self.auth_time)
    }
}

/// Who a refresh token speaks for and what it may renew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshGrant {
    pub family: String,
    pub client_id: String,
    pub username: String,
    pub scope: Vec<String>,
    pub audience: String,
    pub auth_time: u64,
    pub expires_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub username: String,
    pub auth_time: u64,
    pub expires_at: u64,
}

/// An `/authorize` request waiting for the user to log in; the login form carries its id, and
/// only the browser that started it may complete it (see `Store::put_pending`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: String,
    pub scope: Vec<String>,
    pub audience: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub expires_at: u64,
}

/// Why a pending login request cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum PendingRefusal {
    /// Never issued, already used, or expired.
    Unknown,
    /// Presented without the cookie of the browser that started it (login CSRF).
    OtherBrowser,
}
