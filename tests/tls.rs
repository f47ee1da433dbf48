//! TLS: certificates by SNI, HTTP/2 by ALPN, redirects to HTTPS, verified upstream TLS.

mod support;

use std::net::SocketAddr;

use support::{Echo, Gateway, Ports, TestCa};

fn tls_config(echo: &Echo) -> String {
    format!(
        r#"{{SERVER}}
limits:
  request_header_timeout: {{HEADER_TIMEOUT}}
listeners:
  - address: 127.0.0.1:{{HTTP}}
    redirect_https_port: {{HTTPS}}
  - address: 127.0.0.1:{{HTTPS}}
    tls: true
admin:
  address: 127.0.0.1:{{ADMIN}}
tls:
  certificates:
    - cert: one.crt
      key: one.key
    - cert: two.crt
      key: two.key
upstreams:
  echo:
    targets: ["{}"]
routes:
  - name: all
    match:
      path_prefix: /
    upstream: echo
"#,
        echo.addr()
    )
}

/// A client that trusts `ca` and resolves the test names to the gateway.
fn tls_client(ca: &TestCa, port: u16, names: &[&str]) -> reqwest::Client {
    tls_client_builder(ca, port, names)
        .build()
        .expect("tls client")
}

/// `tls_client`'s settings, for a test to add its own.
fn tls_client_builder(ca: &TestCa, port: u16, names: &[&str]) -> reqwest::ClientBuilder {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.reqwest_root())
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none());
    for name in names {
        builder = builder.resolve(name, addr);
    }
    builder
}

fn peer_cert_names(resp: &reqwest::Response) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let info = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info");
    let der = info.peer_certificate().expect("peer certificate");
    let (_, cert) = X509Certificate::from_der(der).expect("x509");
    let san = cert
        .subject_alternative_name()
        .expect("san")
        .expect("has san");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

fn start_with_two_certs(echo: &Echo, ca: &TestCa) -> Gateway {
    start_with_two_certs_and_header_timeout(echo, ca, "20s")
}

fn start_with_two_certs_and_header_timeout(
    echo: &Echo,
    ca: &TestCa,
    header_timeout: &str,
) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    ca.issue(dir.path(), "one", &["one.test"]);
    ca.issue(dir.path(), "two", &["two.test", "*.two.test"]);
    start_in(echo, dir, header_timeout)
}

/// Starts the gateway on `tls_config` in `dir`, which holds one.{crt,key} and two.{crt,key}.
fn start_in(echo: &Echo, dir: tempfile::TempDir, header_timeout: &str) -> Gateway {
    start_in_with(tls_config(echo), dir, header_timeout)
}

