//! End-to-end scenarios for the machine side of gatehouse-identity: discovery and the JWKS, the
//! client_credentials and password grants, refusals and malformed requests at `/token`,
//! introspection and revocation, lockout under parallel guessing, key rotation and persistence,
//! configuration reload, metrics, and what must never be written down.
//!
//! Every test runs its own issuer process (see `support`). Tokens are checked with jwt-simple, a
//! JOSE implementation independent of the one the issuer signs with.

mod support;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::algorithms::{
    ECDSAP256PublicKeyLike, ES256PublicKey, Ed25519PublicKey, EdDSAPublicKeyLike, RS256PublicKey,
    RSAPublicKeyLike,
};
use jwt_simple::claims::JWTClaims;
use jwt_simple::common::VerificationOptions;
use jwt_simple::token::Token;
use serde_json::{json, Map, Value};
use support::{
    client, eventually, hash_of, metric_value, oauth_error, rss_kib, standard_directory, Identity,
};

/// Long enough for anything asynchronous (audit writer, watcher, upkeep tick) on a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);

const FORM: &str = "application/x-www-form-urlencoded";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn get_json(url: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = client().get(url).send().await.expect("GET");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.json().await.expect("JSON body");
    (status, headers, body)
}

async fn fetch_jwks(identity: &Identity) -> Value {
    let (status, _, body) = get_json(&identity.url("/jwks.json")).await;
    assert_eq!(status, 200, "GET /jwks.json");
    body
}

fn jwks_kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .expect("a `keys` array")
        .iter()
        .map(|k| k["kid"].as_str().expect("every key has a kid").to_string())
        .collect();
    kids.sort();
    kids
}

/// The `kid` and `typ` of a compact JWS, read without verifying it.
fn jws_header(token: &str) -> (Option<String>, Option<String>) {
    let meta = Token::decode_metadata(token).expect("a compact JWS");
    (
        meta.key_id().map(String::from),
        meta.signature_type().map(String::from),
    )
}

fn kid_of(token: &str) -> String {
    jws_header(token).0.expect("the token header names its key")
}

/// The claims of a JWS, decoded without verification, for exact comparisons after [`verify`].
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url payload"))
        .expect("JSON payload")
}

/// Verifies `token` with jwt-simple against the key its `kid` names in `jwks`: signature, the
/// key's algorithm, `typ`, `iss`, `aud` and the time claims.
fn verify(
    jwks: &Value,
    token: &str,
    typ: &str,
    issuer: &str,
    audience: &str,
) -> Result<JWTClaims<Map<String, Value>>, String> {
    let kid = jws_header(token).0.ok_or("the token header has no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let b64 = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().unwrap_or_default())
            .map_err(|e| format!("JWK member {name}: {e}"))
    };
    let options = VerificationOptions {
        required_signature_type: Some(typ.into()),
        required_key_id: Some(kid.clone()),
        allowed_issuers: Some(HashSet::from([issuer.to_string()])),
        allowed_audiences: Some(HashSet::from([audience.to_string()])),
        ..Default::default()
    };
    let verified = match jwk["kty"].as_str() {
        Some("RSA") => RS256PublicKey::from_components(&b64("n")?, &b64("e")?)
            .and_then(|key| key.verify_token::<Map<String, Value>>(token, Some(options))),
        Some("EC") => {
            let mut sec1 = vec![4u8];
            sec1.extend(b64("x")?);
            sec1.extend(b64("y")?);
            ES256PublicKey::from_bytes(&sec1)
                .and_then(|key| key.verify_token::<Map<String, Value>>(token, Some(options)))
        }
        Some("OKP") => Ed25519PublicKey::from_bytes(&b64("x")?)
            .and_then(|key| key.verify_token::<Map<String, Value>>(token, Some(options))),
        other => return Err(format!("unexpected kty {other:?}")),
    };
    verified.map_err(|e| format!("jwt-simple rejected the token: {e}"))
}

fn assert_key_gauges(metrics: &str, active: f64, next: f64, retired: f64) {
    for (state, want) in [("active", active), ("next", next), ("retired", retired)] {
        let series = format!(r#"gatehouse_identity_keys{{state="{state}"}}"#);
        assert_eq!(
            metric_value(metrics, &series),
            want,
            "{series} in\n{metrics}"
        );
    }
}

/// A token `reports` gets for itself with Basic authentication and no parameters.
async fn reports_token(identity: &Identity) -> Value {
    token_ok(
        identity
            .service_token("reports", "reports-secret", &[])
            .await,
    )
    .await
}

/// A successful token answer (RFC 6749 §5.1): 200, JSON, `no-store`. Returns the body.
async fn token_ok(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let cache = header(&resp, "cache-control").map(String::from);
    let pragma = header(&resp, "pragma").map(String::from);
    let ct = header(&resp, "content-type").unwrap_or("").to_string();
    let body: Value = resp.json().await.expect("JSON token answer");
    assert_eq!(status, 200, "token answer: {body}");
    assert!(ct.starts_with("application/json"), "content type {ct}");
    assert_eq!(
        cache.as_deref(),
        Some("no-store"),
        "Cache-Control of a token answer"
    );
    assert_eq!(
        pragma.as_deref(),
        Some("no-cache"),
        "Pragma of a token answer"
    );
    assert_eq!(body["token_type"], "Bearer", "{body}");
    body
}

fn access_token(body: &Value) -> String {
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {body}"))
        .to_string()
}

/// `POST /token` with a raw form body, HTTP Basic as `reports`.
async fn post_token_raw(
    identity: &Identity,
    content_type: &str,
    body: String,
) -> reqwest::Response {
    client()
        .post(identity.url("/token"))
        .basic_auth("reports", Some("reports-secret"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("token request")
}

async fn password_grant(
    identity: &Identity,
    username: &str,
    password: &str,
    scope: &str,
) -> reqwest::Response {
    client()
        .post(identity.url("/token"))
        .basic_auth("cli", Some("cli-secret"))
        .form(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("password grant request")
}

async fn introspect(
    identity: &Identity,
    as_client: (&str, &str),
    token: &str,
) -> reqwest::Response {
    client()
        .post(identity.url("/introspect"))
        .basic_auth(as_client.0, Some(as_client.1))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspection request")
}

async fn introspect_json(identity: &Identity, token: &str) -> Value {
    let resp = introspect(identity, ("reports", "reports-secret"), token).await;
    assert_eq!(resp.status(), 200, "introspection status");
    assert_eq!(header(&resp, "cache-control"), Some("no-store"));
    resp.json().await.expect("introspection JSON")
}

async fn revoke(identity: &Identity, as_client: (&str, &str), token: &str) -> reqwest::Response {
    client()
        .post(identity.url("/revoke"))
        .basic_auth(as_client.0, Some(as_client.1))
        .form(&[("token", token)])
        .send()
        .await
        .expect("revocation request")
}

fn events<'a>(audit: &'a [Value], kind: &str) -> Vec<&'a Value> {
    audit.iter().filter(|e| e["event"] == kind).collect()
}

/// Waits until the audit log holds an event of `kind` matching `pred`; returns the whole log.
/// The writer is one FIFO thread, so every event recorded before that one is on disk too.
async fn audit_until(identity: &Identity, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    eventually(what, SETTLE, || {
        let found = identity.audit().iter().any(&pred);
        async move { found }
    })
    .await;
    identity.audit()
}

/// The standard directory without the `cli` client: nobody may use the password grant.
fn directory_without_password_client() -> String {
    let full = standard_directory();
    let (head, _) = full
        .split_once("  - id: cli\n")
        .expect("the standard directory declares cli");
    head.to_string()
}

async fn metrics_of(identity: &Identity) -> String {
    identity.metrics().await
}

// ---------------------------------------------------------------------------------------------
// 1. Discovery and JWKS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn discovery_document_describes_this_issuer_and_lists_the_password_grant_a_client_uses() {
    // Given the standard directory, whose `cli` client may use the password grant,
    let identity = Identity::start("", &standard_directory());

    // when a relying party fetches the discovery document,
    let (status, _, doc) = get_json(&identity.url("/.well-known/openid-configuration")).await;

    // then it names this issuer and endpoints under it.
    assert_eq!(status, 200);
    let issuer = identity.issuer();
    assert_eq!(doc["issuer"], issuer.as_str(), "{doc}");
    for (member, path) in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/jwks.json"),
        ("introspection_endpoint", "/introspect"),
        ("revocation_endpoint", "/revoke"),
        ("end_session_endpoint", "/logout"),
    ] {
        assert_eq!(
            doc[member],
            format!("{issuer}{path}").as_str(),
            "{member} in {doc}"
        );
    }
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    // Public clients may revoke their own tokens without a secret (RFC 7009 §2.1).
    assert_eq!(
        doc["revocation_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    let grants: Vec<&str> = doc["grant_types_supported"]
        .as_array()
        .expect("grant_types_supported")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for g in [
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "password",
    ] {
        assert!(grants.contains(&g), "{g} missing from {grants:?}");
    }

    // And the jwks_uri it advertises really serves the keys.
    let jwks = client()
        .get(doc["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .expect("GET jwks_uri");
    assert_eq!(jwks.status(), 200);
}

#[tokio::test]
async fn discovery_does_not_advertise_the_password_grant_when_no_client_has_it() {
    // Given a directory without the `cli` client,
    let identity = Identity::start("", &directory_without_password_client());

    // when the discovery document is fetched,
    let (status, _, doc) = get_json(&identity.url("/.well-known/openid-configuration")).await;

    // then `password` is absent and the other grants remain.
    assert_eq!(status, 200);
    let grants = doc["grant_types_supported"]
        .as_array()
        .expect("grant_types_supported");
    assert!(!grants.contains(&json!("password")), "{grants:?}");
    assert!(grants.contains(&json!("client_credentials")), "{grants:?}");
}

#[tokio::test]
async fn jwks_publishes_one_public_signing_key_per_algorithm_cacheable_for_five_minutes() {
    // Given a fresh issuer with the default algorithms (RS256, ES256),
    let identity = Identity::start("", &standard_directory());

    // when the JWKS is fetched,
    let resp = client()
        .get(identity.url("/jwks.json"))
        .send()
        .await
        .expect("GET /jwks.json");

    // then it is a JWK Set, publicly cacheable for the default max-age,
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-type"),
        Some("application/jwk-set+json")
    );
    assert_eq!(header(&resp, "cache-control"), Some("public, max-age=300"));
    let jwks: Value = resp.json().await.expect("JSON JWKS");

    // with an RSA and an EC signing key, each fully described and without private parts,
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2, "{jwks}");
    let rsa = keys.iter().find(|k| k["kty"] == "RSA").expect("an RSA key");
    let ec = keys.iter().find(|k| k["kty"] == "EC").expect("an EC key");
    assert_eq!(rsa["alg"], "RS256");
    assert_eq!(ec["alg"], "ES256");
    assert_eq!(ec["crv"], "P-256");
    for key in keys {
        assert_eq!(key["use"], "sig", "{key}");
        assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()), "{key}");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(
                key.get(private).is_none(),
                "private member {private} published: {key}"
            );
        }
    }
    assert_ne!(rsa["kid"], ec["kid"]);

    // and an independent JOSE library accepts both public keys.
    let b64 = |k: &Value, m: &str| URL_SAFE_NO_PAD.decode(k[m].as_str().unwrap()).unwrap();
    RS256PublicKey::from_components(&b64(rsa, "n"), &b64(rsa, "e")).expect("a valid RSA key");
    let mut sec1 = vec![4u8];
    sec1.extend(b64(ec, "x"));
    sec1.extend(b64(ec, "y"));
    ES256PublicKey::from_bytes(&sec1).expect("a valid P-256 point");
}

