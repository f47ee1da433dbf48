//! `rate_limiting`, `trusted_proxies` and `routes[].rate_limits`, as written.

use std::time::Duration;

use serde::Deserialize;

/// One limit: `{name: per-ip, key: client_ip, rate: 10/s, burst: 20}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Names the limit in metrics and in the `RateLimit` headers; unique within a route.
    pub name: String,
    /// `client_ip` | `route` | `header:<name>` | `claim:<name>` | `sub` (= `claim:sub`).
    pub key: String,
    /// `<count>/s`, `<count>/m`, `<count>/h` or `<count>/d`.
    pub rate: String,
    /// Requests an idle key may make at once; default: the rate's count.
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitBackend {
    /// Each gateway process counts on its own.
    #[default]
    Local,
    /// Counted in Redis, shared by every gateway that uses it.
    Redis,
}

/// `rate_limiting`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitingSpec {
    pub backend: RateLimitBackend,
    pub redis: RedisSpec,
    /// Limits of every route that has no `rate_limits` of its own (`rate_limits: []` opts out).
    pub default: Vec<RateLimitSpec>,
    /// Keys the per-process limiter holds at most (all limits together); the least used go
    /// first when it is full.
    pub max_keys: usize,
    /// Also send `RateLimit-Policy` and `RateLimit` on allowed responses.
    pub headers_on_success: bool,
}

impl Default for RateLimitingSpec {
    fn default() -> Self {
        Self {
            backend: RateLimitBackend::Local,
            redis: RedisSpec::default(),
            default: Vec::new(),
            max_keys: 100_000,
            headers_on_success: false,
        }
    }
}

/// `rate_limiting.redis`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSpec {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Longest wait for one check; then it is answered by the per-process limiter.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Multiplexed connections, used in turn.
    pub connections: usize,
    /// While Redis is unreachable it is tried again this often.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    /// Put before every key, so several gateway fleets can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisSpec {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            timeout: Duration::from_millis(50),
            connections: 2,
            retry_interval: Duration::from_secs(1),
            key_prefix: "gatehouse:rl:".into(),
        }
    }
}
