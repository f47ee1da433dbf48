//! A fake identity provider PEER for the gateway's token tests, and tokens forged with an
//! independent JOSE library (jwt-simple, pure Rust; `p256` where raw header bytes must be signed).
//!
//! The IdP is a tiny HTTP/1.1 server on its own thread with its own tokio runtime: tests poll
//! with blocking calls and `eventually`, which would starve a server sharing the test's runtime.
//! It serves `/.well-known/openid-configuration` and `/jwks.json` (with `Cache-Control: max-age`
//! and an `ETag`, answering 304 to a matching `If-None-Match`), counts requests per path, can be
//! switched to 503, and can be stopped and resumed on the same port (connections are then
//! refused, as for a crashed IdP). Keys are published and withdrawn at runtime.
//!
//! It also serves the revocation feed of issue #13 (`/revocations?after=<cursor>&limit=<n>`,
//! HTTP Basic client authentication) over entries the test appends; the test can switch the feed
//! to a new database (new feed id), restore it "from a backup" (fewer entries: a cursor beyond
//! the end answers `reset`), page it, make it fail, or hold it at one cursor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::algorithms::{
    ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair, HS256Key, MACLike, RS256KeyPair,
    RSAKeyPairLike,
};
use jwt_simple::claims::JWTClaims;
use jwt_simple::common::HeaderOptions;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// The audience the test configs give their issuers.
pub const AUDIENCE: &str = "documents-api";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Claims of a token the test configs accept: issued by `issuer` for [`AUDIENCE`], valid for ten
/// minutes, subject `alice`, scope `documents:read profile`, role `editor`.
pub fn valid_claims(issuer: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "scope": "documents:read profile",
        "roles": ["editor"],
        "email": "alice@example.test",
    })
}

/// `claims` with `changes` merged in (a `null` removes the claim).
pub fn with(claims: &Value, changes: Value) -> Value {
    let mut merged = claims.as_object().cloned().unwrap_or_default();
    for (name, value) in changes.as_object().cloned().unwrap_or_default() {
        if value.is_null() {
            merged.remove(&name);
        } else {
            merged.insert(name, value);
        }
    }
    Value::Object(merged)
}

/// A Prometheus series as the `prometheus` crate prints it: labels sorted by name, whatever
/// order the code declares them in.
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels = labels.to_vec();
    labels.sort();
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

// ---------------------------------------------------------------------------------------------
// Keys and tokens

/// One RSA key per test process: generating RSA keys is slow, and one is all the tests need
/// (it can be published under several kids).
fn rsa_key_pair() -> &'static RS256KeyPair {
    static KEY: OnceLock<RS256KeyPair> = OnceLock::new();
    KEY.get_or_init(|| RS256KeyPair::generate(2048).expect("an RSA key"))
}

// A test holds a handful of keys: their size does not matter.
#[allow(clippy::large_enum_variant)]
enum Material {
    Es256(ES256KeyPair),
    Rs256(RS256KeyPair),
}

/// A signing key the tests hold; the IdP publishes its public half ([`TestKey::jwk`]).
pub struct TestKey {
    kid: String,
    material: Material,
}

impl Clone for TestKey {
    fn clone(&self) -> Self {
        self.with_kid(&self.kid)
    }
}

impl TestKey {
    /// A fresh P-256 key (fast to generate).
    pub fn es256(kid: &str) -> TestKey {
        TestKey {
            kid: kid.into(),
            material: Material::Es256(ES256KeyPair::generate().with_key_id(kid)),
        }
    }

    /// The process's RSA key, under this kid.
    pub fn rs256(kid: &str) -> TestKey {
        TestKey {
            kid: kid.into(),
            material: Material::Rs256(rsa_key_pair().clone().with_key_id(kid)),
        }
    }

