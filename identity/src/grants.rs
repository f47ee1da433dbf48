//! Server-side state behind opaque values: authorization codes, refresh tokens (in families),
//! SSO sessions, pending authorization requests and revoked access-token ids.
//!
//! A family is everything issued from one authorization grant (a code, or a password login):
//! its refresh tokens and the ids of its access tokens. Revoking it revokes all of them, which
//! is what a replayed code (RFC 6749 §4.1.2), a replayed refresh token (RFC 9700 §4.14.2) and a
//! revoked refresh token (RFC 7009 §2.1) call for.
//!
//! Opaque values are 256-bit random strings; only their SHA-256 is stored, so a memory dump
//! yields nothing a client could present. Everything lives in memory: a restart signs every user
//! out, invalidates refresh tokens and forgets revocations (see the README).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

type Digest32 = [u8; 32];

const MAX_PENDING: usize = 100_000;

fn digest(value: &str) -> Digest32 {
    Sha256::digest(value.as_bytes()).into()
}

#[derive(Debug, Clone)]
pub struct AuthorizationCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub username: String,
    pub scope: Vec<String>,
    pub audience: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub auth_time: u64,
    pub expires_at: u64,
}

/// Who a refresh token speaks for and what it may renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshGrant {
    pub family: String,
    pub client_id: String,
    pub username: String,
    pub scope: Vec<String>,
    pub audience: String,
    pub auth_time: u64,
    pub expires_at: u64,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    pub auth_time: u64,
    pub expires_at: u64,
}

/// An `/authorize` request waiting for the user to log in; the login form carries its id, and
/// only the browser that started it may complete it (see [`Grants::put_pending`]).
#[derive(Debug, Clone)]
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

struct PendingEntry {
    request: PendingAuthorization,
    /// Digest of the browser's login-binding cookie.
    browser: Digest32,
}

/// Why a pending login request cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum PendingRefusal {
    /// Never issued, already used, or expired.
    Unknown,
    /// Presented without the cookie of the browser that started it (login CSRF).
    OtherBrowser,
}

struct CodeEntry {
    code: AuthorizationCode,
    /// Set once redeemed; a second redemption revokes the family it started, access tokens
    /// included (RFC 6749 §4.1.2). A redeemed code is kept while that family has a live token,
    /// so a replay after the code's own expiry still revokes them.
    redeemed_family: Option<String>,
}

struct RefreshEntry {
    grant: RefreshGrant,
    used: bool,
}

#[derive(Default)]
struct State {
    codes: HashMap<Digest32, CodeEntry>,
    refresh: HashMap<Digest32, RefreshEntry>,
    revoked_families: HashSet<String>,
    /// Access tokens issued in each family, `jti → exp`, until they expire.
    family_access: HashMap<String, HashMap<String, u64>>,
    sessions: HashMap<Digest32, Session>,
    pending: HashMap<Digest32, PendingEntry>,
    /// `pending`'s keys in the order they were stored, which is also the order they expire in
    /// (every one gets the same window): the oldest is evicted in O(1) when the table is full.
    /// May hold keys already taken; `prune` drops those.
    pending_order: VecDeque<Digest32>,
    revoked_jti: HashMap<String, u64>,
}

#[derive(Default)]
pub struct Grants {
    state: Mutex<State>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Redemption<T> {
    Ok(T),
    Unknown,
    Expired,
    /// Presented a second time: the family it belonged to is now revoked.
    Reused,
}

impl Grants {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn put_code(&self, code: AuthorizationCode) -> String {
        let value = random_value();
        self.state().codes.insert(
            digest(&value),
            CodeEntry {
                code,
                redeemed_family: None,
            },
        );
        value
    }

    /// Redeems a code once; `family` names the refresh family the redemption starts.
    pub fn redeem_code(
        &self,
        value: &str,
        now: u64,
        family: &str,
    ) -> Redemption<AuthorizationCode> {
        let mut state = self.state();
        let Some(entry) = state.codes.get_mut(&digest(value)) else {
            return Redemption::Unknown;
        };
        if let Some(previous) = entry.redeemed_family.clone() {
            state.revoke_family(&previous);
            return Redemption::Reused;
        }
        if now >= entry.code.expires_at {
            return Redemption::Expired;
        }
        entry.redeemed_family = Some(family.to_string());
        Redemption::Ok(entry.code.clone())
    }

