//! The browser side: `GET /authorize`, the login page (`/login`), and `/logout`.
//!
//! Until the client and its redirect URI are known to be genuine, errors are shown to the user
//! and never redirected (RFC 6749 §4.1.2.1): otherwise this server would be an open redirector.
//! After that, errors go back to the client with `state` and `iss` (RFC 9207).

use http::{header, HeaderValue, StatusCode};
use url::Url;

use super::entitlements::{resolve_audience, resolve_scope};
use crate::audit::Event;
use crate::clock::now;
use crate::config::{Client, GrantType, Settings};
use crate::grants::{AuthorizationCode, PendingAuthorization};
use crate::issuer::Issuer;
use crate::login::{self, LoginFailure};
use crate::reply::{redirect, OAuthError, Reply};
use crate::request::{Params, Request};
use crate::{metrics, pages};

/// How long a user may take on the login page.
const LOGIN_WINDOW_SECS: u64 = 600;

pub fn authorize(issuer: &Issuer, settings: &Settings, req: &Request) -> Reply {
    let params = match req.query_params() {
        Ok(p) => p,
        Err(e) => return page_error(StatusCode::BAD_REQUEST, &e.description),
    };
    let Some(client) = params
        .get("client_id")
        .and_then(|id| settings.clients.get(id))
    else {
        return page_error(StatusCode::BAD_REQUEST, "Unknown or missing client_id.");
    };
    let Some(redirect_uri) = params
        .get("redirect_uri")
        .filter(|uri| client.redirect_uris.iter().any(|r| r == uri))
    else {
        return page_error(
            StatusCode::BAD_REQUEST,
            "The redirect_uri is missing or not registered for this client.",
        );
    };
    let back = Callback {
        issuer: &settings.process.issuer,
        redirect_uri,
        state: params.get("state"),
    };
    let pending = match validate(client, redirect_uri, &params) {
        Ok(p) => p,
        Err(e) => return back.error(&e),
    };
    let prompt = params.get("prompt").unwrap_or("");
    let session = req
        .cookie(&settings.session.cookie)
        .and_then(|v| issuer.grants.session(v, now()));
    match (session, prompt) {
        // Single sign-on: a live IdP session answers without asking for a password again.
        (Some(session), "" | "none" | "consent") => {
            issuer.audit.record(Event {
                user: Some(&session.username),
                client: Some(&client.id),
                reason: Some("sso_session"),
                ..Event::of(req, "login", "success")
            });
            issue_code(
                issuer,
                settings,
                pending,
                &session.username,
                session.auth_time,
            )
        }
        (None, "none") => back.error(&OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "login_required",
            description: "no single sign-on session".into(),
            challenge: None,
            retry_after: None,
        }),
        _ => {
            let id = issuer.grants.put_pending(pending, now());
            login_form(&client.id, &id, None, StatusCode::OK)
        }
    }
}

/// Checks the rest of an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3).
fn validate(
    client: &Client,
    redirect_uri: &str,
    params: &Params,
) -> Result<PendingAuthorization, OAuthError> {
    if params.get("response_type") != Some("code") {
        return Err(OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "unsupported_response_type",
            description: "only response_type=code is supported".into(),
            challenge: None,
            retry_after: None,
        });
    }
    if !client.grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(OAuthError::unauthorized_client(
            "this client may not use the authorization code flow",
        ));
    }
    let Some(state) = params.get("state") else {
        return Err(OAuthError::invalid_request("`state` is required".into()));
    };
    let code_challenge = match (
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    ) {
        (Some(c), Some("S256"))
            if c.len() == 43
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(c.to_string())
        }
        (Some(_), Some("S256")) => {
            return Err(OAuthError::invalid_request(
                "code_challenge must be a base64url SHA-256".into(),
            ))
        }
        (Some(_), _) => {
            return Err(OAuthError::invalid_request(
                "code_challenge_method must be S256".into(),
            ))
        }
        (None, _) if client.is_public() => {
            return Err(OAuthError::invalid_request(
                "PKCE with code_challenge_method=S256 is required for public clients".into(),
            ))
        }
        (None, _) => None,
    };
    Ok(PendingAuthorization {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.to_string(),
        state: state.to_string(),
        scope: resolve_scope(client, params)?,
        audience: resolve_audience(client, params)?,
        nonce: params.get("nonce").map(String::from),
        code_challenge,
        expires_at: now() + LOGIN_WINDOW_SECS,
    })
}

