//! The rate-limit stages: a route's `rate_limits` (or `rate_limiting.default`), checked before
//! the JWT stage for limits keyed on the client ip, a header or the route, and after it for
//! limits keyed on claims, which exist only once a token is verified.
//!
//! Keys, and what a request without one is keyed by:
//!
//! | `key`           | keyed by                         | when missing                         |
//! |-----------------|----------------------------------|--------------------------------------|
//! | `client_ip`     | the client address (see `client_ip`, `trusted_proxies`) | —         |
//! | `route`         | nothing: one bucket for the route | —                                   |
//! | `header:<name>` | the header's value               | the client ip                        |
//! | `claim:<name>`, `sub` | the verified claim's value | the client ip (anonymous requests on `auth.mode: optional` routes, or a token without the claim) |
//!
//! Keying a missing value by the client ip, rather than skipping the limit, means a client cannot
//! escape a limit by leaving the header out or by not sending a token. Values longer than 64 bytes
//! are keyed by their SHA-256. Every route keeps its own buckets, default limits included.
//!
//! Answers follow draft-ietf-httpapi-ratelimit-headers-08: a refusal is `429` with `Retry-After`,
//! `RateLimit-Policy: "<limit>";q=<count>;w=<period s>` and `RateLimit: "<limit>";r=0;t=<s>`
//! (`t` equal to `Retry-After`, as §5 asks), naming the limit that refused. With
//! `headers_on_success` allowed responses carry both fields too, one item per limit checked,
//! with `r` the requests left and `t` the seconds until the whole burst is back.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use prometheus::IntCounter;
use serde_json::Value;

use super::VerifiedIdentity;
use crate::rate_limit::gcra::{ceil_secs, Quota};
use crate::rate_limit::{Check, KeyRef, Limiter, Outcome};

/// What a limit is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    ClientIp,
    Route,
    Header(HeaderName),
    Claim(String),
}