    pub fn put_refresh(&self, grant: RefreshGrant) -> String {
        let value = random_value();
        self.state()
            .refresh
            .insert(digest(&value), RefreshEntry { grant, used: false });
        value
    }

    /// Uses a refresh token once. A second use revokes its whole family (RFC 9700 §4.14.2).
    pub fn use_refresh(&self, value: &str, now: u64) -> Redemption<RefreshGrant> {
        let mut state = self.state();
        let Some(entry) = state.refresh.get_mut(&digest(value)) else {
            return Redemption::Unknown;
        };
        let family = entry.grant.family.clone();
        if entry.used {
            state.revoke_family(&family);
            return Redemption::Reused;
        }
        if now >= entry.grant.expires_at {
            return Redemption::Expired;
        }
        if state.revoked_families.contains(&family) {
            return Redemption::Unknown;
        }
        let Some(entry) = state.refresh.get_mut(&digest(value)) else {
            return Redemption::Unknown;
        };
        entry.used = true;
        Redemption::Ok(entry.grant.clone())
    }

    /// The live grant behind a refresh token, for introspection and revocation.
    pub fn peek_refresh(&self, value: &str, now: u64) -> Option<RefreshGrant> {
        let state = self.state();
        let entry = state.refresh.get(&digest(value))?;
        let live = !entry.used
            && now < entry.grant.expires_at
            && !state.revoked_families.contains(&entry.grant.family);
        live.then(|| entry.grant.clone())
    }

    /// Revokes the family's refresh tokens and the access tokens issued in it.
    pub fn revoke_family(&self, family: &str) {
        self.state().revoke_family(family);
    }

    /// Records an access token issued in `family`, so revoking the family revokes it too.
    /// Returns false when the family is already revoked: a replay raced the request that
    /// issued the token, which must then not be handed out (it is revoked already).
    #[must_use]
    pub fn record_access(&self, family: &str, jti: &str, exp: u64) -> bool {
        let mut state = self.state();
        if state.revoked_families.contains(family) {
            state.revoked_jti.insert(jti.to_string(), exp);
            return false;
        }
        state
            .family_access
            .entry(family.to_string())
            .or_default()
            .insert(jti.to_string(), exp);
        true
    }

    pub fn revoke_jti(&self, jti: &str, exp: u64) {
        self.state().revoked_jti.insert(jti.to_string(), exp);
    }

    pub fn is_jti_revoked(&self, jti: &str) -> bool {
        self.state().revoked_jti.contains_key(jti)
    }

    /// Starts an SSO session; the returned value goes in the session cookie.
    pub fn put_session(&self, username: &str, auth_time: u64, expires_at: u64) -> String {
        let value = random_value();
        let session = Session {
            username: username.to_string(),
            auth_time,
            expires_at,
        };
        self.state().sessions.insert(digest(&value), session);
        value
    }

    pub fn session(&self, value: &str, now: u64) -> Option<Session> {
        self.state()
            .sessions
            .get(&digest(value))
            .filter(|s| now < s.expires_at)
            .cloned()
    }

    pub fn end_session(&self, value: &str) -> Option<Session> {
        self.state().sessions.remove(&digest(value))
    }

    /// Stores a pending request bound to `browser`, the value of that browser's login-binding
    /// cookie: the id alone, which travels in a form any page can forge, completes nothing.
    ///
    /// Anyone can open `/authorize` without credentials, so pending requests are capped: when
    /// full, expired ones go first, then the oldest.
    pub fn put_pending(&self, pending: PendingAuthorization, browser: &str) -> String {
        let value = random_value();
        let mut state = self.state();
        // Full: the oldest goes, expired or not. A flood of `/authorize` must not make every
        // request scan the table under the lock that token requests share.
        while state.pending.len() >= MAX_PENDING {
            let Some(oldest) = state.pending_order.pop_front() else {
                break;
            };
            state.pending.remove(&oldest);
        }
        let entry = PendingEntry {
            request: pending,
            browser: digest(browser),
        };
        let key = digest(&value);
        state.pending.insert(key, entry);
        state.pending_order.push_back(key);
        value
    }