pub fn login_page(issuer: &Issuer, req: &Request) -> Reply {
    let params = req.query_params().unwrap_or_default();
    match params
        .get("request")
        .and_then(|id| issuer.grants.pending(id, now()).map(|p| (id, p)))
    {
        Some((id, pending)) => login_form(&pending.client_id, id, None, StatusCode::OK),
        None => expired(),
    }
}

pub async fn login_submit(issuer: &Issuer, settings: &Settings, req: &Request) -> Reply {
    let params = match req.form() {
        Ok(p) => p,
        Err(e) => return page_error(StatusCode::BAD_REQUEST, &e.description),
    };
    let Some((id, pending)) = params
        .get("request")
        .and_then(|id| issuer.grants.pending(id, now()).map(|p| (id, p)))
    else {
        return expired();
    };
    let (Some(username), Some(password)) = (params.get("username"), params.get("password")) else {
        return login_form(
            &pending.client_id,
            id,
            Some("Enter a username and a password."),
            StatusCode::BAD_REQUEST,
        );
    };
    match login::check_password(
        issuer,
        settings,
        req,
        &pending.client_id,
        username,
        password,
    )
    .await
    {
        Ok(user) => {
            let Some(pending) = issuer.grants.take_pending(id, now()) else {
                return expired();
            };
            let auth_time = now();
            let cookie = issuer.grants.put_session(
                &user.username,
                auth_time,
                auth_time + settings.session.ttl.as_secs(),
            );
            let mut reply = issue_code(issuer, settings, pending, &user.username, auth_time);
            set_cookie(
                &mut reply,
                settings,
                req.tls,
                &cookie,
                settings.session.ttl.as_secs(),
            );
            reply
        }
        Err(LoginFailure::Invalid) => login_form(
            &pending.client_id,
            id,
            Some("Invalid username or password."),
            StatusCode::UNAUTHORIZED,
        ),
        Err(LoginFailure::Locked(wait)) => {
            let mut reply = login_form(
                &pending.client_id,
                id,
                Some(&format!(
                    "Too many failed attempts. Try again in {} seconds.",
                    wait.as_secs().max(1)
                )),
                StatusCode::TOO_MANY_REQUESTS,
            );
            reply
                .headers_mut()
                .insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
            reply
        }
        Err(LoginFailure::Busy(wait)) => {
            let mut reply = login_form(
                &pending.client_id,
                id,
                Some("The service is busy. Try again in a moment."),
                StatusCode::SERVICE_UNAVAILABLE,
            );
            reply
                .headers_mut()
                .insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
            reply
        }
    }
}