    /// The same key material under another kid (e.g. one the IdP does not publish).
    pub fn with_kid(&self, kid: &str) -> TestKey {
        let material = match &self.material {
            Material::Es256(pair) => Material::Es256(
                ES256KeyPair::from_bytes(&pair.to_bytes())
                    .expect("copy of a P-256 key")
                    .with_key_id(kid),
            ),
            Material::Rs256(pair) => Material::Rs256(pair.clone().with_key_id(kid)),
        };
        TestKey {
            kid: kid.into(),
            material,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> &'static str {
        match self.material {
            Material::Es256(_) => "ES256",
            Material::Rs256(_) => "RS256",
        }
    }

    /// The public key as a JWK (RFC 7517), algorithm pinned.
    pub fn jwk(&self) -> Value {
        match &self.material {
            Material::Es256(pair) => {
                let public = pair.public_key();
                let point = ECDSAP256PublicKeyLike::public_key(&public).to_bytes_uncompressed();
                // SEC1 uncompressed: 0x04 || x (32 bytes) || y (32 bytes).
                json!({
                    "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
                    "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                })
            }
            Material::Rs256(pair) => {
                let parts = pair.public_key().to_components();
                json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                    "n": b64(&parts.n), "e": b64(&parts.e),
                })
            }
        }
    }

    /// The public key as SPKI PEM (what an HS256 key-confusion attacker would use as a secret).
    pub fn public_pem(&self) -> String {
        match &self.material {
            Material::Es256(pair) => pair.public_key().to_pem().expect("P-256 PEM"),
            Material::Rs256(pair) => pair.public_key().to_pem().expect("RSA PEM"),
        }
    }

    /// A token over `claims` (any JSON object), header `{alg, typ: "JWT", kid}`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_typed(claims, "JWT")
    }

    /// As [`TestKey::sign`] with this `typ` header.
    pub fn sign_typed(&self, claims: &Value, typ: &str) -> String {
        let options = HeaderOptions {
            signature_type: Some(typ.into()),
            ..Default::default()
        };
        match &self.material {
            Material::Es256(pair) => pair.sign_with_options(jwt_claims(claims), &options),
            Material::Rs256(pair) => pair.sign_with_options(jwt_claims(claims), &options),
        }
        .expect("jwt-simple signs")
    }

    /// A compact JWS over exactly these header and payload texts (so they can hold what no JSON
    /// serialiser writes, such as duplicate keys), signed with ES256. P-256 keys only.
    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        use p256::ecdsa::signature::Signer;
        let Material::Es256(pair) = &self.material else {
            panic!("sign_raw signs with P-256 keys only");
        };
        let signing =
            p256::ecdsa::SigningKey::from_slice(&pair.to_bytes()).expect("a P-256 scalar");
        let input = format!("{}.{}", b64(header), b64(payload));
        let signature: p256::ecdsa::Signature = signing.sign(input.as_bytes());
        format!("{input}.{}", b64(signature.to_bytes()))
    }
}

/// jwt-simple's claims type holding exactly `claims`: every standard field is left empty, and
/// the flattened custom map carries them all (so any value, even a wrong type, can be sent).
fn jwt_claims(claims: &Value) -> JWTClaims<Map<String, Value>> {
    JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom: claims.as_object().cloned().unwrap_or_default(),
    }
}

/// Forged and broken tokens, each wrong in exactly one way.
pub mod forge {
    use super::*;

    /// `alg: none` with an empty signature (RFC 7519 6.1: an unsecured JWT).
    pub fn alg_none(kid: &str, claims: &Value) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
        format!("{}.{}.", b64(header.to_string()), b64(claims.to_string()))
    }

    /// The key-confusion attack: HS256 keyed with the RSA public key's PEM, under its kid, so a
    /// verifier that trusts the token's `alg` would check an HMAC with public bytes.
    pub fn hs256_with_public_key(rsa: &TestKey, claims: &Value) -> String {
        HS256Key::from_bytes(rsa.public_pem().as_bytes())
            .with_key_id(rsa.kid())
            .authenticate(jwt_claims(claims))
            .expect("jwt-simple authenticates")
    }

    /// `token` with the last byte of its signature flipped (still the right length, and for
    /// ECDSA still a scalar in range: only the check itself can fail).
    pub fn bad_signature(token: &str) -> String {
        let (signed, signature) = token.rsplit_once('.').expect("a compact JWS");
        let mut signature = URL_SAFE_NO_PAD
            .decode(signature)
            .expect("a base64url signature");
        let last = signature.len() - 1;
        signature[last] ^= 0x01;
        format!("{signed}.{}", b64(signature))
    }

    /// A properly signed token whose payload segment is not base64url.
    pub fn malformed_base64(key: &TestKey, claims: &Value) -> String {
        let token = key.sign(claims);
        let parts: Vec<&str> = token.split('.').collect();
        format!("{}.{}!*~.{}", parts[0], parts[1], parts[2])
    }

    /// Properly signed, but the payload is not JSON (cut off mid-object).
    pub fn malformed_json(key: &TestKey) -> String {
        let header = json!({"alg": key.alg(), "typ": "JWT", "kid": key.kid()});
        key.sign_raw(&header.to_string(), r#"{"sub":"alice","exp":"#)
    }

    /// Properly signed over a header naming `alg` twice (`ES256`, then `none`): parsers that
    /// keep the first and parsers that keep the last would disagree about it.
    pub fn duplicate_header_keys(key: &TestKey, claims: &Value) -> String {
        let header = format!(
            r#"{{"alg":"ES256","alg":"none","typ":"JWT","kid":"{}"}}"#,
            key.kid()
        );
        key.sign_raw(&header, &claims.to_string())
    }

    /// Properly signed over a payload naming `sub` twice (`alice`, then `admin`).
    pub fn duplicate_payload_keys(key: &TestKey, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()});
        let body = claims.to_string();
        let payload = format!(r#"{},"sub":"admin"}}"#, body.trim_end_matches('}'));
        key.sign_raw(&header.to_string(), &payload)
    }
}