/// `start_in` with the configuration `cfg` (`tls_config`, edited).
fn start_in_with(cfg: String, dir: tempfile::TempDir, header_timeout: &str) -> Gateway {
    let ports = Ports::new();
    support::write(
        dir.path(),
        "gatehouse.yaml",
        &cfg.replace("{SERVER}", &support::server_section(dir.path()))
            .replace("{HTTP}", &ports.http.to_string())
            .replace("{HTTPS}", &ports.https.to_string())
            .replace("{ADMIN}", &ports.admin.to_string())
            .replace("{HEADER_TIMEOUT}", header_timeout),
    );
    Gateway::start_in(dir, ports)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sni_name_gets_its_own_certificate_and_h2_is_negotiated() {
    let echo = Echo::start("a");
    let ca = TestCa::new("test ca");
    let gw = start_with_two_certs(&echo, &ca);
    let c = tls_client(
        &ca,
        gw.https_port,
        &["one.test", "two.test", "api.two.test"],
    );

    for (host, expected) in [
        ("one.test", "one.test"),
        ("two.test", "two.test"),
        ("api.two.test", "two.test"),
    ] {
        let resp = c
            .get(format!("https://{host}:{}/hello", gw.https_port))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(resp.status(), 200, "{host}");
        assert!(
            peer_cert_names(&resp).contains(&expected.to_string()),
            "{host}"
        );
        assert_eq!(
            resp.version(),
            reqwest::Version::HTTP_2,
            "ALPN should pick h2 for {host}"
        );
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            v["headers"]["x-forwarded-proto"],
            serde_json::json!(["https"])
        );
    }

    // An HTTP/1.1-only client still works on the same listener.
    let h1 = tls_client_builder(&ca, gw.https_port, &["one.test"])
        .http1_only()
        .build()
        .unwrap();
    let resp = h1
        .get(format!("https://one.test:{}/", gw.https_port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_rsa_certificate_serves_tls_1_3_and_tls_1_2_clients() {
    let echo = Echo::start("a");
    let ca = TestCa::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    ca.issue_rsa(dir.path(), "one", &["one.test"]);
    ca.issue(dir.path(), "two", &["two.test"]);
    let gw = start_in(&echo, dir, "20s");

    for max in [
        reqwest::tls::Version::TLS_1_3,
        reqwest::tls::Version::TLS_1_2,
    ] {
        let client = tls_client_builder(&ca, gw.https_port, &["one.test"])
            .max_tls_version(max)
            .build()
            .unwrap();
        let resp = client
            .get(format!("https://one.test:{}/", gw.https_port))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{max:?}: {e:?}"));
        assert_eq!(resp.status(), 200, "{max:?}");
        assert_eq!(peer_cert_names(&resp), ["one.test"], "{max:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_listener_redirects_to_https_keeping_host_and_path() {
    let echo = Echo::start("a");
    let ca = TestCa::new("test ca");
    let gw = start_with_two_certs(&echo, &ca);
    let resp = support::client()
        .get(gw.url("/docs/1?x=y"))
        .header("host", "one.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://one.test:{}/docs/1?x=y", gw.https_port).as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificate_files_are_served_after_reload_without_restart() {
    let echo = Echo::start("a");
    let ca = TestCa::new("first ca");
    let gw = start_with_two_certs(&echo, &ca);
    let version = gw.config_version().await;

    let new_ca = TestCa::new("second ca");
    new_ca.issue(gw.dir.path(), "one", &["one.test"]);
    // Two file writes: wait until the reload saw both (the key must match the certificate).
    support::eventually(
        "reload with the new certificate",
        support::READY_TIMEOUT,
        || async {
            gw.config_version().await > version
                && tls_client(&new_ca, gw.https_port, &["one.test"])
                    .get(format!("https://one.test:{}/", gw.https_port))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    // The old CA no longer verifies one.test, but two.test is untouched.
    let old = tls_client(&ca, gw.https_port, &["one.test", "two.test"]);
    assert!(old
        .get(format!("https://one.test:{}/", gw.https_port))
        .send()
        .await
        .is_err());
    assert!(old
        .get(format!("https://two.test:{}/", gw.https_port))
        .send()
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_is_verified_against_sni_and_a_private_ca() {
    let echo = Echo::start("origin");
    let ca = TestCa::new("internal ca");
    // The TLS upstream: a second gateway terminating TLS for internal.test in front of the echo.
    let upstream = start_with_two_certs(&echo, &ca);
    std::fs::write(upstream.path("ca.pem"), &ca.cert_pem).unwrap();

    let edge_cfg = |sni: &str| {
        format!(
            r#"{{SERVER}}
listeners:
  - address: 127.0.0.1:{{HTTP}}
admin:
  address: 127.0.0.1:{{ADMIN}}
upstreams:
  internal:
    targets: ["127.0.0.1:{port}"]
    tls:
      sni: {sni}
      ca_file: {ca}
routes:
  - name: all
    match:
      path_prefix: /
    upstream: internal
"#,
            port = upstream.https_port,
            ca = upstream.path("ca.pem").display()
        )
    };
    let good = Gateway::start(&[("gatehouse.yaml", &edge_cfg("one.test"))]);
    let resp = support::client()
        .get(good.url("/through"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["server"], "origin");
    assert_eq!(v["path"], "/through");

    // A name the upstream certificate does not carry fails verification: 502, never a bypass.
    let wrong = Gateway::start(&[("gatehouse.yaml", &edge_cfg("other.test"))]);
    let resp = support::client()
        .get(wrong.url("/through"))
        .send()
        .await
        .unwrap();
    support::error_body(resp, 502, "upstream_unreachable").await;
}

#[test]
fn a_broken_certificate_stops_startup_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.crt"),
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
    let cfg = format!(
        "{}listeners:\n  - address: 127.0.0.1:{}\n    tls: true\ntls:\n  certificates:\n    - cert: bad.crt\n      key: bad.key\n",
        support::server_section(dir.path()),
        support::free_port()
    );
    support::write(dir.path(), "gatehouse.yaml", &cfg);
    let out = std::process::Command::new(support::BIN)
        .arg("--config")
        .arg(dir.path().join("gatehouse.yaml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "exits with an error, not a panic"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tls.certificates[0]"), "{stderr}");
    assert!(
        stderr.contains("bad.crt: not an X.509 certificate"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A gateway with one plain `h2c` listener in front of `echo`, and an HTTP/2 client for it.
fn h2c_gateway(echo: &Echo) -> (Gateway, reqwest::Client) {
    let cfg = format!(
        "{{SERVER}}listeners:\n  - address: 127.0.0.1:{{HTTP}}\n    h2c: true\nadmin:\n  address: 127.0.0.1:{{ADMIN}}\nupstreams:\n  echo:\n    targets: [\"{}\"]\nroutes:\n  - name: all\n    match:\n      path_prefix: /\n    upstream: echo\n",
        echo.addr()
    );
    let gw = Gateway::start(&[("gatehouse.yaml", &cfg)]);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    (gw, h2)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_listener_with_h2c_speaks_cleartext_http2_and_http1() {
    let echo = Echo::start("a");
    let (gw, h2) = h2c_gateway(&echo);
    let resp = h2.get(gw.url("/h2c")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let resp = support::client().get(gw.url("/h1")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_request_over_the_header_limit_gets_the_gateways_431_on_a_live_connection() {
    let echo = Echo::start("a");
    let (gw, _) = h2c_gateway(&echo);
    // One connection, driven by hand: every request below must be answered on it.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.http_port))
        .await
        .expect("connect");
    let (mut h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    // Over `limits.max_request_header_bytes` (64 KiB) by a little: before, HTTP/2's own limit
    // (also 64 KiB, counted with 32 bytes more per field) answered with a bare 431 or closed the
    // connection, where HTTP/1 got the gateway's 431.
    for (big, status, error) in [
        (Some(66 * 1024), 431, Some("request_header_too_large")),
        (Some(100 * 1024), 431, Some("request_header_too_large")),
        (None, 200, None),
    ] {
        let mut req = http::Request::get(gw.url("/big"));
        if let Some(size) = big {
            req = req.header("x-big", "a".repeat(size));
        }
        h2 = h2.ready().await.expect("the same connection, still open");
        let (response, _) = h2
            .send_request(req.body(()).unwrap(), true)
            .expect("a stream on the same connection");
        let response = response.await.expect("an answer, not a reset");
        assert_eq!(response.status(), status);
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("the body");
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        if let Some(error) = error {
            let json: serde_json::Value =
                serde_json::from_slice(&bytes).expect("a JSON error body");
            assert_eq!(json["error"], error);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_failing_before_a_request_are_counted_and_logged_once_per_kind() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const CLIENTS: usize = 40;
    let echo = Echo::start("a");
    let ca = TestCa::new("test ca");
    let gw = start_with_two_certs(&echo, &ca);
    for _ in 0..CLIENTS {
        // Plain text on the TLS listener: the handshake fails.
        let mut tls = TcpStream::connect(("127.0.0.1", gw.https_port))
            .await
            .expect("connect tls");
        tls.write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("send");
        let _ = tls.read(&mut [0; 64]).await;
        // One byte of a request header, then gone.
        let mut plain = TcpStream::connect(("127.0.0.1", gw.http_port))
            .await
            .expect("connect plain");
        plain.write_all(b"G").await.expect("send");
    }

    for kind in ["tls_handshake", "request_header_read"] {
        let series = format!("gatehouse_downstream_connection_errors_total{{kind=\"{kind}\"}}");
        // At least: the harness's readiness probe is one more failed handshake.
        support::eventually(
            &format!("{series} >= {CLIENTS}"),
            support::READY_TIMEOUT,
            || async { gw.metric(&series).await >= CLIENTS as f64 },
        )
        .await;
    }
    // One example of each, not one line per connection.
    let stderr = gw.stderr();
    assert_eq!(
        stderr.matches("TLS handshake failed").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("while reading request headers").count(),
        1,
        "{stderr}"
    );

    let resp = tls_client(&ca, gw.https_port, &["one.test"])
        .get(format!("https://one.test:{}/", gw.https_port))
        .send()
        .await
        .expect("a good client after the bad ones");
    assert_eq!(resp.status(), 200);
}

/// One `GET /` over a new TLS connection with `config`: how the handshake went, and the status
/// line. Reading the response also takes in the tickets the server sends after the handshake.
fn get_over_new_connection(
    config: &std::sync::Arc<rustls::ClientConfig>,
    port: u16,
) -> (rustls::HandshakeKind, String) {
    use std::io::{Read, Write};
    let name = rustls::pki_types::ServerName::try_from("one.test").expect("name");
    let mut conn = rustls::ClientConnection::new(config.clone(), name).expect("client");
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(support::READY_TIMEOUT))
        .expect("timeout");
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: one.test\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let kind = conn.handshake_kind().expect("handshake done");
    let response = String::from_utf8_lossy(&response);
    let status = response.lines().next().unwrap_or_default().to_string();
    (kind, status)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_returning_client_resumes_its_session_with_a_ticket_over_tls_1_3_and_1_2() {
    let echo = Echo::start("a");
    let ca = TestCa::new("test ca");
    let gw = start_with_two_certs(&echo, &ca);
    let port = gw.https_port;
    let clients: Vec<_> = [&rustls::version::TLS13, &rustls::version::TLS12]
        .into_iter()
        .map(|version| {
            let config = rustls_client(&ca, version);
            // Many other clients (rustls' default server-side session cache holds 256
            // sessions, two per TLS 1.3 handshake), each with no session to offer.
            let mut others = (*rustls_client(&ca, version)).clone();
            others.resumption = rustls::client::Resumption::disabled();
            (version, config, std::sync::Arc::new(others))
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        for (version, config, others) in clients {
            let first = get_over_new_connection(&config, port);
            assert_eq!(first.0, rustls::HandshakeKind::Full, "{version:?}");
            assert_eq!(first.1, "HTTP/1.1 200 OK", "{version:?}");
            // TLS 1.3 tickets are single-use: each resumption must bring the next one.
            for round in 0..3 {
                let again = get_over_new_connection(&config, port);
                assert_eq!(
                    again.0,
                    rustls::HandshakeKind::Resumed,
                    "{version:?}, resumption {round}"
                );
                assert_eq!(
                    again.1, "HTTP/1.1 200 OK",
                    "{version:?}, resumption {round}"
                );
            }
            // 300 other clients later, the ticket still resumes.
            for _ in 0..300 {
                let other = get_over_new_connection(&others, port);
                assert_eq!(
                    other,
                    (rustls::HandshakeKind::Full, "HTTP/1.1 200 OK".into())
                );
            }
            let again = get_over_new_connection(&config, port);
            assert_eq!(again.0, rustls::HandshakeKind::Resumed, "{version:?}");
        }
    })
    .await
    .expect("client thread");
}

/// A client config trusting `ca`, offering only `version`.
fn rustls_client(
    ca: &TestCa,
    version: &'static rustls::SupportedProtocolVersion,
) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.cert_pem.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("ca cert");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_without_session_tickets_makes_every_handshake_a_full_one() {
    let echo = Echo::start("a");
    let ca = TestCa::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    ca.issue(dir.path(), "one", &["one.test"]);
    ca.issue(dir.path(), "two", &["two.test"]);
    let cfg = tls_config(&echo).replace(
        "    tls: true\n",
        "    tls: true\n    session_tickets: false\n",
    );
    let gw = start_in_with(cfg, dir, "20s");
    let port = gw.https_port;
    let configs = [
        rustls_client(&ca, &rustls::version::TLS13),
        rustls_client(&ca, &rustls::version::TLS12),
    ];
    tokio::task::spawn_blocking(move || {
        for config in configs {
            for round in 0..3 {
                let got = get_over_new_connection(&config, port);
                assert_eq!(
                    got,
                    (rustls::HandshakeKind::Full, "HTTP/1.1 200 OK".into()),
                    "connection {round}"
                );
            }
        }
    })
    .await
    .expect("client thread");
}

#[test]
fn session_tickets_off_on_a_plain_listener_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    support::write(
        dir.path(),
        "gatehouse.yaml",
        "listeners:\n  - address: 127.0.0.1:1\n    session_tickets: false\nupstreams:\n  a:\n    targets: [\"127.0.0.1:2\"]\nroutes:\n  - name: all\n    match:\n      path_prefix: /\n    upstream: a\n",
    );
    let (code, text) = support::validate(dir.path());
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("listeners[0].session_tickets: session_tickets is for TLS listeners"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_handshake_left_hanging_is_closed_at_the_request_header_deadline() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let echo = Echo::start("a");
    let ca = TestCa::new("test ca");
    let gw = start_with_two_certs_and_header_timeout(&echo, &ca, "1s");
    // Pingora alone gives a handshake 60 s; the header deadline (1 s here) now covers it.
    for opening in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.https_port))
            .await
            .expect("connect");
        tcp.write_all(opening).await.expect("send");
        let started = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut [0; 64])).await;
        let held = started.elapsed();
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "{opening:?}: closed, not {read:?}"
        );
        assert!(
            held < Duration::from_secs(5),
            "{opening:?}: a hanging handshake held for {held:?}"
        );
    }
    let series = "gatehouse_downstream_connection_errors_total{kind=\"tls_handshake_timeout\"}";
    support::eventually(
        &format!("{series} >= 2"),
        support::READY_TIMEOUT,
        || async { gw.metric(series).await >= 2.0 },
    )
    .await;
    let stderr = gw.stderr();
    assert_eq!(
        stderr.matches("TLS handshake timed out").count(),
        1,
        "{stderr}"
    );

    let resp = tls_client(&ca, gw.https_port, &["one.test"])
        .get(format!("https://one.test:{}/", gw.https_port))
        .send()
        .await
        .expect("a good client after the hanging ones");
    assert_eq!(resp.status(), 200);
}
