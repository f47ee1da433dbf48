//! The browser side end to end: `/authorize`, the login form, single sign-on across clients,
//! the code exchange (with `openidconnect`, a strict standards-following client that verifies ID
//! tokens with its own JOSE code), refresh rotation, code abuse, refusals, and logout.
//!
//! The "browser" is a cookie-keeping HTTP client that never follows redirects: each hop is
//! looked at. Redirect URIs point at unused loopback ports; nothing ever follows them.

mod support;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, Audience, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use support::browser_flow::*;
use support::*;
use url::Url;

const WAIT: Duration = Duration::from_secs(30);

/// What `CoreClient::from_provider_metadata` gives: authorization endpoint set, token and
/// userinfo endpoints "maybe" set (they come from discovery).
type Oidc = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The non-standard claims this issuer puts in userinfo: roles and the user's attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GatehouseClaims {
    roles: Vec<String>,
    #[serde(default)]
    department: Option<String>,
    #[serde(default)]
    level: Option<u64>,
}
impl AdditionalClaims for GatehouseClaims {}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Discovers the issuer with `openidconnect` and configures `client_id` against it.
async fn oidc(id: &Identity, client_id: &str, secret: Option<&str>, redirect: &str) -> Oidc {
    // openidconnect requires an HTTP client that does not follow redirects (SSRF); `client()`
    // is one.
    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(id.issuer()).expect("issuer URL"),
        &client(),
    )
    .await
    .unwrap_or_else(|e| panic!("OIDC discovery failed: {e:?}"));
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(client_id.into()),
        secret.map(|s| ClientSecret::new(s.into())),
    )
    .set_redirect_uri(RedirectUrl::new(redirect.into()).expect("redirect URL"))
}

/// Waits until the audit log has a line matching `pred`.
async fn audited(id: &Identity, what: &str, pred: impl Fn(&Value) -> bool) {
    eventually(&format!("audit: {what}"), WAIT, || {
        let hit = id.audit().iter().any(&pred);
        async move { hit }
    })
    .await;
}

