//! Given limits on what a client may make the gateway wait for, when a client drips its header,
//! lies about its body's length or asks to continue with too large a body, it gets a prompt
//! answer or a closed connection, on the proxy listener and on the admin listener alike.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::slow_clients::{drip_header, drip_header_on, exchange, final_status};
use support::{client, metric_value, Echo, Gateway};

/// Old behaviour to beat: Pingora waits up to 60 s per read, so these clients were held for
/// minutes. Every bound below is far under that, and generous for a loaded machine.
const PROMPT: Duration = Duration::from_secs(5);

fn gateway(echo: &Echo) -> Gateway {
    let cfg = format!(
        r#"{{SERVER}}
listeners:
  - address: 127.0.0.1:{{HTTP}}
  - address: 127.0.0.1:{{HTTPS}}
    h2c: true
admin:
  address: 127.0.0.1:{{ADMIN}}
limits:
  max_request_body_bytes: 1000
  request_header_timeout: 1s
  request_body_timeout: 1s
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
    );
    Gateway::start(&[("gatehouse.yaml", &cfg)])
}

#[tokio::test]
async fn a_header_dripped_byte_by_byte_is_cut_off_at_the_deadline_on_every_listener() {
    let echo = Echo::start("echo");
    let gw = gateway(&echo);
    // The h2c listener (its `https_port`) is also dripped the HTTP/2 preface: Pingora alone
    // waits for all 24 bytes of it for ever.
    for (port, head) in [
        (gw.http_port, "GET / HTTP/1.1\r\nHost: a\r\n"),
        (gw.https_port, "GET / HTTP/1.1\r\nHost: a\r\n"),
        (gw.https_port, "PRI * HTTP/2.0\r\n"),
        (gw.admin_port, "GET / HTTP/1.1\r\nHost: a\r\n"),
    ] {
        let held = tokio::task::spawn_blocking(move || {
            drip_header(
                port,
                head,
                "X-Slow: abcdefgh\r\n",
                Duration::from_millis(200),
                Duration::from_secs(10),
            )
        })
        .await
        .expect("drip");
        let held =
            held.unwrap_or_else(|| panic!("port {port}, {head:?}: still open after 10 s of drip"));
        assert!(
            held < PROMPT,
            "port {port}, {head:?}: held a dripping client for {held:?}"
        );
    }
    let metrics = client()
        .get(gw.admin("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metric_value(&metrics, "gatehouse_request_header_timeouts_total") >= 1.0);
    // Nothing that worked before breaks: a plain request still goes through.
    let ok = client()
        .get(gw.url("/after"))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn the_deadline_is_armed_again_for_the_next_request_on_a_kept_alive_connection() {
    let echo = Echo::start("echo");
    let gw = gateway(&echo);
    for port in [gw.http_port, gw.https_port] {
        second_request_dripped_on(port).await;
    }
}

async fn second_request_dripped_on(port: u16) {
    let held = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(PROMPT)).expect("timeout");
        s.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("first request");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).expect("first answer");
        assert_eq!(&head, b"HTTP/1.1 200", "the first request is served");
        drip_header_on(
            s,
            "GET /second HTTP/1.1\r\nHost: a\r\n",
            "X-Slow: abcdefgh\r\n",
            Duration::from_millis(200),
            Duration::from_secs(10),
        )
    })
    .await
    .expect("drip");
    let held = held.expect("still open after 10 s of drip on a kept-alive connection");
    assert!(
        held < PROMPT,
        "port {port}: a dripping second request was held for {held:?}"
    );
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_header_deadline() {
    let echo = Echo::start("echo");
    let gw = gateway(&echo);
    // Opened and left idle, before any request and after one: Pingora alone kept both for ever.
    for requests in [0, 1] {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.https_port))
            .await
            .expect("connect");
        let (mut h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        let connection = tokio::spawn(connection);
        for _ in 0..requests {
            let req = http::Request::get(gw.url("/")).body(()).unwrap();
            h2 = h2.ready().await.expect("ready");
            let (response, _) = h2.send_request(req, true).expect("a stream");
            assert_eq!(response.await.expect("a response").status(), 200);
        }
        let idle_from = std::time::Instant::now();
        // Ended, cleanly or with an error: either way the server closed it.
        let _ended = tokio::time::timeout(PROMPT, connection)
            .await
            .unwrap_or_else(|_| panic!("{requests} request(s): still open after {PROMPT:?} idle"))
            .expect("the connection task");
        // The deadline is 1 s; not cut before it.
        let held = idle_from.elapsed();
        assert!(held >= Duration::from_millis(900), "closed after {held:?}");
    }
}

