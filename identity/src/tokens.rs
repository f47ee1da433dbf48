//! What goes into tokens: RFC 9068 access tokens (`typ: at+jwt`) and OpenID Connect ID tokens,
//! and the check of our own access tokens for `/userinfo` and `/introspect`.

use jsonwebtoken::{decode, decode_header, Validation};
use serde_json::{json, Map, Value};

use crate::config::{Client, User};
use crate::keys::{KeyError, KeyRing};

/// The access-token claim that says which kind of party `sub` names: [`USER`] or [`SERVICE`].
/// User names and client ids are one namespace, and this claim lets a resource server check the
/// kind without knowing the issuer's directory.
pub const SUB_KIND: &str = "sub_kind";
pub const USER: &str = "user";
pub const SERVICE: &str = "service";

/// The party a token speaks for: a logged-in user, or a service as itself.
pub enum Subject<'a> {
    User { user: &'a User, auth_time: u64 },
    Service(&'a Client),
}

pub struct AccessToken {
    pub token: String,
    pub jti: String,
    pub kid: String,
    /// Its `exp`: how long a revocation of it must be remembered.
    pub expires_at: u64,
}

/// An access token's id and expiry, chosen before it is signed: a grant records them in the
/// state store in the same transaction that redeems the code or refresh token behind it.
#[derive(Debug, Clone)]
pub struct PlannedAccess {
    pub jti: String,
    pub expires_at: u64,
}

impl PlannedAccess {
    pub fn new(now: u64, ttl_secs: u64) -> Self {
        Self {
            jti: crate::grants::random_value(),
            expires_at: now + ttl_secs,
        }
    }
}

/// Signs tokens as `issuer` at one instant.
pub struct Minter<'a> {
    pub keys: &'a KeyRing,
    pub issuer: &'a str,
    pub now: u64,
}

impl Minter<'_> {
    /// Builds and signs the access token `planned`. `scope` is already checked against the
    /// client's allowance.
    pub fn access_token(
        &self,
        client: &Client,
        subject: &Subject<'_>,
        audience: &str,
        scope: &[String],
        planned: &PlannedAccess,
    ) -> Result<AccessToken, KeyError> {
        let (keys, issuer, now) = (self.keys, self.issuer, self.now);
        let jti = planned.jti.clone();
        let expires_at = planned.expires_at;
        let mut claims = Map::new();
        claims.insert("iss".into(), issuer.into());
        claims.insert("aud".into(), audience.into());
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert("exp".into(), expires_at.into());
        claims.insert("jti".into(), jti.clone().into());
        claims.insert("client_id".into(), client.id.clone().into());
        claims.insert("scope".into(), scope.join(" ").into());
        match subject {
            Subject::User { user, auth_time } => {
                claims.insert("sub".into(), user.username.clone().into());
                claims.insert(SUB_KIND.into(), USER.into());
                claims.insert("auth_time".into(), (*auth_time).into());
                identity_claims(&mut claims, user, scope);
            }
            Subject::Service(service) => {
                // A service speaks for itself: no user claims, only its own roles.
                claims.insert("sub".into(), service.id.clone().into());
                claims.insert(SUB_KIND.into(), SERVICE.into());
                claims.insert("roles".into(), json!(service.roles));
            }
        }
        let (token, kid) = keys.sign(client.signing_alg, "at+jwt", &claims)?;
        Ok(AccessToken {
            token,
            jti,
            kid,
            expires_at,
        })
    }

    /// Builds and signs an ID token for `client` (OIDC Core §2); `scope` is what was granted.
    pub fn id_token(
        &self,
        client: &Client,
        user: &User,
        scope: &[String],
        auth_time: u64,
        nonce: Option<&str>,
        ttl_secs: u64,
    ) -> Result<String, KeyError> {
        let (keys, issuer, now) = (self.keys, self.issuer, self.now);
        let mut claims = Map::new();
        claims.insert("iss".into(), issuer.into());
        claims.insert("sub".into(), user.username.clone().into());
        claims.insert("aud".into(), client.id.clone().into());
        claims.insert("azp".into(), client.id.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + ttl_secs).into());
        claims.insert("auth_time".into(), auth_time.into());
        if let Some(n) = nonce {
            claims.insert("nonce".into(), n.into());
        }
        identity_claims(&mut claims, user, scope);
        keys.sign(client.signing_alg, "JWT", &claims)
            .map(|(token, _)| token)
    }
}

/// The claims `/userinfo` answers with (OIDC Core §5.3) for a token granted `scope`.
pub fn userinfo(user: &User, scope: &[String]) -> Value {
    let mut claims = Map::new();
    claims.insert("sub".into(), user.username.clone().into());
    identity_claims(&mut claims, user, scope);
    Value::Object(claims)
}

/// `roles` and the user's free attributes (what the gateway injects upstream), and the
/// standard claims whose scope was granted (OIDC Core §5.4): `email` with `email`, `name` with
/// `profile`.
fn identity_claims(claims: &mut Map<String, Value>, user: &User, scope: &[String]) {
    let granted = |s: &str| scope.iter().any(|g| g == s);
    claims.insert("roles".into(), json!(user.roles));
    if let Some(e) = user.email.as_ref().filter(|_| granted("email")) {
        claims.insert("email".into(), e.clone().into());
    }
    if let Some(n) = user.name.as_ref().filter(|_| granted("profile")) {
        claims.insert("name".into(), n.clone().into());
    }
    for (k, v) in &user.attributes {
        claims.insert(k.clone(), v.clone());
    }
}

/// Verifies one of our access tokens: known key, its algorithm, signature, `typ`, issuer and
/// `exp`/`nbf`. Returns the claims; whether it was revoked is the caller's to ask the store
/// ([`revoked`]).
pub fn verify_access(
    keys: &KeyRing,
    issuer: &str,
    token: &str,
) -> Result<Map<String, Value>, &'static str> {
    let header = decode_header(token).map_err(|_| "malformed token")?;
    if header.typ.as_deref() != Some("at+jwt") {
        return Err("not an access token");
    }
    let kid = header.kid.ok_or("token has no kid")?;
    let set = keys.current();
    let key = set.find(&kid).ok_or("unknown signing key")?;
    // The key decides the algorithm; a token naming another one fails here.
    let mut validation = Validation::new(key.alg().jose());
    validation.set_issuer(&[issuer]);
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let data = decode::<Map<String, Value>>(token, &key.decoding, &validation)
        .map_err(|_| "invalid or expired token")?;
    Ok(data.claims)
}

/// Whether verified `claims` were revoked: by their `jti`, or by their subject (logout
/// everywhere, a disabled user) for a token issued at or before that.
pub async fn revoked(
    state: &crate::state::Store,
    claims: &Map<String, Value>,
    now: u64,
) -> Result<bool, crate::state::StoreError> {
    let text = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or("");
    let iat = claims.get("iat").and_then(Value::as_u64).unwrap_or(0);
    state.is_revoked(text("jti"), text("sub"), iat, now).await
}