// ---------------------------------------------------------------------------------------------
// The IdP server

/// What the IdP publishes, changed by the test at runtime.
struct Published {
    keys: Vec<Value>,
    /// Bumped on every key change; the ETag names it.
    generation: u64,
    max_age: u64,
    unavailable: bool,
}

/// The client the feed accepts (`client_secret_basic`).
pub const FEED_CLIENT_ID: &str = "gateway";
pub const FEED_SECRET: &str = "feed-secret-5Qm2vX9";

/// The revocation feed's database, changed by the test at runtime.
struct Feed {
    id: String,
    /// The cursor after entry `i` is `i + 1`.
    entries: Vec<Value>,
    page_size: usize,
    /// Answer this status (with the contract's error body) instead of the feed.
    status: Option<u16>,
    /// Requests with exactly this `after` answer 503 (a feed stalled mid-way).
    hold_after: Option<String>,
    /// Requests received: in all, from the beginning (no `after`), refused for credentials,
    /// answered 503 by the hold.
    requests: u64,
    from_start: u64,
    unauthorized: u64,
    held: u64,
}

struct Shared {
    issuer: String,
    published: Mutex<Published>,
    feed: Mutex<Feed>,
    /// Per path: how many requests, and when the last one arrived.
    requests: Mutex<HashMap<String, (u64, Instant)>>,
    not_modified: AtomicU64,
}

