//! `POST /token` (RFC 6749 §3.2): client_credentials, authorization_code with PKCE (RFC 7636),
//! refresh_token with rotation and reuse detection, and the opt-in password grant.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::StatusCode;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::entitlements::{resolve_audience, resolve_scope};
use crate::audit::Event;
use crate::client_auth::{self, ClientAuth};
use crate::clock::now;
use crate::config::{Client, GrantType, Settings, User};
use crate::grants::{random_value, AuthorizationCode, RefreshGrant};
use crate::issuer::Issuer;
use crate::login::{self, LoginFailure};
use crate::metrics;
use crate::reply::{json, OAuthError, Reply};
use crate::request::{Params, Request};
use crate::state::{Admission, FamilyAccess, Redemption, Refusal, Renewal, Rotation};
use crate::tokens::{Minter, PlannedAccess, Subject};

pub async fn handle(issuer: &Issuer, settings: &Arc<Settings>, req: &Request) -> Reply {
    match grant(issuer, settings, req).await {
        Ok(reply) => reply,
        Err(e) => {
            metrics::TOKEN_ERRORS.with_label_values(&[e.error]).inc();
            e.reply()
        }
    }
}

async fn grant(
    issuer: &Issuer,
    settings: &Arc<Settings>,
    req: &Request,
) -> Result<Reply, OAuthError> {
    let params = req.form()?;
    let grant_type = params.require("grant_type")?;
    let grant = GrantType::parse(grant_type).ok_or_else(|| {
        OAuthError::unsupported_grant_type(format!("grant_type `{grant_type}` is not supported"))
    })?;
    let (client, auth) = client_auth::authenticate(issuer, settings, req, &params).await?;
    if !client.grant_types.contains(&grant) {
        return Err(OAuthError::unauthorized_client(
            "this client may not use this grant type",
        ));
    }
    let ctx = Grant {
        issuer,
        settings,
        req,
        params: &params,
        client: &client,
    };
    match grant {
        GrantType::ClientCredentials => ctx.client_credentials(auth).await,
        GrantType::AuthorizationCode => ctx.authorization_code().await,
        GrantType::RefreshToken => ctx.refresh_token().await,
        GrantType::Password => ctx.password().await,
    }
}

struct Grant<'a> {
    issuer: &'a Issuer,
    /// The request's snapshot; an `Arc`, as a refresh checks its user inside the store.
    settings: &'a Arc<Settings>,
    req: &'a Request,
    params: &'a Params,
    client: &'a Arc<Client>,
}

/// What a successful grant issues, before it is signed.
struct Issue<'a> {
    grant: GrantType,
    subject: Subject<'a>,
    audience: String,
    scope: Vec<String>,
    nonce: Option<String>,
    /// The access token's id and expiry. A redemption (code, refresh token) has recorded it in
    /// its family already; a new family (the password grant) is started with it.
    access: PlannedAccess,
    family: Family,
}

/// The family (one authorization grant) the tokens join, so that revoking it revokes them all,
/// and the refresh token the grant hands out.
enum Family {
    /// None, and no refresh token: a service's own token, or a password login by a client
    /// that may not refresh (nothing could revoke its tokens as a family).
    None,
    /// Recorded already, with the access token, in the transaction that redeemed the code or
    /// refresh token behind the grant; `refresh` was stored there too, if there is one.
    Recorded { refresh: Option<String> },
    /// A new family, started once the tokens are signed, with the access token and its first
    /// refresh token (valid until this absolute expiry) in one transaction: the password grant.
    Start { family: String, refresh_until: u64 },
}

/// What a refresh request asks for, checked against the redeemed grant inside the rotation's
/// transaction (on the store's runtime, hence owned).
struct RefreshRequest {
    client_id: String,
    /// The `scope` parameter, split; `None` keeps the granted scope.
    scope: Option<Vec<String>>,
    settings: Arc<Settings>,
}

impl RefreshRequest {
    /// The grant of the token that replaces `redeemed`, and the user it speaks for.
    fn renew(self, redeemed: &RefreshGrant) -> Result<Renewal<Arc<User>>, Refusal<OAuthError>> {
        if redeemed.client_id != self.client_id {
            return Err(Refusal::RevokeFamily(OAuthError::invalid_grant(
                "refresh token was issued to another client",
            )));
        }
        // A refresh may narrow the scope, never widen it (RFC 6749 §6).
        let scope = match self.scope {
            None => redeemed.scope.clone(),
            Some(asked) => {
                if let Some(extra) = asked.iter().find(|s| !redeemed.scope.contains(s)) {
                    return Err(Refusal::KeepToken(OAuthError::invalid_scope(format!(
                        "scope `{extra}` was not granted originally"
                    ))));
                }
                asked
            }
        };
        let user = known_user(&self.settings, &redeemed.username).map_err(Refusal::KeepToken)?;
        Ok(Renewal {
            grant: RefreshGrant {
                scope,
                ..redeemed.clone()
            },
            found: user,
        })
    }
}

