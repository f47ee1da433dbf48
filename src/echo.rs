//! The demo upstream: answers every request with the request line and headers it received, as
//! JSON, so a newcomer sees exactly what the gateway forwarded. Also the tests' upstream peer.
//!
//! `GET /delay/<ms>` answers after that many milliseconds (for timeout demos), capped at 60 s.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Serialize;

pub struct EchoApp {
    pub name: String,
}

#[derive(Serialize)]
struct Echo<'a> {
    server: &'a str,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    version: String,
    headers: BTreeMap<String, Vec<String>>,
    body_bytes: usize,
}

#[async_trait]
impl ServeHttp for EchoApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body_bytes = 0;
        // Drain the body so the connection can be reused.
        while let Ok(Some(chunk)) = session.read_request_body().await {
            body_bytes += chunk.len();
        }
        let req = session.req_header();
        if let Some(ms) = req
            .uri
            .path()
            .strip_prefix("/delay/")
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
        }
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in req.headers.iter() {
            headers
                .entry(name.as_str().to_string())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let echo = Echo {
            server: &self.name,
            method: req.method.as_str(),
            path: req.uri.path(),
            query: req.uri.query(),
            version: format!("{:?}", req.version),
            headers,
            body_bytes,
        };
        let body = serde_json::to_vec_pretty(&echo).unwrap_or_default();
        let len = body.len();
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::OK;
        let h = response.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if let Ok(v) = self.name.parse() {
            h.insert("x-echo-server", v);
        }
        h.insert(http::header::CONTENT_LENGTH, len.into());
        response
    }
}