#[tokio::test]
async fn jwks_max_age_follows_the_configuration() {
    // Given `keys.jwks_max_age: 42s`,
    let identity = Identity::start(
        "keys:\n  dir: keys\n  jwks_max_age: 42s\n",
        &standard_directory(),
    );

    // when the JWKS is fetched, then caches may keep it for 42 seconds.
    let resp = client()
        .get(identity.url("/jwks.json"))
        .send()
        .await
        .expect("GET /jwks.json");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "cache-control"), Some("public, max-age=42"));
}

// ---------------------------------------------------------------------------------------------
// 2. client_credentials
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_credentials_with_basic_auth_issues_a_verifiable_rfc9068_access_token() {
    // Given the `reports` service,
    let identity = Identity::start("", &standard_directory());

    // when it asks for a token with HTTP Basic authentication,
    let body = reports_token(&identity).await;

    // then it gets a 15-minute Bearer token for all its scopes and no refresh token,
    assert_eq!(body["expires_in"], 900, "{body}");
    assert_eq!(body["scope"], "documents:read documents:write", "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body.get("id_token").is_none(), "{body}");
    let token = access_token(&body);

    // whose header says it is an access token signed by a published key,
    let (kid, typ) = jws_header(&token);
    assert_eq!(typ.as_deref(), Some("at+jwt"));
    let jwks = fetch_jwks(&identity).await;
    let kid = kid.expect("kid");
    assert!(jwks_kids(&jwks).contains(&kid), "kid {kid} not in {jwks}");
    assert_eq!(Token::decode_metadata(&token).unwrap().algorithm(), "RS256");

    // and that jwt-simple verifies, with the claims RFC 9068 asks for.
    let issuer = identity.issuer();
    let claims = verify(&jwks, &token, "at+jwt", &issuer, "documents-api").expect("verifies");
    assert_eq!(claims.issuer.as_deref(), Some(issuer.as_str()));
    assert_eq!(claims.subject.as_deref(), Some("reports"));
    assert!(claims.jwt_id.as_deref().is_some_and(|j| !j.is_empty()));
    let (iat, exp) = (claims.issued_at.unwrap(), claims.expires_at.unwrap());
    assert_eq!(exp.as_secs() - iat.as_secs(), 900);
    let raw = payload(&token);
    assert_eq!(raw["iss"], issuer.as_str(), "{raw}");
    assert_eq!(raw["sub"], "reports", "{raw}");
    assert_eq!(raw["aud"], "documents-api", "{raw}");
    assert_eq!(raw["client_id"], "reports", "{raw}");
    assert_eq!(raw["scope"], "documents:read documents:write", "{raw}");
    assert_eq!(raw["roles"], json!(["service"]), "{raw}");
    assert!(raw["jti"].as_str().is_some_and(|j| j.len() >= 32), "{raw}");
    assert_eq!(
        raw["exp"].as_u64().unwrap() - raw["iat"].as_u64().unwrap(),
        900,
        "{raw}"
    );

    // A token for another audience does not verify as one for documents-api.
    let wrong_audience = verify(&jwks, &token, "at+jwt", &issuer, "search-api");
    assert!(
        wrong_audience.is_err(),
        "aud must be checked: {wrong_audience:?}"
    );
}

#[tokio::test]
async fn client_credentials_with_client_secret_post_issues_a_token() {
    // Given the `reports` service,
    let identity = Identity::start("", &standard_directory());

    // when it authenticates with client_id and client_secret in the form body,
    let resp = client()
        .post(identity.url("/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "reports"),
            ("client_secret", "reports-secret"),
        ])
        .send()
        .await
        .expect("token request");

    // then the answer is the same kind of token.
    let body = token_ok(resp).await;
    assert_eq!(body["expires_in"], 900, "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let token = access_token(&body);
    let jwks = fetch_jwks(&identity).await;
    let claims =
        verify(&jwks, &token, "at+jwt", &identity.issuer(), "documents-api").expect("verifies");
    assert_eq!(claims.subject.as_deref(), Some("reports"));
    assert_eq!(claims.custom["client_id"], "reports");
    assert_eq!(claims.custom["roles"], json!(["service"]));
}

#[tokio::test]
async fn client_credentials_honours_a_permitted_audience_and_a_narrower_scope() {
    // Given the `reports` service, allowed documents-api and search-api,
    let identity = Identity::start("", &standard_directory());
    let jwks = fetch_jwks(&identity).await;

    // when it asks for search-api, then the token is for search-api;
    let body = token_ok(
        identity
            .service_token("reports", "reports-secret", &[("audience", "search-api")])
            .await,
    )
    .await;
    let token = access_token(&body);
    verify(&jwks, &token, "at+jwt", &identity.issuer(), "search-api")
        .expect("verifies for search-api");
    assert_eq!(payload(&token)["aud"], "search-api");

    // and the RFC 8707 `resource` parameter means the same.
    let body = token_ok(
        identity
            .service_token("reports", "reports-secret", &[("resource", "search-api")])
            .await,
    )
    .await;
    assert_eq!(payload(&access_token(&body))["aud"], "search-api");

    // When it asks only for documents:read, then the token and the answer carry just that.
    let body = token_ok(
        identity
            .service_token("reports", "reports-secret", &[("scope", "documents:read")])
            .await,
    )
    .await;
    assert_eq!(body["scope"], "documents:read", "{body}");
    let token = access_token(&body);
    let claims =
        verify(&jwks, &token, "at+jwt", &identity.issuer(), "documents-api").expect("verifies");
    assert_eq!(claims.custom["scope"], "documents:read");
}

// ---------------------------------------------------------------------------------------------
// 3. Refusals
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_credentials_refusals_issue_nothing_and_are_counted() {
    // Given the standard directory,
    let identity = Identity::start("", &standard_directory());

    // an audience the client may not ask for is an invalid target (RFC 8707);
    let resp = identity
        .service_token("reports", "reports-secret", &[("audience", "billing-api")])
        .await;
    oauth_error(resp, 400, "invalid_target").await;

    // a scope it may not ask for is an invalid scope;
    let resp = identity
        .service_token(
            "reports",
            "reports-secret",
            &[("scope", "documents:delete")],
        )
        .await;
    oauth_error(resp, 400, "invalid_scope").await;

    // a wrong secret is an invalid client, with a Basic challenge;
    let resp = identity
        .service_token("reports", "not-the-reports-secret", &[])
        .await;
    let challenge = header(&resp, "www-authenticate").map(String::from);
    oauth_error(resp, 401, "invalid_client").await;
    let challenge = challenge.expect("WWW-Authenticate on a 401");
    assert!(challenge.starts_with("Basic realm="), "{challenge}");

    // an unknown client is an invalid client too;
    let resp = identity.service_token("nobody", "nobody-secret", &[]).await;
    assert!(header(&resp, "www-authenticate").is_some());
    oauth_error(resp, 401, "invalid_client").await;

    // a public client naming itself may not use client_credentials;
    let resp = client()
        .post(identity.url("/token"))
        .form(&[("grant_type", "client_credentials"), ("client_id", "spa")])
        .send()
        .await
        .expect("token request");
    oauth_error(resp, 400, "unauthorized_client").await;

    // nor may a confidential client registered only for the browser flow;
    let resp = identity.service_token("web", "web-secret", &[]).await;
    oauth_error(resp, 400, "unauthorized_client").await;

    // and Basic plus client_secret in the body is one authentication method too many.
    let resp = identity
        .service_token(
            "reports",
            "reports-secret",
            &[("client_secret", "reports-secret")],
        )
        .await;
    oauth_error(resp, 400, "invalid_request").await;

    // Then none of them was issued a token: the only token_issued event is the control request's.
    let control = reports_token(&identity).await;
    let jti = payload(&access_token(&control))["jti"]
        .as_str()
        .unwrap()
        .to_string();
    let audit = audit_until(&identity, "the control token in the audit log", |e| {
        e["event"] == "token_issued" && e["jti"] == jti.as_str()
    })
    .await;
    let issued = events(&audit, "token_issued");
    assert_eq!(
        issued.len(),
        1,
        "only the control token was issued: {issued:?}"
    );

    // And the refusals are counted by error code.
    let metrics = metrics_of(&identity).await;
    for (error, at_least) in [
        ("invalid_target", 1.0),
        ("invalid_scope", 1.0),
        ("invalid_client", 2.0),
        ("unauthorized_client", 2.0),
        ("invalid_request", 1.0),
    ] {
        let series = format!("gatehouse_identity_token_errors_total{{error=\"{error}\"}}");
        let value = metric_value(&metrics, &series);
        assert!(value >= at_least, "{series} = {value}\n{metrics}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Malformed requests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn token_endpoint_rejects_malformed_requests_and_keeps_serving() {
    let identity = Identity::start("", &standard_directory());

    // A JSON body is not a form.
    let resp = client()
        .post(identity.url("/token"))
        .basic_auth("reports", Some("reports-secret"))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .expect("token request");
    oauth_error(resp, 400, "invalid_request").await;

    // A form without grant_type.
    let resp = post_token_raw(&identity, FORM, "scope=documents%3Aread".into()).await;
    let body = oauth_error(resp, 400, "invalid_request").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("grant_type"),
        "{body}"
    );

    // A parameter sent twice (RFC 6749 §3.2).
    let resp = post_token_raw(
        &identity,
        FORM,
        "grant_type=client_credentials&grant_type=client_credentials".into(),
    )
    .await;
    oauth_error(resp, 400, "invalid_request").await;

    // A grant type nobody supports.
    let resp = post_token_raw(&identity, FORM, "grant_type=urn%3Aexample%3Amagic".into()).await;
    oauth_error(resp, 400, "unsupported_grant_type").await;

    // A body larger than max_body_bytes (16384 by default).
    let mut big = String::from("grant_type=client_credentials&padding=");
    big.push_str(&"x".repeat(20_000 - big.len()));
    assert_eq!(big.len(), 20_000);
    let resp = post_token_raw(&identity, FORM, big).await;
    let body = oauth_error(resp, 413, "invalid_request").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("16384"),
        "{body}"
    );

    // GET is not how one asks for a token.
    let resp = client()
        .get(identity.url("/token"))
        .send()
        .await
        .expect("GET /token");
    assert_eq!(header(&resp, "allow"), Some("POST"));
    oauth_error(resp, 405, "invalid_request").await;

    // After all of that, a well-formed request still gets a token.
    let body = reports_token(&identity).await;
    assert!(!access_token(&body).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 5. Introspection and revocation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn introspection_reports_live_tokens_and_revocation_is_limited_to_the_owner() {
    // Given a token issued to `reports`,
    let identity = Identity::start("", &standard_directory());
    let body = reports_token(&identity).await;
    let token = access_token(&body);
    let claims = payload(&token);

    // when `reports` introspects it, then it is active and described (RFC 7662 §2.2);
    let info = introspect_json(&identity, &token).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], "reports", "{info}");
    assert_eq!(info["client_id"], "reports", "{info}");
    assert_eq!(info["scope"], "documents:read documents:write", "{info}");
    assert_eq!(info["exp"], claims["exp"], "{info}");
    assert_eq!(info["aud"], "documents-api", "{info}");
    assert_eq!(info["iss"], identity.issuer().as_str(), "{info}");

    // garbage is simply inactive, with nothing else said;
    assert_eq!(
        introspect_json(&identity, "not-a-token").await,
        json!({"active": false})
    );

    // another client sees nothing of it either: it is not active for `cli`, which is no
    // resource server (RFC 7662 §2.2);
    let resp = introspect(&identity, ("cli", "cli-secret"), &token).await;
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.expect("JSON");
    assert_eq!(seen, json!({"active": false}));

    // and an unauthenticated caller learns nothing.
    let resp = client()
        .post(identity.url("/introspect"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .expect("introspection request");
    oauth_error(resp, 401, "invalid_client").await;

    // When another client (`cli`) tries to revoke it, it is refused and the token stays active.
    let resp = revoke(&identity, ("cli", "cli-secret"), &token).await;
    oauth_error(resp, 400, "unauthorized_client").await;
    assert_eq!(introspect_json(&identity, &token).await["active"], true);

    // When its owner revokes it, the answer is 200 and the token is inactive from then on.
    let resp = revoke(&identity, ("reports", "reports-secret"), &token).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        introspect_json(&identity, &token).await,
        json!({"active": false})
    );

    // Revoking something that is not a token is fine too (RFC 7009 §2.2).
    let resp = revoke(&identity, ("reports", "reports-secret"), "not-a-token").await;
    assert_eq!(resp.status(), 200);

    // The audit log has the revocation, naming the token by its id only.
    let jti = claims["jti"].as_str().unwrap().to_string();
    let audit = audit_until(&identity, "a revocation event", |e| {
        e["event"] == "revocation"
    })
    .await;
    let revocations = events(&audit, "revocation");
    assert_eq!(revocations.len(), 1, "{revocations:?}");
    assert_eq!(revocations[0]["client"], "reports");
    assert_eq!(revocations[0]["jti"], jti.as_str());
    assert_eq!(revocations[0]["reason"], "access_token");
}

// ---------------------------------------------------------------------------------------------
// 6. Password grant
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn password_grant_issues_user_tokens_only_to_a_client_allowed_it() {
    let identity = Identity::start("", &standard_directory());
    let issuer = identity.issuer();

    // When `cli` logs alice in with her password and the openid scope,
    let body = token_ok(
        password_grant(
            &identity,
            "alice",
            "alice-password",
            "openid documents:read",
        )
        .await,
    )
    .await;

    // then it gets an access token, a refresh token and an ID token,
    let token = access_token(&body);
    assert!(
        body["refresh_token"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    let id_token = body["id_token"].as_str().expect("an id_token").to_string();
    assert_eq!(body["scope"], "openid documents:read", "{body}");

    // each verifiable by an independent library and speaking for alice.
    let jwks = fetch_jwks(&identity).await;
    let access =
        verify(&jwks, &token, "at+jwt", &issuer, "documents-api").expect("access token verifies");
    assert_eq!(access.subject.as_deref(), Some("alice"));
    assert_eq!(access.custom["client_id"], "cli");
    assert_eq!(access.custom["roles"], json!(["admin", "editor"]));
    let id = verify(&jwks, &id_token, "JWT", &issuer, "cli").expect("ID token verifies");
    assert_eq!(id.subject.as_deref(), Some("alice"));
    // Standard claims come only with their scope (OIDC Core §5.4): `cli` was granted neither
    // `email` nor `profile`, so neither its tokens nor /userinfo name them.
    for claims in [&id.custom, &access.custom] {
        assert!(
            claims.get("email").is_none() && claims.get("name").is_none(),
            "{claims:?}"
        );
    }
    let info: Value = client()
        .get(identity.url("/userinfo"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("userinfo")
        .json()
        .await
        .expect("JSON");
    assert_eq!(info["sub"], "alice", "{info}");
    assert!(
        info.get("email").is_none() && info.get("name").is_none(),
        "{info}"
    );
    assert_eq!(info["roles"], json!(["admin", "editor"]), "{info}");

    // A wrong password is an invalid grant with a message that does not say which part was wrong.
    let resp = password_grant(&identity, "alice", "not-alices-password", "documents:read").await;
    let body = oauth_error(resp, 400, "invalid_grant").await;
    assert_eq!(body["error_description"], "invalid username or password");

    // A service client registered only for client_credentials may not use it.
    let resp = client()
        .post(identity.url("/token"))
        .basic_auth("reports", Some("reports-secret"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-password"),
        ])
        .send()
        .await
        .expect("token request");
    oauth_error(resp, 400, "unauthorized_client").await;
}

// ---------------------------------------------------------------------------------------------
// 7. Lockout
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn parallel_wrong_passwords_evaluate_at_most_max_failures_and_then_lock_out() {
    // Given lockout after 3 failures for a minute,
    let identity = Identity::start(
        "lockout:\n  max_failures: 3\n  base_delay: 60s\n  max_delay: 10m\n",
        &standard_directory(),
    );

    // when 12 wrong guesses for alice arrive at once,
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..12 {
        let url = identity.url("/token");
        guesses.spawn(async move {
            let resp = client()
                .post(url)
                .basic_auth("cli", Some("cli-secret"))
                .form(&[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", format!("wrong-guess-{i}").as_str()),
                ])
                .send()
                .await
                .expect("password grant request");
            let status = resp.status().as_u16();
            let cache = header(&resp, "cache-control").map(String::from);
            let locked = header(&resp, "retry-after").is_some();
            let body: Value = resp.json().await.expect("JSON answer");
            (status, cache, locked, body)
        });
    }
    let mut locked = Vec::new();
    while let Some(answer) = guesses.join_next().await {
        let (status, cache, was_locked, body) = answer.expect("guess task");
        // RFC 6749 §5.2: a refused password grant is 400 invalid_grant, locked or not.
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );
        assert_eq!(cache.as_deref(), Some("no-store"));
        locked.push(was_locked);
    }

    // then exactly 3 were checked (and failed) and the other 9 were turned away (the delay in
    // Retry-After and in the description),
    let turned_away = locked.iter().filter(|l| **l).count();
    assert_eq!(
        (locked.len() - turned_away, turned_away),
        (3, 9),
        "{locked:?}"
    );

    // and now even the right password is refused while the lock lasts.
    let resp = password_grant(&identity, "alice", "alice-password", "documents:read").await;
    assert!(header(&resp, "retry-after").is_some());
    let body = oauth_error(resp, 400, "invalid_grant").await;
    assert!(body.get("refresh_token").is_none());
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains("try again in"), "{description}");

    // The lockout is counted and audited.
    let metrics = metrics_of(&identity).await;
    let lockouts = metric_value(&metrics, "gatehouse_identity_lockouts_total");
    assert!(lockouts >= 1.0, "lockouts_total = {lockouts}\n{metrics}");
    let locked_out = metric_value(
        &metrics,
        r#"gatehouse_identity_login_failures_total{reason="locked_out"}"#,
    );
    assert!(locked_out >= 9.0, "locked_out = {locked_out}\n{metrics}");
    let bad_password = metric_value(
        &metrics,
        r#"gatehouse_identity_login_failures_total{reason="bad_password"}"#,
    );
    assert_eq!(
        bad_password, 3.0,
        "only three guesses were evaluated\n{metrics}"
    );
    let audit = audit_until(&identity, "a lockout event", |e| e["event"] == "lockout").await;
    let lockout = events(&audit, "lockout");
    assert_eq!(lockout[0]["user"], "alice", "{lockout:?}");
    assert_eq!(lockout[0]["ip"], "127.0.0.1", "{lockout:?}");
    assert!(
        !events(&audit, "login")
            .iter()
            .any(|e| e["outcome"] == "success"),
        "no login may succeed while locked"
    );
}

// ---------------------------------------------------------------------------------------------
// 7b. Outsiders: floods of wrong secrets, and guesses from one shared address
// ---------------------------------------------------------------------------------------------

/// A `client_credentials` request as `client_id` with HTTP Basic, on a connection of its own:
/// the answer's status, `Retry-After` (seconds) and JSON body.
async fn basic_token_attempt(
    url: String,
    client_id: String,
    secret: &'static str,
) -> (u16, Option<u64>, Value) {
    let resp = client()
        .post(url)
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    let status = resp.status().as_u16();
    let retry = header(&resp, "retry-after").and_then(|v| v.parse().ok());
    let body = resp.json().await.expect("JSON answer");
    (status, retry, body)
}

/// Lockout budgets so large that only the hash gate can refuse: for the tests of the gate.
const NO_LOCKOUT: &str = "lockout:\n  max_failures: 100000\n  ip_max_failures: 100000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_wrong_client_secrets_gets_503_in_bounded_memory_while_good_clients_are_served()
{
    // Given argon2 checks limited to 2 at a time with 4 more waiting,
    let identity = Identity::start(
        &format!("limits:\n  hash_concurrency: 2\n  hash_queue: 4\n{NO_LOCKOUT}"),
        &standard_directory(),
    );
    // and `reports` authenticated once (a secret that verified is then checked without argon2),
    reports_token(&identity).await;
    let pid = identity.pid().expect("the issuer runs");
    let before = rss_kib(pid).expect("the issuer's RSS");
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let sampling = sampling.clone();
        async move {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = rss_kib(pid).unwrap_or(0).max(peak);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        }
    });

    // when 120 clients send wrong secrets at once, half of them for a client id that does not
    // exist and half for `reports`,
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..120 {
        let id = if i % 2 == 0 {
            format!("intruder-{i}")
        } else {
            "reports".to_string()
        };
        flood.spawn(basic_token_attempt(
            identity.url("/token"),
            id,
            "wrong-secret",
        ));
    }
    // `reports` keeps getting tokens with its right secret meanwhile.
    for _ in 0..5 {
        reports_token(&identity).await;
    }
    let mut answers = Vec::new();
    while let Some(answer) = flood.join_next().await {
        answers.push(answer.expect("flood task"));
    }
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.await.expect("RSS sampler");

    // Then what the gate could not take was refused at once with 503 and Retry-After, and the
    // rest was checked and refused as an invalid client, known client id or not;
    let mut busy = 0;
    for (status, retry, body) in &answers {
        match status {
            503 => {
                busy += 1;
                assert_eq!(body["error"], "temporarily_unavailable", "{body}");
                assert!(retry.is_some_and(|s| s >= 1), "Retry-After {retry:?}");
            }
            401 => assert_eq!(body["error"], "invalid_client", "{body}"),
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    assert!(busy > 0, "no 503 among {} answers", answers.len());
    assert!(busy < answers.len(), "every wrong secret got 503");
    // the refusals are counted;
    let metrics = metrics_of(&identity).await;
    let counted = metric_value(&metrics, "gatehouse_identity_hash_queue_full_total");
    assert_eq!(counted, busy as f64, "{metrics}");
    // memory stayed bounded: two argon2 work areas of 19 MiB, not one per request;
    let grew_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grew_mib < 100,
        "RSS grew by {grew_mib} MiB ({before} KiB before, peak {peak} KiB)"
    );
    // and the right secret is still accepted.
    reports_token(&identity).await;
}

#[tokio::test]
async fn checks_still_queued_when_their_clients_hang_up_never_run() {
    // Given one argon2 check at a time and room for 60 waiting,
    let identity = Identity::start(
        &format!("limits:\n  hash_concurrency: 1\n  hash_queue: 60\n{NO_LOCKOUT}"),
        &standard_directory(),
    );
    // when 40 clients with wrong secrets give up after 100 ms, most of them still queued (a
    // check takes tens of milliseconds),
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    let mut gone = tokio::task::JoinSet::new();
    for i in 0..40 {
        let request = impatient
            .post(identity.url("/token"))
            .basic_auth(format!("intruder-{i}"), Some("wrong-secret"))
            .form(&[("grant_type", "client_credentials")]);
        gone.spawn(async move { request.send().await.is_err() });
    }
    let mut answered = 0;
    while let Some(timed_out) = gone.join_next().await {
        if !timed_out.expect("client task") {
            answered += 1;
        }
    }

    // then a client whose secret needs a check is served once the queue has moved on (checks
    // are taken in arrival order, so every abandoned one has run or been dropped by then),
    let resp = identity
        .service_token("reports", "reports-secret", &[])
        .await;
    token_ok(resp).await;
    // and only the checks answered in time, or running when their clients left, were run:
    // the clients left within a few milliseconds of each other, so a few at most.
    let metrics = metrics_of(&identity).await;
    let checks = metric_value(&metrics, "gatehouse_identity_hash_checks_total");
    let ran_for_the_gone = checks - f64::from(answered) - 1.0;
    assert!(
        (0.0..=5.0).contains(&ran_for_the_gone) && answered < 30,
        "{checks} argon2 checks ran for 40 clients ({answered} answered in time) and reports\n{metrics}"
    );
}

#[tokio::test]
async fn repeated_wrong_secrets_lock_the_client_id_for_a_doubling_delay() {
    // Given a lock after 3 failures, for 2 s and then twice as long each time,
    let identity = Identity::start(
        "lockout:\n  max_failures: 3\n  base_delay: 2s\n  max_delay: 1m\n",
        &standard_directory(),
    );
    let attempt = |secret: &'static str| {
        basic_token_attempt(identity.url("/token"), "reports".into(), secret)
    };

    // when `reports` is sent three wrong secrets,
    for _ in 0..3 {
        let (status, _, body) = attempt("wrong-secret").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
    }
    // then even its right secret is refused while the lock lasts, as a locked-out login is:
    // 429, Retry-After, no token;
    let (status, retry, body) = attempt("reports-secret").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("invalid_client")),
        "{body}"
    );
    assert!(body.get("access_token").is_none());
    let first = retry.expect("Retry-After on a 429");
    assert!((1..=2).contains(&first), "first lock: Retry-After {first}");
    // other clients from the same address are not affected;
    let (status, _, body) =
        basic_token_attempt(identity.url("/token"), "web".into(), "web-secret").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{body}"
    );

    // once the lock is over, three more wrong secrets lock it for twice as long,
    eventually("the first client lock to end", SETTLE, || async {
        attempt("wrong-secret").await.0 == 401
    })
    .await;
    for _ in 0..2 {
        let (status, _, _) = attempt("wrong-secret").await;
        assert_eq!(status, 401);
    }
    let (status, retry, body) = attempt("reports-secret").await;
    assert_eq!(status, 429, "{body}");
    let second = retry.expect("Retry-After on a 429");
    assert!(
        (3..=4).contains(&second),
        "second lock: Retry-After {second}"
    );

    // and when it is over, the right secret is accepted again.
    eventually("the second client lock to end", SETTLE, || async {
        attempt("reports-secret").await.0 == 200
    })
    .await;
    let audit = audit_until(&identity, "a client lockout event", |e| {
        e["event"] == "lockout" && e["client"] == "reports"
    })
    .await;
    assert!(events(&audit, "lockout")
        .iter()
        .all(|e| e["user"].is_null()));
}

