//! Token rejections (issue #11): each reason in the contract as its own scenario, with tokens
//! forged by an independent JOSE library. Given a gateway trusting a fake IdP, when a client
//! sends this token, it gets this 401/403 (header and JSON body exactly as specified), the
//! outcome is counted under its label, and the token appears in no answer and no log.

mod support;

use serde_json::{json, Value};
use support::idp::{forge, now, series, valid_claims, with, FakeIdp, TestKey};
use support::{client, eventually, metric_value, Echo, Gateway, READY_TIMEOUT};

const OUTCOMES: &str = "gatehouse_auth_outcomes_total";

/// Routes and issuers every scenario shares. `demo` accepts the default algorithms and any
/// `typ`; `strict` accepts RS256 `at+jwt` tokens only.
const CONFIG: &str = r#"{SERVER}
listeners:
  - address: 127.0.0.1:{HTTP}
admin:
  address: 127.0.0.1:{ADMIN}
auth:
  max_token_bytes: 4096
  issuers:
    demo:
      issuer: {DEMO_ISSUER}
      jwks_url: {DEMO_JWKS}
      audiences: [documents-api]
      leeway: 30s
    strict:
      issuer: {STRICT_ISSUER}
      audiences: [documents-api]
      algorithms: [RS256]
      token_types: [at+jwt]
upstreams:
  echo:
    targets: ["{ECHO}"]
routes:
  - name: documents
    match:
      path: /documents/{id}
    upstream: echo
    auth:
      mode: required
      issuers: [demo]
  - name: public
    match:
      path_prefix: /public/
    upstream: echo
    auth:
      mode: optional
      issuers: [demo]
  - name: strict
    match:
      path_prefix: /strict/
    upstream: echo
    auth:
      mode: required
      issuers: [strict]
  - name: scoped
    match:
      path_prefix: /scoped/
    upstream: echo
    auth:
      mode: required
      issuers: [demo]
      scopes: [documents:read, documents:write]
  - name: editors
    match:
      path_prefix: /editors/
    upstream: echo
    auth:
      mode: required
      issuers: [demo]
      roles: [editor, admin]
"#;

/// A gateway trusting two fake IdPs, in front of an echo upstream, with every key set fetched.
struct Fixture {
    demo: FakeIdp,
    strict: FakeIdp,
    /// Published by `demo`.
    demo_es: TestKey,
    demo_rsa: TestKey,
    /// Published by `strict`.
    strict_es: TestKey,
    strict_rsa: TestKey,
    _echo: Echo,
    gw: Gateway,
}

impl Fixture {
    async fn start() -> Fixture {
        let demo_es = TestKey::es256("demo-es");
        let demo_rsa = TestKey::rs256("demo-rsa");
        let strict_es = TestKey::es256("strict-es");
        let strict_rsa = TestKey::rs256("strict-rsa");
        let demo = FakeIdp::start(&[&demo_es, &demo_rsa]);
        let strict = FakeIdp::start(&[&strict_es, &strict_rsa]);
        let echo = Echo::start("echo");
        let config = CONFIG
            .replace("{DEMO_ISSUER}", &demo.issuer())
            .replace("{DEMO_JWKS}", &demo.jwks_url())
            .replace("{STRICT_ISSUER}", &strict.issuer())
            .replace("{ECHO}", &echo.addr());
        let gw = Gateway::start(&[("gatehouse.yaml", &config)]);
        wait_ready(&gw).await;
        Fixture {
            demo,
            strict,
            demo_es,
            demo_rsa,
            strict_es,
            strict_rsa,
            _echo: echo,
            gw,
        }
    }

    /// A valid token from `demo` with `changes` to its claims.
    fn demo_token(&self, changes: Value) -> String {
        self.demo_es
            .sign(&with(&valid_claims(&self.demo.issuer()), changes))
    }
}

