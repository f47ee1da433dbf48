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

tokio::task_local! {
    /// Set by the connection loop around each HTTP/1 connection; `new_ctx` marks it.
    static HEADER_READ: Arc<AtomicBool>;
}

/// Called once a request header has been read (from `new_ctx`).
pub fn header_read() {
    let _ = HEADER_READ.try_with(|read| read.store(true, Ordering::Relaxed));
}

/// Runs `connection` (one HTTP/1 connection's request loop) with the header deadline in force.
/// `next_request` serves one request and returns what to do next (`Some` to continue).
pub async fn with_header_deadline<S, F, Fut>(
    deadline: Duration,
    mut state: S,
    mut next_request: F,
) -> Option<S>
where
    F: FnMut(S) -> Fut,
    Fut: std::future::Future<Output = Option<S>>,
{
    let read = Arc::new(AtomicBool::new(false));
    HEADER_READ
        .scope(read.clone(), async move {
            // One timer for the whole connection, moved forward for each request. It is polled
            // only until the header is read: a request's task is woken several times (client,
            // upstream, client again), and polling the timer on each wake-up registered its
            // waker again every time.
            let timer = tokio::time::sleep(deadline);
            tokio::pin!(timer);
            loop {
                read.store(false, Ordering::Relaxed);
                timer.as_mut().reset(tokio::time::Instant::now() + deadline);
                let request = next_request(state);
                tokio::pin!(request);
                let next = std::future::poll_fn(|cx| {
                    if let Poll::Ready(next) = request.as_mut().poll(cx) {
                        return Poll::Ready(Some(next));
                    }
                    if !read.load(Ordering::Relaxed) && timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    Poll::Pending
                })
                .await;
                let Some(next) = next else {
                    tracing::debug!(?deadline, "request header not complete in time; closing");
                    crate::metrics::HEADER_TIMEOUTS.inc();
                    return None;
                };
                state = next?;
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
