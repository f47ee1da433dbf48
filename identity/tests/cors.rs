//! Given a public client with `allowed_origins`, a browser script from that origin may call the
//! token, userinfo, JWKS and revocation endpoints (preflight included); any other origin gets
//! no CORS permission; an origin written with a path is refused at load.

mod support;

use support::{client, standard_directory, Identity};

const APP: &str = "http://app.example:8000";

fn directory(origins: &str) -> String {
    standard_directory().replace(
        "    signing_alg: ES256\n",
        &format!("    signing_alg: ES256\n    allowed_origins: {origins}\n"),
    )
}

fn allow_origin(resp: &reqwest::Response) -> Option<&str> {
    resp.headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn scripts_from_a_clients_origin_may_call_the_token_endpoints_and_no_one_else() {
    let id = Identity::start("", &directory(&format!("[\"{APP}\"]")));
    for path in ["/token", "/userinfo", "/jwks.json", "/revoke"] {
        let preflight = client()
            .request(reqwest::Method::OPTIONS, id.url(path))
            .header("origin", APP)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .expect("preflight");
        assert_eq!(preflight.status(), 204, "{path}");
        assert_eq!(allow_origin(&preflight), Some(APP), "{path}");
        let methods = preflight.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap_or_default();
        assert!(methods.contains("POST"), "{path}: {methods}");
        assert!(preflight
            .headers()
            .get("access-control-allow-credentials")
            .is_none());

        let foreign = client()
            .request(reqwest::Method::OPTIONS, id.url(path))
            .header("origin", "http://evil.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .expect("preflight");
        assert_eq!(foreign.status(), 403, "{path}");
        assert_eq!(allow_origin(&foreign), None, "{path}");
    }

    // The actual call: the answer names the origin only for an allowed one.
    let jwks = client()
        .get(id.url("/jwks.json"))
        .header("origin", APP)
        .send()
        .await
        .expect("jwks");
    assert_eq!(jwks.status(), 200);
    assert_eq!(allow_origin(&jwks), Some(APP));
    assert_eq!(jwks.headers()["vary"], "origin");
    let token = client()
        .post(id.url("/token"))
        .header("origin", "http://evil.example")
        .form(&[("grant_type", "client_credentials")])
        .basic_auth("reports", Some("reports-secret"))
        .send()
        .await
        .expect("token");
    assert_eq!(token.status(), 200);
    assert_eq!(allow_origin(&token), None);
}

#[test]
fn an_origin_with_a_path_is_refused_at_load() {
    let id = Identity::prepare("", &directory("[\"http://app.example/spa\"]"));
    let (code, text) = id.validate();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("clients[2].allowed_origins[0]"), "{text}");
}
