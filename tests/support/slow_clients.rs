//! Raw-socket clients that misbehave on purpose (slowloris, lying `Content-Length`, `Expect`),
//! shared by the gateway's, the identity crate's and the authz crate's tests: every listener
//! must answer them the same way.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends `head` then drips `drip` one byte every `every`, until the server closes the connection
/// or `give_up` passes. Returns how long the server kept the connection open, or `None` if it
/// was still open at `give_up`.
pub fn drip_header(
    port: u16,
    head: &str,
    drip: &str,
    every: Duration,
    give_up: Duration,
) -> Option<Duration> {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    drip_header_on(s, head, drip, every, give_up)
}

/// `drip_header` on a connection already open (e.g. one that has served a request).
pub fn drip_header_on(
    mut s: TcpStream,
    head: &str,
    drip: &str,
    every: Duration,
    give_up: Duration,
) -> Option<Duration> {
    s.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let started = Instant::now();
    s.write_all(head.as_bytes()).expect("send head");
    let mut bytes = drip.bytes().cycle();
    let mut buf = [0u8; 512];
    while started.elapsed() < give_up {
        let wait_until = Instant::now() + every;
        while Instant::now() < wait_until {
            match s.read(&mut buf) {
                Ok(0) => return Some(started.elapsed()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(started.elapsed()),
            }
        }
        let byte = bytes.next().unwrap_or(b'x');
        if s.write_all(&[byte]).is_err() {
            return Some(started.elapsed());
        }
    }
    None
}

/// What came back for a raw request.
pub struct Exchange {
    /// The bytes, as text.
    pub answer: String,
    /// When the first byte came.
    pub first_byte: Option<Duration>,
    /// When the server closed the connection or completed a final answer; `None`: neither
    /// happened before the wait ran out.
    pub ended: Option<Duration>,
}

/// Sends `request` as it is and reads what comes back within `wait`.
pub fn exchange(port: u16, request: &[u8], wait: Duration) -> Exchange {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let started = Instant::now();
    s.write_all(request).expect("send");
    let mut answer = Vec::new();
    let mut first_byte = None;
    let mut ended = None;
    let mut buf = [0u8; 4096];
    while started.elapsed() < wait {
        match s.read(&mut buf) {
            Ok(0) => {
                ended = Some(started.elapsed());
                break;
            }
            Ok(n) => {
                first_byte.get_or_insert(started.elapsed());
                answer.extend_from_slice(&buf[..n]);
                if complete(&answer) {
                    ended = Some(started.elapsed());
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                ended = Some(started.elapsed());
                break;
            }
        }
    }
    Exchange {
        answer: String::from_utf8_lossy(&answer).into_owned(),
        first_byte,
        ended,
    }
}

/// Whether `answer` holds a final (non-1xx) response with its whole `Content-Length` body.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let mut rest: &str = &text;
    loop {
        let Some(end) = rest.find("\r\n\r\n") else {
            return false;
        };
        let head = &rest[..end];
        if head.starts_with("HTTP/1.1 1") {
            rest = &rest[end + 4..];
            continue;
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        return rest.len() >= end + 4 + length;
    }
}

/// The status code of the first response line in `answer` that is not a `1xx`.
pub fn final_status(answer: &str) -> Option<u16> {
    answer
        .lines()
        .filter(|l| l.starts_with("HTTP/1."))
        .filter_map(|l| l.split(' ').nth(1)?.parse().ok())
        .find(|s: &u16| *s >= 200)
}
