//! The authorization stage: build the policy question from the route, the verified identity and
//! the request; ask the policy decision point (through the decision cache); allow, deny, or fail
//! closed unless the route opted into failing open.

use std::net::IpAddr;
use std::sync::Arc;

use gatehouse_authz::{Principal, Request, RequestContext, Resource};
use http::{HeaderMap, HeaderName, Method};
use serde_json::{Map, Value};

use super::decision_cache::DecisionCache;
use super::VerifiedIdentity;
use crate::authz_callout::{Answer, CalloutError, Decider};

/// Where a value of the question comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// A capture of the route's path template: `{id}`.
    Capture(String),
    Header(HeaderName),
    Query(String),
    Claim(String),
    Literal(String),
}

impl ValueSource {
    /// `{name}`, `header:<name>`, `query:<name>`, `claim:<name>`, else literal text.
    pub fn parse(text: &str) -> Result<ValueSource, String> {
        if let Some(name) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            return Ok(ValueSource::Capture(name.to_string()));
        }
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(name.trim().as_bytes())
                .map(ValueSource::Header)
                .map_err(|_| format!("{name:?} is not a header name"));
        }
        if let Some(name) = text.strip_prefix("query:") {
            return Ok(ValueSource::Query(name.trim().to_string()));
        }
        if let Some(name) = text.strip_prefix("claim:") {
            return Ok(ValueSource::Claim(name.trim().to_string()));
        }
        Ok(ValueSource::Literal(text.to_string()))
    }

    fn value(&self, facts: &AuthzFacts<'_>) -> Option<Value> {
        match self {
            ValueSource::Capture(name) => facts
                .captures
                .iter()
                .find(|(n, _)| &**n == name)
                .map(|(_, v)| Value::String(v.clone())),
            ValueSource::Header(name) => facts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| Value::String(v.to_string())),
            ValueSource::Query(name) => facts.query.and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| Value::String(v.into_owned()))
            }),
            ValueSource::Claim(name) => facts.identity.and_then(|i| i.claims.get(name)).cloned(),
            ValueSource::Literal(text) => Some(Value::String(text.clone())),
        }
    }
}

/// The action a request asks for.
#[derive(Debug, Clone)]
pub enum Action {
    Fixed(String),
    /// By method; a method not listed asks for its own name in lower case (which no rule grants
    /// unless one names it).
    ByMethod(Vec<(Method, String)>),
}

