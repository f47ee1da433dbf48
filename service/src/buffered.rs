//! An HTTP listener for services that answer a whole request at once (the token issuer, the
//! policy service, the admin listeners): it reads the header and the body into a [`Request`]
//! under limits, hands it to a [`Handler`] and writes the answer.
//!
//! Slow and lying clients are answered here, once for every service:
//! - the header must be complete within `timeouts.header` of the connection being ready for a
//!   request (keep-alive idle time included, as HAProxy's `timeout http-request`): a client
//!   sending a byte now and then (slowloris) is cut off instead of holding a task for ever;
//! - header fields over [`MAX_HEADER_BYTES`] in total get 431 (Pingora itself only stops at
//!   1 MiB): these services never need more, and a handler never sees a huge cookie;
//! - the body must arrive within `timeouts.body` of the header, else 408;
//! - a declared `Content-Length` over the limit is refused with 413 before any body is read,
//!   and `Expect: 100-continue` gets `100 Continue` only when the body will be read (RFC 9110
//!   §10.1.1), 417 for any other expectation.
//!
//! What the client sent is never logged: a header that does not parse may carry credentials.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, Version};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::ErrorType;
use serde::Deserialize;

/// How long a connection may stay open between requests when the header deadline allows it.
const KEEPALIVE_SECS: u64 = 60;

/// Header names and values, summed, that a request may carry (the gateway's default
/// `limits.max_request_header_bytes`).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Deadlines for receiving a request; a `timeouts:` section in each service's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Time allowed for a whole request header, counted from the moment the connection is ready
    /// for a request (idle keep-alive time included).
    #[serde(with = "humantime_serde")]
    pub header: Duration,
    /// Time allowed for a whole request body, counted from the end of its header.
    #[serde(with = "humantime_serde")]
    pub body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header: Duration::from_secs(20),
            body: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// The deadlines set to zero, as (`header` | `body`): a zero deadline refuses every request,
    /// so every loader reports these, under its own key names.
    pub fn zero(&self) -> impl Iterator<Item = &'static str> {
        [("header", self.header), ("body", self.body)]
            .into_iter()
            .filter(|(_, d)| d.is_zero())
            .map(|(name, _)| name)
    }
}

/// The body length a request declares (`Content-Length`), when it declares a readable one.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    pub timeouts: Timeouts,
}

/// A request read in full: what a handler answers from.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The client's address, IPv4-mapped IPv6 addresses as plain IPv4.
    pub peer_ip: Option<IpAddr>,
    /// The request arrived over TLS.
    pub tls: bool,
}

impl Request {
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }
}

/// Why a request was answered before its handler saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The body (declared or received) is larger than the limit: 413.
    TooLarge { limit: usize },
    /// The body did not arrive in time: 408.
    BodyTimeout,
    /// The body could not be read (bad chunking, the client went away): 400.
    Unreadable,
    /// An `Expect` other than `100-continue`: 417.
    UnsupportedExpectation,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::Unreadable => StatusCode::BAD_REQUEST,
            Refusal::UnsupportedExpectation => StatusCode::EXPECTATION_FAILED,
        }
    }

    pub fn message(self) -> String {
        match self {
            Refusal::TooLarge { limit } => format!("request bodies are limited to {limit} bytes"),
            Refusal::BodyTimeout => "the request body did not arrive in time".into(),
            Refusal::Unreadable => "unreadable request body".into(),
            Refusal::UnsupportedExpectation => "only `Expect: 100-continue` is supported".into(),
        }
    }

    /// The machine-readable code of the default JSON answer.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::TooLarge { .. } => "payload_too_large",
            Refusal::BodyTimeout => "request_timeout",
            Refusal::Unreadable => "invalid_request",
            Refusal::UnsupportedExpectation => "expectation_failed",
        }
    }
}

