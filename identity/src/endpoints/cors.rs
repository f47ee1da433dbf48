//! CORS (Fetch standard) for the endpoints a browser client's scripts call: `/token`,
//! `/userinfo`, `/jwks.json`, `/revoke`. Origins come from the clients' `allowed_origins`; no
//! credentials mode (these endpoints read no cookies), so `Access-Control-Allow-Credentials` is
//! never sent. The browser pages (`/authorize`, `/login`, `/logout`) are navigations, not
//! script calls, and get no CORS headers.

use http::{header, HeaderValue, Method, StatusCode};

use crate::config::Settings;
use crate::reply::{json, respond, Reply};
use crate::request::Request;

const PATHS: [&str; 4] = ["/token", "/userinfo", "/jwks.json", "/revoke"];

/// How long a browser may cache a preflight answer.
const MAX_AGE_SECS: &str = "600";

/// Whether `path` answers script calls from allowed origins.
pub fn covers(path: &str) -> bool {
    PATHS.contains(&path)
}

/// The allowed origin this request comes from, if any.
fn allowed<'a>(settings: &Settings, req: &'a Request) -> Option<&'a str> {
    req.header(header::ORIGIN)
        .filter(|o| settings.cors_origins.contains(*o))
}

/// The answer to a preflight (`OPTIONS` on a covered path): 204 with what may follow, or 403
/// for an origin no client allows.
pub fn preflight(settings: &Settings, req: &Request) -> Reply {
    let Some(origin) = allowed(settings, req) else {
        return json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({
                "error": "invalid_request",
                "error_description": "this origin may not call the issuer from a browser",
            }),
        );
    };
    let mut reply = respond(
        StatusCode::NO_CONTENT,
        "text/plain; charset=utf-8",
        Vec::new(),
    );
    let h = reply.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECS),
    );
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    reply
}

/// Lets an allowed origin's script read `reply`.
pub fn allow(settings: &Settings, req: &Request, reply: &mut Reply) {
    if req.method == Method::OPTIONS {
        return;
    }
    let h = reply.headers_mut();
    // Caches must keep answers for different origins apart, allowed or not.
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    if let Some(v) = allowed(settings, req).and_then(|o| HeaderValue::from_str(o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
}
