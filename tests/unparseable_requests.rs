//! Given every listener of a gateway process that also serves the issuer and the policy
//! service, when a client sends a request that cannot be parsed (too many header fields, a URI
//! over 64 KiB, a header over 1 MiB) carrying credentials, it gets a clear error status and
//! nothing it sent reaches the log, even at `RUST_LOG=debug`.

mod support;

use std::time::Duration;

use support::slow_clients::{exchange, final_status};
use support::{free_port, server_section, Gateway, Ports};

const BASIC: &str = "Basic c3ZjOnN2Yy1zZWNyZXQtZG8tbm90LWxvZw==";
const BEARER: &str = "Bearer eyJ.do-not-log-this-token.sig";

/// The refused requests, each carrying both credentials, with the status a listener that reads
/// requests itself gives each and the proxy listener's (Pingora's plain 400 for what does not
/// parse).
fn unparseable() -> Vec<(&'static str, Vec<u8>, u16, u16)> {
    let credentials =
        format!("Authorization: {BASIC}\r\nX-Token: {BEARER}\r\nCookie: sid={BEARER}\r\n");
    let many = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{credentials}{}\r\n",
        (0..300)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let long_uri = format!(
        "GET /{}?access_token={BEARER} HTTP/1.1\r\nHost: a\r\n{credentials}\r\n",
        "a".repeat(70_000)
    );
    // Parses, but over every listener's 64 KiB limit.
    let large = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{credentials}Cookie: big={}\r\n\r\n",
        "c".repeat(70_000)
    );
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{credentials}X-Big: {}\r\n\r\n",
        "b".repeat(1_100_000)
    );
    vec![
        ("too many header fields", many.into_bytes(), 431, 400),
        ("a URI over 64 KiB", long_uri.into_bytes(), 414, 400),
        ("header fields over 64 KiB", large.into_bytes(), 431, 431),
        ("a header over 1 MiB", huge.into_bytes(), 431, 400),
    ]
}

#[test]
fn unparseable_requests_get_clear_errors_and_never_reach_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = Ports::new();
    let (id_port, id_admin, authz_port, authz_admin) =
        (free_port(), free_port(), free_port(), free_port());
    let d = dir.path();
    std::fs::create_dir_all(d.join("policies")).expect("policies");
    support::write(
        &d.join("policies"),
        "documents.yaml",
        "resource_policy:\n  id: documents\n  version: \"1\"\n  resource: document\n  rules:\n    - name: view\n      actions: [view]\n      effect: allow\n      roles: [editor]\n",
    );
    support::write(
        d,
        "authz.yaml",
        &format!(
            "listen: 127.0.0.1:{authz_port}\nadmin: 127.0.0.1:{authz_admin}\npolicies: policies\n"
        ),
    );
    support::write(
        d,
        "identity.yaml",
        &format!("issuer: http://127.0.0.1:{id_port}\nlisten: 127.0.0.1:{id_port}\nadmin: 127.0.0.1:{id_admin}\nkeys:\n  dir: keys\naudit_log: audit.log\n"),
    );
    support::write(
        d,
        "gatehouse.yaml",
        &format!(
            "{}listeners:\n  - address: 127.0.0.1:{}\nadmin:\n  address: 127.0.0.1:{}\nembedded:\n  identity: identity.yaml\n  authz: authz.yaml\n",
            server_section(d),
            ports.http,
            ports.admin
        ),
    );
    let gw = Gateway::start_logging(dir, ports, "debug");
    let listeners = [
        ("gateway proxy", gw.http_port),
        ("gateway admin", gw.admin_port),
        ("identity", id_port),
        ("identity admin", id_admin),
        ("authz", authz_port),
        ("authz admin", authz_admin),
    ];
    for (listener, port) in listeners {
        support::wait_for_listener(port, listener);
        for (what, request, status, proxy_status) in unparseable() {
            let got = exchange(port, &request, Duration::from_secs(10));
            let answered = final_status(&got.answer);
            let expected = if listener == "gateway proxy" {
                proxy_status
            } else {
                status
            };
            assert_eq!(
                answered,
                Some(expected),
                "{listener}, {what}: {}",
                got.answer
            );
        }
    }
    let log = format!("{}{}", gw.stderr(), gw.access_log());
    for secret in [
        "c3ZjOnN2Yy1zZWNyZXQtZG8tbm90LWxvZw",
        "do-not-log-this-token",
        "X-H299",
        "bbbbbbbbbbbbbbbb",
        "aaaaaaaaaaaaaaaa",
        "cccccccccccccccc",
    ] {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
    // Twenty-four refused requests write at most a line or two each, not their bytes.
    assert!(log.len() < 64 * 1024, "{} bytes of log", log.len());
}