impl Action {
    fn for_method(&self, method: &Method) -> String {
        match self {
            Action::Fixed(a) => a.clone(),
            Action::ByMethod(map) => map
                .iter()
                .find(|(m, _)| m == method)
                .map_or_else(|| method.as_str().to_ascii_lowercase(), |(_, a)| a.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Remote,
}

/// A route's `authz:` section, compiled.
#[derive(Debug)]
pub struct RouteAuthz {
    pub mode: Mode,
    pub action: Action,
    pub resource_type: String,
    pub resource_id: Option<ValueSource>,
    pub resource_owner: Option<ValueSource>,
    pub resource_attributes: Vec<(String, ValueSource)>,
    pub principal_attributes: Vec<String>,
    pub fail_open: bool,
    pub failure_status: u16,
    pub expose_reason: bool,
}

/// What the stage reads from the request.
pub struct AuthzFacts<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub captures: &'a [(Arc<str>, String)],
    pub identity: Option<&'a VerifiedIdentity>,
    pub client_ip: Option<IpAddr>,
    pub route: &'a str,
    pub request_id: &'a str,
    /// Unix seconds: the time the policies see, and the cache keys on.
    pub now: u64,
}

/// What the stage decided.
pub enum Outcome {
    Allow {
        answer: Answer,
        cached: bool,
    },
    Deny {
        answer: Answer,
        cached: bool,
    },
    /// The policy service failed; the route fails closed.
    Failed(CalloutError),
    /// The policy service failed; the route opted into letting the request through.
    FailedOpen(CalloutError),
}

/// The principal's `sub` on a request without a verified token.
pub const ANONYMOUS: &str = "anonymous";

impl RouteAuthz {
    pub async fn check(
        &self,
        facts: &AuthzFacts<'_>,
        decider: Option<Decider<'_>>,
        cache: &DecisionCache,
    ) -> Outcome {
        let Some(decider) = decider else {
            return self.failed(CalloutError::NotConfigured);
        };
        let request = self.question(facts);
        let view = decider.policy_view();
        if let Some(version) = view.version() {
            cache.observe_version(version);
        }
        let key = cache
            .enabled()
            .then(|| cache_key(&cache.current_version(), &request, view.context_reads()));
        if let Some(answer) = key.as_deref().and_then(|k| cache.get(k)) {
            return verdict(answer, true);
        }
        match decider.decide(&request).await {
            Ok(answer) => {
                if let Some(version) = answer.set_version.as_deref() {
                    cache.observe_version(version);
                }
                if key.is_some() {
                    // Keyed again: a remote answer may have brought the set's version and what
                    // its conditions read, which the lookup key could not know yet.
                    let version = cache.current_version();
                    let key = cache_key(&version, &request, decider.policy_view().context_reads());
                    cache.insert(key, &version, &answer);
                }
                verdict(answer, false)
            }
            Err(e) => self.failed(e),
        }
    }

    fn failed(&self, error: CalloutError) -> Outcome {
        if self.fail_open {
            Outcome::FailedOpen(error)
        } else {
            Outcome::Failed(error)
        }
    }

    /// The question for the policy decision point.
    pub fn question(&self, facts: &AuthzFacts<'_>) -> Request {
        let text = |source: &Option<ValueSource>| {
            source
                .as_ref()
                .and_then(|s| s.value(facts))
                .map(|v| match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
        };
        let principal = match facts.identity {
            Some(identity) => Principal {
                sub: identity.subject.clone(),
                roles: identity.roles.clone(),
                attributes: self
                    .principal_attributes
                    .iter()
                    .filter_map(|c| identity.claims.get(c).map(|v| (c.clone(), v.clone())))
                    .collect(),
            },
            None => Principal {
                sub: ANONYMOUS.into(),
                roles: Vec::new(),
                attributes: Map::new(),
            },
        };
        let resource = Resource {
            kind: self.resource_type.clone(),
            id: text(&self.resource_id).unwrap_or_default(),
            owner: text(&self.resource_owner),
            attributes: self
                .resource_attributes
                .iter()
                .filter_map(|(name, source)| source.value(facts).map(|v| (name.clone(), v)))
                .collect(),
        };
        let mut extra = Map::new();
        extra.insert("method".into(), facts.method.as_str().into());
        extra.insert("path".into(), facts.path.into());
        extra.insert("route".into(), facts.route.into());
        extra.insert("request_id".into(), facts.request_id.into());
        Request {
            principal,
            resource,
            action: self.action.for_method(facts.method),
            context: RequestContext {
                ip: facts.client_ip.map(|ip| ip.to_canonical()),
                time: chrono::DateTime::from_timestamp(facts.now as i64, 0)
                    .map(|t| t.fixed_offset()),
                extra,
            },
        }
    }
}

fn verdict(answer: Answer, cached: bool) -> Outcome {
    if answer.allow {
        Outcome::Allow { answer, cached }
    } else {
        Outcome::Deny { answer, cached }
    }
}

/// Everything the decision can depend on, as one string.
fn cache_key(
    version: &str,
    request: &Request,
    reads: &gatehouse_authz::policy::ContextReads,
) -> String {
    let context: Value = if reads.any {
        serde_json::to_value(&request.context).unwrap_or(Value::Null)
    } else {
        let mut read = Map::new();
        for field in &reads.fields {
            let value = match field.as_str() {
                "ip" => request.context.ip.map(|ip| Value::String(ip.to_string())),
                "time" => request.context.time.map(|t| Value::from(t.timestamp())),
                other => request.context.extra.get(other).cloned(),
            };
            read.insert(field.clone(), value.unwrap_or(Value::Null));
        }
        Value::Object(read)
    };
    let key = (
        version,
        &request.action,
        &request.principal,
        &request.resource,
        context,
    );
    serde_json::to_string(&key).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_authz::policy::ContextReads;

    fn facts<'a>(
        headers: &'a HeaderMap,
        captures: &'a [(Arc<str>, String)],
        identity: Option<&'a VerifiedIdentity>,
        now: u64,
    ) -> AuthzFacts<'a> {
        AuthzFacts {
            method: &Method::PUT,
            path: "/users/alice/documents/7",
            query: Some("v=2&x=%41"),
            headers,
            captures,
            identity,
            client_ip: Some("::ffff:10.1.2.3".parse().unwrap()),
            route: "documents",
            request_id: "rid",
            now,
        }
    }

    fn route() -> RouteAuthz {
        RouteAuthz {
            mode: Mode::Embedded,
            action: Action::ByMethod(vec![(Method::PUT, "edit".into())]),
            resource_type: "document".into(),
            resource_id: Some(ValueSource::parse("{id}").unwrap()),
            resource_owner: Some(ValueSource::parse("{owner}").unwrap()),
            resource_attributes: vec![
                (
                    "tenant".into(),
                    ValueSource::parse("header:x-tenant").unwrap(),
                ),
                ("x".into(), ValueSource::parse("query:x").unwrap()),
            ],
            principal_attributes: vec!["department".into()],
            fail_open: false,
            failure_status: 503,
            expose_reason: false,
        }
    }

    fn alice() -> VerifiedIdentity {
        VerifiedIdentity {
            token: "t".into(),
            issuer: "demo".into(),
            subject: "alice".into(),
            scopes: vec![],
            roles: vec!["editor".into()],
            expires_at: 0,
            claims: serde_json::json!({"department": "eng", "email": "a@x"})
                .as_object()
                .cloned()
                .unwrap(),
        }
    }

    #[test]
    fn the_question_is_built_from_route_identity_and_request() {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "acme".parse().unwrap());
        let captures: Vec<(Arc<str>, String)> =
            vec![("owner".into(), "alice".into()), ("id".into(), "7".into())];
        let id = alice();
        let q = route().question(&facts(&headers, &captures, Some(&id), 1_800_000_000));
        assert_eq!(q.action, "edit");
        assert_eq!(
            (q.resource.kind.as_str(), q.resource.id.as_str()),
            ("document", "7")
        );
        assert_eq!(q.resource.owner.as_deref(), Some("alice"));
        assert_eq!(q.resource.attributes["tenant"], "acme");
        assert_eq!(q.resource.attributes["x"], "A");
        assert_eq!(q.principal.sub, "alice");
        assert_eq!(
            q.principal.attributes.len(),
            1,
            "only the configured claims"
        );
        assert_eq!(q.context.ip.unwrap().to_string(), "10.1.2.3");
        assert_eq!(q.context.extra["request_id"], "rid");
        let anonymous = route().question(&facts(&headers, &captures, None, 0));
        assert_eq!(anonymous.principal.sub, ANONYMOUS);
    }

    #[test]
    fn the_cache_key_holds_exactly_the_context_the_policies_read() {
        let headers = HeaderMap::new();
        let captures = vec![];
        let id = alice();
        let at = |now| route().question(&facts(&headers, &captures, Some(&id), now));
        let nothing = ContextReads::default();
        assert_eq!(
            cache_key("v", &at(1), &nothing),
            cache_key("v", &at(2), &nothing)
        );
        assert_ne!(
            cache_key("v", &at(1), &nothing),
            cache_key("w", &at(1), &nothing)
        );
        let mut time = ContextReads::default();
        time.fields.insert("time".into());
        assert_ne!(cache_key("v", &at(1), &time), cache_key("v", &at(2), &time));
        let everything = ContextReads {
            any: true,
            ..ContextReads::default()
        };
        let key = cache_key("v", &at(1), &everything);
        assert!(key.contains("rid"), "{key}");
    }
}
