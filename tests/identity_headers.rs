//! The security invariant "a request never reaches an upstream with identity headers the client
//! wrote itself", end to end with the real issuer.
//!
//! Given routes of each auth mode (required, optional, none), when a client forges headers of
//! the identity namespace (`X-User-`, `X-Jwt-`, `X-Auth-`, `X-Gatehouse-`: any case, several
//! copies), the upstream sees none of them: only what the gateway verified (one copy each), or
//! nothing at all for an anonymous request. Headers outside the namespace pass untouched. Over
//! HTTP/1.1 (raw bytes, so case and duplicates really go on the wire), cleartext HTTP/2 (h2c)
//! and HTTP/2 over TLS.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::issuer::{echoed, namespace_headers, upstream_header, wait_ready, Issuer};
use support::{free_port, wait_for_listener, Echo, Gateway, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GATEWAY: &str = r#"{SERVER}
listeners:
  - address: 127.0.0.1:{HTTP}
  - address: 127.0.0.1:@H2C@
    h2c: true
  - address: 127.0.0.1:{HTTPS}
    tls: true
admin:
  address: 127.0.0.1:{ADMIN}
tls:
  certificates:
    - cert: gw.crt
      key: gw.key
embedded:
  identity: identity.yaml
@AUTH@
upstreams:
  echo:
    targets: ["@ECHO@"]
routes:
  - name: required
    match: {path_prefix: /required/}
    upstream: echo
    auth: {mode: required}
  - name: optional
    match: {path_prefix: /optional/}
    upstream: echo
    auth: {mode: optional}
  - name: anonymous
    match: {path_prefix: /anonymous/}
    upstream: echo
"#;

/// What a client forges: names in every case, repeated, across all four prefixes.
const FORGED: &[(&str, &str)] = &[
    ("X-User-ID", "admin"),
    ("x-user-id", "mallory"),
    ("X-USER-ROLES", "admin"),
    ("X-User-Roles", "superuser"),
    ("X-Jwt-Email", "evil@example.com"),
    ("x-JWT-email", "evil2@example.com"),
    ("X-Auth-Whatever", "1"),
    ("X-Gatehouse-Assertion", "forged.assertion.value"),
    ("X-User-Department", "forged"),
];

/// Outside the namespace: must reach the upstream as sent.
const KEPT: &[(&str, &str)] = &[
    ("X-Request-Color", "blue"),
    ("X-Username", "not-an-identity"),
];

const HOST: &str = "gw.test";

struct Stack {
    gw: Gateway,
    issuer: Issuer,
    h2c_port: u16,
    ca: TestCa,
    _echo: Echo,
}

async fn start() -> Stack {
    let issuer = Issuer::new();
    let echo = Echo::start("echo");
    let ca = TestCa::new("identity-headers test ca");
    let dir = tempfile::tempdir().expect("temp dir");
    ca.issue(dir.path(), "gw", &[HOST]);
    let h2c_port = free_port();
    let config = GATEWAY
        .replace("@AUTH@", &issuer.auth_section("", ""))
        .replace("@ECHO@", &echo.addr())
        .replace("@H2C@", &h2c_port.to_string());
    let gw = Gateway::start_prepared(
        dir,
        &[
            ("gatehouse.yaml", &config),
            ("identity.yaml", &issuer.identity_yaml("")),
        ],
    );
    wait_for_listener(h2c_port, "the h2c listener");
    issuer.wait_serving().await;
    wait_ready(&gw).await;
    Stack {
        gw,
        issuer,
        h2c_port,
        ca,
        _echo: echo,
    }
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    /// HTTP/1.1 written byte by byte: header case and duplicates as the client chose.
    Http1Raw,
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
    /// HTTP/2 negotiated by ALPN over TLS.
    TlsH2,
}

impl Stack {
    /// Sends a GET of `path` over `transport` with the forged and kept headers (and the token
    /// as `Authorization: Bearer` when given); returns what the echo upstream received.
    async fn send(
        &self,
        transport: Transport,
        path: &str,
        token: Option<&str>,
    ) -> serde_json::Value {
        let mut headers: Vec<(&str, String)> = FORGED
            .iter()
            .chain(KEPT)
            .map(|(n, v)| (*n, v.to_string()))
            .collect();
        if let Some(t) = token {
            headers.push(("Authorization", format!("Bearer {t}")));
        }
        match transport {
            Transport::Http1Raw => raw_http1(self.gw.http_port, path, &headers).await,
            Transport::H2c => {
                let client = reqwest::Client::builder()
                    .http2_prior_knowledge()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .expect("h2c client");
                let url = format!("http://127.0.0.1:{}{path}", self.h2c_port);
                self.send_with(&client, &url, &headers).await
            }
            Transport::TlsH2 => {
                let addr: SocketAddr = ([127, 0, 0, 1], self.gw.https_port).into();
                let client = reqwest::Client::builder()
                    .use_rustls_tls()
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(self.ca.reqwest_root())
                    .resolve(HOST, addr)
                    .timeout(Duration::from_secs(20))
                    .build()
                    .expect("tls client");
                let url = format!("https://{HOST}:{}{path}", self.gw.https_port);
                self.send_with(&client, &url, &headers).await
            }
        }
    }

    async fn send_with(
        &self,
        client: &reqwest::Client,
        url: &str,
        headers: &[(&str, String)],
    ) -> serde_json::Value {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            // `append`, not `insert`: every duplicate goes out.
            map.append(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                value.parse().expect("header value"),
            );
        }
        let resp = client
            .get(url)
            .headers(map)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
        assert_eq!(resp.version(), reqwest::Version::HTTP_2, "{url}");
        echoed(resp).await
    }
}

