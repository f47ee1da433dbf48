//! The real token issuer (`gatehouse-identity`) for the gateway's authentication tests: its
//! configuration (the demo directory of conf/identity.yaml with fresh argon2 hashes), tokens
//! from it (client_credentials, the password grant, and the browser flow with PKCE), and the
//! gateway's `auth:` section that trusts it.
//!
//! The issuer runs inside a gateway process (`embedded: {identity: identity.yaml}`), either the
//! gateway under test or a second one that serves nothing else (when a test must stop the
//! issuer while the gateway keeps running).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Url;
use sha2::{Digest, Sha256};

use super::{client, eventually, free_port, wait_for_listener, Gateway, READY_TIMEOUT};

/// The prefixes of the default identity namespace, lower-cased (as upstreams see header names).
pub const NAMESPACE: [&str; 4] = ["x-user-", "x-jwt-", "x-auth-", "x-gatehouse-"];

/// The browser client's registered redirect: an unused port, never followed.
pub const WEB_CALLBACK: &str = "http://127.0.0.1:1/callback";

/// A gateway process that only serves the issuer (`embedded: identity`), for tests that stop the
/// issuer while the gateway under test keeps running.
pub const ISSUER_PROCESS: &str = r#"{SERVER}
listeners:
  - address: 127.0.0.1:{HTTP}
admin:
  address: 127.0.0.1:{ADMIN}
embedded:
  identity: identity.yaml
"#;

/// The secret of the `gateway` client, which reads the revocation feed, and the gateway file
/// that holds it.
pub const FEED_SECRET: &str = "gateway-feed-secret";
pub const FEED_SECRET_FILE: (&str, &str) = ("feed.secret", FEED_SECRET);

/// Service clients used as distinct subjects (same secret, `sticky-secret`).
pub const STICKY_CLIENTS: [&str; 6] = ["svc-1", "svc-2", "svc-3", "svc-4", "svc-5", "svc-6"];

/// argon2id hash of a test secret, computed once per test binary (hashing is slow on purpose).
pub fn hash_of(secret: &str) -> String {
    static CACHE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let mut map = CACHE
        .get_or_init(Default::default)
        .lock()
        .expect("hash cache");
    map.entry(secret.to_string())
        .or_insert_with(|| gatehouse_identity::password::hash(secret).expect("argon2 hash"))
        .clone()
}

/// Where an issuer listens: its public port (also its `iss`) and its admin port.
#[derive(Debug, Clone, Copy)]
pub struct Issuer {
    pub port: u16,
    pub admin_port: u16,
}