#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The limits for the next request (read per request, so a reload can change them).
    fn limits(&self) -> RequestLimits;

    async fn handle(&self, request: Request) -> Response<Vec<u8>>;

    /// `true`: stop [`Handler::handle`] (drop its future) when the client closes the connection
    /// before the answer, so that work queued for a client that has gone is never done. Work
    /// already handed to another task (`spawn_blocking`) still runs to its end. For handlers
    /// that do expensive work for unauthenticated clients (the issuer's argon2 checks).
    ///
    /// A client that half-closes its side after the request (`shutdown(SHUT_WR)`) counts as
    /// gone, as it does in Pingora's proxy. Bytes sent after the body (HTTP/1.1 pipelining)
    /// end the watch and the connection is closed after the answer: the watch has read one of
    /// them.
    fn abandon_when_client_leaves(&self) -> bool {
        false
    }

    /// The answer to a refused request, in the service's error format.
    fn refuse(&self, refusal: Refusal) -> Response<Vec<u8>> {
        json_answer(
            refusal.status(),
            &serde_json::json!({"error": refusal.code(), "message": refusal.message()}),
        )
    }
}

/// A JSON answer that no cache keeps: health, reload results and errors describe one moment.
pub fn json_answer(status: StatusCode, value: &serde_json::Value) -> Response<Vec<u8>> {
    let mut r = Response::new(value.to_string().into_bytes());
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Serves a [`Handler`]; give it to `pingora::services::listening::Service::new`.
pub struct BufferedApp<H> {
    handler: Arc<H>,
}

impl<H> BufferedApp<H> {
    pub fn new(handler: Arc<H>) -> Self {
        Self { handler }
    }
}

#[async_trait]
impl<H: Handler> HttpServerApp for BufferedApp<H> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let limits = self.handler.limits();
        if !read_header(&mut session, limits.timeouts.header).await {
            return None;
        }
        if header_bytes(&session.req_header().headers) > MAX_HEADER_BYTES {
            tracing::debug!(limit = MAX_HEADER_BYTES, "request header fields too large");
            let _ = session.respond_error(431).await;
            return None;
        }
        session.set_keepalive((!*shutdown.borrow()).then_some(KEEPALIVE_SECS));
        let answer = match read_body(&mut session, &limits).await {
            Ok(body) => {
                let request = request(&session, body);
                if self.handler.abandon_when_client_leaves() {
                    answer_unless_client_leaves(&*self.handler, &mut session, request).await?
                } else {
                    self.handler.handle(request).await
                }
            }
            Err(refusal) => {
                // The rest of the body was not read: the connection cannot carry another request.
                session.set_keepalive(None);
                self.handler.refuse(refusal)
            }
        };
        write_answer(&mut session, answer).await?;
        let persistent = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, persistent)),
            Err(e) => {
                tracing::debug!(kind = ?e.etype, "connection not reusable");
                None
            }
        }
    }
}

/// Runs the handler while watching the connection; `None` (and the handler's future dropped)
/// if the client closes it or resets the stream first.
async fn answer_unless_client_leaves<H: Handler>(
    handler: &H,
    session: &mut ServerSession,
    request: Request,
) -> Option<Response<Vec<u8>>> {
    let handling = handler.handle(request);
    tokio::pin!(handling);
    // The body has been read, so this only reads to see the connection close (HTTP/1: FIN or
    // RST; HTTP/2: RST_STREAM).
    let departure = tokio::select! {
        answer = &mut handling => return Some(answer),
        departure = session.read_body_or_idle(true) => departure,
    };
    match departure {
        // Not a departure (HTTP/1 never returns here; other session kinds might).
        Ok(_) => Some(handling.await),
        Err(e) if e.etype == ErrorType::ConnectError => {
            // Data after the body: the client is still there, but the byte read cannot be put
            // back, so this connection carries no further request.
            session.set_keepalive(None);
            Some(handling.await)
        }
        // Anything else ends the read: the client is gone, and its answer is not worth making.
        Err(_) => {
            tracing::debug!("client gone before the answer; request abandoned");
            None
        }
    }
}