#[tokio::test]
async fn a_client_that_proved_its_secret_is_not_locked_out_by_someone_elses_wrong_secrets() {
    // Given a lock after 3 failures, and `reports`, which has got a token with its secret,
    let identity = Identity::start(
        "lockout:\n  max_failures: 3\n  base_delay: 1m\n  max_delay: 1m\n",
        &standard_directory(),
    );
    let attempt = |secret: &'static str| {
        basic_token_attempt(identity.url("/token"), "reports".into(), secret)
    };
    assert_eq!(attempt("reports-secret").await.0, 200);

    // when someone else sends its client id three wrong secrets,
    for _ in 0..3 {
        assert_eq!(attempt("wrong-secret").await.0, 401);
    }
    // then their guesses are locked out,
    let (status, retry, body) = attempt("another-wrong-secret").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("invalid_client"))
    );
    assert!(retry.is_some(), "Retry-After on a 429");
    // but `reports` keeps getting tokens with the secret it proved,
    for _ in 0..3 {
        let (status, _, body) = attempt("reports-secret").await;
        assert_eq!(status, 200, "{body}");
        assert!(body["access_token"].is_string(), "{body}");
    }
    // and that does not lift the lock for guesses.
    assert_eq!(attempt("wrong-secret").await.0, 429);
}

