//! Given users and clients, a token's `sub` names exactly one party, and the token says which
//! kind: a client id equal to a user name is refused at load, service tokens carry no user
//! claims, and `/userinfo` answers only for users.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use support::{client, hash_of, standard_directory, Identity};

/// The claims of a compact JWS, read without verifying it (other tests verify signatures).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// `POST /introspect` of `token` as client `who`.
async fn introspect(id: &Identity, who: &str, secret: &str, token: &str) -> Value {
    client()
        .post(id.url("/introspect"))
        .basic_auth(who, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("JSON")
}

async fn token(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    body["access_token"]
        .as_str()
        .expect("an access token")
        .to_string()
}

#[test]
fn a_client_id_equal_to_a_user_name_is_refused_at_load() {
    let clash = format!(
        "{}  - id: alice\n    secret_hash: {}\n    grant_types: [client_credentials]\n    audiences: [documents-api]\n    scopes: [openid]\n",
        standard_directory(),
        hash_of("impostor-secret")
    );
    let id = Identity::prepare("", &clash);
    let (code, text) = id.validate();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("clients[4].id: `alice` is also the username of users[0]"),
        "{text}"
    );
}

#[tokio::test]
async fn tokens_say_which_kind_of_subject_they_name() {
    let directory = format!(
        "{}  - id: indexer\n    secret_hash: {}\n    grant_types: [client_credentials]\n    audiences: [documents-api]\n    scopes: [openid]\n  - id: documents-api\n    secret_hash: {}\n    grant_types: [client_credentials]\n    audiences: [search-api]\n    resource_server: true\n",
        standard_directory(),
        hash_of("indexer-secret"),
        hash_of("api-secret")
    );
    let id = Identity::start("", &directory);

    let service = token(
        id.service_token("indexer", "indexer-secret", &[("scope", "openid")])
            .await,
    )
    .await;
    let c = claims(&service);
    assert_eq!(c["sub"], "indexer");
    assert_eq!(c["sub_kind"], "service");
    for user_claim in ["email", "name", "auth_time", "department"] {
        assert!(
            c.get(user_claim).is_none(),
            "a service token carries {user_claim}: {c}"
        );
    }
    let userinfo = client()
        .get(id.url("/userinfo"))
        .bearer_auth(&service)
        .send()
        .await
        .expect("userinfo");
    assert_eq!(userinfo.status(), 401, "/userinfo answered for a service");

    let user = token(
        client()
            .post(id.url("/token"))
            .basic_auth("cli", Some("cli-secret"))
            .form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "alice-password"),
                ("scope", "openid"),
            ])
            .send()
            .await
            .expect("password grant"),
    )
    .await;
    let c = claims(&user);
    assert_eq!(
        (c["sub"].as_str(), c["sub_kind"].as_str()),
        (Some("alice"), Some("user"))
    );
    let userinfo = client()
        .get(id.url("/userinfo"))
        .bearer_auth(&user)
        .send()
        .await
        .expect("userinfo");
    assert_eq!(userinfo.status(), 200);

    let introspected = introspect(&id, "indexer", "indexer-secret", &service).await;
    assert_eq!(introspected["sub_kind"], "service", "{introspected}");

    // A resource server may introspect any client's tokens; other clients see only their own.
    for (who, secret, active) in [
        ("documents-api", "api-secret", true),
        ("reports", "reports-secret", false),
    ] {
        let seen = introspect(&id, who, secret, &service).await;
        assert_eq!(seen["active"], active, "{who}: {seen}");
    }
}