/// One HTTP/1.1 request written as raw bytes (`Connection: close`), the answer read to the end.
async fn raw_http1(port: u16, path: &str, headers: &[(&str, String)]) -> serde_json::Value {
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the gateway");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway answers and closes")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of header in: {text}"));
    let status = head.lines().next().unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 200"), "{head}\n\n{body}");
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not the echo's JSON ({e}): {body}"))
}

/// The payload of a chunked body (RFC 9112 §7.1), extensions and trailers ignored.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size_line, rest) = body.split_once("\r\n").expect("chunk size line");
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

fn kept_headers_arrive(echo: &serde_json::Value, what: &str) {
    for (name, value) in KEPT {
        assert_eq!(
            upstream_header(echo, &name.to_ascii_lowercase()),
            vec![value.to_string()],
            "{what}: {name} outside the namespace must reach the upstream"
        );
    }
}

/// Exactly the verified identity of alice (password grant with the email scope), one copy each.
fn alice_verified() -> BTreeMap<String, Vec<String>> {
    [
        ("x-user-id", "alice"),
        ("x-user-roles", "admin,editor"),
        ("x-jwt-email", "alice@example.com"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), vec![v.to_string()]))
    .collect()
}

async fn forged_headers_never_reach_the_upstream(transport: Transport) {
    let s = start().await;
    let token = s
        .issuer
        .password_token("alice", "alice-password", "openid email documents:read")
        .await;

    for (path, token, expected, what) in [
        (
            "/required/a",
            Some(token.as_str()),
            alice_verified(),
            "required route, valid token",
        ),
        (
            "/optional/b",
            Some(token.as_str()),
            alice_verified(),
            "optional route, valid token",
        ),
        (
            "/optional/c",
            None,
            BTreeMap::new(),
            "optional route, no token",
        ),
        ("/anonymous/d", None, BTreeMap::new(), "anonymous route"),
        (
            "/anonymous/e",
            Some(token.as_str()),
            BTreeMap::new(),
            "anonymous route, a token",
        ),
    ] {
        let echo = s.send(transport, path, token).await;
        assert_eq!(echo["path"], path, "{transport:?} {what}");
        assert_eq!(
            namespace_headers(&echo),
            expected,
            "{transport:?} {what}: the upstream saw these identity headers"
        );
        kept_headers_arrive(&echo, &format!("{transport:?} {what}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_http1_forged_identity_headers_never_reach_the_upstream() {
    forged_headers_never_reach_the_upstream(Transport::Http1Raw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_h2c_forged_identity_headers_never_reach_the_upstream() {
    forged_headers_never_reach_the_upstream(Transport::H2c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_h2_forged_identity_headers_never_reach_the_upstream() {
    forged_headers_never_reach_the_upstream(Transport::TlsH2).await;
}