#[tokio::test]
async fn wrong_passwords_for_other_accounts_from_the_same_address_do_not_lock_out_alice() {
    // Given the default lockout (5 failures),
    let identity = Identity::start("", &standard_directory());
    // when one address guesses five accounts that do not exist,
    for i in 1..=5 {
        let resp =
            password_grant(&identity, &format!("nobody{i}"), "guess", "documents:read").await;
        oauth_error(resp, 400, "invalid_grant").await;
    }
    // then alice, behind the same address (a NAT, the gateway), still logs in.
    token_ok(password_grant(&identity, "alice", "alice-password", "documents:read").await).await;
}

#[tokio::test]
async fn an_address_guessing_across_accounts_is_throttled_and_its_budget_comes_back() {
    // Given 3 failures per account, and 8 per address over a window of 8 s (one back a second),
    let identity = Identity::start(
        "lockout:\n  max_failures: 3\n  ip_max_failures: 8\n  ip_window: 8s\n",
        &standard_directory(),
    );
    // when one address guesses a new account each time, as fast as it can,
    let mut answers = Vec::new();
    for i in 0..40 {
        let resp = password_grant(&identity, &format!("user{i}"), "guess", "documents:read").await;
        let status = resp.status().as_u16();
        let retry = header(&resp, "retry-after").and_then(|v| v.parse::<u64>().ok());
        let body: Value = resp.json().await.expect("JSON answer");
        assert_eq!(body["error"], "invalid_grant", "{status} {body}");
        answers.push((status, retry));
    }

    // then about eight guesses were checked before the address was throttled,
    // (every answer is 400 invalid_grant; a throttled one says when to come back)
    assert!(answers.iter().all(|(s, _)| *s == 400), "{answers:?}");
    let first_refusal = answers
        .iter()
        .position(|(_, r)| r.is_some())
        .expect("the address is throttled");
    assert!((8..=16).contains(&first_refusal), "{answers:?}");
    // and from then on it is held to about one guess a second: mostly refused, with Retry-After.
    let after = &answers[first_refusal..];
    let checked = after.iter().filter(|(_, r)| r.is_none()).count();
    assert!(checked * 2 < after.len(), "{answers:?}");
    assert!(
        after
            .iter()
            .filter_map(|(_, r)| *r)
            .all(|r| (1..=8).contains(&r)),
        "{answers:?}"
    );

    // The budget comes back as the window passes: alice logs in again without anyone unlocking.
    eventually("the address's budget to recover", SETTLE, || async {
        password_grant(&identity, "alice", "alice-password", "documents:read")
            .await
            .status()
            == 200
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 8. Key rotation
// ---------------------------------------------------------------------------------------------

/// `POST /keys/rotate` (with `query`, e.g. `?immediate=true`): 200 and the answer.
async fn rotate_keys(identity: &Identity, query: &str) -> Value {
    let resp = client()
        .post(identity.admin(&format!("/keys/rotate{query}")))
        .send()
        .await
        .expect("rotate");
    let status = resp.status();
    let body: Value = resp.json().await.expect("rotation JSON");
    assert_eq!(status, 200, "{body}");
    body
}

/// The RS256 entry of a rotation answer: `(kid, state, signs_from, replaces_kid)`.
fn rs256_change(rotation: &Value) -> (String, String, u64, String) {
    let rotated = rotation["rotated"].as_array().expect("rotated list");
    assert_eq!(rotated.len(), 2, "one change per algorithm: {rotation}");
    let rsa = rotated
        .iter()
        .find(|r| r["alg"] == "RS256")
        .unwrap_or_else(|| panic!("no RS256 change in {rotation}"));
    let field = |name: &str| {
        rsa[name]
            .as_str()
            .unwrap_or_else(|| panic!("`{name}` in {rsa}"))
            .to_string()
    };
    let signs_from = rsa["signs_from"].as_u64().expect("signs_from");
    (
        field("kid"),
        field("state"),
        signs_from,
        field("replaces_kid"),
    )
}

/// `kid → state` from `/healthz`'s key list.
async fn key_states(identity: &Identity) -> Vec<(String, String)> {
    let (status, _, health) = get_json(&identity.admin("/healthz")).await;
    assert_eq!(status, 200, "{health}");
    let mut states: Vec<(String, String)> = health["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("a `keys` list in {health}"))
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().expect("kid").to_string(),
                k["state"].as_str().expect("state").to_string(),
            )
        })
        .collect();
    states.sort();
    states
}

fn state_of<'a>(states: &'a [(String, String)], kid: &str) -> &'a str {
    states
        .iter()
        .find(|(k, _)| k == kid)
        .map(|(_, s)| s.as_str())
        .unwrap_or_else(|| panic!("{kid} not in {states:?}"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[tokio::test]
async fn a_rotation_publishes_the_next_key_first_and_signs_with_it_once_caches_have_expired() {
    // Given verifiers that may cache the JWKS for 2 seconds,
    let identity = Identity::start(
        "keys:\n  dir: keys\n  jwks_max_age: 2s\n",
        &standard_directory(),
    );
    let issuer = identity.issuer();
    let t1 = access_token(&reports_token(&identity).await);
    let k1 = kid_of(&t1);
    let cached = fetch_jwks(&identity).await;

    // when the operator rotates the keys,
    let before = unix_now();
    let asked = Instant::now();
    let rotation = rotate_keys(&identity, "").await;

    // then the JWKS publishes a new key per algorithm at once, beside the one that signs,
    let jwks = fetch_jwks(&identity).await;
    let kids = jwks_kids(&jwks);
    assert_eq!(kids.len(), 4, "{jwks}");
    assert!(kids.contains(&k1), "{kids:?}");

    // tokens are still signed with the old key, which every cached JWKS has,
    let t2 = access_token(&reports_token(&identity).await);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the machine was too slow to observe the 2 s before the next key signs"
    );
    assert_eq!(
        kid_of(&t2),
        k1,
        "signed with the new key before jwks_max_age"
    );
    verify(&cached, &t2, "at+jwt", &issuer, "documents-api")
        .expect("a verifier with the JWKS from before the rotation accepts T2");

    // and the answer names the next key, which replaces the active one only once a JWKS cached
    // just before the rotation has expired.
    let (k2, state, signs_from, replaces) = rs256_change(&rotation);
    assert_eq!(state, "next", "{rotation}");
    assert_eq!(replaces, k1, "{rotation}");
    assert!(kids.contains(&k2), "{kids:?}");
    assert!(signs_from >= before + 2, "{rotation}");
    let states = key_states(&identity).await;
    assert_eq!(state_of(&states, &k1), "active", "{states:?}");
    assert_eq!(state_of(&states, &k2), "next", "{states:?}");
    assert_key_gauges(&metrics_of(&identity).await, 2.0, 2.0, 0.0);

    // Once jwks_max_age has passed, new tokens carry the new key,
    let id = &identity;
    let next = k2.clone();
    eventually("tokens signed with the next key", SETTLE, move || {
        let next = next.clone();
        async move { kid_of(&access_token(&reports_token(id).await)) == next }
    })
    .await;
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "the next key signed {:?} after the rotation, before jwks_max_age",
        asked.elapsed()
    );
    let t3 = access_token(&reports_token(&identity).await);
    assert_eq!(kid_of(&t3), k2);

    // while the old key stays published (retired), so tokens it signed keep verifying.
    let jwks = fetch_jwks(&identity).await;
    let kids = jwks_kids(&jwks);
    assert!(kids.contains(&k1) && kids.contains(&k2), "{kids:?}");
    for t in [&t1, &t2, &t3] {
        verify(&jwks, t, "at+jwt", &issuer, "documents-api").expect("verifies after rotation");
    }
    let states = key_states(&identity).await;
    assert_eq!(state_of(&states, &k1), "retired", "{states:?}");
    assert_eq!(state_of(&states, &k2), "active", "{states:?}");
    let metrics = metrics_of(&identity).await;
    assert_key_gauges(&metrics, 2.0, 0.0, 2.0);
    assert_eq!(
        metric_value(&metrics, "gatehouse_identity_key_rotations_total"),
        1.0,
        "{metrics}"
    );

    // The audit log says when each key was published and when it started signing.
    let audit = audit_until(&identity, "the RS256 key switch", |e| {
        e["event"] == "key_rotation" && e["retired_kid"] == k1.as_str()
    })
    .await;
    let published = events(&audit, "key_published");
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(published.iter().any(|e| e["kid"] == k2.as_str()));
    assert!(published.iter().all(|e| e["reason"] == "admin"));
    let switch = events(&audit, "key_rotation");
    let switch: Vec<_> = switch.iter().filter(|e| e["kid"] == k2.as_str()).collect();
    assert_eq!(switch.len(), 1, "{switch:?}");
    assert_eq!(switch[0]["retired_kid"], k1.as_str());
    assert_eq!(switch[0]["reason"], "next key due");
}

