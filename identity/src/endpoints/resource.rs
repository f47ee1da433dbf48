//! Endpoints that take a token: `/userinfo` (OIDC Core §5.3), `POST /introspect` (RFC 7662) and
//! `POST /revoke` (RFC 7009).

use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::audit::Event;
use crate::client_auth::{self, ClientAuth};
use crate::clock::now;
use crate::config::Settings;
use crate::issuer::Issuer;
use crate::reply::{json, OAuthError, Reply};
use crate::request::Request;
use crate::tokens;

pub async fn userinfo(issuer: &Issuer, settings: &Settings, req: &Request) -> Reply {
    let Some(token) = req.bearer() else {
        let mut e = OAuthError::invalid_token("a Bearer access token is required");
        e.challenge = Some(r#"Bearer realm="gatehouse-identity""#.into());
        return e.reply();
    };
    let claims = match tokens::verify_access(&issuer.keys, &settings.process.issuer, token) {
        Ok(c) => c,
        Err(why) => return OAuthError::invalid_token(why).reply(),
    };
    match tokens::revoked(&issuer.state, &claims, now()).await {
        Ok(false) => {}
        Ok(true) => return OAuthError::invalid_token("token revoked").reply(),
        Err(e) => return OAuthError::from(e).reply(),
    }
    let scope = claims.get("scope").and_then(Value::as_str).unwrap_or("");
    if !scope.split(' ').any(|s| s == "openid") {
        return OAuthError::insufficient_scope("the token lacks the openid scope").reply();
    }
    if claims.get(tokens::SUB_KIND).and_then(Value::as_str) != Some(tokens::USER) {
        return OAuthError::invalid_token("the token's subject is not a user").reply();
    }
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    match settings.users.get(sub) {
        Some(user) => {
            let granted: Vec<String> = scope.split(' ').map(String::from).collect();
            json(StatusCode::OK, &tokens::userinfo(user, &granted))
        }
        None => OAuthError::invalid_token("the token's subject is not a user").reply(),
    }
}

pub async fn introspect(issuer: &Issuer, settings: &Settings, req: &Request) -> Reply {
    let result = async {
        let params = req.form()?;
        let (client, auth) = client_auth::authenticate(issuer, settings, req, &params).await?;
        if auth == ClientAuth::None {
            return Err(OAuthError::invalid_client("client authentication required"));
        }
        let token = params.require("token")?;
        let now = now();
        // A client sees its own tokens; a resource server every client's. Anything else is
        // "not active" (RFC 7662 §2.2), so a client cannot probe other clients' tokens.
        let may_see = |owner: Option<&str>| client.resource_server || owner == Some(&client.id);
        let verified = tokens::verify_access(&issuer.keys, &settings.process.issuer, token);
        if let Ok(claims) = verified {
            if tokens::revoked(&issuer.state, &claims, now).await? {
                return Ok(json(StatusCode::OK, &json!({"active": false})));
            }
            if !may_see(claims.get("client_id").and_then(Value::as_str)) {
                return Ok(json(StatusCode::OK, &json!({"active": false})));
            }
            let mut body = Map::new();
            body.insert("active".into(), true.into());
            body.insert("token_type".into(), "Bearer".into());
            for k in [
                "scope",
                "client_id",
                "sub",
                tokens::SUB_KIND,
                "aud",
                "iss",
                "exp",
                "iat",
                "nbf",
                "jti",
            ] {
                if let Some(v) = claims.get(k) {
                    body.insert(k.into(), v.clone());
                }
            }
            body.insert(
                "username".into(),
                claims.get("sub").cloned().unwrap_or(Value::Null),
            );
            tracing::debug!(client = %client.id, "introspected an access token");
            return Ok(json(StatusCode::OK, &Value::Object(body)));
        }
        if let Some(grant) = issuer
            .state
            .peek_refresh(token, now)
            .await?
            .filter(|g| may_see(Some(&g.client_id)))
        {
            return Ok(json(
                StatusCode::OK,
                &json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "scope": grant.scope.join(" "),
                    "client_id": grant.client_id,
                    "sub": grant.username,
                    "username": grant.username,
                    "aud": grant.audience,
                    "iss": settings.process.issuer,
                    "exp": grant.expires_at,
                }),
            ));
        }
        Ok(json(StatusCode::OK, &json!({"active": false})))
    }
    .await;
    result.unwrap_or_else(|e| e.reply())
}

pub async fn revoke(issuer: &Issuer, settings: &Settings, req: &Request) -> Reply {
    let result = async {
        let params = req.form()?;
        let (client, _) = client_auth::authenticate(issuer, settings, req, &params).await?;
        let token = params.require("token")?;
        let audit = |kind: &str, jti: Option<&str>| {
            issuer.audit.record(Event {
                client: Some(&client.id),
                reason: Some(kind),
                jti,
                ..Event::of(req, "revocation", "success")
            })
        };
        if let Ok(claims) = tokens::verify_access(&issuer.keys, &settings.process.issuer, token) {
            if claims.get("client_id").and_then(Value::as_str) != Some(client.id.as_str()) {
                return Err(OAuthError::unauthorized_client(
                    "the token was issued to another client",
                ));
            }
            let jti = claims.get("jti").and_then(Value::as_str).unwrap_or("");
            let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
            issuer.state.revoke_jti(jti, exp).await?;
            audit("access_token", Some(jti));
        } else if let Some(grant) = issuer.state.peek_refresh(token, now()).await? {
            if grant.client_id != client.id {
                return Err(OAuthError::unauthorized_client(
                    "the token was issued to another client",
                ));
            }
            issuer.state.revoke_family(&grant.family, now()).await?;
            audit("refresh_token", None);
        }
        // Unknown and already-invalid tokens get 200 too (RFC 7009 §2.2).
        Ok(json(StatusCode::OK, &json!({})))
    }
    .await;
    result.unwrap_or_else(|e| e.reply())
}
