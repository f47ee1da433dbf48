//! Limits on what a client may make the gateway wait for or buffer: the time to send a request
//! header (slowloris), the pause between pieces of a body, and the size of a body.
//!
//! Pingora bounds each read of a request header (60 s), not the whole header, so a client that
//! sends a byte every few seconds holds a connection and a task for ever. The whole-header
//! deadline is kept here instead: the connection loop arms a timer when it waits for a request,
//! and `new_ctx`, which Pingora calls once a header has been read, marks the request as started.
//! A timer that fires before that closes the connection.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use pingora::http::RequestHeader;
use pingora::protocols::Stream;

tokio::task_local! {
    /// Set by the connection loop around each HTTP/1 connection; `new_ctx` marks it.
    static HEADER_READ: Arc<AtomicBool>;
}

/// The first bytes of every cleartext HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a connection of an `h2c` listener opens with the HTTP/2 preface; the bytes looked at
/// stay in the stream. `Err` if it closes first. Pingora's own check waits for the preface's
/// 24 bytes, for ever; here an HTTP/1 request is told apart by its first three (no method is
/// `PRI`), so a short one is not kept waiting, and the caller bounds the wait.
pub async fn opens_with_h2_preface(stream: &mut Stream) -> std::io::Result<bool> {
    let mut method = [0u8; 3];
    if !stream.try_peek(&mut method).await? || method != H2_PREFACE[..3] {
        return Ok(false);
    }
    let mut preface = [0u8; H2_PREFACE.len()];
    Ok(stream.try_peek(&mut preface).await? && preface == H2_PREFACE)
}

/// Logs and counts a connection closed because its request (or HTTP/2 preface) did not come
/// within `deadline`.
pub fn deadline_passed(deadline: Duration) {
    tracing::debug!(?deadline, "request header not complete in time; closing");
    crate::metrics::HEADER_TIMEOUTS.inc();
}

/// Called once a request header has been read (from `new_ctx`).
pub fn header_read() {
    let _ = HEADER_READ.try_with(|read| read.store(true, Ordering::Relaxed));
}

/// Runs one HTTP/1 connection's request loop with the header deadline in force. `serve` starts
/// one request on `state` and resolves to what carries over to the next (`None` ends the
/// connection); `next` turns that into the next request's state. The first header must be read
/// by `first_until` (the connection may have been waited on already); each later one within
/// `deadline` of the previous request's end.
///
/// `serve` returns the request's future itself, which the loop pins where it stands: Pingora's
/// request future is several kilobytes, and wrapping it in a future of our own moved it once
/// more for every request.
pub async fn with_header_deadline<S, R, F, Fut, N>(
    deadline: Duration,
    first_until: tokio::time::Instant,
    mut state: S,
    mut serve: F,
    mut next: N,
) where
    F: FnMut(S) -> Fut,
    Fut: std::future::Future<Output = Option<R>>,
    N: FnMut(R) -> S,
{
    let read = Arc::new(AtomicBool::new(false));
    HEADER_READ
        .scope(read.clone(), async move {
            // One timer for the whole connection. It is not moved forward for every request:
            // it may fire at an earlier request's deadline, and is then moved to the current one
            // (at most once per `deadline` on a busy connection). Resetting and polling it for
            // every request cost more than the rest of this loop.
            let timer = tokio::time::sleep_until(first_until);
            tokio::pin!(timer);
            let mut until = first_until;
            // Whether the timer has been polled, and so holds this task's waker.
            let mut armed = false;
            loop {
                read.store(false, Ordering::Relaxed);
                let request = serve(state);
                tokio::pin!(request);
                let served = std::future::poll_fn(|cx| {
                    if let Poll::Ready(served) = request.as_mut().poll(cx) {
                        return Poll::Ready(Some(served));
                    }
                    // Only while waiting for a header: a request's task is woken several times
                    // (client, upstream, client again).
                    if read.load(Ordering::Relaxed) || (armed && !timer.is_elapsed()) {
                        return Poll::Pending;
                    }
                    if timer.deadline() < until {
                        timer.as_mut().reset(until);
                    }
                    armed = true;
                    match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(None),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await;
                let Some(served) = served else {
                    deadline_passed(deadline);
                    return;
                };
                let Some(carried) = served else {
                    return;
                };
                state = next(carried);
                until = tokio::time::Instant::now() + deadline;
            }
        })
        .await
}

/// The limit a request's declared body is over, if it is.
pub fn declared_body_over(req: &RequestHeader, limit: Option<u64>) -> Option<u64> {
    let limit = limit?;
    gatehouse_service::declared_length(&req.headers)
        .is_some_and(|n| n > limit)
        .then_some(limit)
}