struct Answer {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// A JSON answer.
fn json_answer(status: &'static str, body: Value) -> Answer {
    Answer {
        status,
        headers: vec![("Content-Type", "application/json".into())],
        body: body.to_string().into_bytes(),
    }
}

impl Shared {
    /// The feed's answer (see the contract in the module doc of the gateway's `revocations`).
    fn feed_answer(&self, query: &str, authorization: Option<&str>) -> Answer {
        let mut feed = self.feed.lock().expect("feed");
        feed.requests += 1;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{FEED_CLIENT_ID}:{FEED_SECRET}"))
        );
        if authorization != Some(expected.as_str()) {
            feed.unauthorized += 1;
            let mut answer = json_answer("401 Unauthorized", json!({"error": "invalid_client"}));
            answer.headers.push(("WWW-Authenticate", "Basic".into()));
            return answer;
        }
        if let Some(status) = feed.status {
            let line = match status {
                500 => "500 Internal Server Error",
                503 => "503 Service Unavailable",
                _ => "502 Bad Gateway",
            };
            return json_answer(line, json!({"error": "server_error"}));
        }
        let mut after = None;
        let mut limit = 1000usize;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "after" if !value.is_empty() => after = Some(value.into_owned()),
                "limit" => limit = value.parse().unwrap_or(1000),
                _ => {}
            }
        }
        if after.is_none() {
            feed.from_start += 1;
        }
        if after.is_some() && after == feed.hold_after {
            feed.held += 1;
            let mut answer = json_answer(
                "503 Service Unavailable",
                json!({"error": "temporarily_unavailable"}),
            );
            answer.headers.push(("Retry-After", "1".into()));
            return answer;
        }
        let start = match after.as_deref().map(str::parse::<usize>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                return json_answer("400 Bad Request", json!({"error": "invalid_request"}))
            }
        };
        let end_of_feed = feed.entries.len();
        if start > end_of_feed {
            return json_answer(
                "200 OK",
                json!({"feed": feed.id, "cursor": end_of_feed.to_string(), "more": false,
                       "reset": true, "entries": []}),
            );
        }
        let end = end_of_feed.min(start + feed.page_size.min(limit));
        json_answer(
            "200 OK",
            json!({
                "feed": feed.id,
                "cursor": end.to_string(),
                "more": end < end_of_feed,
                "reset": false,
                "entries": feed.entries[start..end],
            }),
        )
    }

    fn answer(&self, target: &str, headers: &HashMap<String, String>) -> Answer {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let if_none_match = headers.get("if-none-match").map(String::as_str);
        let mut requests = self.requests.lock().expect("request counts");
        let seen = requests
            .entry(path.to_string())
            .or_insert((0, Instant::now()));
        *seen = (seen.0 + 1, Instant::now());
        drop(requests);
        let published = self.published.lock().expect("published keys");
        if published.unavailable {
            return Answer {
                status: "503 Service Unavailable",
                headers: vec![("Content-Type", "text/plain".into())],
                body: b"down for maintenance".to_vec(),
            };
        }
        if path == "/revocations" {
            drop(published);
            return self.feed_answer(query, headers.get("authorization").map(String::as_str));
        }
        match path {
            "/.well-known/openid-configuration" => Answer {
                status: "200 OK",
                headers: vec![("Content-Type", "application/json".into())],
                body: json!({
                    "issuer": self.issuer,
                    "jwks_uri": format!("{}/jwks.json", self.issuer),
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                })
                .to_string()
                .into_bytes(),
            },
            "/jwks.json" => {
                let etag = format!("\"keys-{}\"", published.generation);
                let cache = format!("max-age={}", published.max_age);
                if if_none_match == Some(etag.as_str()) {
                    self.not_modified.fetch_add(1, Ordering::Relaxed);
                    return Answer {
                        status: "304 Not Modified",
                        headers: vec![("ETag", etag), ("Cache-Control", cache)],
                        body: Vec::new(),
                    };
                }
                Answer {
                    status: "200 OK",
                    headers: vec![
                        ("Content-Type", "application/json".into()),
                        ("ETag", etag),
                        ("Cache-Control", cache),
                    ],
                    body: json!({"keys": published.keys}).to_string().into_bytes(),
                }
            }
            _ => Answer {
                status: "404 Not Found",
                headers: vec![("Content-Type", "text/plain".into())],
                body: b"not found".to_vec(),
            },
        }
    }
}

enum Command {
    /// Listen on this (bound) socket until told to stop.
    Serve(TcpSocket, std::sync::mpsc::Sender<()>),
    /// Close the listener and every connection; answer when done.
    Stop(std::sync::mpsc::Sender<()>),
}

/// The fake IdP. Dropping it stops the server and its thread.
pub struct FakeIdp {
    port: u16,
    shared: Arc<Shared>,
    control: Option<mpsc::UnboundedSender<Command>>,
    /// While stopped: the port, bound but not listening (connections are refused, and no other
    /// server can take the port before [`FakeIdp::resume`]).
    reservation: Mutex<Option<TcpSocket>>,
    thread: Option<JoinHandle<()>>,
}

/// A bound, non-listening socket on `port` (0 = an ephemeral one).
fn reserve(port: u16) -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    // The previous listener's closed connections may linger in TIME_WAIT on this port.
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(([127, 0, 0, 1], port).into())
        .expect("bind the IdP port");
    socket
}

impl FakeIdp {
    /// An IdP serving `keys`, JWKS `max-age=300`.
    pub fn start(keys: &[&TestKey]) -> FakeIdp {
        let idp = Self::stopped(keys);
        idp.resume();
        idp
    }