/// What a code exchange presents, checked against the redeemed code inside the redemption's
/// transaction (on the store's runtime, hence owned).
struct CodeRequest {
    client_id: String,
    redirect_uri: String,
    code_verifier: Option<String>,
    /// The family the redemption starts, which the first refresh token joins.
    family: String,
    /// When that refresh token expires; `None` if the client may not refresh.
    refresh_until: Option<u64>,
    settings: Arc<Settings>,
}

impl CodeRequest {
    /// The family's first refresh token (if any) and the user the code speaks for.
    ///
    /// A code presented by another client (RFC 6749 §4.1.3), with another `redirect_uri` or
    /// without its PKCE verifier (RFC 7636 §4.6) may have been stolen or injected (RFC 9700
    /// §4.5): it is spent, so that no second try can use it. A code whose user is gone is no
    /// fault of the client: it is left as it was.
    fn admit(self, code: &AuthorizationCode) -> Result<Admission<Arc<User>>, Refusal<OAuthError>> {
        if code.client_id != self.client_id {
            return Err(Refusal::RevokeFamily(OAuthError::invalid_grant(
                "authorization code was issued to another client",
            )));
        }
        if code.redirect_uri != self.redirect_uri {
            return Err(Refusal::RevokeFamily(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            )));
        }
        verify_pkce(
            code.code_challenge.as_deref(),
            self.code_verifier.as_deref(),
        )
        .map_err(Refusal::RevokeFamily)?;
        let user = known_user(&self.settings, &code.username).map_err(Refusal::KeepToken)?;
        Ok(Admission {
            refresh: self.refresh_until.map(|until| RefreshGrant {
                family: self.family,
                client_id: self.client_id,
                username: code.username.clone(),
                scope: code.scope.clone(),
                audience: code.audience.clone(),
                auth_time: code.auth_time,
                expires_at: until,
            }),
            found: user,
        })
    }
}

/// The user `username` of a code or refresh token: they may have been removed from
/// identity.yaml since logging in.
fn known_user(settings: &Settings, username: &str) -> Result<Arc<User>, OAuthError> {
    settings
        .users
        .get(username)
        .cloned()
        .ok_or_else(|| OAuthError::invalid_grant("the user no longer exists"))
}