/// A page refusal: 400 HTML, no redirect.
async fn assert_refusal_page(resp: reqwest::Response, what: &str) -> String {
    assert_eq!(resp.status().as_u16(), 400, "{what}: status");
    assert_eq!(header(&resp, "location"), None, "{what}: must not redirect");
    let ct = header(&resp, "content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "{what}: content type {ct}");
    resp.text().await.expect("page")
}

/// An error sent back to the client (RFC 6749 §4.1.2.1, RFC 9207): 303 to exactly `redirect`
/// with `error`, a description, `state` as sent, `iss`, and no code.
fn assert_error_redirect(
    id: &Identity,
    resp: &reqwest::Response,
    redirect: &str,
    error: &str,
    state: Option<&str>,
) {
    let back = location(resp);
    assert_eq!(
        without_query(&back),
        redirect,
        "error goes back to the registered URI"
    );
    let q = query(&back);
    assert_eq!(q.get("error").map(String::as_str), Some(error), "{back}");
    assert!(
        q.get("error_description").is_some_and(|d| !d.is_empty()),
        "{back}"
    );
    assert_eq!(q.get("state").map(String::as_str), state, "{back}");
    assert_eq!(q.get("iss"), Some(&id.issuer()), "{back}");
    assert!(!q.contains_key("code"), "{back}");
}

// ---------------------------------------------------------------------------------------------
// 1. The full flow, checked by a strict OIDC client
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_standard_oidc_client_completes_the_code_flow_and_verifies_the_id_token() {
    let id = Identity::start("", &standard_directory());
    let http = client();
    let web = oidc(&id, "web", Some("web-secret"), WEB_CALLBACK).await;

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf, nonce) = web
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    assert!(
        auth_url.as_str().starts_with(&id.url("/authorize?")),
        "{auth_url}"
    );

    // The browser part: the form, then the password.
    let browser = browser();
    let resp = sign_in(&id, &browser, auth_url.as_str(), "alice", "alice-password").await;
    let code = callback(&id, &resp, WEB_CALLBACK, csrf.secret())["code"].clone();

    // The exchange, done by openidconnect (client_secret_basic + PKCE verifier).
    let token = web
        .exchange_code(AuthorizationCode::new(code))
        .expect("token endpoint from discovery")
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("code exchange failed: {e:?}"));
    assert!(token.refresh_token().is_some(), "web may refresh");
    let scopes: Vec<&str> = token
        .scopes()
        .expect("scope in the response")
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert!(
        scopes.contains(&"openid") && scopes.contains(&"email"),
        "{scopes:?}"
    );

    // The ID token, verified by openidconnect: JWKS signature, alg, iss, aud, exp, nonce.
    let id_token = token.id_token().expect("an ID token (scope has openid)");
    assert_eq!(
        id_token.signing_alg().expect("signing alg"),
        &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        "web signs RS256"
    );
    let verifier = web.id_token_verifier();
    let claims = id_token
        .claims(&verifier, &nonce)
        .unwrap_or_else(|e| panic!("ID token does not verify: {e:?}"));
    assert_eq!(claims.subject().as_str(), "alice");
    assert_eq!(claims.issuer().as_str(), id.issuer());
    assert_eq!(claims.audiences(), &vec![Audience::new("web".into())]);
    assert_eq!(claims.nonce().map(|n| n.secret()), Some(nonce.secret()));
    assert_eq!(
        claims.email().map(|e| e.as_str()),
        Some("alice@example.com")
    );
    // `name` belongs to the `profile` scope, which `web` was not granted (OIDC Core §5.4).
    assert_eq!(
        claims.name().and_then(|n| n.get(None)).map(|n| n.as_str()),
        None
    );
    assert!(claims.auth_time().is_some(), "auth_time is set");

    // The verifier really checks: a wrong nonce and another client's audience are refused.
    assert!(
        id_token
            .claims(&verifier, &Nonce::new("another-nonce".into()))
            .is_err(),
        "a wrong nonce must fail"
    );
    let spa = oidc(&id, "spa", None, SPA_CALLBACK).await;
    assert!(
        id_token.claims(&spa.id_token_verifier(), &nonce).is_err(),
        "an ID token for `web` must not verify for `spa`"
    );

    // Userinfo through openidconnect (expects sub == the ID token's sub).
    let info: UserInfoClaims<GatehouseClaims, CoreGenderClaim> = web
        .user_info(token.access_token().clone(), Some(claims.subject().clone()))
        .expect("userinfo endpoint from discovery")
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("userinfo failed: {e:?}"));
    assert_eq!(info.subject().as_str(), "alice");
    assert_eq!(info.email().map(|e| e.as_str()), Some("alice@example.com"));
    // No `profile` scope, no `name` (as in the ID token).
    assert_eq!(
        info.name().and_then(|n| n.get(None)).map(|n| n.as_str()),
        None
    );
    let extra = info.additional_claims();
    assert_eq!(extra.roles, ["admin", "editor"]);
    assert_eq!(extra.department.as_deref(), Some("engineering"));
    assert_eq!(extra.level, Some(3));

    // And directly.
    let direct = ok_json(
        client()
            .get(id.url("/userinfo"))
            .bearer_auth(token.access_token().secret())
            .send()
            .await
            .expect("userinfo"),
    )
    .await;
    assert_eq!(direct["sub"], "alice");
    assert_eq!(direct["email"], "alice@example.com");
    assert_eq!(direct["roles"], serde_json::json!(["admin", "editor"]));

    audited(&id, "password login of alice to web", |e| {
        e["event"] == "login"
            && e["outcome"] == "success"
            && e["user"] == "alice"
            && e["client"] == "web"
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. Single sign-on into a second client
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_session_signs_the_user_in_to_a_second_client_without_a_password() {
    let id = Identity::start("", &standard_directory());
    let http = client();
    let browser = browser();

    // Sign in once, to `web`.
    let web = oidc(&id, "web", Some("web-secret"), WEB_CALLBACK).await;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _, web_nonce) = web
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    let resp = sign_in(&id, &browser, url.as_str(), "alice", "alice-password").await;
    let code = query(&location(&resp))["code"].clone();
    let web_token = web
        .exchange_code(AuthorizationCode::new(code))
        .expect("token endpoint")
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("web code exchange failed: {e:?}"));
    let web_claims = web_token
        .id_token()
        .expect("web ID token")
        .claims(&web.id_token_verifier(), &web_nonce)
        .expect("web ID token verifies")
        .clone();

    // Then `spa`, a public client: the session answers at once with a code.
    let spa = oidc(&id, "spa", None, SPA_CALLBACK).await;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = spa
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    let resp = get(&browser, url.as_str()).await;
    assert_eq!(
        resp.status().as_u16(),
        303,
        "SSO must not show the login form"
    );
    let code = callback(&id, &resp, SPA_CALLBACK, csrf.secret())["code"].clone();

    // openidconnect sends client_id and the verifier, no secret.
    let token = spa
        .exchange_code(AuthorizationCode::new(code))
        .expect("token endpoint")
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("spa code exchange failed: {e:?}"));
    let id_token = token.id_token().expect("spa ID token");
    assert_eq!(
        id_token.signing_alg().expect("alg"),
        &CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        "spa signs ES256"
    );
    let claims = id_token
        .claims(&spa.id_token_verifier(), &nonce)
        .unwrap_or_else(|e| panic!("ES256 ID token does not verify: {e:?}"));
    assert_eq!(claims.subject().as_str(), "alice");
    assert_eq!(claims.audiences(), &vec![Audience::new("spa".into())]);
    assert_eq!(claims.nonce().map(|n| n.secret()), Some(nonce.secret()));
    assert_eq!(
        claims.auth_time(),
        web_claims.auth_time(),
        "auth_time is that of the one real login"
    );
    // Only RS256 allowed: the ES256 token is refused (the alg check is live).
    assert!(id_token
        .claims(
            &spa.id_token_verifier()
                .set_allowed_algs([CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256]),
            &nonce
        )
        .is_err());

    // The audit log tells the SSO login from the password one.
    audited(&id, "SSO login of alice to spa", |e| {
        e["event"] == "login"
            && e["outcome"] == "success"
            && e["reason"] == "sso_session"
            && e["user"] == "alice"
            && e["client"] == "spa"
    })
    .await;
    let password_logins = id
        .audit()
        .iter()
        .filter(|e| e["event"] == "login" && e.get("reason").is_none())
        .count();
    assert_eq!(
        password_logins,
        1,
        "one password login only:\n{}",
        id.audit_text()
    );

    // prompt=login insists on the form even with a session.
    let (_, challenge) = pkce();
    let resp = get(
        &browser,
        &authorize_url(
            &id,
            &[
                ("response_type", "code"),
                ("client_id", "spa"),
                ("redirect_uri", SPA_CALLBACK),
                ("state", "again"),
                ("prompt", "login"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        ),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200, "prompt=login shows the form");
    hidden_request(&resp.text().await.expect("form"));
}

// ---------------------------------------------------------------------------------------------
// 3. Refresh rotation and reuse detection
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_tokens_rotate_and_a_replay_revokes_the_family_access_tokens_included() {
    let id = Identity::start("", &standard_directory());
    let browser = browser();
    let first = web_tokens(&id, &browser).await;
    let r1 = s(&first, "refresh_token").to_string();

    let second = ok_json(refresh_web(&id, &r1).await).await;
    let r2 = s(&second, "refresh_token").to_string();
    assert_ne!(r1, r2, "a refresh rotates the refresh token");
    assert_ne!(s(&first, "access_token"), s(&second, "access_token"));
    assert_eq!(second["scope"], first["scope"]);
    assert_eq!(second["token_type"], "Bearer");

    assert_eq!(
        introspect_web(&id, &r2).await["active"],
        true,
        "R2 is live before the replay"
    );

    // The replay of R1 fails, and takes the whole family with it.
    let body = oauth_error(refresh_web(&id, &r1).await, 400, "invalid_grant").await;
    assert!(body.get("refresh_token").is_none());
    oauth_error(refresh_web(&id, &r2).await, 400, "invalid_grant").await;
    assert_eq!(
        introspect_web(&id, &r2).await["active"],
        false,
        "R2 is revoked"
    );
    // So are the access tokens of the family: one of them may be the thief's.
    for access in [s(&first, "access_token"), s(&second, "access_token")] {
        assert_eq!(introspect_web(&id, access).await["active"], false);
    }

    audited(&id, "refresh_token_reuse", |e| {
        e["event"] == "refresh_token_reuse" && e["outcome"] == "failure" && e["client"] == "web"
    })
    .await;
    // Tokens never reach the audit log.
    let text = id.audit_text();
    assert!(!text.contains(&r1) && !text.contains(&r2));

    // A new sign-in starts a new, working family.
    let third = web_tokens(&id, &browser).await;
    ok_json(refresh_web(&id, s(&third, "refresh_token")).await).await;
}

#[tokio::test]
async fn a_refused_refresh_leaves_the_token_usable_and_the_family_live() {
    // Given a signed-in `web` client (scope "openid email documents:read"),
    let id = Identity::start("", &standard_directory());
    let browser = browser();
    let first = web_tokens(&id, &browser).await;
    let r1 = s(&first, "refresh_token").to_string();
    let web = ("web", "web-secret");

    // when it asks a refresh for a scope it was never granted (RFC 6749 §6),
    let wider = Some("openid documents:read documents:write");
    let body = oauth_error(refresh_as(&id, web, &r1, wider).await, 400, "invalid_scope").await;
    assert!(body.get("refresh_token").is_none());

    // then nothing was spent: the token is still live and refreshes (narrowing is allowed),
    assert_eq!(
        introspect_web(&id, &r1).await["active"],
        true,
        "a refused refresh leaves the token usable"
    );
    let narrower = Some("openid documents:read");
    let second = ok_json(refresh_as(&id, web, &r1, narrower).await).await;
    assert_eq!(second["scope"], "openid documents:read");
    let r2 = s(&second, "refresh_token");
    assert_ne!(r1, r2, "a refresh rotates the refresh token");
    assert_eq!(
        introspect_web(&id, &r1).await["active"],
        false,
        "R1 is spent"
    );
    // and the family was not revoked: its access tokens and the new refresh token live on.
    for access in [s(&first, "access_token"), s(&second, "access_token")] {
        assert_eq!(introspect_web(&id, access).await["active"], true);
    }
    let third = ok_json(refresh_web(&id, r2).await).await;
    assert_eq!(
        third["scope"], "openid documents:read",
        "the narrowed grant"
    );
    assert!(!id.audit_text().contains("refresh_token_reuse"));
}

#[tokio::test]
async fn a_refresh_token_presented_by_another_client_revokes_its_family() {
    // Given `web`'s refresh token in the hands of `cli` (which may refresh too),
    let id = Identity::start("", &standard_directory());
    let browser = browser();
    let first = web_tokens(&id, &browser).await;
    let r1 = s(&first, "refresh_token");
    let stolen = refresh_as(&id, ("cli", "cli-secret"), r1, None).await;
    // then `cli` is refused, and the family is revoked for `web` too: the token may be stolen.
    oauth_error(stolen, 400, "invalid_grant").await;
    oauth_error(refresh_web(&id, r1).await, 400, "invalid_grant").await;
    assert_eq!(
        introspect_web(&id, s(&first, "access_token")).await["active"],
        false
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Authorization-code abuse
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn authorization_codes_are_single_use_and_bound_to_client_redirect_and_verifier() {
    let id = Identity::start("", &standard_directory());
    let browser = browser();

    // Reuse: the second redemption fails and revokes what the first one issued.
    let (verifier, challenge) = pkce();
    let code = web_code(&id, &browser, Some(&challenge)).await;
    let tokens = ok_json(redeem_web(&id, &code, WEB_CALLBACK, Some(&verifier)).await).await;
    oauth_error(
        redeem_web(&id, &code, WEB_CALLBACK, Some(&verifier)).await,
        400,
        "invalid_grant",
    )
    .await;
    oauth_error(
        refresh_web(&id, s(&tokens, "refresh_token")).await,
        400,
        "invalid_grant",
    )
    .await;
    audited(&id, "code_reuse", |e| {
        e["event"] == "code_reuse" && e["client"] == "web"
    })
    .await;

    // Wrong code_verifier, and a missing one.
    let (_, challenge) = pkce();
    let (other_verifier, _) = pkce();
    let code = web_code(&id, &browser, Some(&challenge)).await;
    oauth_error(
        redeem_web(&id, &code, WEB_CALLBACK, Some(&other_verifier)).await,
        400,
        "invalid_grant",
    )
    .await;
    let code = web_code(&id, &browser, Some(&challenge)).await;
    oauth_error(
        redeem_web(&id, &code, WEB_CALLBACK, None).await,
        400,
        "invalid_grant",
    )
    .await;
    // A verifier for a code that had no challenge (PKCE downgrade) is refused too.
    let code = web_code(&id, &browser, None).await;
    oauth_error(
        redeem_web(&id, &code, WEB_CALLBACK, Some(&other_verifier)).await,
        400,
        "invalid_grant",
    )
    .await;

    // Another redirect_uri at the token endpoint.
    let (verifier, challenge) = pkce();
    let code = web_code(&id, &browser, Some(&challenge)).await;
    oauth_error(
        redeem_web(
            &id,
            &code,
            "http://127.0.0.1:1/callback/evil",
            Some(&verifier),
        )
        .await,
        400,
        "invalid_grant",
    )
    .await;

    // A code issued to web, redeemed by spa (with the right verifier).
    let (verifier, challenge) = pkce();
    let code = web_code(&id, &browser, Some(&challenge)).await;
    let resp = client()
        .post(id.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "spa"),
            ("code", code.as_str()),
            ("redirect_uri", WEB_CALLBACK),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .expect("token request");
    oauth_error(resp, 400, "invalid_grant").await;

    // An unknown code.
    oauth_error(
        redeem_web(&id, "not-a-code", WEB_CALLBACK, None).await,
        400,
        "invalid_grant",
    )
    .await;

    // A confidential client must authenticate to redeem its code.
    let (verifier, challenge) = pkce();
    let code = web_code(&id, &browser, Some(&challenge)).await;
    for (what, auth) in [
        ("no secret", None),
        ("wrong secret", Some("not-web-secret")),
    ] {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("client_id", "web"),
            ("code", code.as_str()),
            ("redirect_uri", WEB_CALLBACK),
            ("code_verifier", verifier.as_str()),
        ];
        if let Some(secret) = auth {
            form.push(("client_secret", secret));
        }
        let resp = client()
            .post(id.url("/token"))
            .form(&form)
            .send()
            .await
            .expect("token request");
        assert!(header(&resp, "www-authenticate").is_some(), "{what}");
        oauth_error(resp, 401, "invalid_client").await;
    }

    // After all that, an honest redemption still works.
    web_tokens(&id, &browser).await;

    // Every refusal above was counted.
    let metrics = id.metrics().await;
    let errors = |e: &str| {
        metric_value(
            &metrics,
            &format!("gatehouse_identity_token_errors_total{{error=\"{e}\"}}"),
        )
    };
    assert_eq!(errors("invalid_grant"), 8.0, "{metrics}");
    assert_eq!(errors("invalid_client"), 2.0, "{metrics}");
}

#[tokio::test]
async fn a_code_refused_for_its_client_redirect_or_verifier_gets_no_second_try() {
    // A code presented by another client, to another redirect_uri or with a wrong verifier may
    // be stolen or injected (RFC 9700 §4.5): it is spent, so the next try, even with the right
    // values, is refused.
    let id = Identity::start("", &standard_directory());
    let browser = browser();
    // (what, client_id, its secret, redirect_uri, whether the verifier is the right one)
    let wrong_tries = [
        (
            "a wrong verifier",
            "web",
            Some("web-secret"),
            WEB_CALLBACK,
            false,
        ),
        ("another client", "spa", None, WEB_CALLBACK, true),
        (
            "another redirect_uri",
            "web",
            Some("web-secret"),
            "http://127.0.0.1:1/callback/evil",
            true,
        ),
    ];
    for (what, client_id, secret, redirect_uri, right_verifier) in wrong_tries {
        let (verifier, challenge) = pkce();
        let code = web_code(&id, &browser, Some(&challenge)).await;
        let presented = if right_verifier {
            verifier.clone()
        } else {
            pkce().0
        };
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", presented.as_str()),
        ];
        if let Some(secret) = secret {
            form.push(("client_secret", secret));
        }
        let resp = client()
            .post(id.url("/token"))
            .form(&form)
            .send()
            .await
            .expect("token request");
        oauth_error(resp, 400, "invalid_grant").await;
        let body = oauth_error(
            redeem_web(&id, &code, WEB_CALLBACK, Some(&verifier)).await,
            400,
            "invalid_grant",
        )
        .await;
        assert_eq!(
            body["error_description"], "authorization code already used",
            "after {what}"
        );
    }
}

/// Rewrites identity.yaml with `directory` and reloads it: applied when this returns.
async fn reload_directory(id: &Identity, directory: &str) {
    id.write_config("", directory);
    let resp = client()
        .post(id.admin("/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(resp.status().as_u16(), 200);
    let answer: Value = resp.json().await.expect("reload JSON");
    // "unchanged" if the file watcher applied it first.
    assert!(
        ["applied", "unchanged"].contains(&answer["result"].as_str().unwrap_or_default()),
        "{answer}"
    );
}

#[tokio::test]
async fn a_code_whose_user_is_gone_is_refused_and_left_redeemable() {
    // Given a code for alice,
    let id = Identity::start("", &standard_directory());
    let browser = browser();
    let (verifier, challenge) = pkce();
    let code = web_code(&id, &browser, Some(&challenge)).await;

    // when alice is removed from identity.yaml, the code is refused,
    let directory = standard_directory();
    let (from, to) = (
        directory.find("  - username: alice").expect("alice"),
        directory.find("  - username: bob").expect("bob"),
    );
    let without_alice = format!("{}{}", &directory[..from], &directory[to..]);
    reload_directory(&id, &without_alice).await;
    let body = oauth_error(
        redeem_web(&id, &code, WEB_CALLBACK, Some(&verifier)).await,
        400,
        "invalid_grant",
    )
    .await;
    assert_eq!(body["error_description"], "the user no longer exists");

    // but not spent: the client's request was not at fault, so once she is back it redeems.
    reload_directory(&id, &directory).await;
    let tokens = ok_json(redeem_web(&id, &code, WEB_CALLBACK, Some(&verifier)).await).await;
    assert_eq!(
        introspect_web(&id, s(&tokens, "access_token")).await["active"],
        true
    );
    assert!(!id.audit_text().contains("code_reuse"));
}

/// `POST /users/<name>/<action>` on the admin listener: the answer's `revoked_issued_before`.
async fn admin_user_command(id: &Identity, name: &str, action: &str) -> u64 {
    let answer = ok_json(
        client()
            .post(id.admin(&format!("/users/{name}/{action}")))
            .send()
            .await
            .expect("admin command"),
    )
    .await;
    answer["revoked_issued_before"]
        .as_u64()
        .unwrap_or_else(|| panic!("no revoked_issued_before in {answer}"))
}

/// Bob signs in through the login form of a fresh browser: a code for `web`, not redeemed.
async fn bob_code(id: &Identity, challenge: &str) -> String {
    let resp = sign_in(
        id,
        &browser(),
        &web_request(id, "bob-state", challenge),
        "bob",
        "bob-password",
    )
    .await;
    callback(id, &resp, WEB_CALLBACK, "bob-state")["code"].clone()
}

/// Alice and bob each hold a code not yet redeemed when the admin runs `action` for alice: hers
/// is refused and spent, his still redeems. Returns when her logout happened (unix seconds).
async fn a_code_from_before(id: &Identity, action: &str) -> u64 {
    let (verifier, challenge) = pkce();
    let code = web_code(id, &browser(), Some(&challenge)).await;
    let (bob_verifier, bob_challenge) = pkce();
    let bob = bob_code(id, &bob_challenge).await;

    let revoked_before = admin_user_command(id, "alice", action).await;

    // Tokens from her code would postdate the revocation, which would not cover them.
    for attempt in ["first", "second"] {
        let body = oauth_error(
            redeem_web(id, &code, WEB_CALLBACK, Some(&verifier)).await,
            400,
            "invalid_grant",
        )
        .await;
        assert_eq!(
            body["error_description"], "authorization code revoked",
            "{action}, {attempt} try"
        );
        assert!(body.get("access_token").is_none(), "{body}");
    }
    // Nothing was issued from it, so nothing was replayed either.
    assert!(!id.audit_text().contains("code_reuse"), "{action}");

    let tokens = ok_json(redeem_web(id, &bob, WEB_CALLBACK, Some(&bob_verifier)).await).await;
    assert_eq!(
        introspect_web(id, s(&tokens, "access_token")).await["active"],
        true,
        "{action}: another user's code redeems"
    );
    revoked_before
}

#[tokio::test]
async fn a_code_issued_before_logout_everywhere_is_refused() {
    let id = Identity::start("", &standard_directory());
    let revoked_before = a_code_from_before(&id, "logout").await;

    // A login after the logout is hers again: its code is issued after `revoked_issued_before`
    // (a revocation covers what was issued in its own second too, as it does tokens).
    while unix_now() <= i64::try_from(revoked_before).expect("a unix time") {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tokens = web_tokens(&id, &browser()).await;
    assert_eq!(
        introspect_web(&id, s(&tokens, "access_token")).await["active"],
        true
    );
}

#[tokio::test]
async fn a_code_issued_before_its_user_was_disabled_is_refused() {
    let id = Identity::start("", &standard_directory());
    a_code_from_before(&id, "disable").await;
}

#[tokio::test]
async fn a_replayed_code_revokes_every_access_token_and_refresh_token_issued_from_it() {
    // Given a completed code flow whose refresh token was used once,
    let id = Identity::start("", &standard_directory());
    let browser = browser();
    let (verifier, challenge) = pkce();
    let code = web_code(&id, &browser, Some(&challenge)).await;
    let first = ok_json(redeem_web(&id, &code, WEB_CALLBACK, Some(&verifier)).await).await;
    let a1 = s(&first, "access_token").to_string();
    let second = ok_json(refresh_web(&id, s(&first, "refresh_token")).await).await;
    let a2 = s(&second, "access_token").to_string();
    let userinfo = |token: String| {
        let url = id.url("/userinfo");
        async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("userinfo")
        }
    };
    for token in [&a1, &a2] {
        assert_eq!(introspect_web(&id, token).await["active"], true);
        ok_json(userinfo(token.clone()).await).await;
    }

    // when the code is redeemed again (someone else holds it: RFC 6749 §4.1.2),
    oauth_error(
        redeem_web(&id, &code, WEB_CALLBACK, Some(&verifier)).await,
        400,
        "invalid_grant",
    )
    .await;

    // then the access token the code issued, and the one its refresh token issued, are inactive
    // and refused by /userinfo.
    for (name, token) in [("the code's access token", &a1), ("the refreshed one", &a2)] {
        assert_eq!(
            introspect_web(&id, token).await,
            serde_json::json!({"active": false}),
            "{name}"
        );
        let body = oauth_error(userinfo(token.clone()).await, 401, "invalid_token").await;
        assert_eq!(body["error_description"], "token revoked", "{name}");
    }
    // (The refresh family goes too: see the test above.) Tokens from another sign-in are
    // untouched.
    let other = web_tokens(&id, &browser).await;
    ok_json(userinfo(s(&other, "access_token").to_string()).await).await;
}

#[tokio::test]
async fn an_expired_authorization_code_is_refused() {
    let id = Identity::start(
        "tokens:\n  authorization_code_ttl: 1s\n",
        &standard_directory(),
    );
    let browser = browser();
    let (verifier, challenge) = pkce();
    let code = web_code(&id, &browser, Some(&challenge)).await;
    wait_until_earlier_codes_expire(&id, &browser).await;
    // "expired", or "unknown" once the upkeep task has swept it: invalid_grant either way.
    let body = oauth_error(
        redeem_web(&id, &code, WEB_CALLBACK, Some(&verifier)).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(
        ["authorization code expired", "unknown authorization code"]
            .contains(&body["error_description"].as_str().unwrap_or_default()),
        "{body}"
    );
}

/// Returns once the issuer has let every `web` code issued before the call expire.
///
/// Redeeming is the only way to ask the issuer whether a code has expired, and it spends a live
/// one, so the question goes to probes: codes issued after the ones under test, which cannot
/// expire before them. The first probe the issuer refuses proves the earlier codes expired too.
/// Polls at most `PROBES` times, `POLL` apart, then fails.
async fn wait_until_earlier_codes_expire(id: &Identity, browser: &reqwest::Client) {
    const PROBES: usize = 25;
    const POLL: Duration = Duration::from_millis(200);
    let mut probes = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        probes.push(web_code(id, browser, None).await);
    }
    for probe in &probes {
        let resp = redeem_web(id, probe, WEB_CALLBACK, None).await;
        match resp.status().as_u16() {
            // Still live, and now spent: ask the next probe a little later.
            200 => tokio::time::sleep(POLL).await,
            _ => {
                oauth_error(resp, 400, "invalid_grant").await;
                return;
            }
        }
    }
    panic!("no code expired within {PROBES} polls {POLL:?} apart");
}

// ---------------------------------------------------------------------------------------------
// 5. /authorize refusals
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn authorize_refuses_unknown_clients_and_redirects_on_a_page_and_other_errors_back() {
    let id = Identity::start("", &standard_directory());
    let b = client();

    // Not yet trusted: a page, never a redirect (no open redirector).
    for (what, params) in [
        (
            "unknown client",
            vec![("client_id", "nobody"), ("redirect_uri", WEB_CALLBACK)],
        ),
        ("missing client_id", vec![("redirect_uri", WEB_CALLBACK)]),
        ("missing redirect_uri", vec![("client_id", "web")]),
        (
            "extension of a registered URI",
            vec![
                ("client_id", "web"),
                ("redirect_uri", "http://127.0.0.1:1/callback/evil"),
            ],
        ),
        (
            "prefix of a registered URI",
            vec![
                ("client_id", "web"),
                ("redirect_uri", "http://127.0.0.1:1/callbac"),
            ],
        ),
        (
            "registered URI plus a query",
            vec![
                ("client_id", "web"),
                ("redirect_uri", "http://127.0.0.1:1/callback?next=x"),
            ],
        ),
        (
            "another client's URI",
            vec![("client_id", "web"), ("redirect_uri", SPA_CALLBACK)],
        ),
        (
            "foreign host",
            vec![
                ("client_id", "web"),
                ("redirect_uri", "https://evil.example/callback"),
            ],
        ),
        (
            "client without redirect URIs",
            vec![("client_id", "cli"), ("redirect_uri", WEB_CALLBACK)],
        ),
    ] {
        let mut params = params;
        params.extend([("response_type", "code"), ("state", "s1")]);
        assert_refusal_page(get(&b, &authorize_url(&id, &params)).await, what).await;
    }

    // Trusted client and URI: errors go back with state and iss.
    let (_, challenge) = pkce();
    let spa: &[(&str, &str)] = &[
        ("response_type", "code"),
        ("client_id", "spa"),
        ("redirect_uri", SPA_CALLBACK),
        ("state", "s2"),
    ];
    for (what, extra) in [
        ("public client without PKCE", vec![]),
        (
            "plain PKCE",
            vec![
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "plain"),
            ],
        ),
        (
            "challenge without method",
            vec![("code_challenge", challenge.as_str())],
        ),
        (
            "malformed S256 challenge",
            vec![
                ("code_challenge", "too-short"),
                ("code_challenge_method", "S256"),
            ],
        ),
    ] {
        let params = [spa, &extra[..]].concat();
        let resp = get(&b, &authorize_url(&id, &params)).await;
        assert_eq!(resp.status().as_u16(), 303, "{what}");
        assert_error_redirect(&id, &resp, SPA_CALLBACK, "invalid_request", Some("s2"));
    }

    // `web` (confidential): (extra parameters, the error that comes back, the state it carries).
    let odd = "a b&c=d/é?";
    let cases: [(Params, &str, Option<&str>); 9] = [
        (&[("response_type", "code")], "invalid_request", None),
        (
            &[("response_type", "token"), ("state", "s3")],
            "unsupported_response_type",
            Some("s3"),
        ),
        (
            &[("response_type", "id_token"), ("state", "s3")],
            "unsupported_response_type",
            Some("s3"),
        ),
        (
            &[("response_type", "code token"), ("state", "s3")],
            "unsupported_response_type",
            Some("s3"),
        ),
        (&[("state", "s3")], "unsupported_response_type", Some("s3")),
        (
            &[
                ("response_type", "code"),
                ("state", "s4"),
                ("scope", "openid documents:write"),
            ],
            "invalid_scope",
            Some("s4"),
        ),
        (
            &[
                ("response_type", "code"),
                ("state", "s5"),
                ("audience", "search-api"),
            ],
            "invalid_target",
            Some("s5"),
        ),
        (
            &[
                ("response_type", "code"),
                ("state", "s6"),
                ("prompt", "none"),
            ],
            "login_required",
            Some("s6"),
        ),
        // A state with characters that need encoding comes back intact.
        (
            &[
                ("response_type", "code"),
                ("state", odd),
                ("prompt", "none"),
            ],
            "login_required",
            Some(odd),
        ),
    ];
    for (extra, error, state) in cases {
        let params = [
            &[("client_id", "web"), ("redirect_uri", WEB_CALLBACK)][..],
            extra,
        ]
        .concat();
        let resp = get(&b, &authorize_url(&id, &params)).await;
        assert_error_redirect(&id, &resp, WEB_CALLBACK, error, state);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. The login page
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_login_page_refuses_bad_passwords_escapes_input_and_sets_a_safe_cookie() {
    // One more client whose id needs escaping in HTML.
    let directory = format!(
        "{}  - id: '<script>alert(\"x\")</script>&'\n    grant_types: [authorization_code]\n    redirect_uris: [http://127.0.0.1:3/callback]\n    audiences: [documents-api]\n    scopes: [openid]\n",
        standard_directory()
    );
    let id = Identity::start("", &directory);
    let browser = browser();
    let (verifier, challenge) = pkce();
    let url = web_request(&id, "st", &challenge);

    let resp = get(&browser, &url).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(header(&resp, "content-type")
        .unwrap_or_default()
        .starts_with("text/html"));
    assert_eq!(header(&resp, "x-frame-options").as_deref(), Some("DENY"));
    assert!(header(&resp, "content-security-policy")
        .unwrap_or_default()
        .contains("frame-ancestors 'none'"));
    assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"));
    assert!(
        !set_cookies(&resp)
            .iter()
            .any(|c| c.starts_with("gatehouse_sso=")),
        "no session before a login"
    );
    let html = resp.text().await.expect("form");
    assert!(
        html.contains("<strong>web</strong>"),
        "the page names the client"
    );
    let request = hidden_request(&html);

    // The form page can be reloaded by its id.
    let resp = get(&browser, &id.url(&format!("/login?request={request}"))).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(hidden_request(&resp.text().await.unwrap()), request);

    // Wrong password, unknown user: the same 401 answer, the form again, no cookie.
    for (user, password) in [("alice", "wrong"), ("mallory", "alice-password")] {
        let resp = post_login(&id, &browser, &request, user, password).await;
        assert_eq!(resp.status().as_u16(), 401, "{user}");
        assert_eq!(header(&resp, "location"), None);
        assert!(set_cookies(&resp).is_empty());
        assert_eq!(header(&resp, "x-frame-options").as_deref(), Some("DENY"));
        let html = resp.text().await.expect("form");
        assert!(html.contains("Invalid username or password."), "{html}");
        assert_eq!(hidden_request(&html), request, "the same pending request");
    }
    let metrics = id.metrics().await;
    for reason in ["bad_password", "unknown_user"] {
        let series = format!("gatehouse_identity_login_failures_total{{reason=\"{reason}\"}}");
        assert_eq!(metric_value(&metrics, &series), 1.0, "{series}");
    }
    audited(&id, "failed login of mallory", |e| {
        e["event"] == "login" && e["outcome"] == "failure" && e["reason"] == "unknown_user"
    })
    .await;
    assert!(
        !id.audit_text().contains("alice-password") && !id.audit_text().contains("\"wrong\""),
        "no password in the audit log"
    );

    // The right password: a code, and a session cookie with safe attributes (plain http: no
    // Secure, or the browser would drop it).
    let resp = post_login(&id, &browser, &request, "alice", "alice-password").await;
    let cookies = set_cookies(&resp);
    let q = callback(&id, &resp, WEB_CALLBACK, "st");
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let parts: Vec<&str> = cookies[0].split(';').map(str::trim).collect();
    let (name, value) = parts[0].split_once('=').expect("name=value");
    assert_eq!(name, "gatehouse_sso");
    assert!(value.len() >= 32, "an unguessable value: {value:?}");
    let has = |a: &str| parts.iter().any(|p| p.eq_ignore_ascii_case(a));
    assert!(has("HttpOnly"), "{cookies:?}");
    assert!(has("SameSite=Lax"), "{cookies:?}");
    assert!(has("Path=/"), "{cookies:?}");
    assert!(has("Max-Age=28800"), "session ttl: {cookies:?}");
    assert!(!has("Secure"), "no Secure over plain http: {cookies:?}");
    ok_json(redeem_web(&id, &q["code"], WEB_CALLBACK, Some(&verifier)).await).await;

    // The pending request is spent; unknown ones are refused with a page.
    let resp = post_login(&id, &browser, &request, "alice", "alice-password").await;
    let page = assert_refusal_page(resp, "a spent request id").await;
    assert!(page.contains("expired or is unknown"), "{page}");
    assert_refusal_page(
        post_login(&id, &browser, "no-such-request", "alice", "alice-password").await,
        "an unknown request id",
    )
    .await;
    assert_refusal_page(
        get(&browser, &id.url("/login?request=no-such-request")).await,
        "GET with an unknown request id",
    )
    .await;
    let resp = browser
        .post(id.url("/login"))
        .form(&[("username", "alice"), ("password", "alice-password")])
        .send()
        .await
        .expect("POST /login");
    assert_refusal_page(resp, "no request id").await;

    // HTML escaping: a client id with markup, and a parameter name echoed in an error.
    let (_, challenge) = pkce();
    let evil_id = r#"<script>alert("x")</script>&"#;
    let resp = get(
        &client(),
        &authorize_url(
            &id,
            &[
                ("response_type", "code"),
                ("client_id", evil_id),
                ("redirect_uri", "http://127.0.0.1:3/callback"),
                ("state", "s"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        ),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let html = resp.text().await.unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;"),
        "{html}"
    );
    let resp = get(
        &client(),
        &format!(
            "{}?client_id=web&%3Cscript%3Ex=1&%3Cscript%3Ex=2",
            id.url("/authorize")
        ),
    )
    .await;
    let page = assert_refusal_page(resp, "repeated parameter").await;
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;x"), "{page}");
}

#[tokio::test]
async fn repeated_bad_passwords_lock_the_login_form() {
    let id = Identity::start(
        "lockout:\n  max_failures: 2\n  base_delay: 30s\n",
        &standard_directory(),
    );
    let browser = browser();
    let (_, challenge) = pkce();
    let resp = get(&browser, &web_request(&id, "st", &challenge)).await;
    let request = hidden_request(&resp.text().await.unwrap());
    for _ in 0..2 {
        let resp = post_login(&id, &browser, &request, "alice", "nope").await;
        assert_eq!(resp.status().as_u16(), 401);
    }
    // Locked: even the right password gets 429 with Retry-After, and the form again.
    let resp = post_login(&id, &browser, &request, "alice", "alice-password").await;
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = header(&resp, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=30).contains(&retry), "retry after {retry}");
    assert!(set_cookies(&resp).is_empty());
    let html = resp.text().await.unwrap();
    assert!(html.contains("Too many failed attempts"), "{html}");
    assert_eq!(hidden_request(&html), request);
    audited(&id, "lockout of alice", |e| {
        e["event"] == "lockout" && e["user"] == "alice"
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 7. Logout
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn logout_ends_the_session_and_returns_only_to_registered_uris() {
    let id = Identity::start("", &standard_directory());
    let browser = browser();
    let (_, challenge) = pkce();
    let resp = sign_in(
        &id,
        &browser,
        &web_request(&id, "st", &challenge),
        "alice",
        "alice-password",
    )
    .await;
    let cookie = set_cookies(&resp)[0]
        .split(';')
        .next()
        .expect("name=value")
        .to_string();

    // Unregistered targets: a page, no redirect, and the session is untouched.
    for (what, q) in [
        (
            "unregistered URI",
            "client_id=web&post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fevil",
        ),
        (
            "a client without logout URIs",
            "client_id=spa&post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fbye",
        ),
        (
            "no client named",
            "post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fbye",
        ),
        (
            "unknown client",
            "client_id=nobody&post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fbye",
        ),
    ] {
        let resp = get(&browser, &id.url(&format!("/logout?{q}"))).await;
        assert_refusal_page(resp, what).await;
    }
    let resp = get(&browser, &web_request(&id, "still", &challenge)).await;
    assert_eq!(resp.status().as_u16(), 303, "still signed in");

    // The real thing.
    let resp = get(
        &browser,
        &id.url("/logout?client_id=web&post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fbye&state=s"),
    )
    .await;
    assert_eq!(location(&resp).as_str(), format!("{WEB_BYE}?state=s"));
    let cleared = set_cookies(&resp);
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert!(cleared[0].starts_with("gatehouse_sso=;"), "{cleared:?}");
    assert!(cleared[0].contains("Max-Age=0"), "{cleared:?}");
    assert!(cleared[0].contains("Path=/"), "{cleared:?}");
    audited(&id, "logout of alice", |e| {
        e["event"] == "logout" && e["user"] == "alice"
    })
    .await;

    // The browser signs in again...
    let resp = get(&browser, &web_request(&id, "after", &challenge)).await;
    assert_eq!(resp.status().as_u16(), 200, "the login form again");
    hidden_request(&resp.text().await.unwrap());
    // ...and the old cookie is dead on the server too, not just forgotten by the browser.
    let resp = client()
        .get(web_request(&id, "replay", &challenge))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("authorize");
    assert_eq!(
        resp.status().as_u16(),
        200,
        "a logged-out session must not answer"
    );
    let resp = client()
        .get(authorize_url(
            &id,
            &[
                ("response_type", "code"),
                ("client_id", "web"),
                ("redirect_uri", WEB_CALLBACK),
                ("state", "pn"),
                ("prompt", "none"),
            ],
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("authorize");
    assert_error_redirect(&id, &resp, WEB_CALLBACK, "login_required", Some("pn"));

    // id_token_hint names the client instead of client_id.
    let tokens = web_tokens(&id, &browser).await;
    let hint = s(&tokens, "id_token");
    let mut url = Url::parse(&id.url("/logout")).unwrap();
    url.query_pairs_mut()
        .append_pair("id_token_hint", hint)
        .append_pair("post_logout_redirect_uri", WEB_BYE);
    let resp = get(&browser, url.as_str()).await;
    assert_eq!(location(&resp).as_str(), WEB_BYE);
    assert!(set_cookies(&resp).iter().any(|c| c.contains("Max-Age=0")));
    let resp = get(&browser, &web_request(&id, "again", &challenge)).await;
    assert_eq!(resp.status().as_u16(), 200);

    // Plain logout, no return: a page, and the cookie cleared all the same.
    let resp = get(&browser, &id.url("/logout")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(set_cookies(&resp).iter().any(|c| c.contains("Max-Age=0")));
}

// ---------------------------------------------------------------------------------------------
// 8. Userinfo refusals
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn userinfo_refuses_missing_bad_and_non_openid_tokens() {
    let id = Identity::start("", &standard_directory());
    let userinfo = |token: Option<String>| {
        let url = id.url("/userinfo");
        async move {
            let mut req = client().get(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send().await.expect("userinfo")
        }
    };

    // No token: 401 with a Bearer challenge (RFC 6750 §3: no error code in it).
    let resp = userinfo(None).await;
    let challenge = header(&resp, "www-authenticate").expect("WWW-Authenticate");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(!challenge.contains("error="), "{challenge}");
    oauth_error(resp, 401, "invalid_token").await;

    // Garbage.
    let resp = userinfo(Some("not.a.token".into())).await;
    let challenge = header(&resp, "www-authenticate").expect("WWW-Authenticate");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    oauth_error(resp, 401, "invalid_token").await;

    // A service token has no openid scope.
    let service = ok_json(id.service_token("reports", "reports-secret", &[]).await).await;
    let service_token = s(&service, "access_token").to_string();
    let resp = userinfo(Some(service_token.clone())).await;
    let challenge = header(&resp, "www-authenticate").expect("WWW-Authenticate");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    oauth_error(resp, 403, "insufficient_scope").await;

    // Adding openid to its payload breaks the signature.
    let parts: Vec<&str> = service_token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"))
            .expect("JSON");
    payload["scope"] = "openid documents:read".into();
    payload["sub"] = "alice".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    oauth_error(userinfo(Some(forged)).await, 401, "invalid_token").await;

    // An ID token is not an access token.
    let tokens = web_tokens(&id, &browser()).await;
    oauth_error(
        userinfo(Some(s(&tokens, "id_token").to_string())).await,
        401,
        "invalid_token",
    )
    .await;
    // While the access token from the same response works.
    let info = ok_json(userinfo(Some(s(&tokens, "access_token").to_string())).await).await;
    assert_eq!(info["sub"], "alice");
}

// ---------------------------------------------------------------------------------------------
// 9. Login CSRF: a pending login belongs to the browser that started it
// ---------------------------------------------------------------------------------------------

/// The name of the cookie that binds a pending login to its browser.
const LOGIN_COOKIE: &str = "gatehouse_sso_login";

/// A form POST to `/login` with extra request headers (what a browser adds: Origin, Sec-Fetch-Site).
async fn post_login_with(
    id: &Identity,
    browser: &reqwest::Client,
    request: &str,
    username: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = browser.post(id.url("/login")).form(&[
        ("request", request),
        ("username", username),
        ("password", password),
    ]);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.expect("POST /login")
}

/// A refused login POST: 403, an HTML page, no redirect and no cookie of any kind.
async fn assert_forbidden_login(resp: reqwest::Response, what: &str) -> String {
    assert_eq!(resp.status().as_u16(), 403, "{what}: status");
    assert_eq!(header(&resp, "location"), None, "{what}: must not redirect");
    assert!(
        set_cookies(&resp).is_empty(),
        "{what}: {:?}",
        set_cookies(&resp)
    );
    let ct = header(&resp, "content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "{what}: content type {ct}");
    resp.text().await.expect("page")
}

#[tokio::test]
async fn a_login_post_from_another_browser_or_another_site_is_refused_and_plants_no_session() {
    let id = Identity::start("", &standard_directory());
    let (_, challenge) = pkce();

    // The attacker starts a login in his own browser: the form, and a cookie that binds the
    // pending request to that browser (HttpOnly, SameSite=Lax, no Secure on plain http).
    let attacker = browser();
    let resp = get(&attacker, &web_request(&id, "att", &challenge)).await;
    assert_eq!(resp.status().as_u16(), 200, "the login form");
    let cookies = set_cookies(&resp);
    let binding = cookies
        .iter()
        .find(|c| c.starts_with(&format!("{LOGIN_COOKIE}=")))
        .unwrap_or_else(|| panic!("no {LOGIN_COOKIE} cookie: {cookies:?}"))
        .clone();
    let parts: Vec<&str> = binding.split(';').map(str::trim).collect();
    let has = |a: &str| parts.iter().any(|p| p.eq_ignore_ascii_case(a));
    assert!(
        has("HttpOnly") && has("SameSite=Lax") && has("Path=/"),
        "{binding}"
    );
    assert!(!has("Secure"), "no Secure over plain http: {binding}");
    let binding_value = parts[0].split_once('=').expect("name=value").1.to_string();
    assert!(binding_value.len() >= 32, "an unguessable value: {binding}");
    let request = hidden_request(&resp.text().await.expect("form"));

    // Then he makes the victim's browser send that pending id with his own password (a hidden,
    // auto-submitted form on his site). The victim has a pending login of her own, so her
    // browser carries a binding cookie, just not his. No Origin header here: the cookie binding
    // alone must refuse it.
    let victim = browser();
    let resp = get(&victim, &web_request(&id, "vic", &challenge)).await;
    assert_eq!(resp.status().as_u16(), 200);
    for (what, who) in [
        ("the victim's browser", &victim),
        ("a client without cookies", &client()),
    ] {
        let resp = post_login(&id, who, &request, "bob", "bob-password").await;
        let page = assert_forbidden_login(resp, what).await;
        assert!(page.contains("another browser"), "{what}: {page}");
    }
    // The GET of the form by id is bound the same way.
    let resp = get(&victim, &id.url(&format!("/login?request={request}"))).await;
    assert_eq!(
        resp.status().as_u16(),
        403,
        "GET /login from another browser"
    );

    // No session was planted: the victim's next authorization request shows the login form
    // rather than signing her in as bob.
    let resp = get(&victim, &web_request(&id, "vic2", &challenge)).await;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "the victim must not be signed in as the attacker"
    );

    // A cross-site form post is refused by its headers, even from the right browser (the
    // cookie would travel with a top-level POST only in browsers without SameSite).
    let origin = id.issuer();
    for (what, headers) in [
        ("a foreign Origin", vec![("origin", "https://evil.example")]),
        ("Origin: null", vec![("origin", "null")]),
        ("another port", vec![("origin", "http://127.0.0.1:1")]),
        (
            "Sec-Fetch-Site: cross-site",
            vec![("sec-fetch-site", "cross-site")],
        ),
        (
            "Sec-Fetch-Site: same-site",
            vec![("sec-fetch-site", "same-site")],
        ),
    ] {
        let resp = post_login_with(&id, &attacker, &request, "bob", "bob-password", &headers).await;
        let page = assert_forbidden_login(resp, what).await;
        assert!(page.contains("another site"), "{what}: {page}");
    }

    // The refusals spent nothing: the right browser, posting from the issuer's own page, gets
    // in with the same pending id.
    let resp = post_login_with(
        &id,
        &attacker,
        &request,
        "bob",
        "bob-password",
        &[
            ("origin", origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    let q = callback(&id, &resp, WEB_CALLBACK, "att");
    assert!(q.contains_key("code"));

    // Refusals are audited and counted, and the binding cookie's value is never written down.
    for reason in ["foreign_browser", "cross_origin"] {
        audited(&id, reason, |e| {
            e["event"] == "login" && e["outcome"] == "failure" && e["reason"] == reason
        })
        .await;
        let series = format!("gatehouse_identity_login_failures_total{{reason=\"{reason}\"}}");
        assert!(
            metric_value(&id.metrics().await, &series) >= 1.0,
            "{series}"
        );
    }
    assert!(!id.audit_text().contains(&binding_value));
    assert!(!id.stderr().contains(&binding_value));

    // The victim's own login, in her own browser, still works, and so does SSO into a second
    // client from it.
    let resp = get(&victim, &web_request(&id, "vic3", &challenge)).await;
    assert_eq!(resp.status().as_u16(), 200);
    let own = hidden_request(&resp.text().await.expect("form"));
    let resp = post_login(&id, &victim, &own, "alice", "alice-password").await;
    callback(&id, &resp, WEB_CALLBACK, "vic3");
    let (_, challenge) = pkce();
    let spa = authorize_url(
        &id,
        &[
            ("response_type", "code"),
            ("client_id", "spa"),
            ("redirect_uri", SPA_CALLBACK),
            ("state", "sso"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let resp = get(&victim, &spa).await;
    callback(&id, &resp, SPA_CALLBACK, "sso");
}

#[tokio::test]
async fn two_pending_logins_in_one_browser_both_complete() {
    // Two tabs: the second /authorize must not orphan the first tab's form.
    let id = Identity::start("", &standard_directory());
    let b = browser();
    let (_, challenge) = pkce();
    let first = get(&b, &web_request(&id, "tab1", &challenge)).await;
    let first = hidden_request(&first.text().await.expect("form"));
    let second = get(&b, &web_request(&id, "tab2", &challenge)).await;
    let second = hidden_request(&second.text().await.expect("form"));
    let resp = post_login(&id, &b, &first, "alice", "alice-password").await;
    callback(&id, &resp, WEB_CALLBACK, "tab1");
    let resp = post_login(&id, &b, &second, "alice", "alice-password").await;
    callback(&id, &resp, WEB_CALLBACK, "tab2");
}

// ---------------------------------------------------------------------------------------------
// 10. max_age (OIDC Core §3.1.2.1) and the auth_time it is checked against
// ---------------------------------------------------------------------------------------------

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// What one `spa` authorization in a browser came to.
struct SpaLogin {
    /// The login form was shown (no reusable session).
    form_shown: bool,
    /// The ID token's `auth_time`, as verified by openidconnect.
    auth_time: i64,
    /// `name=value` of the session cookie a password login set.
    session: Option<String>,
}

/// Runs `spa`'s authorization request built by openidconnect (with `max_age` when given) in
/// `browser`, signing in as alice when the form is shown, and redeems the code.
async fn spa_login(id: &Identity, browser: &reqwest::Client, max_age: Option<u64>) -> SpaLogin {
    let spa = oidc(id, "spa", None, SPA_CALLBACK).await;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = spa
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    if let Some(seconds) = max_age {
        request = request.set_max_age(Duration::from_secs(seconds));
    }
    let (url, csrf, nonce) = request.url();
    let resp = get(browser, url.as_str()).await;
    let (form_shown, resp) = match resp.status().as_u16() {
        303 => (false, resp),
        200 => {
            let request = hidden_request(&resp.text().await.expect("form"));
            (
                true,
                post_login(id, browser, &request, "alice", "alice-password").await,
            )
        }
        s => panic!("unexpected /authorize status {s}"),
    };
    let session = set_cookies(&resp)
        .iter()
        .find(|c| c.starts_with("gatehouse_sso="))
        .and_then(|c| c.split(';').next())
        .map(String::from);
    let code = callback(id, &resp, SPA_CALLBACK, csrf.secret())["code"].clone();
    let token = spa
        .exchange_code(AuthorizationCode::new(code))
        .expect("token endpoint")
        .set_pkce_verifier(verifier)
        .request_async(&client())
        .await
        .unwrap_or_else(|e| panic!("code exchange failed: {e:?}"));
    // openidconnect checks auth_time against max_age itself when asked to.
    let verifier = spa
        .id_token_verifier()
        .set_auth_time_verifier_fn(move |auth_time| match (auth_time, max_age) {
            (None, Some(_)) => Err("auth_time is required when max_age was sent".into()),
            _ => Ok(()),
        });
    let claims = token
        .id_token()
        .expect("an ID token")
        .claims(&verifier, &nonce)
        .unwrap_or_else(|e| panic!("ID token does not verify: {e:?}"));
    SpaLogin {
        form_shown,
        auth_time: claims.auth_time().expect("auth_time").timestamp(),
        session,
    }
}

#[tokio::test]
async fn max_age_forces_a_fresh_login_and_auth_time_tells_when_it_happened() {
    let id = Identity::start("", &standard_directory());
    let b = browser();

    // The first login.
    let before_first = unix_now();
    let first = spa_login(&id, &b, None).await;
    assert!(first.form_shown, "no session yet: the form");
    assert!(
        first.auth_time >= before_first,
        "auth_time {} < {before_first}",
        first.auth_time
    );
    let first_session = first.session.expect("a session cookie");

    // Without max_age, and with a max_age the session is younger than, SSO answers at once and
    // the ID token tells the time of the one real login.
    for max_age in [None, Some(3600)] {
        let sso = spa_login(&id, &b, max_age).await;
        assert!(
            !sso.form_shown,
            "max_age {max_age:?}: SSO must not show the form"
        );
        assert_eq!(
            sso.auth_time, first.auth_time,
            "max_age {max_age:?}: the session's auth_time"
        );
    }

    // Let the session age past one second.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // prompt=none with a session that is too old: login_required, no code.
    let (_, challenge) = pkce();
    let spa_request = |state: &'static str, extra: &[(&'static str, &'static str)]| {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", "spa"),
            ("redirect_uri", SPA_CALLBACK),
            ("state", state),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        params.extend_from_slice(extra);
        authorize_url(&id, &params)
    };
    for max_age in ["0", "1"] {
        let url = spa_request("pn", &[("prompt", "none"), ("max_age", max_age)]);
        let resp = get(&b, &url).await;
        assert_error_redirect(&id, &resp, SPA_CALLBACK, "login_required", Some("pn"));
    }
    // A max_age that is not a number of seconds is an error sent back to the client.
    for bad in ["-1", "ten", "1.5"] {
        let resp = get(&b, &spa_request("bad", &[("max_age", bad)])).await;
        assert_error_redirect(&id, &resp, SPA_CALLBACK, "invalid_request", Some("bad"));
    }

    // max_age=1: the session is older, so the form comes back, and the ID token tells the new
    // login's time.
    let before_second = unix_now();
    let second = spa_login(&id, &b, Some(1)).await;
    assert!(
        second.form_shown,
        "max_age=1 with a 2 s old session must show the form"
    );
    assert!(
        second.auth_time >= before_second && second.auth_time > first.auth_time,
        "auth_time {}: not the second login (before it: {before_second}, first: {})",
        second.auth_time,
        first.auth_time
    );

    // The fresh login replaced the browser's session: the old cookie answers no more.
    let resp = client()
        .get(spa_request("old", &[("prompt", "none")]))
        .header("cookie", &first_session)
        .send()
        .await
        .expect("authorize");
    assert_error_redirect(&id, &resp, SPA_CALLBACK, "login_required", Some("old"));

    // max_age=0 asks for a login every time, even with a session seconds old.
    let before_third = unix_now();
    let third = spa_login(&id, &b, Some(0)).await;
    assert!(
        third.form_shown,
        "max_age=0 must show the form despite a live session"
    );
    assert!(
        third.auth_time >= before_third,
        "auth_time {} < {before_third}",
        third.auth_time
    );

    // SSO without max_age now reports the newest login.
    let sso = spa_login(&id, &b, None).await;
    assert!(!sso.form_shown);
    assert_eq!(
        sso.auth_time, third.auth_time,
        "SSO carries the re-login's time"
    );
}

/// OIDC Core §3.1.2.1 and §6: `/authorize` takes POST as well as GET, refuses request objects
/// by name instead of ignoring them, and refuses `prompt=none` combined with another value.
#[tokio::test]
async fn authorize_takes_post_and_refuses_request_objects_and_contradictory_prompts() {
    let id = Identity::start("", &standard_directory());
    let b = browser();
    let (_, challenge) = pkce();
    let base = [
        ("response_type", "code"),
        ("client_id", "web"),
        ("redirect_uri", WEB_CALLBACK),
        ("scope", "openid"),
        ("state", "s9"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];

    // POST with the same parameters as a form shows the login form, as GET does.
    let posted = b
        .post(id.url("/authorize"))
        .form(&base)
        .send()
        .await
        .expect("POST /authorize");
    assert_eq!(posted.status(), 200);
    let page = posted.text().await.expect("page");
    assert!(!hidden_request(&page).is_empty(), "no login form: {page}");

    for (what, extra, error) in [
        (
            "a request object",
            ("request", "eyJhbGciOiJub25lIn0.e30."),
            "request_not_supported",
        ),
        (
            "a request_uri",
            ("request_uri", "https://rp.example/req/1"),
            "request_uri_not_supported",
        ),
        (
            "prompt=none with login",
            ("prompt", "none login"),
            "invalid_request",
        ),
    ] {
        let mut params = base.to_vec();
        params.push(extra);
        let resp = get(&b, &authorize_url(&id, &params)).await;
        assert_eq!(resp.status(), 303, "{what}");
        assert_error_redirect(&id, &resp, WEB_CALLBACK, error, Some("s9"));
    }
}