    /// An IdP whose port is reserved but refuses connections until [`FakeIdp::resume`].
    pub fn stopped(keys: &[&TestKey]) -> FakeIdp {
        let reservation = reserve(0);
        let port = reservation.local_addr().expect("bound address").port();
        let shared = Arc::new(Shared {
            issuer: format!("http://127.0.0.1:{port}"),
            published: Mutex::new(Published {
                keys: keys.iter().map(|k| k.jwk()).collect(),
                generation: 1,
                max_age: 300,
                unavailable: false,
            }),
            feed: Mutex::new(Feed {
                id: "feed-1".into(),
                entries: Vec::new(),
                page_size: 1000,
                status: None,
                hold_after: None,
                requests: 0,
                from_start: 0,
                unauthorized: 0,
                held: 0,
            }),
            requests: Mutex::new(HashMap::new()),
            not_modified: AtomicU64::new(0),
        });
        let (control, commands) = mpsc::unbounded_channel();
        let server = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-idp-{port}"))
            .spawn(move || run(server, commands))
            .expect("spawn the IdP thread");
        FakeIdp {
            port,
            shared,
            control: Some(control),
            reservation: Mutex::new(Some(reservation)),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`: the `iss` of its tokens and the base of its URLs.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.shared.issuer)
    }

    /// Claims of a valid token from this IdP (see [`valid_claims`]).
    pub fn claims(&self) -> Value {
        valid_claims(&self.shared.issuer)
    }

    /// Starts (again) listening on the same port.
    pub fn resume(&self) {
        let Some(socket) = self.reservation.lock().expect("reservation").take() else {
            return;
        };
        let (ack, done) = std::sync::mpsc::channel();
        self.send(Command::Serve(socket, ack));
        done.recv().expect("the IdP started listening");
    }

    /// Closes the listener and every open connection: the next connection is refused.
    pub fn stop(&self) {
        let mut reservation = self.reservation.lock().expect("reservation");
        if reservation.is_some() {
            return;
        }
        let (ack, done) = std::sync::mpsc::channel();
        self.send(Command::Stop(ack));
        done.recv().expect("the IdP stopped");
        *reservation = Some(reserve(self.port));
    }

    fn send(&self, command: Command) {
        self.control
            .as_ref()
            .expect("IdP running")
            .send(command)
            .expect("IdP thread alive");
    }

    /// Answer 503 to everything (`true`) or serve normally again (`false`).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.published.lock().expect("published").unavailable = unavailable;
    }

    /// The `Cache-Control: max-age` of JWKS answers.
    pub fn set_max_age(&self, seconds: u64) {
        self.shared.published.lock().expect("published").max_age = seconds;
    }

    /// Adds a key to the JWKS (a new ETag).
    pub fn publish(&self, key: &TestKey) {
        let mut published = self.shared.published.lock().expect("published");
        published.keys.push(key.jwk());
        published.generation += 1;
    }

    /// Removes the key with this kid from the JWKS (a new ETag).
    pub fn withdraw(&self, kid: &str) {
        let mut published = self.shared.published.lock().expect("published");
        published.keys.retain(|k| k["kid"] != kid);
        published.generation += 1;
    }

    /// Requests received for `path` (any answer, 503 included).
    pub fn requests(&self, path: &str) -> u64 {
        self.shared
            .requests
            .lock()
            .expect("request counts")
            .get(path)
            .map_or(0, |seen| seen.0)
    }

    /// When the last request for `path` arrived.
    pub fn last_request_at(&self, path: &str) -> Option<Instant> {
        self.shared
            .requests
            .lock()
            .expect("request counts")
            .get(path)
            .map(|seen| seen.1)
    }

    pub fn jwks_requests(&self) -> u64 {
        self.requests("/jwks.json")
    }

    pub fn discovery_requests(&self) -> u64 {
        self.requests("/.well-known/openid-configuration")
    }

    /// JWKS requests answered 304 (their `If-None-Match` named the current ETag).
    pub fn not_modified_answers(&self) -> u64 {
        self.shared.not_modified.load(Ordering::Relaxed)
    }
}

/// The feed's API for tests: entries in, faults on.
impl FakeIdp {
    /// `<issuer>/revocations`.
    pub fn feed_url(&self) -> String {
        format!("{}/revocations", self.shared.issuer)
    }

    fn feed(&self) -> std::sync::MutexGuard<'_, Feed> {
        self.shared.feed.lock().expect("feed")
    }

    /// Appends a raw entry (any kind, any fields).
    pub fn feed_entry(&self, entry: Value) {
        self.feed().entries.push(entry);
    }

    /// Revokes the token with this `jti` until `exp`.
    pub fn revoke_jti(&self, jti: &str, exp: u64) {
        self.feed_entry(jti_entry(jti, exp));
    }

    /// Revokes `sub`'s tokens issued at or before `before`, until `exp`.
    pub fn revoke_subject(&self, sub: &str, before: u64, exp: u64) {
        self.feed_entry(json!({"kind": "subject", "sub": sub, "before": before, "exp": exp}));
    }

    /// A new feed database: a new id, these entries, cursors from the start.
    pub fn switch_feed(&self, id: &str, entries: Vec<Value>) {
        let mut feed = self.feed();
        feed.id = id.into();
        feed.entries = entries;
    }

    /// The same feed restored from a backup holding only its first `len` entries: a cursor
    /// beyond them answers `reset`.
    pub fn restore_feed(&self, len: usize) {
        self.feed().entries.truncate(len);
    }

    /// Entries per page (at most; the request's `limit` may ask fewer).
    pub fn set_feed_page_size(&self, entries: usize) {
        self.feed().page_size = entries.max(1);
    }

    /// Answer every feed request with this status (`None`: serve again).
    pub fn set_feed_status(&self, status: Option<u16>) {
        self.feed().status = status;
    }

    /// Answer 503 to requests with exactly this `after` (`None`: release).
    pub fn hold_feed_at(&self, after: Option<&str>) {
        self.feed().hold_after = after.map(str::to_string);
    }

    /// Feed requests received, in all.
    pub fn feed_requests(&self) -> u64 {
        self.feed().requests
    }

    /// Feed requests without `after` (a follower starting from the beginning).
    pub fn feed_requests_from_start(&self) -> u64 {
        self.feed().from_start
    }

    /// Feed requests refused for their credentials.
    pub fn feed_unauthorized(&self) -> u64 {
        self.feed().unauthorized
    }

    /// Feed requests answered 503 by [`FakeIdp::hold_feed_at`].
    pub fn feed_held(&self) -> u64 {
        self.feed().held
    }
}

/// A `jti` entry of the feed.
pub fn jti_entry(jti: &str, exp: u64) -> Value {
    json!({"kind": "jti", "jti": jti, "exp": exp})
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        // Closing the command channel ends the server loop, which closes every connection.
        self.control.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The IdP thread: a current-thread runtime obeying commands until the handle drops.
fn run(shared: Arc<Shared>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the IdP runtime");
    runtime.block_on(async move {
        let mut serving: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)> = None;
        while let Some(command) = commands.recv().await {
            match command {
                Command::Serve(socket, ack) => {
                    let listener = socket.listen(1024).expect("listen on the IdP port");
                    let (stop, stopped) = watch::channel(false);
                    let task = tokio::spawn(accept(listener, shared.clone(), stopped));
                    serving = Some((stop, task));
                    let _ = ack.send(());
                }
                Command::Stop(ack) => {
                    if let Some((stop, task)) = serving.take() {
                        let _ = stop.send(true);
                        let _ = task.await;
                    }
                    let _ = ack.send(());
                }
            }
        }
        if let Some((stop, task)) = serving.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    });
}

async fn accept(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve(stream, shared.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Aborting a connection's task drops its stream: the peer sees the connection close.
    connections.shutdown().await;
}

/// Serves one keep-alive connection: GET requests, bodies (if any) read and ignored.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buffer.len() > 64 * 1024 {
                return;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        buffer.drain(..head_end);

        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split(' ');
        let _method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or("/");
        let http10 = parts.next() == Some("HTTP/1.0");
        let mut headers: HashMap<String, String> = HashMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let mut body_left: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while body_left > 0 {
            let take = body_left.min(buffer.len());
            buffer.drain(..take);
            body_left -= take;
            if body_left == 0 {
                break;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let close = http10
            || headers
                .get("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));

        let answer = shared.answer(target, &headers);
        let mut response = format!("HTTP/1.1 {}\r\n", answer.status);
        for (name, value) in &answer.headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
        if close {
            response.push_str("Connection: close\r\n");
        }
        response.push_str("\r\n");
        let mut bytes = response.into_bytes();
        bytes.extend_from_slice(&answer.body);
        if stream.write_all(&bytes).await.is_err() || close {
            return;
        }
    }
}