#[tokio::test]
async fn an_h2c_listener_answers_a_request_shorter_than_the_http2_preface() {
    let echo = Echo::start("echo");
    let gw = gateway(&echo);
    let port = gw.https_port;
    // 18 bytes: Pingora's own preface check waits for 24.
    let got = tokio::task::spawn_blocking(move || {
        exchange(port, b"GET / HTTP/1.0\r\n\r\n", Duration::from_secs(10))
    })
    .await
    .expect("exchange");
    assert_eq!(final_status(&got.answer), Some(200), "{}", got.answer);
    assert!(
        got.first_byte.is_some_and(|t| t < PROMPT),
        "answered after {:?}",
        got.first_byte
    );
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_at_once_without_reading_the_body() {
    let echo = Echo::start("echo");
    let gw = gateway(&echo);
    let lying =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000000\r\n\r\n0123456789";
    for (port, what) in [(gw.http_port, "proxy"), (gw.admin_port, "admin")] {
        let got = exchange(port, lying, Duration::from_secs(10));
        assert_eq!(
            final_status(&got.answer),
            Some(413),
            "{what}: {}",
            got.answer
        );
        let first = got.first_byte.expect("an answer");
        assert!(first < PROMPT, "{what} answered after {first:?}");
    }
    let got = exchange(gw.http_port, lying, Duration::from_secs(10));
    assert!(
        got.answer.contains("request_body_too_large"),
        "{}",
        got.answer
    );
}

#[tokio::test]
async fn expect_continue_with_an_oversized_body_gets_413_and_no_100() {
    let echo = Echo::start("echo");
    let gw = gateway(&echo);
    let ask =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n";
    for (port, what) in [(gw.http_port, "proxy"), (gw.admin_port, "admin")] {
        let ask: &[u8] = if what == "admin" {
            b"POST /reload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n"
        } else {
            ask
        };
        let got = exchange(port, ask, Duration::from_secs(10));
        assert_eq!(
            final_status(&got.answer),
            Some(413),
            "{what}: {}",
            got.answer
        );
        assert!(
            !got.answer.contains(" 100 "),
            "{what} sent 100 Continue: {}",
            got.answer
        );
        assert!(got.first_byte.expect("an answer") < PROMPT);
    }
}

#[tokio::test]
async fn the_admin_listener_answers_100_continue_then_reads_the_body() {
    let echo = Echo::start("echo");
    let gw = gateway(&echo);
    let port = gw.admin_port;
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(b"POST /reload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            .expect("head");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).expect("100 Continue");
        let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
        s.write_all(b"{}").expect("body");
        let n = s.read(&mut buf).expect("answer");
        (interim, String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .expect("client");
    assert!(answer.0.starts_with("HTTP/1.1 100"), "{}", answer.0);
    let rest = format!("{}{}", answer.0, answer.1);
    assert_eq!(final_status(&rest), Some(200), "{rest}");
}

#[tokio::test]
async fn a_chunked_body_that_crosses_the_limit_gets_413() {
    let echo = Echo::start("echo");
    let gw = gateway(&echo);
    let chunked = |chunks: usize| {
        let mut r =
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..chunks {
            r.extend_from_slice(b"1f4\r\n");
            r.extend_from_slice(&[b'x'; 500]);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    };
    let over = exchange(gw.http_port, &chunked(6), Duration::from_secs(10));
    assert_eq!(final_status(&over.answer), Some(413), "{}", over.answer);
    // Under the limit, bodies still reach the upstream.
    let under = exchange(gw.http_port, &chunked(1), Duration::from_secs(10));
    assert_eq!(final_status(&under.answer), Some(200), "{}", under.answer);
}

#[tokio::test]
async fn a_body_that_stalls_is_dropped_after_the_body_timeout() {
    let echo = Echo::start("echo");
    let gw = gateway(&echo);
    let got = exchange(
        gw.http_port,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789",
        Duration::from_secs(10),
    );
    let ended = got
        .ended
        .expect("the gateway still waits for the body after 10 s");
    assert!(ended < PROMPT, "held a stalled body for {ended:?}");
    // Either an error answer or a closed connection; never a 2xx.
    assert!(
        final_status(&got.answer).is_none_or(|s| s >= 400),
        "{}",
        got.answer
    );
}

/// A zero deadline would close every connection before its first request: refused at load.
#[test]
fn zero_deadlines_are_refused_at_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    support::write(
        dir.path(),
        "gatehouse.yaml",
        "listeners:\n  - address: 127.0.0.1:1\nlimits:\n  request_header_timeout: 0s\n  request_body_timeout: 0s\nupstreams:\n  a:\n    targets: [\"127.0.0.1:2\"]\nroutes:\n  - name: all\n    match:\n      path_prefix: /\n    upstream: a\n",
    );
    let (code, text) = support::validate(dir.path());
    assert_eq!(code, Some(1), "{text}");
    for key in [
        "limits.request_header_timeout",
        "limits.request_body_timeout",
    ] {
        assert!(
            text.contains(&format!("{key}: must be longer than 0s")),
            "{text}"
        );
    }
}