impl Issuer {
    pub fn new() -> Issuer {
        Issuer {
            port: free_port(),
            admin_port: free_port(),
        }
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// `identity.yaml`: the demo users and clients of conf/identity.yaml (secrets as documented
    /// there), plus an ES256 service client and the `svc-*` subjects. `keys_extra` is appended
    /// under `keys:` (e.g. `  jwks_max_age: 2s\n`).
    pub fn identity_yaml(&self, keys_extra: &str) -> String {
        let sticky: String = STICKY_CLIENTS
            .iter()
            .map(|id| {
                format!(
                    "  - id: {id}\n    secret_hash: {h}\n    grant_types: [client_credentials]\n    audiences: [documents-api]\n    scopes: [documents:read]\n    roles: [service]\n",
                    h = hash_of("sticky-secret")
                )
            })
            .collect();
        format!(
            r#"issuer: {issuer}
listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
keys:
  dir: keys
  algorithms: [RS256, ES256]
{keys_extra}audit_log: audit.log
users:
  - username: alice
    password_hash: {alice}
    email: alice@example.com
    name: Alice Admin
    roles: [admin, editor]
    attributes:
      department: engineering
  - username: bob
    password_hash: {bob}
    email: bob@example.com
    roles: [viewer]
    attributes:
      department: sales
clients:
  - id: reports-service
    secret_hash: {reports}
    grant_types: [client_credentials]
    audiences: [documents-api]
    scopes: [documents:read]
    roles: [service]
  - id: reports-es
    secret_hash: {reports}
    grant_types: [client_credentials]
    audiences: [documents-api]
    scopes: [documents:read]
    roles: [service, auditor]
    signing_alg: ES256
  - id: web-app
    secret_hash: {web}
    grant_types: [authorization_code, refresh_token]
    redirect_uris: [{WEB_CALLBACK}]
    audiences: [documents-api]
    scopes: [openid, profile, email, documents:read, documents:write]
    signing_alg: ES256
  - id: legacy-cli
    secret_hash: {cli}
    grant_types: [password, refresh_token]
    audiences: [documents-api]
    scopes: [openid, email, documents:read]
  - id: gateway
    secret_hash: {feed}
    grant_types: [client_credentials]
    audiences: [gatehouse-revocations]
    scopes: [revocations:read]
{sticky}"#,
            issuer = self.issuer(),
            port = self.port,
            admin = self.admin_port,
            alice = hash_of("alice-password"),
            bob = hash_of("bob-password"),
            reports = hash_of("reports-secret"),
            web = hash_of("web-app-secret"),
            cli = hash_of("cli-secret"),
            feed = hash_of(FEED_SECRET),
        )
    }

    /// The `revocations:` block of the `demo` issuer (for [`Issuer::auth_section`]'s `refresh`):
    /// the feed read as the `gateway` client, its secret in the gateway's `feed.secret` file
    /// (see [`FEED_SECRET_FILE`]).
    pub fn revocations_section(&self, poll_interval: &str) -> String {
        format!(
            "      revocations:\n        url: {iss}/revocations\n        client_id: gateway\n        client_secret_file: feed.secret\n        poll_interval: {poll_interval}\n",
            iss = self.issuer()
        )
    }

    /// The gateway's `auth:` section trusting this issuer as `demo` (discovery finds the JWKS).
    /// `extra` is appended inside `auth:` (two-space indented keys such as `verified_token_cache`).
    pub fn auth_section(&self, refresh: &str, extra: &str) -> String {
        format!(
            "auth:\n  issuers:\n    demo:\n      issuer: {iss}\n      audiences: [documents-api]\n      token_types: [at+jwt]\n{refresh}  assertion: {{key_dir: {{DIR}}/gateway-keys}}\n{extra}",
            iss = self.issuer()
        )
    }

    /// Waits until the issuer answers discovery.
    pub async fn wait_serving(&self) {
        wait_for_listener(self.port, "the issuer");
        let url = self.url("/.well-known/openid-configuration");
        eventually("the issuer answers discovery", READY_TIMEOUT, || {
            let url = url.clone();
            async move {
                client()
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        })
        .await;
    }

    /// A client_credentials access token for `client_id`.
    pub async fn service_token(&self, client_id: &str, secret: &str) -> String {
        let resp = client()
            .post(self.url("/token"))
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("token request");
        access_token(resp).await
    }

    /// A user's access token through `legacy-cli`'s password grant, with `scope`.
    pub async fn password_token(&self, username: &str, password: &str, scope: &str) -> String {
        let resp = client()
            .post(self.url("/token"))
            .basic_auth("legacy-cli", Some("cli-secret"))
            .form(&[
                ("grant_type", "password"),
                ("username", username),
                ("password", password),
                ("scope", scope),
            ])
            .send()
            .await
            .expect("token request");
        access_token(resp).await
    }

    /// The browser flow of `web-app`: `/authorize` with PKCE S256, the login form as
    /// `username`, the code back at the redirect URI, then the code exchanged at `/token`.
    /// Returns the access token.
    pub async fn browser_token(&self, username: &str, password: &str, scope: &str) -> String {
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("browser");
        let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut authorize = Url::parse(&self.url("/authorize")).expect("authorize URL");
        authorize.query_pairs_mut().extend_pairs([
            ("response_type", "code"),
            ("client_id", "web-app"),
            ("redirect_uri", WEB_CALLBACK),
            ("scope", scope),
            ("state", "st-1"),
            ("nonce", "n-1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let form = browser
            .get(authorize.as_str())
            .send()
            .await
            .expect("GET /authorize");
        assert_eq!(form.status(), 200, "/authorize shows the login form");
        let request = hidden_request(&form.text().await.expect("form body"));
        let back = browser
            .post(self.url("/login"))
            .form(&[
                ("request", request.as_str()),
                ("username", username),
                ("password", password),
            ])
            .send()
            .await
            .expect("POST /login");
        assert_eq!(back.status(), 303, "a correct password redirects back");
        let location = back
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("Location");
        let location = Url::parse(location).expect("Location is a URL");
        assert!(location.as_str().starts_with(WEB_CALLBACK), "{location}");
        let query: BTreeMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(query.get("state").map(String::as_str), Some("st-1"));
        let code = query.get("code").expect("a code").clone();
        let resp = client()
            .post(self.url("/token"))
            .basic_auth("web-app", Some("web-app-secret"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", WEB_CALLBACK),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await
            .expect("code exchange");
        access_token(resp).await
    }
}

async fn access_token(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.expect("a JSON token answer");
    assert_eq!(status, 200, "token answer: {body}");
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {body}"))
        .to_string()
}

/// The value of the login form's hidden `request` input.
fn hidden_request(html: &str) -> String {
    let marker = r#"name="request" value=""#;
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no hidden `request` input in:\n{html}"))
        + marker.len();
    let len = html[start..].find('"').expect("closing quote");
    html[start..start + len].to_string()
}

/// A JWT's protected header (`kid`, `alg`, `typ`), decoded without any check.
pub fn jwt_header(token: &str) -> serde_json::Value {
    let first = token.split('.').next().expect("a JWT");
    let bytes = URL_SAFE_NO_PAD.decode(first).expect("base64url header");
    serde_json::from_slice(&bytes).expect("JSON header")
}

/// A JWT's claims, decoded without any check.
pub fn jwt_payload(token: &str) -> serde_json::Value {
    let second = token.split('.').nth(1).expect("a JWT");
    let bytes = URL_SAFE_NO_PAD.decode(second).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

/// Waits until the gateway's `/readyz` says ready (every issuer has a key set).
pub async fn wait_ready(gw: &Gateway) {
    let url = gw.admin("/readyz");
    eventually(
        "the gateway is ready (key sets fetched)",
        READY_TIMEOUT,
        || {
            let url = url.clone();
            async move {
                client()
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        },
    )
    .await;
}

/// What the echo upstream received, as its JSON answer; panics with the body on another status.
pub async fn echoed(resp: reqwest::Response) -> serde_json::Value {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "expected the upstream's answer, got: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not the echo's JSON ({e}): {text}"))
}

/// Every header the upstream received whose name is in the identity namespace: name → values.
pub fn namespace_headers(echo: &serde_json::Value) -> BTreeMap<String, Vec<String>> {
    let headers = echo["headers"].as_object().expect("echo headers");
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            NAMESPACE.iter().any(|p| name.starts_with(p))
        })
        .map(|(name, values)| {
            let values = values
                .as_array()
                .expect("header values")
                .iter()
                .map(|v| v.as_str().expect("string value").to_string())
                .collect();
            (name.clone(), values)
        })
        .collect()
}

/// All values the upstream received for `name` (lower-case), in order.
pub fn upstream_header(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of the sample of `name` carrying every one of `labels` (in whatever order the
/// registry prints them; prometheus sorts label names), or `None` when there is none.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (label_text, value) = rest.rsplit_once("} ")?;
        let pairs = label_text.split(',');
        labels
            .iter()
            .all(|(k, v)| {
                let wanted = format!("{k}=\"{v}\"");
                pairs.clone().any(|p| p == wanted)
            })
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}
