//! The browser side of the code flow for tests: `/authorize`, the login form, the callback, and
//! the token requests of the `web` client of [`super::standard_directory`]. The "browser" is a
//! cookie-keeping HTTP client that never follows redirects: each hop is looked at.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use super::{client, Identity};

pub const WEB_CALLBACK: &str = "http://127.0.0.1:1/callback";
pub const WEB_BYE: &str = "http://127.0.0.1:1/bye";
pub const SPA_CALLBACK: &str = "http://127.0.0.1:2/callback";

/// A PKCE pair (RFC 7636): `(code_verifier, S256 code_challenge)`.
pub fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// `/authorize` with these query parameters, properly encoded.
/// Query parameters of a request.
pub type Params<'a> = &'a [(&'a str, &'a str)];

pub fn authorize_url(id: &Identity, params: &[(&str, &str)]) -> String {
    let mut url = Url::parse(&id.url("/authorize")).expect("authorize URL");
    url.query_pairs_mut().extend_pairs(params);
    url.into()
}

/// The usual authorization request of `web`, with PKCE and a nonce.
pub fn web_request(id: &Identity, state: &str, challenge: &str) -> String {
    authorize_url(
        id,
        &[
            ("response_type", "code"),
            ("client_id", "web"),
            ("redirect_uri", WEB_CALLBACK),
            ("scope", "openid email documents:read"),
            ("state", state),
            ("nonce", "n-0S6_WzA2Mj"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ],
    )
}

/// The value of the login form's hidden `request` input.
pub fn hidden_request(html: &str) -> String {
    let marker = r#"name="request" value=""#;
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no hidden `request` input in:\n{html}"))
        + marker.len();
    let len = html[start..]
        .find('"')
        .expect("closing quote of the request value");
    html[start..start + len].to_string()
}

pub fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_string())
}

pub fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ASCII cookie").to_string())
        .collect()
}

/// The `Location` of a 303, parsed.
pub fn location(resp: &reqwest::Response) -> Url {
    assert_eq!(resp.status().as_u16(), 303, "expected a 303 redirect");
    let loc = header(resp, "location").expect("a Location header");
    Url::parse(&loc).unwrap_or_else(|e| panic!("Location {loc:?} is not a URL: {e}"))
}

/// Query parameters of a URL; each must appear once.
pub fn query(url: &Url) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (k, v) in url.query_pairs() {
        assert!(
            map.insert(k.to_string(), v.to_string()).is_none(),
            "`{k}` repeated in {url}"
        );
    }
    map
}

/// A redirect's target without its query: which registered URI it goes back to.
pub fn without_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

pub async fn get(browser: &reqwest::Client, url: &str) -> reqwest::Response {
    browser
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

pub async fn post_login(
    id: &Identity,
    browser: &reqwest::Client,
    request: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    browser
        .post(id.url("/login"))
        .form(&[
            ("request", request),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .expect("POST /login")
}

/// Opens `authorize` (which must show the login form) and signs in; returns the 303 answer.
pub async fn sign_in(
    id: &Identity,
    browser: &reqwest::Client,
    authorize: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    let resp = get(browser, authorize).await;
    assert_eq!(resp.status().as_u16(), 200, "expected the login form");
    let request = hidden_request(&resp.text().await.expect("form body"));
    let resp = post_login(id, browser, &request, username, password).await;
    assert_eq!(
        resp.status().as_u16(),
        303,
        "a correct password redirects to the client"
    );
    resp
}

/// Runs the browser part of `authorize`: straight through with an SSO session, else through the
/// login form as alice. Returns the callback's query parameters.
/// The query of a successful callback: back at `redirect` with `state` unchanged, this issuer's
/// `iss` (RFC 9207) and a code.
pub fn callback(
    id: &Identity,
    resp: &reqwest::Response,
    redirect: &str,
    state: &str,
) -> HashMap<String, String> {
    let back = location(resp);
    assert_eq!(without_query(&back), redirect, "{back}");
    let q = query(&back);
    assert_eq!(
        q.get("state").map(String::as_str),
        Some(state),
        "state: {back}"
    );
    assert_eq!(q.get("iss"), Some(&id.issuer()), "iss: {back}");
    assert!(q.contains_key("code"), "no code in {back}");
    q
}

pub async fn authorize_as_alice(
    id: &Identity,
    browser: &reqwest::Client,
    authorize: &str,
) -> HashMap<String, String> {
    let resp = get(browser, authorize).await;
    let resp = match resp.status().as_u16() {
        303 => resp,
        200 => {
            let request = hidden_request(&resp.text().await.expect("form body"));
            post_login(id, browser, &request, "alice", "alice-password").await
        }
        s => panic!(
            "unexpected /authorize status {s}: {}",
            resp.text().await.unwrap_or_default()
        ),
    };
    let back = location(&resp);
    let q = query(&back);
    assert!(q.contains_key("code"), "no code in {back}");
    q
}

/// A fresh code for `web`, bound to `challenge` when given.
pub async fn web_code(id: &Identity, browser: &reqwest::Client, challenge: Option<&str>) -> String {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", "web"),
        ("redirect_uri", WEB_CALLBACK),
        ("scope", "openid email documents:read"),
        ("state", "st"),
    ];
    if let Some(c) = challenge {
        params.extend([("code_challenge", c), ("code_challenge_method", "S256")]);
    }
    let url = authorize_url(id, &params);
    authorize_as_alice(id, browser, &url).await["code"].clone()
}

/// `POST /token` for `web` (HTTP Basic), grant authorization_code.
pub async fn redeem_web(
    id: &Identity,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    client()
        .post(id.url("/token"))
        .basic_auth("web", Some("web-secret"))
        .form(&form)
        .send()
        .await
        .expect("token request")
}

/// `POST /token` for `web`, grant refresh_token.
pub async fn refresh_web(id: &Identity, refresh_token: &str) -> reqwest::Response {
    refresh_as(id, ("web", "web-secret"), refresh_token, None).await
}

/// `POST /token` as `client` (HTTP Basic), grant refresh_token, asking for `scope` if given.
pub async fn refresh_as(
    id: &Identity,
    (client_id, secret): (&str, &str),
    refresh_token: &str,
    scope: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    client()
        .post(id.url("/token"))
        .basic_auth(client_id, Some(secret))
        .form(&form)
        .send()
        .await
        .expect("refresh request")
}

/// `POST /introspect` as `web`.
pub async fn introspect_web(id: &Identity, token: &str) -> Value {
    ok_json(
        client()
            .post(id.url("/introspect"))
            .basic_auth("web", Some("web-secret"))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspect"),
    )
    .await
}

pub async fn ok_json(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body = resp.text().await.expect("body");
    assert_eq!(status.as_u16(), 200, "expected 200, got {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Signs in to `web` (or reuses the session) and redeems the code: the token response.
pub async fn web_tokens(id: &Identity, browser: &reqwest::Client) -> Value {
    let (verifier, challenge) = pkce();
    let code = web_code(id, browser, Some(&challenge)).await;
    ok_json(redeem_web(id, &code, WEB_CALLBACK, Some(&verifier)).await).await
}

pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` missing in {v}"))
}