/// Reads the header within its deadline. `false`: nothing to answer (closed, timed out, or an
/// error already sent for a header that does not parse).
async fn read_header(session: &mut ServerSession, deadline: Duration) -> bool {
    match tokio::time::timeout(deadline, session.read_request()).await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => {
            // Never the error itself: its context quotes the request's bytes (up to 2 KiB of
            // them, `Authorization` and cookies included) or its URI.
            let status = unparseable_status(&e);
            tracing::debug!(kind = ?e.etype, status, "unparseable request header");
            if matches!(e.etype, ErrorType::InvalidHTTPHeader) {
                let _ = session.respond_error(status).await;
            }
            false
        }
        Err(_) => {
            tracing::debug!(?deadline, "request header not complete in time; closing");
            false
        }
    }
}

/// What [`MAX_HEADER_BYTES`] counts.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// The longest URI the `http` crate accepts.
const URI_MAX_LEN: usize = u16::MAX as usize - 1;

/// The status for a header Pingora could not parse: 431 for too many or too large header
/// fields (RFC 6585 §5), 414 for a URI longer than `http` accepts (64 KiB), else 400.
fn unparseable_status(e: &pingora::Error) -> u16 {
    let cause = e.cause.as_deref();
    if let Some(httparse::Error::TooManyHeaders) = cause.and_then(|c| c.downcast_ref()) {
        return 431;
    }
    let context = e.context.as_ref().map(|c| c.as_str()).unwrap_or_default();
    // Pingora's own limit on the whole header (1 MiB).
    if context.starts_with("Request header larger than") {
        return 431;
    }
    // A URI `http` refuses keeps no cause, only Pingora's "invalid uri <target>": too long when
    // the target is over `http`'s limit.
    if context
        .strip_prefix("invalid uri ")
        .is_some_and(|target| target.len() > URI_MAX_LEN)
    {
        return 414;
    }
    400
}

async fn read_body(
    session: &mut ServerSession,
    limits: &RequestLimits,
) -> Result<Vec<u8>, Refusal> {
    let limit = limits.max_body_bytes;
    let head = session.req_header();
    if declared_length(&head.headers).is_some_and(|n| n > limit as u64) {
        return Err(Refusal::TooLarge { limit });
    }
    if let Some(expect) = head.headers.get(header::EXPECT) {
        if !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") {
            return Err(Refusal::UnsupportedExpectation);
        }
        if head.version == Version::HTTP_11 && !session.is_body_done() {
            session
                .write_continue_response()
                .await
                .map_err(|_| Refusal::Unreadable)?;
        }
    }
    // Most requests (GETs, admin calls) have no body: no timer for them.
    if session.is_body_done() {
        return Ok(Vec::new());
    }
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = session
            .read_request_body()
            .await
            .map_err(|_| Refusal::Unreadable)?
        {
            if body.len() + chunk.len() > limit {
                return Err(Refusal::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(limits.timeouts.body, read)
        .await
        .unwrap_or(Err(Refusal::BodyTimeout))
}

fn request(session: &ServerSession, body: Vec<u8>) -> Request {
    let head = session.req_header();
    Request {
        method: head.method.clone(),
        uri: head.uri.clone(),
        headers: head.headers.clone(),
        body,
        peer_ip: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_canonical()),
        tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
    }
}

/// Writes the answer with its `Content-Length`: without one the answer would end by closing the
/// connection, and every request would pay a new one. `None`: the client is gone.
async fn write_answer(session: &mut ServerSession, answer: Response<Vec<u8>>) -> Option<()> {
    let (mut parts, body) = answer.into_parts();
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let head: ResponseHeader = parts.into();
    if let Err(e) = session.write_response_header(Box::new(head)).await {
        tracing::debug!(kind = ?e.etype, "client gone before the answer");
        return None;
    }
    if !body.is_empty() {
        if let Err(e) = session.write_response_body(body.into(), true).await {
            tracing::debug!(kind = ?e.etype, "client gone during the answer");
            return None;
        }
    }
    Some(())
}