impl KeyKind {
    /// Claims exist only after the JWT stage.
    pub fn stage(&self) -> Stage {
        match self {
            KeyKind::Claim(_) => Stage::AfterAuth,
            _ => Stage::BeforeAuth,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    BeforeAuth,
    AfterAuth,
}

/// One limit of one route, compiled.
#[derive(Debug)]
pub struct RouteLimit {
    /// The limit's name: the `limit` label and the header item.
    pub name: Arc<str>,
    /// `<route>/<limit>`, which names its state (Redis keys; hashed for the local store).
    pub state_name: Box<str>,
    pub state_id: u64,
    pub key: KeyKind,
    pub quota: Quota,
    /// `"<name>";q=<count>;w=<period>`, written once.
    policy_item: String,
    allowed: IntCounter,
    limited: IntCounter,
}

impl RouteLimit {
    /// `count` requests per `period_secs`; `allowed`/`limited` are this limit's decision series.
    pub fn new(
        route: &str,
        name: &str,
        key: KeyKind,
        quota: Quota,
        count: u32,
        period_secs: u64,
        counters: (IntCounter, IntCounter),
    ) -> RouteLimit {
        let state_name: Box<str> = format!("{route}/{name}").into();
        RouteLimit {
            name: name.into(),
            state_id: state_id(&state_name),
            state_name,
            key,
            quota,
            policy_item: format!("\"{name}\";q={count};w={period_secs}"),
            allowed: counters.0,
            limited: counters.1,
        }
    }
}

/// A stable id for a limit's state: the same route and limit name after a reload keep their
/// buckets (the local store is per process, so per-process stability is all it needs).
fn state_id(state_name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    state_name.hash(&mut hasher);
    hasher.finish()
}

/// A route's limits, split by stage. Empty (the default): nothing is checked, nothing allocated.
#[derive(Debug, Default)]
pub struct RouteRateLimits {
    limiter: Option<Arc<Limiter>>,
    before_auth: Vec<RouteLimit>,
    after_auth: Vec<RouteLimit>,
    headers_on_success: bool,
}

/// What the stage reads of a request.
pub struct RequestFacts<'a> {
    pub client_ip: Option<IpAddr>,
    pub headers: &'a HeaderMap,
    /// Set after the JWT stage, when the token was verified.
    pub identity: Option<&'a VerifiedIdentity>,
}

/// A refusal: the 429's message and headers.
#[derive(Debug, PartialEq, Eq)]
pub struct Limited {
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

/// `RateLimit-Policy` and `RateLimit` for an allowed response (`headers_on_success`), gathered
/// over both stages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SuccessHeaders {
    pub policy: String,
    pub limit: String,
}

impl RouteRateLimits {
    pub fn new(limiter: Arc<Limiter>, limits: Vec<RouteLimit>, headers_on_success: bool) -> Self {
        let (before_auth, after_auth) = limits
            .into_iter()
            .partition(|l| l.key.stage() == Stage::BeforeAuth);
        RouteRateLimits {
            limiter: Some(limiter),
            before_auth,
            after_auth,
            headers_on_success,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.before_auth.is_empty() && self.after_auth.is_empty()
    }

    pub fn limits(&self) -> impl Iterator<Item = &RouteLimit> {
        self.before_auth.iter().chain(&self.after_auth)
    }

    /// Runs the limits of `stage`. Allowed: every one counted the request, and `shown` gets
    /// their header items when the route shows them. Refused: none counted it.
    pub async fn check(
        &self,
        stage: Stage,
        facts: &RequestFacts<'_>,
        shown: &mut Option<SuccessHeaders>,
    ) -> Result<(), Limited> {
        let limits = match stage {
            Stage::BeforeAuth => &self.before_auth,
            Stage::AfterAuth => &self.after_auth,
        };
        let Some(limiter) = self.limiter.as_ref().filter(|_| !limits.is_empty()) else {
            return Ok(());
        };
        let values: Vec<KeyValue<'_>> = limits.iter().map(|l| key_value(&l.key, facts)).collect();
        let checks: Vec<Check<'_>> = limits
            .iter()
            .zip(&values)
            .map(|(limit, value)| Check {
                name: &limit.state_name,
                limit_id: limit.state_id,
                key: value.as_key(),
                quota: &limit.quota,
            })
            .collect();
        let outcome = limiter.check(&checks).await;
        match outcome {
            Outcome::Refused { index, wait_us } => {
                let Some(limit) = limits.get(index) else {
                    return Ok(());
                };
                limit.limited.inc();
                Err(refusal(limit, wait_us))
            }
            Outcome::Allowed { .. } => {
                for limit in limits {
                    limit.allowed.inc();
                }
                if self.headers_on_success {
                    let headers = shown.get_or_insert_with(SuccessHeaders::default);
                    for (i, limit) in limits.iter().enumerate() {
                        let remaining = outcome.remaining(i, &limit.quota).unwrap_or(0);
                        let reset = ceil_secs(outcome.until_full(i).unwrap_or(0));
                        headers.add(limit, remaining, reset);
                    }
                }
                Ok(())
            }
        }
    }
}

impl SuccessHeaders {
    fn add(&mut self, limit: &RouteLimit, remaining: u64, reset: u64) {
        if !self.policy.is_empty() {
            self.policy.push_str(", ");
            self.limit.push_str(", ");
        }
        self.policy.push_str(&limit.policy_item);
        let _ = write!(self.limit, "\"{}\";r={remaining};t={reset}", limit.name);
    }
}

/// The 429's headers: `Retry-After` and the refusing limit's fields, `t` equal to `Retry-After`.
fn refusal(limit: &RouteLimit, wait_us: u64) -> Limited {
    // delay-seconds is whole: round up, and never tell a refused client "0".
    let retry_after = ceil_secs(wait_us).max(1);
    Limited {
        message: format!(
            "rate limit \"{}\" exceeded; retry in {retry_after} s",
            limit.name
        ),
        headers: vec![
            ("retry-after", retry_after.to_string()),
            ("ratelimit-policy", limit.policy_item.clone()),
            (
                "ratelimit",
                format!("\"{}\";r=0;t={retry_after}", limit.name),
            ),
        ],
    }
}

/// A key's value, owned only when a claim is not a string.
enum KeyValue<'a> {
    Whole,
    Ip(IpAddr),
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl KeyValue<'_> {
    fn as_key(&self) -> KeyRef<'_> {
        match self {
            KeyValue::Whole => KeyRef::Whole,
            KeyValue::Ip(ip) => KeyRef::Ip(*ip),
            KeyValue::Borrowed(b) => KeyRef::text(b),
            KeyValue::Owned(o) => KeyRef::text(o),
        }
    }
}