#[tokio::test]
async fn an_immediate_rotation_signs_with_a_new_key_at_once_and_keeps_the_old_one_until_its_retention_ends(
) {
    // Given short-lived tokens and JWKS caching, so a retired key leaves after ~4 seconds
    // (retention = longest token lifetime, including ID tokens, + jwks_max_age),
    let identity = Identity::start(
        "keys:\n  dir: keys\n  jwks_max_age: 1s\ntokens:\n  access_token_ttl: 3s\n  id_token_ttl: 3s\n",
        &standard_directory(),
    );
    let issuer = identity.issuer();
    let t1 = access_token(&reports_token(&identity).await);
    let k1 = kid_of(&t1);

    // when the operator rotates the keys at once (a compromised key),
    let rotation = rotate_keys(&identity, "?immediate=true").await;

    // then every algorithm got a new active key and K1 is reported retired,
    let (new_rsa_kid, state, _, replaces) = rs256_change(&rotation);
    assert_eq!(state, "active", "{rotation}");
    assert_eq!(replaces, k1, "{rotation}");
    assert_ne!(new_rsa_kid, k1);

    // the JWKS publishes old and new keys side by side,
    let jwks = fetch_jwks(&identity).await;
    let kids = jwks_kids(&jwks);
    assert_eq!(kids.len(), 4, "{jwks}");
    assert!(
        kids.contains(&k1) && kids.contains(&new_rsa_kid),
        "{kids:?}"
    );

    // new tokens are signed with the new key at once,
    let t2 = access_token(&reports_token(&identity).await);
    assert_eq!(kid_of(&t2), new_rsa_kid);

    // and the old token still verifies against the current JWKS.
    verify(&jwks, &t1, "at+jwt", &issuer, "documents-api").expect("T1 verifies after rotation");
    verify(&jwks, &t2, "at+jwt", &issuer, "documents-api").expect("T2 verifies");

    // Once the retention has passed, K1 leaves the JWKS (and the store),
    let id = &identity;
    let gone = k1.clone();
    eventually("the retired key to leave the JWKS", SETTLE, move || {
        let gone = gone.clone();
        async move { !jwks_kids(&fetch_jwks(id).await).contains(&gone) }
    })
    .await;
    let jwks = fetch_jwks(&identity).await;
    assert_eq!(jwks_kids(&jwks).len(), 2, "{jwks}");
    assert!(!key_states(&identity)
        .await
        .iter()
        .any(|(kid, _)| *kid == k1));

    // after which T1 can no longer be verified, while T2's key is still there.
    let err =
        verify(&jwks, &t1, "at+jwt", &issuer, "documents-api").expect_err("T1 must not verify");
    assert!(err.contains("not in the JWKS"), "{err}");
    verify(&jwks, &t2, "at+jwt", &issuer, "documents-api").expect("T2 still verifies");

    // The rotation is audited per algorithm and counted once.
    let audit = audit_until(&identity, "key_rotation events", |e| {
        e["event"] == "key_rotation" && e["retired_kid"] == k1.as_str()
    })
    .await;
    let rotations = events(&audit, "key_rotation");
    assert_eq!(rotations.len(), 2, "{rotations:?}");
    assert!(rotations
        .iter()
        .all(|e| e["reason"] == "admin, immediate" && e["outcome"] == "success"));
    assert!(events(&audit, "key_published").is_empty());
    let metrics = metrics_of(&identity).await;
    assert_eq!(
        metric_value(&metrics, "gatehouse_identity_key_rotations_total"),
        1.0,
        "{metrics}"
    );
    assert_key_gauges(&metrics, 2.0, 0.0, 0.0);
}

