//! The browser side: `GET /authorize`, the login page (`/login`), and `/logout`.
//!
//! Until the client and its redirect URI are known to be genuine, errors are shown to the user
//! and never redirected (RFC 6749 §4.1.2.1): otherwise this server would be an open redirector.
//! After that, errors go back to the client with `state` and `iss` (RFC 9207).
//!
//! Login CSRF: a pending login is bound to the browser that opened `/authorize` by a random,
//! HttpOnly, SameSite=Lax cookie, and `POST /login` from another site's page is refused by
//! its `Origin` / `Sec-Fetch-Site`. Either alone stops another site from signing the victim's
//! browser in to the attacker's account; the header check also spares a forged post any password
//! work.

use http::{header, HeaderValue, StatusCode};
use url::Url;

use super::entitlements::{resolve_audience, resolve_scope};
use crate::audit::Event;
use crate::clock::now;
use crate::config::{Client, GrantType, Settings};
use crate::grants::{self, AuthorizationCode, PendingAuthorization, PendingRefusal};
use crate::issuer::Issuer;
use crate::login::{self, LoginFailure};
use crate::reply::{redirect, OAuthError, Reply};
use crate::request::{Params, Request};
use crate::{metrics, pages};

/// How long a user may take on the login page.
const LOGIN_WINDOW_SECS: u64 = 600;

pub async fn authorize(issuer: &Issuer, settings: &Settings, req: &Request) -> Reply {
    // OIDC Core §3.1.2.1: GET with a query, or POST with the same parameters as a form.
    let params = if req.method == http::Method::POST {
        req.form()
    } else {
        req.query_params()
    };
    let params = match params {
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
    let max_age = match max_age(&params) {
        Ok(m) => m,
        Err(e) => return back.error(&e),
    };
    let prompt = match prompt(&params) {
        Ok(p) => p,
        Err(e) => return back.error(&e),
    };
    let now = now();
    // prompt=login and max_age (OIDC Core §3.1.2.1) both ask for an authentication more recent
    // than the session's: such a session does not answer, and the user logs in again.
    let session = match req.cookie(&settings.session.cookie) {
        Some(v) => match issuer.state.session(v, now).await {
            Ok(s) => s,
            Err(_) => return unavailable(),
        },
        None => None,
    }
    .filter(|s| prompt != "login" && recent_enough(s.auth_time, max_age, now));
    match (session, prompt) {
        // Single sign-on: a live IdP session answers without asking for a password again.
        (Some(session), "" | "none") => {
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
            .await
        }
        (None, "none") => back.error(&OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "login_required",
            description: "no single sign-on session recent enough".into(),
            challenge: None,
            retry_after: None,
        }),
        _ => {
            let browser = login_binding(req, settings);
            let Ok(id) = issuer.state.put_pending(&pending, &browser).await else {
                return unavailable();
            };
            let mut reply = login_form(&client.id, &id, None, StatusCode::OK);
            let binding = LoginBinding::of(settings);
            set_cookie(
                &mut reply,
                req.tls,
                &binding.cookie,
                &browser,
                &binding.path,
                LOGIN_WINDOW_SECS,
            );
            reply
        }
    }
}

/// `prompt` (OIDC Core §3.1.2.1): a space-separated list in which `none` must stand alone.
/// The one value that decides here: `none`, `login`, or `""` (`consent` and `select_account`
/// need nothing more than a session).
fn prompt(params: &Params) -> Result<&'static str, OAuthError> {
    let values: Vec<&str> = params
        .get("prompt")
        .unwrap_or("")
        .split(' ')
        .filter(|v| !v.is_empty())
        .collect();
    if values.contains(&"none") && values.len() > 1 {
        return Err(OAuthError::invalid_request(
            "prompt=none cannot be combined with other values".into(),
        ));
    }
    Ok(if values.contains(&"none") {
        "none"
    } else if values.contains(&"login") {
        "login"
    } else {
        ""
    })
}

/// `max_age` (OIDC Core §3.1.2.1): how many seconds old an authentication may be.
fn max_age(params: &Params) -> Result<Option<u64>, OAuthError> {
    params
        .get("max_age")
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                OAuthError::invalid_request("max_age must be a whole number of seconds".into())
            })
        })
        .transpose()
}

/// Whether an authentication at `auth_time` satisfies `max_age`. Both times are whole seconds,
/// so the real age may be up to a second more than `now - auth_time`: requiring that difference
/// to be *below* `max_age` never accepts an authentication older than asked, and makes
/// `max_age=0` always ask again, as OIDC Core (errata set 2) says it must (like `prompt=login`).
fn recent_enough(auth_time: u64, max_age: Option<u64>, now: u64) -> bool {
    max_age.is_none_or(|max| now.saturating_sub(auth_time) < max)
}

