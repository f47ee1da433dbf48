//! Authentication end to end, with the real issuer: tokens from `gatehouse-identity` (served by
//! the gateway process itself, `embedded: {identity: ...}`) go through the gateway, which
//! verifies them against the issuer's JWKS and tells the echo upstream who is calling.
//!
//! Given the demo directory (alice: admin+editor, bob: viewer, services with `service` roles)
//! and routes that require tokens, when a client calls with a token from each grant, the
//! upstream sees the verified identity headers and nothing the client made up.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::issuer::{
    echoed, jwt_header, jwt_payload, sample, upstream_header, wait_ready, Issuer, STICKY_CLIENTS,
};
use support::{client, error_body, Echo, Gateway};

const GATEWAY: &str = r#"{SERVER}
listeners:
  - address: 127.0.0.1:{HTTP}
admin:
  address: 127.0.0.1:{ADMIN}
embedded:
  identity: identity.yaml
@AUTH@
upstreams:
  echo:
    targets: ["@ECHO@"]
  sticky:
    targets: ["@STICKY_A@", "@STICKY_B@"]
    balance: consistent_hash
    hash_key: "claim:sub"
routes:
  - name: documents
    match: {path: "/documents/{id}"}
    upstream: echo
    auth: {mode: required, issuers: [demo], scopes: [documents:read]}
    identity_headers:
      X-User-Department: department
  - name: write
    match: {path: "/write/{id}"}
    upstream: echo
    auth: {mode: required, scopes: [documents:write]}
  - name: editors
    match: {path_prefix: /editors/}
    upstream: echo
    auth: {mode: required, roles: [editor, admin]}
  - name: sticky
    match: {path_prefix: /sticky/}
    upstream: sticky
    auth: {mode: required}
  - name: private
    match: {path_prefix: /private/}
    upstream: echo
    auth: {mode: required}
    strip_authorization: true
  - name: asserted
    match: {path_prefix: /asserted/}
    upstream: echo
    auth: {mode: required}
    assertion: {audience: documents-backend}
"#;

/// One gateway with its embedded issuer and three echo upstreams (one plain, two behind the
/// sticky pool).
struct Stack {
    gw: Gateway,
    issuer: Issuer,
    _echoes: [Echo; 3],
}

async fn start() -> Stack {
    let issuer = Issuer::new();
    let echo = Echo::start("echo");
    let a = Echo::start("sticky-a");
    let b = Echo::start("sticky-b");
    let config = GATEWAY
        .replace("@AUTH@", &issuer.auth_section("", ""))
        .replace("@ECHO@", &echo.addr())
        .replace("@STICKY_A@", &a.addr())
        .replace("@STICKY_B@", &b.addr());
    let gw = Gateway::start(&[
        ("gatehouse.yaml", &config),
        ("identity.yaml", &issuer.identity_yaml("")),
    ]);
    issuer.wait_serving().await;
    wait_ready(&gw).await;
    Stack {
        gw,
        issuer,
        _echoes: [echo, a, b],
    }
}

async fn get_with(gw: &Gateway, path: &str, token: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request through the gateway")
}

fn one(echo: &serde_json::Value, name: &str) -> Option<String> {
    let values = upstream_header(echo, name);
    assert!(
        values.len() <= 1,
        "{name} sent {} times: {values:?}",
        values.len()
    );
    values.into_iter().next()
}