#[tokio::test]
async fn an_immediate_rotation_withdraws_a_pending_next_key() {
    // Given a next key waiting for the JWKS caches to expire,
    let identity = Identity::start(
        "keys:\n  dir: keys\n  jwks_max_age: 5m\n",
        &standard_directory(),
    );
    let k1 = kid_of(&access_token(&reports_token(&identity).await));
    let (next, ..) = rs256_change(&rotate_keys(&identity, "").await);

    // when the keys are rotated at once (they may have leaked, next key included),
    let (fresh, state, _, replaces) =
        rs256_change(&rotate_keys(&identity, "?immediate=true").await);

    // then a fresh key signs, the old active one is retired, and the next key, which never signed
    // anything, leaves the JWKS and the store.
    assert_eq!((state.as_str(), replaces.as_str()), ("active", k1.as_str()));
    assert!(fresh != next && fresh != k1);
    assert_eq!(
        kid_of(&access_token(&reports_token(&identity).await)),
        fresh
    );
    let kids = jwks_kids(&fetch_jwks(&identity).await);
    assert!(!kids.contains(&next), "{kids:?}");
    assert!(kids.contains(&k1) && kids.contains(&fresh), "{kids:?}");
    assert!(!key_states(&identity)
        .await
        .iter()
        .any(|(kid, _)| *kid == next));

    // A query the endpoint does not know is refused, and changes nothing.
    let resp = client()
        .post(identity.admin("/keys/rotate?immediate=yes"))
        .send()
        .await
        .expect("rotate");
    assert_eq!(resp.status(), 400);
    assert_eq!(jwks_kids(&fetch_jwks(&identity).await), kids);
}