/// Checks the rest of an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3).
fn validate(
    client: &Client,
    redirect_uri: &str,
    params: &Params,
) -> Result<PendingAuthorization, OAuthError> {
    // Request objects (OIDC Core §6) are not supported: say so rather than ignore what they ask.
    for (param, error) in [
        ("request", "request_not_supported"),
        ("request_uri", "request_uri_not_supported"),
    ] {
        if params.get(param).is_some() {
            return Err(OAuthError {
                status: StatusCode::BAD_REQUEST,
                error,
                description: format!("`{param}` is not supported; send the parameters directly"),
                challenge: None,
                retry_after: None,
            });
        }
    }
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
        (Some(c), Some("S256")) if grants::is_base64url_256(c) => Some(c.to_string()),
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

pub async fn login_page(issuer: &Issuer, settings: &Settings, req: &Request) -> Reply {
    let params = req.query_params().unwrap_or_default();
    let Some(id) = params.get("request") else {
        return expired();
    };
    let browser = req.cookie(&LoginBinding::of(settings).cookie);
    match issuer.state.pending(id, browser, now(), false).await {
        Ok(Ok(pending)) => login_form(&pending.client_id, id, None, StatusCode::OK),
        Ok(Err(refusal)) => refused(refusal),
        Err(_) => unavailable(),
    }
}

pub async fn login_submit(issuer: &Issuer, settings: &Settings, req: &Request) -> Reply {
    // Checked before the body is read: a post another site's page made needs no further work.
    if !from_own_page(req, settings) {
        return refuse_login(issuer, req, "cross_origin", CROSS_SITE);
    }
    let params = match req.form() {
        Ok(p) => p,
        Err(e) => return page_error(StatusCode::BAD_REQUEST, &e.description),
    };
    let Some(id) = params.get("request") else {
        return expired();
    };
    let browser = req.cookie(&LoginBinding::of(settings).cookie);
    let pending = match issuer.state.pending(id, browser, now(), false).await {
        Ok(Ok(p)) => p,
        Ok(Err(PendingRefusal::OtherBrowser)) => {
            return refuse_login(issuer, req, "foreign_browser", OTHER_BROWSER)
        }
        Ok(Err(PendingRefusal::Unknown)) => return expired(),
        Err(_) => return unavailable(),
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
            let pending = match issuer.state.pending(id, browser, now(), true).await {
                Ok(Ok(p)) => p,
                Ok(Err(refusal)) => return refused(refusal),
                Err(_) => return unavailable(),
            };
            // A new login replaces the browser's session (after prompt=login or max_age):
            // the old cookie value must not stay valid beside the new one.
            if let Some(old) = req.cookie(&settings.session.cookie) {
                if issuer.state.end_session(old).await.is_err() {
                    return unavailable();
                }
            }
            let auth_time = now();
            let Ok(cookie) = issuer
                .state
                .put_session(
                    &user.username,
                    auth_time,
                    auth_time + settings.session.ttl.as_secs(),
                )
                .await
            else {
                return unavailable();
            };
            let mut reply = issue_code(issuer, settings, pending, &user.username, auth_time).await;
            set_cookie(
                &mut reply,
                req.tls,
                &settings.session.cookie,
                &cookie,
                "/",
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
        Err(LoginFailure::Unavailable) => unavailable(),
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
pub async fn logout(issuer: &Issuer, settings: &Settings, req: &Request) -> Reply {
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
    if let Some(value) = req.cookie(&settings.session.cookie) {
        match issuer.state.end_session(value).await {
            Ok(Some(session)) => issuer.audit.record(Event {
                user: Some(&session.username),
                ..Event::of(req, "logout", "success")
            }),
            Ok(None) => {}
            // The session must not outlive a logout the user was told succeeded.
            Err(_) => return unavailable(),
        }
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
    set_cookie(&mut reply, req.tls, &settings.session.cookie, "", "/", 0);
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

async fn issue_code(
    issuer: &Issuer,
    settings: &Settings,
    pending: PendingAuthorization,
    username: &str,
    auth_time: u64,
) -> Reply {
    let now = now();
    let code = AuthorizationCode {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        username: username.to_string(),
        scope: pending.scope,
        audience: pending.audience,
        nonce: pending.nonce,
        code_challenge: pending.code_challenge,
        auth_time,
        issued_at: Some(now),
        expires_at: now + settings.tokens.authorization_code_ttl.as_secs(),
    };
    let Ok(code) = issuer.state.put_code(&code).await else {
        return unavailable();
    };
    Callback {
        issuer: &settings.process.issuer,
        redirect_uri: &pending.redirect_uri,
        state: Some(&pending.state),
    }
    .send(&[("code", &code)])
}

/// The state store is down: sign-in cannot be completed (and nothing half-done was issued).
fn unavailable() -> Reply {
    let mut reply = page_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in is temporarily unavailable. Try again in a moment.",
    );
    reply.headers_mut().insert(header::RETRY_AFTER, 1.into());
    reply
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

/// The cookie that binds pending logins to a browser.
struct LoginBinding {
    /// `<session cookie>_login`: follows the configured name, so that two issuers on one host
    /// kept apart by their session cookie names keep their bindings apart too.
    cookie: String,
    /// The issuer URL's path, as a directory: it holds `/authorize` and `/login` (discovery
    /// names them under the issuer URL; the form posts to the relative `login`). `/authorize`
    /// must see the cookie to reuse it, or a login started in a second tab would orphan the
    /// first tab's form.
    path: String,
}

impl LoginBinding {
    fn of(settings: &Settings) -> Self {
        let base = Url::parse(&settings.process.issuer)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        Self {
            cookie: format!("{}_login", settings.session.cookie),
            path: format!("{base}/"),
        }
    }
}

/// The value that binds this browser's pending logins: the one it already holds, so that logins
/// started in two tabs both complete, or a fresh random one. A held value is kept only if it has
/// the shape of one we issue, since it is written back into `Set-Cookie`.
fn login_binding(req: &Request, settings: &Settings) -> String {
    req.cookie(&LoginBinding::of(settings).cookie)
        .filter(|v| grants::is_base64url_256(v))
        .map_or_else(grants::random_value, String::from)
}

/// Whether a `POST /login` comes from the issuer's own page. Browsers send `Origin` with form
/// posts, and `Sec-Fetch-Site` where they support it; a request with neither (an old browser,
/// curl) passes here and is left to the cookie binding. `same-site` is refused too: a sibling
/// subdomain may be someone else's site.
fn from_own_page(req: &Request, settings: &Settings) -> bool {
    let origin_ok = match req.headers.get(header::ORIGIN) {
        None => true,
        Some(sent) => {
            let own = Url::parse(&settings.process.issuer)
                .ok()
                .map(|u| u.origin())
                .filter(url::Origin::is_tuple)
                .map(|o| o.ascii_serialization());
            matches!((sent.to_str(), own), (Ok(sent), Some(own)) if sent.eq_ignore_ascii_case(&own))
        }
    };
    let fetch_ok = match req.headers.get("sec-fetch-site") {
        None => true,
        Some(site) => matches!(site.to_str(), Ok("same-origin" | "none")),
    };
    origin_ok && fetch_ok
}

const CROSS_SITE: &str = "This sign-in form was sent from another site. Go back to the \
                          application and sign in again.";
const OTHER_BROWSER: &str = "This sign-in was started in another browser, or this browser \
                             does not keep cookies. Go back to the application and sign in again.";

/// A refused login post: counted, audited with a fixed reason (never the cookie), 403.
fn refuse_login(issuer: &Issuer, req: &Request, reason: &'static str, message: &str) -> Reply {
    metrics::LOGIN_FAILURES.with_label_values(&[reason]).inc();
    issuer.audit.record(Event {
        reason: Some(reason),
        ..Event::of(req, "login", "failure")
    });
    page_error(StatusCode::FORBIDDEN, message)
}

fn refused(refusal: PendingRefusal) -> Reply {
    match refusal {
        PendingRefusal::Unknown => expired(),
        PendingRefusal::OtherBrowser => page_error(StatusCode::FORBIDDEN, OTHER_BROWSER),
    }
}

fn set_cookie(reply: &mut Reply, tls: bool, name: &str, value: &str, path: &str, max_age: u64) {
    let secure = if tls { "; Secure" } else { "" };
    let cookie =
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
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

#[cfg(test)]
mod tests {
    use super::recent_enough;

    #[test]
    fn max_age_accepts_only_authentications_younger_than_it() {
        assert!(recent_enough(100, None, 10_000));
        assert!(recent_enough(100, Some(60), 159));
        assert!(
            !recent_enough(100, Some(60), 160),
            "60 s counted may be 60.9 s"
        );
        assert!(
            !recent_enough(100, Some(0), 100),
            "max_age=0 always asks again"
        );
        assert!(
            recent_enough(100, Some(60), 50),
            "a clock step back is not an error"
        );
    }
}