fn key_value<'a>(kind: &KeyKind, facts: &RequestFacts<'a>) -> KeyValue<'a> {
    // A request without a peer address (not over TCP) shares one bucket.
    let by_ip = || KeyValue::Ip(facts.client_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    match kind {
        KeyKind::Route => KeyValue::Whole,
        KeyKind::ClientIp => by_ip(),
        KeyKind::Header(name) => match facts.headers.get(name) {
            Some(value) => KeyValue::Borrowed(value.as_bytes()),
            None => by_ip(),
        },
        KeyKind::Claim(claim) => match facts.identity.and_then(|i| i.claims.get(claim)) {
            Some(Value::String(s)) => KeyValue::Borrowed(s.as_bytes()),
            Some(Value::Null) | None => by_ip(),
            Some(other) => KeyValue::Owned(other.to_string().into_bytes()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::LocalStore;
    use serde_json::json;

    fn counters() -> (IntCounter, IntCounter) {
        (
            IntCounter::new("a", "a").unwrap(),
            IntCounter::new("l", "l").unwrap(),
        )
    }

    fn limits(list: Vec<(&str, KeyKind, u32, u32)>, on_success: bool) -> RouteRateLimits {
        let limiter = Arc::new(Limiter {
            local: LocalStore::new(1000),
            shared: None,
        });
        let compiled = list
            .into_iter()
            .map(|(name, key, count, burst)| {
                let quota = Quota::new(count, 60_000_000, burst).unwrap();
                RouteLimit::new("r", name, key, quota, count, 60, counters())
            })
            .collect();
        RouteRateLimits::new(limiter, compiled, on_success)
    }

    fn identity(claims: serde_json::Value) -> VerifiedIdentity {
        VerifiedIdentity {
            token: "t".into(),
            issuer: "i".into(),
            subject: "s".into(),
            scopes: vec![],
            roles: vec![],
            expires_at: 0,
            claims: claims.as_object().cloned().unwrap(),
        }
    }

    async fn run(
        limits: &RouteRateLimits,
        stage: Stage,
        ip: &str,
        headers: &HeaderMap,
        identity: Option<&VerifiedIdentity>,
    ) -> Result<(), Limited> {
        let facts = RequestFacts {
            client_ip: Some(ip.parse().unwrap()),
            headers,
            identity,
        };
        limits.check(stage, &facts, &mut None).await
    }

    #[tokio::test]
    async fn the_refusal_names_its_limit_in_draft_08_fields() {
        let l = limits(vec![("per-ip", KeyKind::ClientIp, 60, 2)], false);
        let h = HeaderMap::new();
        for _ in 0..2 {
            assert!(run(&l, Stage::BeforeAuth, "192.0.2.1", &h, None)
                .await
                .is_ok());
        }
        let refused = run(&l, Stage::BeforeAuth, "192.0.2.1", &h, None)
            .await
            .unwrap_err();
        assert_eq!(
            refused.headers,
            vec![
                ("retry-after", "1".to_string()),
                ("ratelimit-policy", "\"per-ip\";q=60;w=60".to_string()),
                ("ratelimit", "\"per-ip\";r=0;t=1".to_string()),
            ]
        );
        assert!(run(&l, Stage::BeforeAuth, "192.0.2.2", &h, None)
            .await
            .is_ok());
        // Claim limits are not looked at before auth.
        assert!(run(&l, Stage::AfterAuth, "192.0.2.1", &h, None)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn headers_and_claims_key_with_the_ip_as_fallback() {
        let l = limits(
            vec![
                (
                    "per-key",
                    KeyKind::Header(HeaderName::from_static("x-api-key")),
                    1,
                    1,
                ),
                ("per-user", KeyKind::Claim("sub".into()), 1, 1),
            ],
            false,
        );
        let mut keyed = HeaderMap::new();
        keyed.insert("x-api-key", "k1".parse().unwrap());
        let none = HeaderMap::new();
        assert!(run(&l, Stage::BeforeAuth, "192.0.2.1", &keyed, None)
            .await
            .is_ok());
        assert!(run(&l, Stage::BeforeAuth, "192.0.2.9", &keyed, None)
            .await
            .is_err());
        // Without the header: the ip's own bucket.
        assert!(run(&l, Stage::BeforeAuth, "192.0.2.1", &none, None)
            .await
            .is_ok());
        assert!(run(&l, Stage::BeforeAuth, "192.0.2.1", &none, None)
            .await
            .is_err());

        let alice = identity(json!({"sub": "alice"}));
        let bob = identity(json!({"sub": "bob"}));
        assert!(run(&l, Stage::AfterAuth, "192.0.2.1", &none, Some(&alice))
            .await
            .is_ok());
        assert!(run(&l, Stage::AfterAuth, "192.0.2.7", &none, Some(&alice))
            .await
            .is_err());
        assert!(run(&l, Stage::AfterAuth, "192.0.2.1", &none, Some(&bob))
            .await
            .is_ok());
        // Anonymous: keyed by ip.
        assert!(run(&l, Stage::AfterAuth, "192.0.2.3", &none, None)
            .await
            .is_ok());
        assert!(run(&l, Stage::AfterAuth, "192.0.2.3", &none, None)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn allowed_responses_can_show_every_limit() {
        let l = limits(
            vec![
                ("fast", KeyKind::ClientIp, 10, 3),
                ("slow", KeyKind::Route, 100, 100),
            ],
            true,
        );
        let facts = RequestFacts {
            client_ip: Some("192.0.2.1".parse().unwrap()),
            headers: &HeaderMap::new(),
            identity: None,
        };
        let mut shown = None;
        l.check(Stage::BeforeAuth, &facts, &mut shown)
            .await
            .unwrap();
        assert_eq!(
            shown,
            Some(SuccessHeaders {
                policy: "\"fast\";q=10;w=60, \"slow\";q=100;w=60".into(),
                limit: "\"fast\";r=2;t=6, \"slow\";r=99;t=1".into(),
            })
        );
    }
}