#[tokio::test]
async fn a_pending_next_key_survives_a_restart_and_a_second_rotation_keeps_it() {
    // Given a next key that is not due for minutes,
    let mut identity = Identity::start(
        "keys:\n  dir: keys\n  jwks_max_age: 5m\n",
        &standard_directory(),
    );
    let k1 = kid_of(&access_token(&reports_token(&identity).await));
    let (k2, _, signs_from, _) = rs256_change(&rotate_keys(&identity, "").await);

    // when the issuer restarts,
    identity.stop();
    identity.spawn();

    // then the next key is still published and still waiting, and the old one still signs.
    let kids = jwks_kids(&fetch_jwks(&identity).await);
    assert_eq!(kids.len(), 4, "{kids:?}");
    assert!(kids.contains(&k1) && kids.contains(&k2), "{kids:?}");
    let states = key_states(&identity).await;
    assert_eq!(state_of(&states, &k2), "next", "{states:?}");
    assert_eq!(state_of(&states, &k1), "active", "{states:?}");
    assert_eq!(kid_of(&access_token(&reports_token(&identity).await)), k1);

    // Rotating again while it waits reports the same pending key, creates nothing, and does not
    // restart its wait.
    let again = rotate_keys(&identity, "").await;
    let (kid, state, from, _) = rs256_change(&again);
    assert_eq!(
        (kid.as_str(), state.as_str(), from),
        (k2.as_str(), "next", signs_from)
    );
    assert_eq!(jwks_kids(&fetch_jwks(&identity).await), kids);
}

// ---------------------------------------------------------------------------------------------
// 9. Key persistence
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn signing_keys_survive_a_restart_sealed_in_the_state_store() {
    // Given an issuer that generated its keys (SQLite state, the default key-encryption key),
    let mut identity = Identity::start("", &standard_directory());
    let before = jwks_kids(&fetch_jwks(&identity).await);
    assert_eq!(before.len(), 2);
    let token = access_token(&reports_token(&identity).await);

    // when it is stopped and started again on the same state,
    identity.stop();
    identity.spawn();

    // then it publishes the same keys, and a token from before the restart still verifies and
    // introspects active.
    let jwks = fetch_jwks(&identity).await;
    assert_eq!(jwks_kids(&jwks), before);
    verify(&jwks, &token, "at+jwt", &identity.issuer(), "documents-api")
        .expect("verifies after restart");
    assert_eq!(introspect_json(&identity, &token).await["active"], true);

    // The keys are in the state store, sealed: no key file was written (`keys.dir` is only read
    // to import an earlier version's files), the key-encryption key made beside the database is
    // 0600, and neither it nor a private key appears in the database or the logs.
    assert!(!identity.path("keys").exists(), "a key directory was made");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&identity.path("kek")), 0o600);
    let kek = std::fs::read_to_string(identity.path("kek")).expect("kek file");
    let kek = kek.trim();
    let bytes = base64::engine::general_purpose::STANDARD.decode(kek);
    assert_eq!(bytes.map(|b| b.len()).ok(), Some(32), "32 bytes, base64");
    let mut database = Vec::new();
    for name in ["state.db", "state.db-wal"] {
        database.extend(std::fs::read(identity.path(name)).unwrap_or_default());
    }
    let text = String::from_utf8_lossy(&database);
    assert!(!text.contains("PRIVATE KEY") && !text.contains(kek));
    assert!(text.contains("v1:"), "sealed keys in the database");
    let logs = format!("{}{}", identity.stderr(), identity.audit_text());
    assert!(!logs.contains(kek) && !logs.contains("PRIVATE KEY"));
}