async fn wait_ready(gw: &Gateway) {
    let c = client();
    eventually(
        "/readyz 200 (every issuer has keys)",
        READY_TIMEOUT,
        || async {
            c.get(gw.admin("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
}

/// What a rejection must look like.
struct Rejection<'a> {
    status: u16,
    route: &'a str,
    outcome: &'a str,
    /// How many requests of this test have had this (route, outcome) so far, this one included.
    count: u64,
}

/// Sends `token` as a Bearer token to `path` and checks the rejection: status, the exact
/// `WWW-Authenticate`, the JSON body, keep-alive, the outcome metric and access-log fields, and
/// that the token is nowhere in the answer or the logs. Returns the JSON body.
async fn expect_rejection(gw: &Gateway, path: &str, token: &str, want: Rejection<'_>) -> Value {
    let resp = client()
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("an answer");
    check_rejection(gw, resp, &[token], want).await
}

async fn check_rejection(
    gw: &Gateway,
    resp: reqwest::Response,
    secrets: &[&str],
    want: Rejection<'_>,
) -> Value {
    assert_eq!(resp.status(), want.status, "status for {}", want.outcome);
    let headers = resp.headers().clone();
    assert_ne!(
        headers
            .get("connection")
            .map(|v| v.to_str().unwrap_or_default().to_ascii_lowercase()),
        Some("close".to_string()),
        "keep-alive survives a {}",
        want.status
    );
    assert_eq!(headers["content-type"], "application/json");
    let www = headers
        .get("www-authenticate")
        .map(|v| v.to_str().expect("an ASCII header").to_string());
    if want.status != 503 {
        assert!(www.is_some(), "a {} carries WWW-Authenticate", want.status);
    }
    let www = www.unwrap_or_default();
    let text = resp.text().await.expect("a body");
    let body: Value = serde_json::from_str(&text).expect("a JSON body");
    let message = body["message"].as_str().unwrap_or_default().to_string();
    assert!(!message.is_empty(), "a message in {body}");
    assert!(body["request_id"].is_string(), "a request_id in {body}");

    match (want.status, want.outcome) {
        (401, "missing") => {
            assert_eq!(body["error"], "missing_token", "{body}");
            assert_eq!(www, r#"Bearer realm="gatehouse""#);
        }
        (401, _) => {
            assert_eq!(body["error"], "invalid_token", "{body}");
            assert_eq!(
                www,
                format!(
                    r#"Bearer realm="gatehouse", error="invalid_token", error_description="{message}""#
                ),
                "the description is the body's message"
            );
        }
        (403, _) => {
            assert_eq!(body["error"], "insufficient_scope", "{body}");
            assert!(
                www.starts_with(
                    r#"Bearer realm="gatehouse", error="insufficient_scope", error_description=""#
                ),
                "{www}"
            );
        }
        // The gateway cannot judge the token yet: its own problem, not the client's (the
        // contract lists no_key_set among the outcomes without naming a status; the
        // implementation answers 503 + Retry-After and no challenge).
        (503, "no_key_set") => {
            assert_eq!(body["error"], "auth_unavailable", "{body}");
            assert!(www.is_empty(), "no challenge: the token may be fine: {www}");
            assert!(headers.contains_key("retry-after"));
        }
        other => panic!("no rejection shape for {other:?}"),
    }

    for secret in secrets {
        assert_no_leak(&www, &text, secret);
    }

    // The access-log line names the outcome and no subject (checked first: it fails fast
    // with the label the gateway chose); the token is in no log.
    let request_id = body["request_id"].as_str().unwrap_or_default().to_string();
    let line = access_log_line(gw, &request_id).await;
    assert_eq!(
        line["auth"], want.outcome,
        "the outcome (access log): {line}; body: {body}"
    );
    if want.status == 401 {
        assert_eq!(line["subject"], Value::Null, "access log: {line}");
    }
    expect_outcome_count(gw, want.route, want.outcome, want.count).await;
    for secret in secrets {
        assert_not_logged(gw, secret);
    }
    body
}

/// Waits until `outcome` has been counted `count` times on `route`; else fails showing what
/// was counted on that route instead.
async fn expect_outcome_count(gw: &Gateway, route: &str, outcome: &str, count: u64) {
    let series = series(OUTCOMES, &[("route", route), ("outcome", outcome)]);
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        let metrics = gw.metrics().await;
        if metric_value(&metrics, &series) == count as f64 {
            return;
        }
        if std::time::Instant::now() > deadline {
            let route_label = format!("route=\"{route}\"");
            let counted: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with(OUTCOMES) && l.contains(&route_label))
                .collect();
            panic!("expected {series} == {count}; counted instead: {counted:#?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The token (and its signature alone) appears neither in the answer's header nor its body.
fn assert_no_leak(www: &str, body: &str, token: &str) {
    for piece in pieces(token) {
        assert!(!www.contains(piece), "WWW-Authenticate leaks the token");
        assert!(!body.contains(piece), "the body leaks the token: {body}");
    }
}

fn assert_not_logged(gw: &Gateway, token: &str) {
    let (log, err) = (gw.access_log(), gw.stderr());
    for piece in pieces(token) {
        assert!(!log.contains(piece), "the access log holds the token");
        assert!(!err.contains(piece), "stderr holds the token");
    }
}

/// The whole token and its signature segment (when long enough to be meaningful).
fn pieces(token: &str) -> Vec<&str> {
    let mut pieces = vec![token];
    if let Some((_, signature)) = token.rsplit_once('.') {
        if signature.len() >= 16 {
            pieces.push(signature);
        }
    }
    pieces
}

/// The access-log line of this request (polled: the log is written by its own thread).
async fn access_log_line(gw: &Gateway, request_id: &str) -> Value {
    let find = || {
        gw.access_log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["request_id"] == request_id)
    };
    eventually(
        &format!("an access-log line for {request_id}"),
        READY_TIMEOUT,
        || async { find().is_some() },
    )
    .await;
    find().expect("the line")
}

fn reject(status: u16, route: &'static str, outcome: &'static str) -> Rejection<'static> {
    Rejection {
        status,
        route,
        outcome,
        count: 1,
    }
}

/// A request with this token must be proxied; returns the echo of what the upstream saw.
async fn expect_pass(gw: &Gateway, path: &str, token: &str) -> Value {
    let resp = client()
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("an answer");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "expected the token to pass on {path}: {text}");
    serde_json::from_str(&text).expect("echo json")
}

// --- no token --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn required_route_without_token_is_401_missing_token() {
    let fx = Fixture::start().await;
    let resp = client()
        .get(fx.gw.url("/documents/1"))
        .send()
        .await
        .unwrap();
    check_rejection(&fx.gw, resp, &[], reject(401, "documents", "missing")).await;

    // Another scheme is no token at all (RFC 6750 only defines Bearer).
    let basic = "Basic YWxpY2U6c2VjcmV0";
    let resp = client()
        .get(fx.gw.url("/documents/1"))
        .header("authorization", basic)
        .send()
        .await
        .unwrap();
    let want = Rejection {
        count: 2,
        ..reject(401, "documents", "missing")
    };
    check_rejection(&fx.gw, resp, &["YWxpY2U6c2VjcmV0"], want).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_route_without_token_is_forwarded_anonymously() {
    let fx = Fixture::start().await;
    let resp = client()
        .get(fx.gw.url("/public/page"))
        .header("x-user-id", "mallory")
        .header("X-Jwt-Email", "mallory@example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    let headers = &echo["headers"];
    assert_eq!(headers.get("x-user-id"), None, "client identity stripped");
    assert_eq!(headers.get("x-jwt-email"), None, "client identity stripped");
    let series = series(OUTCOMES, &[("route", "public"), ("outcome", "anonymous")]);
    eventually(&series, READY_TIMEOUT, || async {
        fx.gw.metric(&series).await == 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_route_with_a_bad_token_is_401_not_anonymous() {
    let fx = Fixture::start().await;
    let token = forge::bad_signature(&fx.demo_token(json!({})));
    expect_rejection(
        &fx.gw,
        "/public/page",
        &token,
        reject(401, "public", "bad_signature"),
    )
    .await;
    let anonymous = series(OUTCOMES, &[("route", "public"), ("outcome", "anonymous")]);
    assert_eq!(fx.gw.metric(&anonymous).await, 0.0);
}

// --- algorithms ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn alg_none_is_unsupported_algorithm() {
    let fx = Fixture::start().await;
    // With some signature bytes attached (an attacker's variant)...
    let signed = fx.demo_token(json!({}));
    let signature = signed.rsplit_once('.').unwrap().1;
    let token = format!(
        "{}{signature}",
        forge::alg_none(fx.demo_es.kid(), &fx.demo.claims())
    );
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "unsupported_algorithm"),
    )
    .await;
    // ... and as RFC 7519 6.1 writes an unsecured JWT: an empty signature.
    let token = forge::alg_none(fx.demo_es.kid(), &fx.demo.claims());
    let want = Rejection {
        count: 2,
        ..reject(401, "documents", "unsupported_algorithm")
    };
    expect_rejection(&fx.gw, "/documents/1", &token, want).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hs256_keyed_with_the_rsa_public_key_is_unsupported_algorithm() {
    let fx = Fixture::start().await;
    let token = forge::hs256_with_public_key(&fx.demo_rsa, &fx.demo.claims());
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "unsupported_algorithm"),
    )
    .await;
    // The same claims signed properly by that RSA key pass: only the algorithm was wrong.
    expect_pass(&fx.gw, "/documents/1", &fx.demo_rsa.sign(&fx.demo.claims())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_algorithm_the_issuer_does_not_allow_is_unsupported_algorithm() {
    let fx = Fixture::start().await;
    // `strict` publishes this ES256 key but accepts RS256 only.
    let token = fx.strict_es.sign_typed(&fx.strict.claims(), "at+jwt");
    expect_rejection(
        &fx.gw,
        "/strict/x",
        &token,
        reject(401, "strict", "unsupported_algorithm"),
    )
    .await;
    let allowed = fx.strict_rsa.sign_typed(&fx.strict.claims(), "at+jwt");
    expect_pass(&fx.gw, "/strict/x", &allowed).await;
}

// --- keys and signatures ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_kid_not_in_the_jwks_is_unknown_kid_after_one_refetch() {
    let fx = Fixture::start().await;
    let fetches = fx.demo.jwks_requests();
    let stranger = TestKey::es256("not-published");
    let token = stranger.sign(&fx.demo.claims());
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "unknown_kid"),
    )
    .await;
    assert!(
        fx.demo.jwks_requests() > fetches,
        "an unknown kid refetches the JWKS once before refusing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_signature_byte_is_bad_signature() {
    let fx = Fixture::start().await;
    let token = forge::bad_signature(&fx.demo_token(json!({})));
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "bad_signature"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_published_kid_with_another_keys_signature_is_bad_signature() {
    let fx = Fixture::start().await;
    // An attacker's own P-256 key, claiming the kid of the IdP's P-256 key.
    let impostor = TestKey::es256("other").with_kid(fx.demo_es.kid());
    let token = impostor.sign(&fx.demo.claims());
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "bad_signature"),
    )
    .await;
}

// --- claims ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_the_route_does_not_trust_is_wrong_issuer() {
    let fx = Fixture::start().await;
    // Signed by demo's key, but naming another issuer.
    let forged_iss = fx.demo_token(json!({"iss": "http://127.0.0.1:1/evil"}));
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &forged_iss,
        reject(401, "documents", "wrong_issuer"),
    )
    .await;
    // A valid token of a configured issuer the route does not list.
    let strict_token = fx.strict_rsa.sign_typed(&fx.strict.claims(), "at+jwt");
    let want = Rejection {
        count: 2,
        ..reject(401, "documents", "wrong_issuer")
    };
    expect_rejection(&fx.gw, "/documents/1", &strict_token, want).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_for_another_audience_is_wrong_audience() {
    let fx = Fixture::start().await;
    let token = fx.demo_token(json!({"aud": ["billing-api", "reports-api"]}));
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "wrong_audience"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_is_expired_but_leeway_is_honoured() {
    let fx = Fixture::start().await;
    let now = now();
    let old = json!({"iat": now - 3600, "nbf": now - 3600});
    let expired = fx.demo_token(with(&old, json!({"exp": now - 120})));
    let body = expect_rejection(
        &fx.gw,
        "/documents/1",
        &expired,
        reject(401, "documents", "expired"),
    )
    .await;
    // The contract's own example of a short reason.
    assert_eq!(body["message"], "token expired");
    // Expired 10 s ago, inside the 30 s leeway: accepted.
    let barely = fx.demo_token(with(&old, json!({"exp": now - 10})));
    expect_pass(&fx.gw, "/documents/1", &barely).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nbf_in_the_future_is_not_yet_valid() {
    let fx = Fixture::start().await;
    let token = fx.demo_token(json!({"nbf": now() + 300}));
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "not_yet_valid"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn iat_in_the_future_is_not_yet_valid() {
    let fx = Fixture::start().await;
    let token = fx.demo_token(json!({"iat": now() + 300, "nbf": null}));
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "not_yet_valid"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_typ_the_issuer_does_not_accept_is_wrong_type() {
    let fx = Fixture::start().await;
    let token = fx.strict_rsa.sign_typed(&fx.strict.claims(), "JWT");
    expect_rejection(
        &fx.gw,
        "/strict/x",
        &token,
        reject(401, "strict", "wrong_type"),
    )
    .await;
    let typed = fx.strict_rsa.sign_typed(&fx.strict.claims(), "at+jwt");
    expect_pass(&fx.gw, "/strict/x", &typed).await;
}

// --- shape -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_token_over_max_token_bytes_is_too_large() {
    let fx = Fixture::start().await;
    // Validly signed: only its size is wrong.
    let token = fx.demo_token(json!({"padding": "x".repeat(5000)}));
    assert!(token.len() > 4096);
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "too_large"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_segment_that_is_not_base64url_is_malformed() {
    let fx = Fixture::start().await;
    let token = forge::malformed_base64(&fx.demo_es, &fx.demo.claims());
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "malformed"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payload_that_is_not_json_is_malformed() {
    let fx = Fixture::start().await;
    let token = forge::malformed_json(&fx.demo_es);
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "malformed"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_is_not_three_segments_is_malformed() {
    let fx = Fixture::start().await;
    let token = fx.demo_token(json!({}));
    let (two_segments, _) = token.rsplit_once('.').unwrap();
    expect_rejection(
        &fx.gw,
        "/documents/1",
        two_segments,
        reject(401, "documents", "malformed"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_header_keys_are_malformed() {
    let fx = Fixture::start().await;
    let token = forge::duplicate_header_keys(&fx.demo_es, &fx.demo.claims());
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "malformed"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_payload_keys_are_malformed() {
    let fx = Fixture::start().await;
    let token = forge::duplicate_payload_keys(&fx.demo_es, &fx.demo.claims());
    expect_rejection(
        &fx.gw,
        "/documents/1",
        &token,
        reject(401, "documents", "malformed"),
    )
    .await;
}

// --- key set state ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_that_never_served_keys_is_no_key_set() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::stopped(&[&key]);
    let echo = Echo::start("echo");
    let config = format!(
        r#"{{SERVER}}
listeners:
  - address: 127.0.0.1:{{HTTP}}
admin:
  address: 127.0.0.1:{{ADMIN}}
auth:
  issuers:
    demo:
      issuer: {issuer}
      jwks_url: {jwks}
      audiences: [documents-api]
upstreams:
  echo:
    targets: ["{echo}"]
routes:
  - name: documents
    match:
      path_prefix: /documents/
    upstream: echo
    auth:
      mode: required
"#,
        issuer = idp.issuer(),
        jwks = idp.jwks_url(),
        echo = echo.addr()
    );
    let gw = Gateway::start(&[("gatehouse.yaml", &config)]);
    let token = key.sign(&idp.claims());
    expect_rejection(
        &gw,
        "/documents/1",
        &token,
        reject(503, "documents", "no_key_set"),
    )
    .await;
}

// --- scopes and roles ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_scope_is_403_insufficient_scope_naming_the_scopes() {
    let fx = Fixture::start().await;
    // Has documents:read, lacks documents:write.
    let token = fx.demo_token(json!({}));
    let body = expect_rejection(
        &fx.gw,
        "/scoped/x",
        &token,
        reject(403, "scoped", "insufficient_scope"),
    )
    .await;
    let resp = client()
        .get(fx.gw.url("/scoped/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let www = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        www.ends_with(r#"", scope="documents:read documents:write""#),
        "the scope parameter names the required scopes: {www} ({body})"
    );
    // Scopes as an array claim count too.
    let both = fx.demo_token(json!({"scope": ["documents:read", "documents:write"]}));
    expect_pass(&fx.gw, "/scoped/x", &both).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_role_is_403_without_a_scope_parameter() {
    let fx = Fixture::start().await;
    let token = fx.demo_token(json!({"roles": ["viewer"]}));
    expect_rejection(
        &fx.gw,
        "/editors/x",
        &token,
        reject(403, "editors", "insufficient_scope"),
    )
    .await;
    let resp = client()
        .get(fx.gw.url("/editors/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let www = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        !www.contains("scope="),
        "no scope parameter when the route requires no scopes: {www}"
    );
    // Any one of the roles is enough, and a single string counts as one role.
    let admin = fx.demo_token(json!({"roles": "admin"}));
    expect_pass(&fx.gw, "/editors/x", &admin).await;
}

// --- the good path ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_token_reaches_the_upstream_with_verified_identity() {
    let fx = Fixture::start().await;
    let token = fx.demo_token(json!({}));
    let resp = client()
        .get(fx.gw.url("/documents/1"))
        .bearer_auth(&token)
        .header("X-User-Id", "mallory")
        .header("x-user-roles", "admin")
        .header("x-request-id", "valid-token-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    let headers = &echo["headers"];
    assert_eq!(headers["x-user-id"], json!(["alice"]), "{headers}");
    assert_eq!(headers["x-user-roles"], json!(["editor"]), "{headers}");
    assert_eq!(headers["x-jwt-email"], json!(["alice@example.test"]));
    assert_eq!(
        headers["authorization"],
        json!([format!("Bearer {token}")]),
        "Authorization is forwarded by default"
    );
    let series = series(OUTCOMES, &[("route", "documents"), ("outcome", "verified")]);
    eventually(&series, READY_TIMEOUT, || async {
        fx.gw.metric(&series).await == 1.0
    })
    .await;
    let line = access_log_line(&fx.gw, "valid-token-1").await;
    assert_eq!(line["auth"], "verified", "{line}");
    assert_eq!(line["subject"], "alice", "{line}");
    assert_not_logged(&fx.gw, &token);
    // The RS256 key of the same issuer works too (default algorithms: RS256, ES256).
    expect_pass(&fx.gw, "/documents/2", &fx.demo_rsa.sign(&fx.demo.claims())).await;
}