#[tokio::test(flavor = "multi_thread")]
async fn service_tokens_signed_rs256_and_es256_reach_the_upstream_as_the_service() {
    let s = start().await;
    for (client_id, alg, roles) in [
        ("reports-service", "RS256", "service"),
        ("reports-es", "ES256", "service,auditor"),
    ] {
        let token = s.issuer.service_token(client_id, "reports-secret").await;
        assert_eq!(
            jwt_header(&token)["alg"],
            alg,
            "{client_id} signs with {alg}"
        );
        let echo = echoed(get_with(&s.gw, "/documents/42", &token).await).await;
        assert_eq!(echo["path"], "/documents/42");
        assert_eq!(one(&echo, "x-user-id").as_deref(), Some(client_id));
        assert_eq!(one(&echo, "x-user-roles").as_deref(), Some(roles));
        // A service token carries no user claims.
        assert_eq!(one(&echo, "x-jwt-email"), None, "{client_id}");
        assert_eq!(one(&echo, "x-user-department"), None, "{client_id}");
        // Not stripped on this route: the upstream may verify the token itself.
        assert_eq!(
            one(&echo, "authorization"),
            Some(format!("Bearer {token}")),
            "{client_id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_signed_in_through_the_browser_reaches_the_upstream_with_claims_as_headers() {
    let s = start().await;
    let token = s
        .issuer
        .browser_token("alice", "alice-password", "openid email documents:read")
        .await;
    // web-app signs with ES256.
    assert_eq!(jwt_header(&token)["alg"], "ES256");
    assert_eq!(jwt_header(&token)["typ"], "at+jwt");
    let echo = echoed(get_with(&s.gw, "/documents/7", &token).await).await;
    assert_eq!(one(&echo, "x-user-id").as_deref(), Some("alice"));
    assert_eq!(one(&echo, "x-user-roles").as_deref(), Some("admin,editor"));
    assert_eq!(
        one(&echo, "x-jwt-email").as_deref(),
        Some("alice@example.com")
    );
    // The route's own mapping: X-User-Department ← department.
    assert_eq!(
        one(&echo, "x-user-department").as_deref(),
        Some("engineering")
    );

    // A user whose token lacks the email scope (password grant, bob): no email header, his own
    // department and roles.
    let bob = s
        .issuer
        .password_token("bob", "bob-password", "openid documents:read")
        .await;
    let echo = echoed(get_with(&s.gw, "/documents/8", &bob).await).await;
    assert_eq!(one(&echo, "x-user-id").as_deref(), Some("bob"));
    assert_eq!(one(&echo, "x-user-roles").as_deref(), Some("viewer"));
    assert_eq!(one(&echo, "x-jwt-email"), None);
    assert_eq!(one(&echo, "x-user-department").as_deref(), Some("sales"));

    // The access log names the subject and the outcome.
    let gw = &s.gw;
    support::eventually("the access log names alice", support::READY_TIMEOUT, || {
        let log = gw.access_log();
        async move {
            log.lines()
                .any(|l| l.contains("\"subject\":\"alice\"") && l.contains("\"auth\":\"verified\""))
        }
    })
    .await;
    let logs = format!("{}{}", gw.access_log(), gw.stderr());
    for t in [&token, &bob] {
        let signature = t.rsplit('.').next().expect("a signature");
        assert!(!logs.contains(signature), "a token reached the logs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_is_401_and_a_missing_scope_or_role_is_403() {
    let s = start().await;

    // No token on a required route.
    let resp = client().get(s.gw.url("/documents/1")).send().await.unwrap();
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some(r#"Bearer realm="gatehouse""#)
    );
    assert_ne!(
        resp.headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close"),
        "keep-alive survives a 401"
    );
    let body = error_body(resp, 401, "missing_token").await;
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body["request_id"].as_str().is_some_and(|m| !m.is_empty()));

    // A garbage token: 401 invalid_token, and the token is never echoed back.
    // Its header is not JSON: `malformed` whatever order the checks run in.
    let garbage = "bm90LWpzb24.bm90LWpzb24.c2lnbmF0dXJlLWRvLW5vdC1lY2hv";
    let resp = get_with(&s.gw, "/documents/1", garbage).await;
    let www = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        www.starts_with(r#"Bearer realm="gatehouse", error="invalid_token", error_description=""#),
        "{www}"
    );
    assert!(!www.contains("c2lnbmF0dXJlLWRvLW5vdC1lY2hv"), "{www}");
    let body = error_body(resp, 401, "invalid_token").await;
    assert!(!body.to_string().contains("c2lnbmF0dXJlLWRvLW5vdC1lY2hv"));

    // reports-service holds documents:read only: the write route wants documents:write.
    let service = s
        .issuer
        .service_token("reports-service", "reports-secret")
        .await;
    let resp = get_with(&s.gw, "/write/1", &service).await;
    let www = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        www.starts_with(r#"Bearer realm="gatehouse", error="insufficient_scope""#),
        "{www}"
    );
    assert!(www.contains(r#"scope="documents:write""#), "{www}");
    error_body(resp, 403, "insufficient_scope").await;

    // The editors route wants one of editor/admin: a service is refused, alice passes.
    let resp = get_with(&s.gw, "/editors/x", &service).await;
    let www = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(www.contains(r#"error="insufficient_scope""#), "{www}");
    assert!(
        !www.contains("scope=\"\""),
        "no scope parameter without scopes: {www}"
    );
    error_body(resp, 403, "insufficient_scope").await;
    let alice = s
        .issuer
        .password_token("alice", "alice-password", "openid documents:read")
        .await;
    let echo = echoed(get_with(&s.gw, "/editors/x", &alice).await).await;
    assert_eq!(one(&echo, "x-user-id").as_deref(), Some("alice"));

    // Outcomes are counted per route.
    let metrics = s.gw.metrics().await;
    for (route, outcome) in [
        ("documents", "missing"),
        ("documents", "malformed"),
        ("write", "insufficient_scope"),
        ("editors", "insufficient_scope"),
        ("editors", "verified"),
    ] {
        let count = sample(
            &metrics,
            "gatehouse_auth_outcomes_total",
            &[("route", route), ("outcome", outcome)],
        );
        assert!(
            count.is_some_and(|c| c >= 1.0),
            "{route}/{outcome}: {count:?} in:\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("gatehouse_auth"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sticky_pool_hashes_on_the_verified_subject_never_on_a_forged_header() {
    let s = start().await;
    let mut landed: BTreeMap<&str, String> = BTreeMap::new();
    for subject in STICKY_CLIENTS {
        let token = s.issuer.service_token(subject, "sticky-secret").await;
        let mut servers = BTreeSet::new();
        // Forge the other subjects' ids, and none: hashing on a header would move the request.
        let forged = STICKY_CLIENTS.iter().map(|f| Some(*f)).chain([None]);
        for (i, forge) in forged.enumerate() {
            let mut req = client()
                .get(s.gw.url(&format!("/sticky/{i}")))
                .bearer_auth(&token);
            if let Some(f) = forge {
                req = req.header("X-User-ID", f);
            }
            let echo = echoed(req.send().await.expect("sticky request")).await;
            assert_eq!(
                upstream_header(&echo, "x-user-id"),
                vec![subject.to_string()]
            );
            servers.insert(echo["server"].as_str().expect("server name").to_string());
        }
        assert_eq!(servers.len(), 1, "{subject} moved between {servers:?}");
        landed.insert(subject, servers.into_iter().next().expect("one server"));
    }
    // Six subjects on two targets: usually both are used, but a hash may put all on one.
    eprintln!("subject → target: {landed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn strip_authorization_keeps_the_token_from_the_upstream() {
    let s = start().await;
    let token = s
        .issuer
        .service_token("reports-service", "reports-secret")
        .await;
    let echo = echoed(get_with(&s.gw, "/private/report", &token).await).await;
    assert_eq!(
        upstream_header(&echo, "authorization"),
        Vec::<String>::new()
    );
    assert_eq!(one(&echo, "x-user-id").as_deref(), Some("reports-service"));
    // The same token on a route that forwards it.
    let echo = echoed(get_with(&s.gw, "/documents/3", &token).await).await;
    assert_eq!(
        upstream_header(&echo, "authorization"),
        vec![format!("Bearer {token}")]
    );
}

/// The backend's side of the gateway assertion: verify it with an independent library against
/// the gateway's published JWKS, and read the verified identity from it.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_assertion_verifies_against_the_gateways_jwks_and_carries_the_claims() {
    use base64::Engine;
    use jwt_simple::prelude::*;

    let s = start().await;
    let token = s
        .issuer
        .browser_token("alice", "alice-password", "openid email documents:read")
        .await;
    let send = || {
        client()
            .get(s.gw.url("/asserted/1"))
            .bearer_auth(&token)
            // A client's own assertion never reaches the upstream.
            .header("X-Gatehouse-Assertion", "forged.by.client")
            .send()
    };
    let echo = echoed(send().await.expect("request")).await;
    let asserted = upstream_header(&echo, "x-gatehouse-assertion");
    assert_eq!(asserted.len(), 1, "one assertion: {asserted:?}");
    let assertion = &asserted[0];
    assert_ne!(assertion, "forged.by.client");

    let jwks: serde_json::Value = client()
        .get(s.gw.admin("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let header = jwt_header(assertion);
    assert_eq!(header["typ"], "gatehouse-assertion+jwt");
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == header["kid"]))
        .expect("the assertion's kid is in the gateway's JWKS");
    let coordinate = |c: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk[c].as_str().expect("coordinate"))
            .expect("base64url coordinate")
    };
    let mut sec1 = vec![4u8];
    sec1.extend(coordinate("x"));
    sec1.extend(coordinate("y"));
    let key = ES256PublicKey::from_bytes(&sec1).expect("a P-256 public key");
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from_strings(&["gatehouse"])),
        allowed_audiences: Some(HashSet::from_strings(&["documents-backend"])),
        ..Default::default()
    };
    let claims = key
        .verify_token::<serde_json::Map<String, serde_json::Value>>(assertion, Some(options))
        .expect("jwt-simple verifies the assertion");
    assert_eq!(claims.subject.as_deref(), Some("alice"));
    assert_eq!(claims.custom["route"], "asserted");
    assert_eq!(claims.custom["token_iss"], s.issuer.issuer());
    assert_eq!(claims.custom["email"], "alice@example.com");
    let expires = claims.expires_at.expect("exp").as_secs();
    let token_exp = jwt_payload(&token)["exp"].as_u64().expect("exp");
    assert!(expires <= token_exp, "the assertion outlives the token");

    // The same token on the next request: the same (cached) assertion, not a new signature.
    let again = echoed(send().await.expect("request")).await;
    assert_eq!(upstream_header(&again, "x-gatehouse-assertion"), asserted);
}