    /// The pending request `value`, if it is live and `browser` is the cookie it was bound to.
    pub fn pending(
        &self,
        value: &str,
        browser: Option<&str>,
        now: u64,
    ) -> Result<PendingAuthorization, PendingRefusal> {
        let state = self.state();
        check_pending(state.pending.get(&digest(value)), browser, now).map(|e| e.request.clone())
    }

    /// Like [`Grants::pending`], and spends it: a pending request completes one login.
    pub fn take_pending(
        &self,
        value: &str,
        browser: Option<&str>,
        now: u64,
    ) -> Result<PendingAuthorization, PendingRefusal> {
        let mut state = self.state();
        let key = digest(value);
        check_pending(state.pending.get(&key), browser, now)?;
        state
            .pending
            .remove(&key)
            .map(|e| e.request)
            .ok_or(PendingRefusal::Unknown)
    }

    /// Forgets everything that can no longer be used. A used refresh token is remembered until
    /// it would have expired anyway, and a redeemed code while anything issued from it lives,
    /// so reuse is caught for as long as it could harm.
    pub fn sweep(&self, now: u64) {
        let mut s = self.state();
        s.refresh.retain(|_, e| now < e.grant.expires_at);
        s.sessions.retain(|_, x| now < x.expires_at);
        s.pending.retain(|_, e| now < e.request.expires_at);
        let State {
            pending,
            pending_order,
            ..
        } = &mut *s;
        pending_order.retain(|k| pending.contains_key(k));
        s.revoked_jti.retain(|_, exp| now < *exp);
        for tokens in s.family_access.values_mut() {
            tokens.retain(|_, exp| now < *exp);
        }
        s.family_access.retain(|_, tokens| !tokens.is_empty());
        let mut live: HashSet<String> =
            s.refresh.values().map(|e| e.grant.family.clone()).collect();
        live.extend(s.family_access.keys().cloned());
        s.codes.retain(|_, e| {
            now < e.code.expires_at || e.redeemed_family.as_ref().is_some_and(|f| live.contains(f))
        });
        // A redeemed code keeps its family's revocation: the request that redeemed it may not
        // have recorded its access token yet.
        live.extend(s.codes.values().filter_map(|e| e.redeemed_family.clone()));
        s.revoked_families.retain(|f| live.contains(f));
    }
}

/// A pending entry is usable when it exists, is live, and `browser` hashes to its binding. The
/// digests are compared in constant time: it costs nothing and leaves no timing to reason about.
fn check_pending<'a>(
    entry: Option<&'a PendingEntry>,
    browser: Option<&str>,
    now: u64,
) -> Result<&'a PendingEntry, PendingRefusal> {
    let entry = entry
        .filter(|e| now < e.request.expires_at)
        .ok_or(PendingRefusal::Unknown)?;
    match browser {
        Some(b) if bool::from(digest(b).ct_eq(&entry.browser)) => Ok(entry),
        _ => Err(PendingRefusal::OtherBrowser),
    }
}