impl Grant<'_> {
    fn plan_access(&self) -> PlannedAccess {
        PlannedAccess::new(now(), self.settings.tokens.access_token_ttl.as_secs())
    }

    async fn client_credentials(&self, auth: ClientAuth) -> Result<Reply, OAuthError> {
        if auth == ClientAuth::None {
            return Err(OAuthError::invalid_client("client authentication required"));
        }
        let scope = resolve_scope(self.client, self.params)?;
        let audience = resolve_audience(self.client, self.params)?;
        self.issue(Issue {
            grant: GrantType::ClientCredentials,
            subject: Subject::Service(self.client),
            audience,
            scope,
            nonce: None,
            access: self.plan_access(),
            family: Family::None,
        })
        .await
    }

    /// Redeems the code in one store transaction (see [`Store::redeem_code`]): the checks that
    /// can refuse it run inside, and the family with its access token and first refresh token is
    /// written with the redemption, so a store failure leaves the code redeemable and a client
    /// that retries is not taken for a replay.
    ///
    /// [`Store::redeem_code`]: crate::state::Store::redeem_code
    async fn authorization_code(&self) -> Result<Reply, OAuthError> {
        let code_value = self.params.require("code")?;
        let request = CodeRequest {
            client_id: self.client.id.clone(),
            redirect_uri: self.params.require("redirect_uri")?.to_string(),
            code_verifier: self.params.get("code_verifier").map(String::from),
            family: random_value(),
            refresh_until: self.refresh_until(),
            settings: Arc::clone(self.settings),
        };
        let family = request.family.clone();
        let access = self.plan_access();
        // The family is recorded even without a refresh token: a replay of the code must
        // revoke the access token (RFC 6749 §4.1.2).
        let redemption = self
            .issuer
            .state
            .redeem_code(
                code_value,
                now(),
                &family,
                FamilyAccess {
                    jti: access.jti.clone(),
                    expires_at: access.expires_at,
                },
                move |code| request.admit(code),
            )
            .await?;
        let (code, refresh, user) = match redemption {
            Redemption::Redeemed {
                code,
                refresh,
                found,
            } => (*code, refresh, found),
            Redemption::Refused(Refusal::KeepToken(e) | Refusal::RevokeFamily(e)) => return Err(e),
            Redemption::Reused => {
                self.audit_reuse(
                    "code_reuse",
                    "authorization code used twice; tokens from it revoked",
                );
                return Err(OAuthError::invalid_grant("authorization code already used"));
            }
            // Its user was logged out everywhere or disabled since it was issued: the tokens
            // would postdate the revocation, so it would not cover them.
            Redemption::Revoked => {
                return Err(OAuthError::invalid_grant("authorization code revoked"))
            }
            Redemption::Expired => {
                return Err(OAuthError::invalid_grant("authorization code expired"))
            }
            Redemption::Unknown => {
                return Err(OAuthError::invalid_grant("unknown authorization code"))
            }
        };
        self.issue(Issue {
            grant: GrantType::AuthorizationCode,
            subject: Subject::User {
                user: &user,
                auth_time: code.auth_time,
            },
            audience: code.audience,
            scope: code.scope,
            nonce: code.nonce,
            access,
            family: Family::Recorded { refresh },
        })
        .await
    }

    /// Rotates the refresh token in one store transaction (see [`Store::rotate_refresh`]):
    /// every check that can refuse the request runs inside it, so a refusal or a store failure
    /// leaves the presented token as it was, and a client that retries is not taken for a thief.
    ///
    /// [`Store::rotate_refresh`]: crate::state::Store::rotate_refresh
    async fn refresh_token(&self) -> Result<Reply, OAuthError> {
        let value = self.params.require("refresh_token")?;
        let access = self.plan_access();
        let request = RefreshRequest {
            client_id: self.client.id.clone(),
            scope: self.params.get("scope").map(|asked| {
                asked
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }),
            settings: Arc::clone(self.settings),
        };
        let rotation = self
            .issuer
            .state
            .rotate_refresh(
                value,
                now(),
                FamilyAccess {
                    jti: access.jti.clone(),
                    expires_at: access.expires_at,
                },
                move |redeemed| request.renew(redeemed),
            )
            .await?;
        let (refresh, Renewal { grant, found: user }) = match rotation {
            Rotation::Rotated { value, renewal } => (value, renewal),
            Rotation::Refused(Refusal::KeepToken(e) | Refusal::RevokeFamily(e)) => return Err(e),
            Rotation::Reused => {
                self.audit_reuse(
                    "refresh_token_reuse",
                    "refresh token used twice; its family is revoked",
                );
                return Err(OAuthError::invalid_grant("refresh token already used"));
            }
            Rotation::Expired => return Err(OAuthError::invalid_grant("refresh token expired")),
            Rotation::Unknown => {
                return Err(OAuthError::invalid_grant(
                    "unknown or revoked refresh token",
                ))
            }
        };
        self.issue(Issue {
            grant: GrantType::RefreshToken,
            subject: Subject::User {
                user: &user,
                auth_time: grant.auth_time,
            },
            audience: grant.audience,
            scope: grant.scope,
            nonce: None,
            access,
            family: Family::Recorded {
                refresh: Some(refresh),
            },
        })
        .await
    }

    async fn password(&self) -> Result<Reply, OAuthError> {
        let username = self.params.require("username")?;
        let password = self.params.require("password")?;
        let scope = resolve_scope(self.client, self.params)?;
        let audience = resolve_audience(self.client, self.params)?;
        let user = match login::check_password(
            self.issuer,
            self.settings,
            self.req,
            &self.client.id,
            username,
            password,
        )
        .await
        {
            Ok(user) => user,
            Err(LoginFailure::Locked(wait)) => return Err(OAuthError::too_many_attempts(wait)),
            Err(LoginFailure::Busy(wait)) => return Err(OAuthError::temporarily_unavailable(wait)),
            Err(LoginFailure::Unavailable) => return Err(OAuthError::store_unavailable()),
            Err(LoginFailure::Invalid) => {
                return Err(OAuthError::invalid_grant("invalid username or password"))
            }
        };
        // Without a refresh token nothing can revoke these tokens as a family.
        let family = match self.refresh_until() {
            Some(refresh_until) => Family::Start {
                family: random_value(),
                refresh_until,
            },
            None => Family::None,
        };
        self.issue(Issue {
            grant: GrantType::Password,
            subject: Subject::User {
                user: &user,
                auth_time: now(),
            },
            audience,
            scope,
            nonce: None,
            access: self.plan_access(),
            family,
        })
        .await
    }

    /// When a new family's refresh tokens expire, if this client may have refresh tokens.
    fn refresh_until(&self) -> Option<u64> {
        self.client
            .grant_types
            .contains(&GrantType::RefreshToken)
            .then(|| now() + self.settings.tokens.refresh_token_ttl.as_secs())
    }

    async fn issue(&self, issue: Issue<'_>) -> Result<Reply, OAuthError> {
        let t = &self.settings.tokens;
        let now = now();
        let minter = Minter {
            keys: &self.issuer.keys,
            issuer: &self.settings.process.issuer,
            now,
        };
        let failed = |e: crate::keys::KeyError| {
            tracing::error!(error = %e, "signing failed");
            OAuthError::server_error()
        };
        let access = minter
            .access_token(
                self.client,
                &issue.subject,
                &issue.audience,
                &issue.scope,
                &issue.access,
            )
            .map_err(failed)?;
        let mut body = Map::new();
        body.insert("access_token".into(), access.token.into());
        body.insert("token_type".into(), "Bearer".into());
        body.insert("expires_in".into(), t.access_token_ttl.as_secs().into());
        body.insert("scope".into(), issue.scope.join(" ").into());
        if let Subject::User { user, auth_time } = &issue.subject {
            if issue.scope.iter().any(|s| s == "openid") {
                let id = minter
                    .id_token(
                        self.client,
                        user,
                        &issue.scope,
                        *auth_time,
                        issue.nonce.as_deref(),
                        t.id_token_ttl.as_secs(),
                    )
                    .map_err(failed)?;
                body.insert("id_token".into(), id.into());
            }
            let refresh = match issue.family {
                Family::None => None,
                Family::Recorded { refresh } => refresh,
                Family::Start {
                    family,
                    refresh_until,
                } => {
                    let first = RefreshGrant {
                        family,
                        client_id: self.client.id.clone(),
                        username: user.username.clone(),
                        scope: issue.scope.clone(),
                        audience: issue.audience.clone(),
                        auth_time: *auth_time,
                        expires_at: refresh_until,
                    };
                    let access = FamilyAccess {
                        jti: access.jti.clone(),
                        expires_at: access.expires_at,
                    };
                    Some(self.issuer.state.start_family(&first, access).await?)
                }
            };
            if let Some(refresh) = refresh {
                body.insert("refresh_token".into(), refresh.into());
            }
        }
        let grant = issue.grant.as_str();
        metrics::TOKENS_ISSUED
            .with_label_values(&[grant, &self.client.id])
            .inc();
        let user = match &issue.subject {
            Subject::User { user, .. } => Some(user.username.as_str()),
            Subject::Service(_) => None,
        };
        self.issuer.audit.record(Event {
            event: if issue.grant == GrantType::RefreshToken {
                "token_refresh"
            } else {
                "token_issued"
            },
            outcome: "success",
            user,
            client: Some(&self.client.id),
            ip: self.req.peer_ip.map(|ip| ip.to_string()),
            user_agent: self.req.user_agent(),
            grant: Some(grant),
            audience: Some(&issue.audience),
            scope: Some(issue.scope.join(" ")),
            jti: Some(&access.jti),
            kid: Some(&access.kid),
            ..Event::default()
        });
        Ok(json(StatusCode::OK, &Value::Object(body)))
    }

    /// Audits a replayed code or refresh token: the sign of a stolen one.
    fn audit_reuse(&self, event: &str, reason: &str) {
        self.issuer.audit.record(Event {
            event,
            outcome: "failure",
            client: Some(&self.client.id),
            ip: self.req.peer_ip.map(|ip| ip.to_string()),
            user_agent: self.req.user_agent(),
            reason: Some(reason),
            ..Event::default()
        });
    }
}