/// RP-initiated logout (OIDC RP-Initiated Logout 1.0): ends the IdP session, then returns to the
/// client if it registered the `post_logout_redirect_uri`.
pub fn logout(issuer: &Issuer, settings: &Settings, req: &Request) -> Reply {
    let params = if req.method == http::Method::POST {
        req.form()
    } else {
        req.query_params()
    };
    let params = match params {
        Ok(p) => p,
        Err(e) => return page_error(StatusCode::BAD_REQUEST, &e.description),
    };
    let mut target = None;
    if let Some(uri) = params.get("post_logout_redirect_uri") {
        let client = params
            .get("client_id")
            .map(String::from)
            .or_else(|| {
                params
                    .get("id_token_hint")
                    .and_then(|t| id_token_audience(issuer, t))
            })
            .and_then(|id| settings.clients.get(&id).cloned());
        match client {
            Some(c) if c.post_logout_redirect_uris.iter().any(|r| r == uri) => {
                target = Some(uri.to_string())
            }
            _ => {
                return page_error(
                    StatusCode::BAD_REQUEST,
                    "post_logout_redirect_uri is not registered for this client.",
                )
            }
        }
    }
    if let Some(session) = req
        .cookie(&settings.session.cookie)
        .and_then(|v| issuer.grants.end_session(v))
    {
        issuer.audit.record(Event {
            user: Some(&session.username),
            ..Event::of(req, "logout", "success")
        });
    }
    let mut reply = match target {
        Some(uri) => {
            let mut url = match Url::parse(&uri) {
                Ok(u) => u,
                Err(_) => {
                    return page_error(StatusCode::BAD_REQUEST, "Bad post_logout_redirect_uri.")
                }
            };
            if let Some(state) = params.get("state") {
                url.query_pairs_mut().append_pair("state", state);
            }
            redirect(url.as_str())
        }
        None => pages::html(
            StatusCode::OK,
            &pages::message("Signed out", "You are signed out."),
        ),
    };
    set_cookie(&mut reply, settings, req.tls, "", 0);
    reply
}

/// The `aud` of an ID token this server signed (expired ones too: logout often comes late).
fn id_token_audience(issuer: &Issuer, token: &str) -> Option<String> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    let set = issuer.keys.current();
    let key = set.find(header.kid.as_deref()?)?;
    let mut validation = jsonwebtoken::Validation::new(key.alg().jose());
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["aud"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation).ok()?;
    data.claims.get("aud")?.as_str().map(String::from)
}

fn issue_code(
    issuer: &Issuer,
    settings: &Settings,
    pending: PendingAuthorization,
    username: &str,
    auth_time: u64,
) -> Reply {
    let code = issuer.grants.put_code(AuthorizationCode {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        username: username.to_string(),
        scope: pending.scope,
        audience: pending.audience,
        nonce: pending.nonce,
        code_challenge: pending.code_challenge,
        auth_time,
        expires_at: now() + settings.tokens.authorization_code_ttl.as_secs(),
    });
    Callback {
        issuer: &settings.process.issuer,
        redirect_uri: &pending.redirect_uri,
        state: Some(&pending.state),
    }
    .send(&[("code", &code)])
}

/// The way back to the client's registered redirect URI.
struct Callback<'a> {
    issuer: &'a str,
    redirect_uri: &'a str,
    state: Option<&'a str>,
}

impl Callback<'_> {
    fn send(&self, pairs: &[(&str, &str)]) -> Reply {
        let Ok(mut url) = Url::parse(self.redirect_uri) else {
            return page_error(StatusCode::BAD_REQUEST, "The redirect_uri is not a URL.");
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
            if let Some(state) = self.state {
                q.append_pair("state", state);
            }
            q.append_pair("iss", self.issuer);
        }
        redirect(url.as_str())
    }

    fn error(&self, e: &OAuthError) -> Reply {
        metrics::TOKEN_ERRORS.with_label_values(&[e.error]).inc();
        self.send(&[("error", e.error), ("error_description", &e.description)])
    }
}

fn set_cookie(reply: &mut Reply, settings: &Settings, tls: bool, value: &str, max_age: u64) {
    let secure = if tls { "; Secure" } else { "" };
    let cookie = format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        settings.session.cookie
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        reply.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn login_form(client_id: &str, request_id: &str, error: Option<&str>, status: StatusCode) -> Reply {
    pages::html(status, &pages::login(client_id, request_id, error))
}

fn expired() -> Reply {
    page_error(
        StatusCode::BAD_REQUEST,
        "This login request has expired or is unknown. Go back to the application and sign in again.",
    )
}

fn page_error(status: StatusCode, message: &str) -> Reply {
    pages::html(status, &pages::message("Sign-in problem", message))
}
