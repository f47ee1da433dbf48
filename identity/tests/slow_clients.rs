//! Given deadlines for a request's header and body (`timeouts:`), when a client drips its
//! header, lies about its body's length, asks to continue with too large a body or stalls
//! mid-body, it gets a prompt answer or a closed connection, on the public listener and on the
//! admin listener alike. And a SIGHUP sent as soon as the issuer listens reloads it instead of
//! ending the process.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use support::slow_clients::{drip_header, exchange, final_status};
use support::{client, standard_directory, Identity};

/// Old behaviour to beat: Pingora waits up to 60 s per read, so these clients were held for a
/// minute or more. Every bound below is far under that, and generous for a loaded machine.
const PROMPT: Duration = Duration::from_secs(5);

const DEADLINES: &str = "timeouts:\n  header: 1s\n  body: 1s\n";

fn identity() -> Identity {
    Identity::start(DEADLINES, &standard_directory())
}

/// Both listeners, each with a request it serves: `(port, name, method and path)`.
fn listeners(id: &Identity) -> [(u16, &'static str, &'static str); 2] {
    [
        (id.port, "public", "POST /token"),
        (id.admin_port, "admin", "POST /reload"),
    ]
}

/// Sends `request` as it is and checks that a complete answer with `status` came within
/// [`PROMPT`], and that the public listener refuses in the OAuth error format (RFC 6749 §5.2);
/// returns the answer.
fn answered_promptly(port: u16, what: &str, request: &str, status: u16) -> String {
    let got = exchange(port, request.as_bytes(), Duration::from_secs(10));
    let ended = got
        .ended
        .unwrap_or_else(|| panic!("{what}: no complete answer in 10 s: {}", got.answer));
    assert!(ended < PROMPT, "{what} answered after {ended:?}");
    assert_eq!(
        final_status(&got.answer),
        Some(status),
        "{what}: {}",
        got.answer
    );
    if what == "public" && status >= 400 {
        assert!(
            got.answer.contains(r#""error":"invalid_request""#),
            "{}",
            got.answer
        );
    }
    got.answer
}

/// A form POST that declares `declared` bytes of body and sends ten.
fn ten_bytes_of(request: &str, declared: u64) -> String {
    format!(
        "{request} HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {declared}\r\n\r\n0123456789"
    )
}

#[test]
fn a_header_dripped_byte_by_byte_is_cut_off_at_the_deadline_on_both_listeners() {
    let id = identity();
    for (port, what, _) in listeners(&id) {
        let head = "GET /healthz HTTP/1.1\r\nHost: a\r\n";
        let every = Duration::from_millis(200);
        match drip_header(
            port,
            head,
            "X-Slow: abcdefgh\r\n",
            every,
            Duration::from_secs(10),
        ) {
            Some(held) => assert!(held < PROMPT, "{what} held a dripping client for {held:?}"),
            None => panic!("{what}: still open after 10 s of drip"),
        }
    }
    // Nothing that worked before breaks: plain requests still get answers.
    answered_promptly(
        id.port,
        "public",
        "GET /jwks.json HTTP/1.1\r\nHost: a\r\n\r\n",
        200,
    );
    answered_promptly(
        id.admin_port,
        "admin",
        "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
        200,
    );
}

#[test]
fn a_declared_length_over_the_limit_is_refused_at_once_without_reading_the_body() {
    let id = identity();
    for (port, what, request) in listeners(&id) {
        let answer = answered_promptly(port, what, &ten_bytes_of(request, 10_000_000_000), 413);
        if what == "public" {
            assert!(answer.contains("exceeds 16384 bytes"), "{answer}");
        }
    }
}

#[test]
fn expect_continue_with_an_oversized_body_gets_413_and_no_100() {
    let id = identity();
    for (port, what, request) in listeners(&id) {
        let ask = format!(
            "{request} HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n"
        );
        let answer = answered_promptly(port, what, &ask, 413);
        assert!(
            !answer.contains(" 100 "),
            "{what} sent 100 Continue: {answer}"
        );
    }
}

/// Sends `head` (which asks to continue and to close afterwards), reads the interim answer,
/// then sends `body` and reads the rest until the server closes.
fn continue_then_answer(port: u16, head: &str, body: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(PROMPT)).expect("timeout");
    s.write_all(head.as_bytes()).expect("head");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).expect("an interim answer");
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    s.write_all(body.as_bytes()).expect("body");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("the answer");
    (interim, String::from_utf8_lossy(&rest).into_owned())
}

#[tokio::test]
async fn expect_continue_with_a_small_body_gets_100_then_the_answer_on_both_listeners() {
    let id = identity();
    let form = "grant_type=client_credentials";
    let credentials = STANDARD.encode("reports:reports-secret");
    let token_head = format!(
        "POST /token HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Basic {credentials}\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        form.len()
    );
    let reload_head = "POST /reload HTTP/1.1\r\nHost: a\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n".to_string();
    for (port, what, head, body, expected) in [
        (id.port, "public", token_head, form, "access_token"),
        (
            id.admin_port,
            "admin",
            reload_head,
            "{}",
            r#""result":"unchanged""#,
        ),
    ] {
        let (interim, rest) =
            tokio::task::spawn_blocking(move || continue_then_answer(port, &head, body))
                .await
                .expect("client");
        assert!(interim.starts_with("HTTP/1.1 100"), "{what}: {interim}");
        let all = format!("{interim}{rest}");
        assert_eq!(final_status(&all), Some(200), "{what}: {all}");
        assert!(all.contains(expected), "{what}: {all}");
    }
}

#[test]
fn a_body_that_stalls_gets_408_after_the_body_timeout_on_both_listeners() {
    let id = identity();
    for (port, what, request) in listeners(&id) {
        // Ten bytes of a hundred, then nothing.
        answered_promptly(port, what, &ten_bytes_of(request, 100), 408);
    }
}

#[tokio::test]
async fn a_sighup_as_soon_as_the_admin_port_accepts_reloads_instead_of_ending_the_process() {
    // Several starts: the window between listening and handling SIGHUP is short when it exists.
    for round in 0..3 {
        let mut id = Identity::prepare(DEADLINES, &standard_directory());
        id.launch();
        let deadline = Instant::now() + support::READY_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", id.admin_port)).is_err() {
            if let Some(status) = id.exit_status() {
                panic!("round {round}: exited with {status} before listening");
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: admin port never accepted"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        id.signal(libc::SIGHUP);
        id.wait_ready();
        let health = client().get(id.admin("/healthz")).send().await;
        let status = id.exit_status();
        assert!(
            status.is_none(),
            "round {round}: SIGHUP ended the process ({status:?})"
        );
        let health = health.expect("/healthz after SIGHUP");
        assert_eq!(health.status(), 200, "round {round}");
        let body: serde_json::Value = health.json().await.expect("healthz JSON");
        assert_eq!(body["status"], "ok", "{body}");
        // The signal was taken as a reload request (the file is unchanged, so nothing applies).
        support::eventually("SIGHUP to be logged as a reload", PROMPT, || {
            let seen = id.stderr().contains("SIGHUP: reloading");
            async move { seen }
        })
        .await;
    }
}