/// RFC 7636 §4.6: `BASE64URL(SHA256(code_verifier)) == code_challenge`. A verifier without a
/// challenge is refused too: accepting it would let PKCE be stripped (RFC 9700 §2.1.1).
fn verify_pkce(challenge: Option<&str>, verifier: Option<&str>) -> Result<(), OAuthError> {
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(OAuthError::invalid_grant(
            "code_verifier sent but no code_challenge was",
        )),
        (Some(_), None) => Err(OAuthError::invalid_grant("code_verifier is required")),
        (Some(challenge), Some(verifier)) => {
            let well_formed = (43..=128).contains(&verifier.len())
                && verifier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !well_formed {
                return Err(OAuthError::invalid_grant(
                    "code_verifier must be 43-128 unreserved characters",
                ));
            }
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if subtle::ConstantTimeEq::ct_eq(computed.as_bytes(), challenge.as_bytes()).into() {
                Ok(())
            } else {
                Err(OAuthError::invalid_grant("PKCE verification failed"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(verify_pkce(Some(challenge), Some(verifier)).is_ok());
        assert!(verify_pkce(Some(challenge), Some(&verifier.replace('d', "e"))).is_err());
        assert!(verify_pkce(Some(challenge), None).is_err());
        assert!(verify_pkce(None, Some(verifier)).is_err());
        assert!(verify_pkce(None, None).is_ok());
    }
}