impl State {
    fn revoke_family(&mut self, family: &str) {
        self.revoked_families.insert(family.to_string());
        if let Some(tokens) = self.family_access.remove(family) {
            self.revoked_jti.extend(tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(family: &str) -> RefreshGrant {
        RefreshGrant {
            family: family.into(),
            client_id: "c".into(),
            username: "u".into(),
            scope: vec![],
            audience: "a".into(),
            auth_time: 0,
            expires_at: 100,
        }
    }

    fn pending() -> PendingAuthorization {
        PendingAuthorization {
            client_id: "c".into(),
            redirect_uri: "https://c/cb".into(),
            state: "s".into(),
            scope: vec![],
            audience: "a".into(),
            nonce: None,
            code_challenge: None,
            expires_at: 100,
        }
    }

    #[test]
    fn a_pending_login_answers_only_its_own_browser_and_only_once() {
        let g = Grants::default();
        let id = g.put_pending(pending(), "browser-a");
        for other in [None, Some("browser-b"), Some("")] {
            let refused = Err(PendingRefusal::OtherBrowser);
            assert_eq!(g.pending(&id, other, 1).map(|p| p.state), refused);
            assert_eq!(g.take_pending(&id, other, 1).map(|p| p.state), refused);
        }
        assert!(g.pending(&id, Some("browser-a"), 1).is_ok());
        assert!(g.take_pending(&id, Some("browser-a"), 1).is_ok());
        let spent = Err(PendingRefusal::Unknown);
        assert_eq!(
            g.take_pending(&id, Some("browser-a"), 1).map(|p| p.state),
            spent
        );
        let late = g.put_pending(pending(), "browser-a");
        let expired = Err(PendingRefusal::Unknown);
        assert_eq!(
            g.pending(&late, Some("browser-a"), 100).map(|p| p.state),
            expired
        );
    }

    #[test]
    fn a_reused_refresh_token_revokes_its_family() {
        let g = Grants::default();
        let first = g.put_refresh(grant("f"));
        assert!(matches!(g.use_refresh(&first, 1), Redemption::Ok(_)));
        let second = g.put_refresh(grant("f"));
        assert!(g.peek_refresh(&second, 1).is_some());
        assert_eq!(g.use_refresh(&first, 2), Redemption::Reused);
        assert!(g.peek_refresh(&second, 2).is_none());
        assert_eq!(g.use_refresh(&second, 2), Redemption::Unknown);
        assert_eq!(g.use_refresh("nonsense", 2), Redemption::Unknown);
    }

    fn code(expires_at: u64) -> AuthorizationCode {
        AuthorizationCode {
            client_id: "c".into(),
            redirect_uri: "r".into(),
            username: "u".into(),
            scope: vec![],
            audience: "a".into(),
            nonce: None,
            code_challenge: None,
            auth_time: 0,
            expires_at,
        }
    }

    #[test]
    fn a_replayed_code_revokes_the_access_tokens_of_its_family() {
        let g = Grants::default();
        let value = g.put_code(code(60));
        assert!(matches!(g.redeem_code(&value, 1, "f"), Redemption::Ok(_)));
        assert!(g.record_access("f", "a1", 100));
        let refresh = g.put_refresh(grant("f"));
        assert!(g.record_access("other", "b1", 100));

        assert!(matches!(g.redeem_code(&value, 2, "f2"), Redemption::Reused));
        assert!(g.is_jti_revoked("a1"));
        assert!(g.peek_refresh(&refresh, 2).is_none());
        assert!(!g.is_jti_revoked("b1"), "another family is untouched");
        // A token the family issues after the replay is refused as it is recorded.
        assert!(!g.record_access("f", "a2", 100));
        assert!(g.is_jti_revoked("a2"));
        // Revocations last as long as the tokens, no longer.
        g.sweep(99);
        assert!(g.is_jti_revoked("a1"));
        g.sweep(100);
        assert!(!g.is_jti_revoked("a1"));
    }

    #[test]
    fn a_code_replayed_after_its_expiry_still_revokes_what_it_issued() {
        let g = Grants::default();
        let value = g.put_code(code(60));
        assert!(matches!(g.redeem_code(&value, 1, "f"), Redemption::Ok(_)));
        assert!(g.record_access("f", "a1", 900));
        // The code expired and the upkeep swept, but its access token lives on.
        g.sweep(61);
        assert!(matches!(
            g.redeem_code(&value, 62, "f2"),
            Redemption::Reused
        ));
        assert!(g.is_jti_revoked("a1"));
        // Once nothing issued from it lives, the code is forgotten.
        g.sweep(900);
        assert!(matches!(
            g.redeem_code(&value, 901, "f3"),
            Redemption::Unknown
        ));
    }

    #[test]
    fn a_full_pending_table_evicts_the_oldest_request_first() {
        let g = Grants::default();
        let first = g.put_pending(pending(), "b");
        let second = g.put_pending(pending(), "b");
        for _ in 2..MAX_PENDING {
            g.put_pending(pending(), "b");
        }
        let newest = g.put_pending(pending(), "b");
        assert_eq!(
            g.pending(&first, Some("b"), 1).err(),
            Some(PendingRefusal::Unknown)
        );
        assert!(g.pending(&second, Some("b"), 1).is_ok());
        assert!(g.pending(&newest, Some("b"), 1).is_ok());
        assert_eq!(g.state().pending.len(), MAX_PENDING);
    }
}
