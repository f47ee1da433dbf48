//! Given routes in YAML, when a client sends requests, the right upstream sees the right request.

mod support;

use serde_json::Value;
use support::{client, Echo, Gateway};

fn config(a: &Echo, b: &Echo) -> String {
    format!(
        r#"{{SERVER}}
listeners:
  - address: 127.0.0.1:{{HTTP}}
admin:
  address: 127.0.0.1:{{ADMIN}}
upstreams:
  a:
    targets: ["{a}"]
  b:
    targets: ["{b}"]
routes:
  - name: catch-all
    match:
      path_prefix: /
    upstream: a
  - name: doc-template
    match:
      path: /documents/{{id}}
      methods: [GET, PUT]
    upstream: b
  - name: doc-new
    match:
      path: /documents/new
    upstream: a
  - name: doc-delete
    match:
      path: /documents/{{id}}
      methods: [DELETE]
    upstream: a
  - name: admin-host
    match:
      hosts: [admin.example.test]
      path_prefix: /
    upstream: b
  - name: wildcard-host
    match:
      hosts: ["*.apps.test"]
      path_prefix: /
    upstream: b
  - name: only-post
    match:
      path: /submit
      methods: [POST]
    upstream: a
  - name: api
    match:
      path_prefix: /api/
    upstream: b
    strip_prefix: /api
    host_override: internal.svc
"#,
        a = a.addr(),
        b = b.addr()
    )
}

