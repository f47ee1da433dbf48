//! The fake IdP peer itself (tests/support/idp.rs): what the gateway tests rely on it doing.
//! Its JWKs are read back with another JOSE library (jsonwebtoken) to show the keys and tokens
//! it hands out are sound, so a gateway rejection is never the peer's fault.

mod support;

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;
use support::idp::{forge, FakeIdp, TestKey, AUDIENCE, FEED_CLIENT_ID, FEED_SECRET};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn jwks(idp: &FakeIdp) -> JwkSet {
    http()
        .get(idp.jwks_url())
        .send()
        .await
        .expect("JWKS answer")
        .json()
        .await
        .expect("a JWK set")
}

/// Verifies `token` against the IdP's published keys with jsonwebtoken.
async fn verify(idp: &FakeIdp, token: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    let header = decode_header(token)?;
    let set = jwks(idp).await;
    let jwk = set
        .find(header.kid.as_deref().unwrap_or_default())
        .expect("the kid is published");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[idp.issuer()]);
    decode::<Value>(token, &DecodingKey::from_jwk(jwk)?, &validation).map(|d| d.claims)
}

#[tokio::test(flavor = "multi_thread")]
async fn publishes_discovery_and_keys_that_verify_its_tokens() {
    let (es, rsa) = (TestKey::es256("es"), TestKey::rs256("rsa"));
    let idp = FakeIdp::start(&[&es, &rsa]);

    let discovery: Value = http()
        .get(format!("{}/.well-known/openid-configuration", idp.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], idp.issuer());
    assert_eq!(discovery["jwks_uri"], idp.jwks_url());

    for key in [&es, &rsa] {
        let claims = verify(&idp, &key.sign(&idp.claims()))
            .await
            .expect("verifies");
        assert_eq!(claims["sub"], "alice");
        let typed = key.sign_typed(&idp.claims(), "at+jwt");
        assert_eq!(
            decode_header(&typed).unwrap().typ.as_deref(),
            Some("at+jwt")
        );
    }
    // Raw-signed tokens are sound ES256 too (only their JSON is odd).
    let raw = es.sign_raw(
        r#"{"alg":"ES256","typ":"JWT","kid":"es"}"#,
        &idp.claims().to_string(),
    );
    verify(&idp, &raw)
        .await
        .expect("a raw-signed token verifies");

    // Each forgery is refused by an independent verifier as well.
    assert!(verify(&idp, &forge::bad_signature(&es.sign(&idp.claims())))
        .await
        .is_err());
    assert!(
        verify(&idp, &forge::bad_signature(&rsa.sign(&idp.claims())))
            .await
            .is_err()
    );
    let impostor = TestKey::es256("x").with_kid("es");
    assert!(verify(&idp, &impostor.sign(&idp.claims())).await.is_err());
    let hs = forge::hs256_with_public_key(&rsa, &idp.claims());
    assert_eq!(decode_header(&hs).unwrap().alg, Algorithm::HS256);
    assert!(forge::alg_none("es", &idp.claims()).ends_with('.'));
    assert_eq!(idp.requests("/.well-known/openid-configuration"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_304_to_its_etag_and_changes_it_with_the_keys() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    idp.set_max_age(7);
    let c = http();
    let first = c.get(idp.jwks_url()).send().await.unwrap();
    assert_eq!(first.headers()["cache-control"], "max-age=7");
    let etag = first.headers()["etag"].to_str().unwrap().to_string();

    let again = c
        .get(idp.jwks_url())
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(idp.not_modified_answers(), 1);

    idp.publish(&TestKey::es256("k2"));
    let changed = c
        .get(idp.jwks_url())
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(jwks(&idp).await.keys.len(), 2);
    idp.withdraw("k1");
    let set = jwks(&idp).await;
    assert_eq!(set.keys.len(), 1);
    assert!(set.find("k2").is_some());
    assert_eq!(idp.jwks_requests(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn goes_unavailable_stops_and_resumes_on_the_same_port() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    // A pooled keep-alive connection must not outlive a stop.
    let c = http();
    assert_eq!(c.get(idp.jwks_url()).send().await.unwrap().status(), 200);

    idp.set_unavailable(true);
    assert_eq!(c.get(idp.jwks_url()).send().await.unwrap().status(), 503);
    idp.set_unavailable(false);

    idp.stop();
    let refused = c.get(idp.jwks_url()).send().await;
    assert!(refused.is_err(), "a stopped IdP refuses connections");
    assert!(std::net::TcpStream::connect(("127.0.0.1", idp.port())).is_err());

    idp.resume();
    assert_eq!(c.get(idp.jwks_url()).send().await.unwrap().status(), 200);
    assert_eq!(
        idp.jwks_requests(),
        3,
        "refused connections are not requests"
    );

    let stopped = FakeIdp::stopped(&[&key]);
    assert!(std::net::TcpStream::connect(("127.0.0.1", stopped.port())).is_err());
    stopped.resume();
    assert_eq!(
        c.get(stopped.jwks_url()).send().await.unwrap().status(),
        200
    );
}

/// One feed request as the gateway sends it; `(status, body)`.
async fn feed(idp: &FakeIdp, after: Option<&str>, secret: &str) -> (u16, Value) {
    let mut request = http()
        .get(idp.feed_url())
        .basic_auth(FEED_CLIENT_ID, Some(secret));
    if let Some(after) = after {
        request = request.query(&[("after", after)]);
    }
    let resp = request.send().await.expect("feed answer");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_revocation_feed_by_the_contract() {
    let idp = FakeIdp::start(&[]);
    let (status, body) = feed(&idp, None, "wrong").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert_eq!(idp.feed_unauthorized(), 1);

    idp.revoke_jti("a", 100);
    idp.revoke_subject("alice", 50, 200);
    idp.revoke_jti("b", 300);
    idp.set_feed_page_size(2);
    let (status, page) = feed(&idp, None, FEED_SECRET).await;
    assert_eq!(status, 200);
    assert_eq!(
        (page["feed"].as_str(), page["cursor"].as_str()),
        (Some("feed-1"), Some("2"))
    );
    assert_eq!(page["more"], true);
    assert_eq!(page["entries"][1]["sub"], "alice");
    let (_, page) = feed(&idp, Some("2"), FEED_SECRET).await;
    assert_eq!(
        (page["cursor"].as_str(), &page["more"]),
        (Some("3"), &Value::Bool(false))
    );
    assert_eq!(page["entries"][0]["jti"], "b");
    let (_, page) = feed(&idp, Some("3"), FEED_SECRET).await;
    assert_eq!(
        page["entries"].as_array().map(Vec::len),
        Some(0),
        "caught up"
    );
    assert_eq!(
        idp.feed_requests_from_start(),
        1,
        "refused requests are not counted here"
    );

    idp.restore_feed(1);
    let (_, page) = feed(&idp, Some("3"), FEED_SECRET).await;
    assert_eq!(page["reset"], true, "a cursor beyond the end");
    idp.hold_feed_at(Some("1"));
    assert_eq!(feed(&idp, Some("1"), FEED_SECRET).await.0, 503);
    assert_eq!(idp.feed_held(), 1);
    idp.set_feed_status(Some(500));
    assert_eq!(feed(&idp, None, FEED_SECRET).await.0, 500);
    idp.set_feed_status(None);
    idp.switch_feed("feed-2", Vec::new());
    let (_, page) = feed(&idp, None, FEED_SECRET).await;
    assert_eq!(page["feed"], "feed-2");
    assert_eq!(feed(&idp, Some("x"), FEED_SECRET).await.0, 400);
}
