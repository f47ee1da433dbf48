//! Given an anonymous `/api/` prefix route beside a `documents` route, when a client sends a path
//! with dot segments, encoded dots, encoded slashes or doubled slashes, the route is chosen on the
//! normalised path and the upstream receives that same path (issue #11: one path for routing and
//! for the upstream). Requests are written by hand on a TcpStream: reqwest normalises paths itself.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::{eventually, Echo, Gateway};

fn config(api: &Echo, documents: &Echo, paths: &str) -> String {
    format!(
        r#"{{SERVER}}
listeners:
  - address: 127.0.0.1:{{HTTP}}
    h2c: true
admin:
  address: 127.0.0.1:{{ADMIN}}
{paths}
upstreams:
  api:
    targets: ["{api}"]
  documents:
    targets: ["{documents}"]
routes:
  - name: api
    match:
      path_prefix: /api/
    upstream: api
  - name: documents
    match:
      path_prefix: /documents/
    upstream: documents
"#,
        api = api.addr(),
        documents = documents.addr()
    )
}

/// One answer read off the wire: status and JSON body.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    /// The echo upstream's description of what it received, after checking who answered.
    fn echoed_by(&self, server: &str) -> &Value {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(self.body["server"], server, "{}", self.body);
        &self.body
    }

    /// The gateway's own 400 `bad_path` answer; returns its message.
    fn bad_path(&self) -> &str {
        assert_eq!(self.status, 400, "{}", self.body);
        assert_eq!(self.body["error"], "bad_path", "{}", self.body);
        self.body["message"].as_str().unwrap_or_default()
    }
}

/// Sends `GET <target>` exactly as written and reads the whole answer (the connection closes).
fn get(gw: &Gateway, target: &str) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", gw.http_port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"));
    Answer { status, body }
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_and_forwards_the_normalised_path() {
    let (api, documents) = (Echo::start("api"), Echo::start("documents"));
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&api, &documents, ""))]);

    // The bypass of issue #11: the `api` prefix no longer takes a path that leaves it.
    let v = get(&gw, "/api/../documents/42");
    let v = v.echoed_by("documents");
    assert_eq!(v["path"], "/documents/42");
    assert_eq!(v["query"], Value::Null);

    // Encoded dots are dot segments too; the query is kept as sent.
    let v = get(&gw, "/api/%2e%2e/documents/42?next=/api/../x");
    let v = v.echoed_by("documents");
    assert_eq!(v["path"], "/documents/42");
    assert_eq!(v["query"], "next=/api/../x");
    let v = get(&gw, "/api/%2E./documents/7/.");
    assert_eq!(v.echoed_by("documents")["path"], "/documents/7/");

    // Unreserved escapes are decoded (and routed on), other escapes upper-cased.
    let v = get(&gw, "/%61pi/caf%c3%a9");
    let v = v.echoed_by("api");
    assert_eq!(v["path"], "/api/caf%C3%A9");

    // `//` merges by default.
    let v = get(&gw, "//documents///42");
    assert_eq!(v.echoed_by("documents")["path"], "/documents/42");

    // The access log shows the path that was routed and forwarded.
    eventually(
        "the access log names the normalised path",
        Duration::from_secs(10),
        || {
            let log = gw.access_log();
            async move { log.contains(r#""path":"/documents/42","route":"documents""#) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_path_is_forwarded_byte_identical() {
    let (api, documents) = (Echo::start("api"), Echo::start("documents"));
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&api, &documents, ""))]);
    let v = get(
        &gw,
        "/documents/caf%C3%A9/a%20b/..x/.well-known?q=%2e%2e&r=/../&s=%2f",
    );
    let v = v.echoed_by("documents");
    assert_eq!(v["path"], "/documents/caf%C3%A9/a%20b/..x/.well-known");
    assert_eq!(v["query"], "q=%2e%2e&r=/../&s=%2f");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_paths_get_400_with_the_gateways_json_error() {
    let (api, documents) = (Echo::start("api"), Echo::start("documents"));
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&api, &documents, ""))]);

    for target in ["/..", "/api/../../documents/42", "/%2e%2e/documents/42"] {
        let message = get(&gw, target).bad_path().to_string();
        assert!(message.contains("above the root"), "{target}: {message}");
        assert!(!message.contains("documents"), "the path is not echoed");
    }
    for target in ["/api/a%2Fb", "/api/a%2fb", "/api/a%5Cb", "/api/a\\b"] {
        let message = get(&gw, target).bad_path().to_string();
        assert!(message.contains("slash"), "{target}: {message}");
    }
    for target in ["/api/%", "/api/%4", "/api/%G1", "/api/%zz"] {
        let message = get(&gw, target).bad_path().to_string();
        assert!(message.contains("percent-escape"), "{target}: {message}");
    }

    // Each is one access-log line with the rejection's code.
    eventually(
        "bad paths are logged as bad_path",
        Duration::from_secs(10),
        || {
            let log = gw.access_log();
            async move { log.matches(r#""error":"bad_path""#).count() == 11 }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_forwards_escaped_slashes_and_merging_can_be_turned_off() {
    let (api, documents) = (Echo::start("api"), Echo::start("documents"));
    let paths = "paths:\n  merge_slashes: false\n  escaped_slashes: keep\n";
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&api, &documents, paths))]);

    let v = get(&gw, "/api/a%2Fb");
    assert_eq!(v.echoed_by("api")["path"], "/api/a%2Fb");
    let v = get(&gw, "/api/a%2fb%5c");
    assert_eq!(v.echoed_by("api")["path"], "/api/a%2Fb%5C");
    // Kept, an encoded slash does not separate segments here: `..%2F..` is not a dot segment.
    let v = get(&gw, "/api/..%2F../x");
    assert_eq!(v.echoed_by("api")["path"], "/api/..%2F../x");

    let v = get(&gw, "/documents//42");
    assert_eq!(v.echoed_by("documents")["path"], "/documents//42");
    // Dot segments are still removed, climbing above the root still refused.
    let v = get(&gw, "/api//../documents/42");
    assert_eq!(v.echoed_by("api")["path"], "/api/documents/42");
    get(&gw, "/api/../../x").bad_path();
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_requests_take_the_same_path() {
    let (api, documents) = (Echo::start("api"), Echo::start("documents"));
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&api, &documents, ""))]);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("h2c client");

    // reqwest resolves dot segments itself; escapes and doubled slashes reach the gateway.
    let resp = h2.get(gw.url("/api/a%2Fb")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    support::error_body(resp, 400, "bad_path").await;

    let resp = h2
        .get(gw.url("//%64ocuments//42?q=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("echo json");
    assert_eq!(v["server"], "documents");
    assert_eq!(v["path"], "/documents/42");
    assert_eq!(v["query"], "q=1");
    // The rewritten URI kept its authority: the upstream still gets the client's Host.
    let expected_host = format!("127.0.0.1:{}", gw.http_port);
    assert_eq!(v["headers"]["host"], serde_json::json!([expected_host]));
}