async fn echo_of(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200, "expected a proxied answer");
    resp.json().await.expect("echo json")
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_host_path_template_and_method_most_specific_first() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&a, &b))]);
    let c = client();

    let server = |v: &Value| v["server"].as_str().unwrap_or_default().to_string();

    // Template beats the catch-all prefix; the exact path beats the template.
    let v = echo_of(c.get(gw.url("/documents/42")).send().await.unwrap()).await;
    assert_eq!(server(&v), "b");
    assert_eq!(v["path"], "/documents/42");
    let v = echo_of(c.get(gw.url("/documents/new")).send().await.unwrap()).await;
    assert_eq!(server(&v), "a");

    // Same template, the method decides between two routes.
    let v = echo_of(c.delete(gw.url("/documents/42")).send().await.unwrap()).await;
    assert_eq!(server(&v), "a");
    let v = echo_of(
        c.put(gw.url("/documents/42"))
            .body("x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(server(&v), "b");
    assert_eq!(v["body_bytes"], 1);

    // A deeper path is not the template: the catch-all takes it.
    let v = echo_of(c.get(gw.url("/documents/42/history")).send().await.unwrap()).await;
    assert_eq!(server(&v), "a");

    // Host: exact and wildcard hosts beat the host-less catch-all.
    let v = echo_of(
        c.get(gw.url("/x"))
            .header("host", "admin.example.test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(server(&v), "b");
    let v = echo_of(
        c.get(gw.url("/x"))
            .header("host", "Web.Apps.Test:8080")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(server(&v), "b", "host match ignores case and port");
    let v = echo_of(
        c.get(gw.url("/x"))
            .header("host", "apps.test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        server(&v),
        "a",
        "*.apps.test does not match apps.test itself"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrites_path_and_host_and_sets_forwarded_headers() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&a, &b))]);
    let resp = client()
        .get(gw.url("/api/users/7?sort=asc"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.test")
        .send()
        .await
        .unwrap();
    let v = echo_of(resp).await;
    assert_eq!(v["path"], "/users/7");
    assert_eq!(v["query"], "sort=asc");
    let h = &v["headers"];
    assert_eq!(h["host"], serde_json::json!(["internal.svc"]));
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"]),
        "client-sent XFF is replaced"
    );
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(
        h["x-forwarded-host"],
        serde_json::json!([format!("127.0.0.1")])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_1_0_request_without_host_reaches_the_upstream_with_the_targets_address() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&a, &b))]);
    let port = gw.http_port;
    let got = tokio::task::spawn_blocking(move || {
        support::slow_clients::exchange(
            port,
            b"GET /plain HTTP/1.0\r\n\r\n",
            std::time::Duration::from_secs(10),
        )
    })
    .await
    .expect("exchange");
    let (_, body) = got.answer.split_once("\r\n\r\n").expect("a whole answer");
    let v: Value = serde_json::from_str(body).expect("echo json");
    // Upstream it is HTTP/1.1, which requires a Host.
    assert_eq!(v["headers"]["host"], serde_json::json!([a.addr()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_kept_when_well_formed_and_generated_otherwise() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&a, &b))]);
    let c = client();

    let resp = c
        .get(gw.url("/x"))
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-abc.123");
    let v = echo_of(resp).await;
    assert_eq!(
        v["headers"]["x-request-id"],
        serde_json::json!(["trace-abc.123"])
    );

    let resp = c
        .get(gw.url("/x"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let returned = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(returned.len(), 32);
    assert!(returned.chars().all(|c| c.is_ascii_hexdigit()));
    let v = echo_of(resp).await;
    assert_eq!(
        v["headers"]["x-request-id"],
        serde_json::json!([returned]),
        "upstream sees the same id"
    );

    let first = c.get(gw.url("/x")).send().await.unwrap().headers()["x-request-id"].clone();
    let second = c.get(gw.url("/x")).send().await.unwrap().headers()["x-request-id"].clone();
    assert_ne!(first, second);

    // The id reaches the access log too.
    support::eventually("access log line", support::READY_TIMEOUT, || {
        let log = gw.access_log();
        async move {
            log.contains("\"request_id\":\"trace-abc.123\"")
                && log.contains("\"route\":\"catch-all\"")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_is_404_and_wrong_method_is_405_with_json_bodies() {
    let a = Echo::start("a");
    let cfg = format!(
        r#"{{SERVER}}
listeners:
  - address: 127.0.0.1:{{HTTP}}
admin:
  address: 127.0.0.1:{{ADMIN}}
upstreams:
  a:
    targets: ["{a}"]
routes:
  - name: only-post
    match:
      path: /submit
      methods: [POST, PUT]
    upstream: a
"#,
        a = a.addr()
    );
    let gw = Gateway::start(&[("gatehouse.yaml", &cfg)]);
    let c = client();

    let resp = c
        .get(gw.url("/nowhere"))
        .header("x-request-id", "rid-404")
        .send()
        .await
        .unwrap();
    let body = support::error_body(resp, 404, "no_route").await;
    assert_eq!(body["request_id"], "rid-404");

    let resp = c.get(gw.url("/submit")).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "POST, PUT");
    let body = support::error_body(resp, 405, "method_not_allowed").await;
    assert_eq!(body["request_id"].as_str().map(str::len), Some(32));

    let resp = c.post(gw.url("/submit")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_requests_get_4xx_and_the_gateway_keeps_working() {
    use std::io::{Read, Write};
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&a, &b))]);

    let raw = |bytes: Vec<u8>| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.http_port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let _ = s.write_all(&bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    };
    let garbage = raw(b"THIS IS NOT HTTP\r\n\r\n".to_vec());
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "got {garbage:?}"
    );

    let mut huge = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 200 * 1024));
    huge.extend(b"\r\n\r\n");
    let answer = raw(huge);
    assert!(answer.starts_with("HTTP/1.1 431"), "got {answer:?}");
    assert!(answer.contains("request_header_too_large"));

    let resp = client().get(gw.url("/still-fine")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_hanging_up_is_access_logged_but_not_an_error_log() {
    use std::io::Write;
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&a, &b))]);
    {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.http_port)).unwrap();
        s.write_all(b"GET /delay/500 HTTP/1.1\r\nHost: x\r\nX-Request-Id: hung-up\r\n\r\n")
            .unwrap();
        // Dropped here: the client goes away before the upstream answers.
    }
    support::eventually(
        "the request reaches the access log",
        support::READY_TIMEOUT,
        || {
            let log = gw.access_log();
            async move { log.contains("\"request_id\":\"hung-up\"") }
        },
    )
    .await;
    let stderr = gw.stderr();
    assert!(!stderr.contains("Downstream ConnectionClosed"), "{stderr}");
    assert!(
        !stderr.contains("\u{1b}["),
        "no colour codes when stderr is a file"
    );
}