// ---------------------------------------------------------------------------------------------
// 10. Secrets never written down
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn secrets_passwords_and_tokens_never_reach_the_audit_log_or_stderr() {
    let identity = Identity::start("", &standard_directory());
    let mut secrets: Vec<String> = [
        "reports-secret",
        "cli-secret",
        "web-secret",
        "alice-password",
        "bob-password",
        "wrong-reports-secret",
        "wrong-alice-password",
        "mallory-password",
        "wrong-bob-password",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    // Given tokens issued both ways, a failed client authentication,
    let basic = reports_token(&identity).await;
    secrets.push(access_token(&basic));
    let post = client()
        .post(identity.url("/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "reports"),
            ("client_secret", "reports-secret"),
        ])
        .send()
        .await
        .expect("token request");
    secrets.push(access_token(&token_ok(post).await));
    let resp = identity
        .service_token("reports", "wrong-reports-secret", &[])
        .await;
    oauth_error(resp, 401, "invalid_client").await;

    // failed logins (bad password, unknown user),
    for (user, password) in [
        ("alice", "wrong-alice-password"),
        ("mallory", "mallory-password"),
        ("bob", "wrong-bob-password"),
    ] {
        let resp = password_grant(&identity, user, password, "documents:read").await;
        oauth_error(resp, 400, "invalid_grant").await;
    }

    // a password grant and a refresh,
    let login = token_ok(
        password_grant(
            &identity,
            "alice",
            "alice-password",
            "openid documents:read",
        )
        .await,
    )
    .await;
    for member in ["access_token", "refresh_token", "id_token"] {
        secrets.push(
            login[member]
                .as_str()
                .unwrap_or_else(|| panic!("{member} in {login}"))
                .to_string(),
        );
    }
    let refresh = client()
        .post(identity.url("/token"))
        .basic_auth("cli", Some("cli-secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", login["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .expect("refresh request");
    let refreshed = token_ok(refresh).await;
    for member in ["access_token", "refresh_token", "id_token"] {
        if let Some(v) = refreshed[member].as_str() {
            secrets.push(v.to_string());
        }
    }

    // when everything has been audited (the refresh is the last event),
    let audit = audit_until(&identity, "the token_refresh event", |e| {
        e["event"] == "token_refresh"
    })
    .await;
    assert_eq!(events(&audit, "login").len(), 4, "{audit:?}");
    assert_eq!(events(&audit, "token_issued").len(), 3, "{audit:?}");

    // then neither the audit log nor stderr holds any secret, password or token.
    let audit_text = identity.audit_text();
    let stderr = identity.stderr();
    assert!(!audit_text.is_empty() && !stderr.is_empty());
    for secret in &secrets {
        assert!(
            !audit_text.contains(secret.as_str()),
            "audit log contains {secret}"
        );
        assert!(
            !stderr.contains(secret.as_str()),
            "stderr contains {secret}"
        );
        // Nor a recognisable piece of a token (its signature part).
        if let Some(signature) = secret.rsplit('.').next().filter(|s| s.len() > 40) {
            assert!(!audit_text.contains(signature) && !stderr.contains(signature));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 11. Reload
// ---------------------------------------------------------------------------------------------

/// The standard directory plus a `new-svc` client; `extra_member` is added to its entry.
fn directory_with_new_service(extra_member: &str) -> String {
    format!(
        "{}  - id: new-svc\n    secret_hash: {}\n    grant_types: [client_credentials]\n    audiences: [documents-api]\n    scopes: [documents:read]\n{extra_member}",
        standard_directory(),
        hash_of("new-svc-secret"),
    )
}

#[tokio::test]
async fn config_changes_apply_live_and_broken_files_are_rejected_without_harm() {
    // Given the standard directory, in which new-svc does not exist,
    let identity = Identity::start("", &standard_directory());
    let resp = identity
        .service_token("new-svc", "new-svc-secret", &[])
        .await;
    oauth_error(resp, 401, "invalid_client").await;

    // when identity.yaml is rewritten with new-svc added,
    let with_new = directory_with_new_service("");
    identity.write_config("", &with_new);

    // then the watcher applies it and new-svc gets tokens. (The file is rewritten now and then
    // while waiting, in case the first write landed before the watcher was set up.)
    let (id, dir) = (&identity, &with_new);
    let mut polls = 0u32;
    eventually(
        "new-svc to get a token after the config change",
        SETTLE,
        move || {
            polls += 1;
            if polls % 20 == 0 {
                id.write_config("", dir);
            }
            async move {
                id.service_token("new-svc", "new-svc-secret", &[])
                    .await
                    .status()
                    == 200
            }
        },
    )
    .await;
    let body = token_ok(
        identity
            .service_token("new-svc", "new-svc-secret", &[])
            .await,
    )
    .await;
    let claims = payload(&access_token(&body));
    assert_eq!(claims["sub"], "new-svc");
    assert_eq!(claims["scope"], "documents:read");
    let metrics = metrics_of(&identity).await;
    assert!(
        metric_value(
            &metrics,
            r#"gatehouse_identity_config_reloads_total{result="success"}"#
        ) >= 1.0
    );

    // When the file is broken (a secret that is not an argon2id hash),
    let broken = with_new.replace(&hash_of("new-svc-secret"), "not-a-hash");
    identity.write_config("", &broken);

    // then an explicit reload is refused, naming the offending key,
    let resp = client()
        .post(identity.admin("/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(resp.status(), 422);
    let answer: Value = resp.json().await.expect("reload JSON");
    assert_eq!(answer["result"], "rejected", "{answer}");
    let errors: Vec<&str> = answer["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("clients[4].secret_hash")),
        "{errors:?}"
    );

    // and likewise for an unknown key,
    identity.write_config("", &directory_with_new_service("    colour: blue\n"));
    let resp = client()
        .post(identity.admin("/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(resp.status(), 422);
    let answer: Value = resp.json().await.expect("reload JSON");
    let errors: Vec<&str> = answer["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(errors.iter().any(|e| e.contains("colour")), "{errors:?}");

    // the failures are counted,
    let metrics = metrics_of(&identity).await;
    let failures = metric_value(
        &metrics,
        r#"gatehouse_identity_config_reloads_total{result="failure"}"#,
    );
    assert!(failures >= 2.0, "reload failures = {failures}\n{metrics}");

    // and the running configuration is untouched: new-svc still gets tokens.
    let body = token_ok(
        identity
            .service_token("new-svc", "new-svc-secret", &[])
            .await,
    )
    .await;
    assert_eq!(payload(&access_token(&body))["sub"], "new-svc");
    let body = reports_token(&identity).await;
    assert_eq!(payload(&access_token(&body))["sub"], "reports");
}

// ---------------------------------------------------------------------------------------------
// 12. Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_issued_tokens_by_grant_and_client_and_publish_key_gauges() {
    // Given one client_credentials token issued to `reports`,
    let identity = Identity::start("", &standard_directory());
    reports_token(&identity).await;

    // when the admin listener's /metrics is scraped,
    let resp = client()
        .get(identity.admin("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type").is_some_and(|c| c.starts_with("text/plain")));
    let metrics = resp.text().await.expect("metrics body");

    // then that token is counted once under its grant and client, and two keys are active.
    assert_eq!(
        metric_value(
            &metrics,
            r#"gatehouse_identity_tokens_issued_total{client="reports",grant="client_credentials"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_key_gauges(&metrics, 2.0, 0.0, 0.0);
    assert!(
        metrics.contains("# TYPE gatehouse_identity_key_rotations_total counter"),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "gatehouse_identity_key_rotations_total"),
        0.0
    );
    // Dropped audit events are listed from the start, so an alert on them has a series.
    assert!(
        metrics.contains("# TYPE gatehouse_identity_audit_log_dropped_total counter"),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "gatehouse_identity_audit_log_dropped_total"),
        0.0
    );

    // The public listener does not serve metrics.
    let resp = client()
        .get(identity.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn eddsa_keys_sign_tokens_that_an_independent_library_verifies() {
    let identity = Identity::start(
        "keys:\n  dir: keys\n  algorithms: [EdDSA, RS256]\n",
        &standard_directory().replace("    signing_alg: ES256\n", ""),
    );
    let (_, _, doc) = get_json(&identity.url("/.well-known/openid-configuration")).await;
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["EdDSA", "RS256"])
    );
    let jwks = fetch_jwks(&identity).await;
    let okp = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "OKP")
        .expect("an OKP key in the JWKS");
    assert_eq!(okp["crv"], "Ed25519");
    assert_eq!(okp["alg"], "EdDSA");
    assert!(okp.get("d").is_none(), "no private part: {okp}");

    // `reports` names no signing_alg, so the first of keys.algorithms (EdDSA) signs.
    let body = reports_token(&identity).await;
    let token = access_token(&body);
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], okp["kid"]);
    let claims = verify(&jwks, &token, "at+jwt", &identity.issuer(), "documents-api")
        .expect("jwt-simple verifies the EdDSA token");
    assert_eq!(claims.subject.as_deref(), Some("reports"));
}

/// Whether a client id exists cannot be read from `/token`'s answers: an unknown id gets the
/// same answer as a known confidential client, with and without a (wrong) secret.
#[tokio::test]
async fn unknown_and_known_client_ids_get_identical_refusals() {
    let identity = Identity::start("", &standard_directory());
    let answer = |form: Vec<(&'static str, String)>| {
        let url = identity.url("/token");
        async move {
            let resp = client()
                .post(url)
                .form(&form)
                .send()
                .await
                .expect("token request");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("JSON");
            (status, body)
        }
    };
    for secret in [None, Some("wrong-secret")] {
        let form = |id: &str| {
            let mut f = vec![
                ("grant_type", "client_credentials".to_string()),
                ("client_id", id.to_string()),
            ];
            if let Some(s) = secret {
                f.push(("client_secret", s.to_string()));
            }
            f
        };
        let known = answer(form("reports")).await;
        let unknown = answer(form("no-such-client")).await;
        assert_eq!(known.0, 401, "{secret:?}: {}", known.1);
        assert_eq!(known, unknown, "secret {secret:?}");
    }
}
