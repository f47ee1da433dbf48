//! The HTTP API as plain functions of a buffered request:
//!
//! - `POST /authz/v1/authorize[?explain=true]`
//! - `POST /authz/v1/authorize/batch[?explain=true]`
//! - `GET  /authz/v1/policies`
//!
//! A malformed request is a 400 whose JSON names the field at fault; nothing here answers 500 for
//! a client's mistake, and nothing denies silently.

use http::{header, Method, Response, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::authorizer::Authorizer;
use crate::decision::{Decision, Options};
use crate::metrics;
use crate::policy::ContextReads;
use crate::request::{parse_json, BatchRequest, InvalidRequest, Request};

pub const AUTHORIZE: &str = "/authz/v1/authorize";
pub const BATCH: &str = "/authz/v1/authorize/batch";
pub const POLICIES: &str = "/authz/v1/policies";

pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(bytes)
        .unwrap_or_default()
}

pub fn error(status: StatusCode, error: &str, message: &str) -> Response<Vec<u8>> {
    json_response(status, &json!({"error": error, "message": message}))
}

fn bad_request(e: InvalidRequest) -> Response<Vec<u8>> {
    // A fixed set of labels: unknown names (query parameters, JSON keys) are the client's
    // choice, and a series per name would let any client grow /metrics without bound.
    let top = e.field.split(['.', '[']).next().unwrap_or_default();
    let top = match top {
        "body" | "principal" | "resource" | "action" | "context" | "checks" | "explain" => top,
        _ => "other",
    };
    metrics::BAD_REQUESTS.with_label_values(&[top]).inc();
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": "invalid_request", "field": e.field, "message": e.message}),
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Vec<u8>> {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("use {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// `explain=true|false` (also `1|0`); anything else names the parameter.
fn options(query: Option<&str>) -> Result<Options, InvalidRequest> {
    let mut options = Options::default();
    for (key, value) in query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
    {
        match (key, value) {
            ("explain", "true" | "1" | "") => options.explain = true,
            ("explain", "false" | "0") => options.explain = false,
            ("explain", other) => {
                return Err(InvalidRequest {
                    field: "explain".into(),
                    message: format!("expected true or false, got {other:?}"),
                })
            }
            (other, _) => {
                return Err(InvalidRequest {
                    field: other.into(),
                    message: "unknown query parameter (known: explain)".into(),
                })
            }
        }
    }
    Ok(options)
}

#[derive(Serialize)]
struct BatchAnswer<'a> {
    results: Vec<BatchResult<'a>>,
}

#[derive(Serialize)]
struct BatchResult<'a> {
    resource: serde_json::Value,
    action: &'a str,
    #[serde(flatten)]
    decision: Decision,
}

/// One decision, with the version of the policy set that made it.
#[derive(Serialize)]
struct Answer<'a> {
    #[serde(flatten)]
    decision: Decision,
    policy_set_version: &'a str,
    /// The context fields the set's conditions read: what a cache of this answer must key on.
    context_reads: &'a ContextReads,
}

pub fn handle(
    authorizer: &Authorizer,
    max_batch_checks: usize,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Response<Vec<u8>> {
    match (path, method) {
        (AUTHORIZE, &Method::POST) => {
            let parsed = options(query).and_then(|o| {
                let request: Request = parse_json(body)?;
                request.validate()?;
                Ok((o, request))
            });
            match parsed {
                Ok((options, request)) => {
                    // The set's version lets a caller that caches answers drop them when the
                    // policies change.
                    let set = authorizer.policies();
                    let answer = Answer {
                        decision: authorizer.decide(&request, options),
                        policy_set_version: set.version(),
                        context_reads: &set.context_reads,
                    };
                    json_response(StatusCode::OK, &answer)
                }
                Err(e) => bad_request(e),
            }
        }
        (BATCH, &Method::POST) => {
            let parsed = options(query).and_then(|o| {
                let batch: BatchRequest = parse_json(body)?;
                batch.validate(max_batch_checks)?;
                Ok((o, batch))
            });
            match parsed {
                Ok((options, batch)) => {
                    let decisions = authorizer.decide_batch(&batch, options);
                    let results = decisions
                        .into_iter()
                        .zip(&batch.checks)
                        .map(|(decision, check)| BatchResult {
                            resource: json!({"type": check.resource.kind, "id": check.resource.id}),
                            action: &check.action,
                            decision,
                        })
                        .collect();
                    json_response(StatusCode::OK, &BatchAnswer { results })
                }
                Err(e) => bad_request(e),
            }
        }
        (POLICIES, &Method::GET) => {
            let set = authorizer.policies();
            json_response(
                StatusCode::OK,
                &json!({
                    "hash": set.hash,
                    "version": set.version(),
                    "loaded_at": humantime::format_rfc3339_seconds(set.loaded_at).to_string(),
                    "directory": set.directory.display().to_string(),
                    "policies": set.policies,
                }),
            )
        }
        (AUTHORIZE | BATCH, _) => method_not_allowed("POST"),
        (POLICIES, _) => method_not_allowed("GET"),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}
