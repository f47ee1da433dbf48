//! Given limits on what a client may make the policy service wait for, when a client drips its
//! header, lies about its body's length, asks to continue with too large a body or stalls in the
//! middle of one, it gets a prompt answer or a closed connection, on the decision listener and on
//! the admin listener alike.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::slow_clients::{drip_header, exchange, final_status, Exchange};
use support::{ask, office_hours, Authz, STANDARD_POLICIES};

/// Old behaviour to beat: Pingora waits up to 60 s per read, so these clients were held for a
/// minute or more. Every bound below is far under that, and generous for a loaded machine.
const PROMPT: Duration = Duration::from_secs(5);

const AUTHORIZE: &str = "/authz/v1/authorize";

fn authz() -> Authz {
    Authz::start(
        "max_body_bytes: 1000\ntimeouts:\n  header: 1s\n  body: 1s\n",
        &STANDARD_POLICIES,
    )
}

/// Both listeners, each with a path that takes a body there.
fn listeners(authz: &Authz) -> [(u16, &'static str, &'static str); 2] {
    [
        (authz.port, "api", AUTHORIZE),
        (authz.admin_port, "admin", "/reload"),
    ]
}

#[test]
fn a_header_dripped_byte_by_byte_is_cut_off_at_the_deadline_on_both_listeners() {
    let authz = authz();
    for (port, what, path) in listeners(&authz) {
        let held = drip_header(
            port,
            &format!("POST {path} HTTP/1.1\r\nHost: a\r\n"),
            "X-Slow: abcdefgh\r\n",
            Duration::from_millis(200),
            Duration::from_secs(10),
        );
        let held = held.unwrap_or_else(|| panic!("{what}: still open after 10 s of drip"));
        assert!(held < PROMPT, "{what} held a dripping client for {held:?}");
    }
    // Nothing that worked before breaks.
    let answer = exchange(authz.port, &authorize_request(), Duration::from_secs(10));
    assert_eq!(final_status(&answer.answer), Some(200), "{}", answer.answer);
}

#[test]
fn a_declared_length_over_the_limit_is_refused_at_once_without_reading_the_body() {
    let authz = authz();
    for (port, what, path) in listeners(&authz) {
        let lying = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000000\r\n\r\n0123456789"
        );
        let got = answered_promptly(port, what, &lying, 413);
        // The decision API keeps its own error format.
        if what == "api" {
            assert!(
                got.answer.contains(r#""error":"payload_too_large""#)
                    && got.answer.contains("limited to 1000 bytes"),
                "{}",
                got.answer
            );
        }
    }
}

#[test]
fn expect_continue_with_an_oversized_body_gets_413_and_no_100() {
    let authz = authz();
    // The admin listener takes up to 64 KiB.
    for (port, what, path, length) in [
        (authz.port, "api", AUTHORIZE, 5000),
        (authz.admin_port, "admin", "/reload", 100_000),
    ] {
        let ask = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
        );
        let got = answered_promptly(port, what, &ask, 413);
        assert!(
            !got.answer.contains(" 100 "),
            "{what} sent 100 Continue: {}",
            got.answer
        );
    }
}

#[test]
fn expect_continue_with_a_body_that_fits_gets_100_then_the_answer() {
    let authz = authz();
    let decision = ask("alice", &[], "view", office_hours()).to_string();
    for (port, what, path, body) in [
        (authz.port, "api", AUTHORIZE, decision.as_str()),
        (authz.admin_port, "admin", "/reload", "{}"),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .expect("head");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("100 Continue");
        let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(interim.starts_with("HTTP/1.1 100"), "{what}: {interim}");
        s.write_all(body.as_bytes()).expect("body");
        let mut answer = interim;
        while final_status(&answer).is_none() {
            let n = s.read(&mut buf).expect("answer");
            assert!(n > 0, "{what}: closed before answering: {answer}");
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert_eq!(final_status(&answer), Some(200), "{what}: {answer}");
    }
}

#[test]
fn a_body_that_stalls_gets_408_after_the_body_timeout() {
    let authz = authz();
    for (port, what, path) in listeners(&authz) {
        let stalled =
            format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789");
        answered_promptly(port, what, &stalled, 408);
    }
}

/// Sends `request` as it is and expects a final answer with `status` well before Pingora's own
/// 60 s read timeout would have ended the wait.
#[track_caller]
fn answered_promptly(port: u16, what: &str, request: &str, status: u16) -> Exchange {
    let got = exchange(port, request.as_bytes(), Duration::from_secs(10));
    assert_eq!(
        final_status(&got.answer),
        Some(status),
        "{what}: {}",
        got.answer
    );
    let first = got
        .first_byte
        .unwrap_or_else(|| panic!("{what}: no answer within 10 s"));
    assert!(first < PROMPT, "{what} answered after {first:?}");
    got
}

/// A well-formed decision request, as raw bytes.
fn authorize_request() -> Vec<u8> {
    let body = ask("alice", &[], "view", office_hours()).to_string();
    format!(
        "POST {AUTHORIZE} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
