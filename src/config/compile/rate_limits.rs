//! `rate_limiting`, `trusted_proxies` and each route's `rate_limits`: the limiter (carried across
//! reloads while its settings hold, so a reload hands nobody a fresh burst) and every route's
//! compiled limits.

use std::path::Path;
use std::sync::Arc;

use http::HeaderName;

use super::key_path::KeyPath;
use super::Compiler;
use crate::client_ip::{parse_network, TrustedProxies};
use crate::config::file::{
    MainFile, RateLimitBackend, RateLimitSpec, RateLimitingSpec, RedisSpec, RouteSpec,
};
use crate::config::Snapshot;
use crate::metrics;
use crate::rate_limit::{Limiter, LocalStore, Quota, RedisLimiter, RedisSettings};
use crate::route_policy::identity_headers::IdentityNamespace;
use crate::route_policy::rate_limit::{KeyKind, RouteLimit, RouteRateLimits};

/// `rate_limiting`, compiled: what each route's limits are built with.
pub(super) struct RateLimiting {
    pub limiter: Arc<Limiter>,
    defaults: Vec<ParsedLimit>,
    headers_on_success: bool,
}

/// A limit whose text was checked, not yet bound to a route.
#[derive(Debug, Clone, PartialEq)]
struct ParsedLimit {
    name: String,
    key: KeyKind,
    quota: Quota,
    count: u32,
    period_secs: u64,
}

const KEY_HINT: &str = "client_ip, route, header:<name>, claim:<name> or sub";
const RATE_HINT: &str = "<count>/s, /m, /h or /d, like 10/s, 600/m or 1000/h";
/// A check waits this long on every request while Redis is slow.
const MAX_REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

impl Compiler {
    pub(super) fn trusted_proxies(&mut self, list: &[String]) -> TrustedProxies {
        let file = self.main_path.clone();
        let mut networks = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match parse_network(text) {
                Ok(network) => networks.push(network),
                Err(e) => {
                    let at = KeyPath::root("trusted_proxies").index(i);
                    let hint =
                        Some("an address or addr/prefix, like 10.0.0.0/8 or fd00::/8".into());
                    self.error(&file, at, e, hint);
                }
            }
        }
        TrustedProxies::new(networks)
    }

    /// Checks `rate_limiting` and builds (or carries over) the limiter.
    pub(super) fn rate_limiting(
        &mut self,
        main: &MainFile,
        previous: Option<&Snapshot>,
    ) -> RateLimiting {
        let file = self.main_path.clone();
        let spec: &RateLimitingSpec = &main.rate_limiting;
        let at = KeyPath::root("rate_limiting");
        if spec.max_keys < 100 {
            self.error(&file, at.field("max_keys"), "at least 100", None);
        }
        let previous = previous.map(|p| &p.rate_limiter);
        let local = previous
            .map(|p| &p.local)
            .filter(|l| l.max_keys() == spec.max_keys)
            .cloned()
            .unwrap_or_else(|| LocalStore::new(spec.max_keys));
        let shared = match spec.backend {
            RateLimitBackend::Local => None,
            RateLimitBackend::Redis => {
                let settings = self.redis_settings(&file, &at.field("redis"), &spec.redis);
                let carried = previous
                    .and_then(|p| p.shared.as_ref())
                    .filter(|r| Some(r.settings()) == settings.as_ref())
                    .cloned();
                match (carried, settings) {
                    (Some(carried), _) => Some(carried),
                    (None, Some(settings)) => match RedisLimiter::new(settings) {
                        Ok(limiter) => Some(limiter),
                        Err(e) => {
                            let msg = format!("not a Redis URL: {e}");
                            let hint = Some("redis://host:port[/db]".into());
                            self.error(&file, at.field("redis").field("url"), msg, hint);
                            None
                        }
                    },
                    (None, None) => None,
                }
            }
        };
        let mut defaults = Vec::new();
        for (i, limit) in spec.default.iter().enumerate() {
            let at = at.field("default").index(i);
            if let Some(parsed) = self.parse_limit(&file, &at, limit) {
                defaults.push(parsed);
            }
        }
        self.check_unique_names(&file, &at.field("default"), &spec.default);
        RateLimiting {
            limiter: Arc::new(Limiter { local, shared }),
            defaults,
            headers_on_success: spec.headers_on_success,
        }
    }

    fn redis_settings(
        &mut self,
        file: &Path,
        at: &KeyPath,
        spec: &RedisSpec,
    ) -> Option<RedisSettings> {
        let before = self.errors.len();
        if spec.timeout.is_zero() || spec.timeout > MAX_REDIS_TIMEOUT {
            let msg = "between 1ms and 1s: every request waits up to this long while Redis is slow";
            self.error(file, at.field("timeout"), msg, Some("like 50ms".into()));
        }
        if !(1..=16).contains(&spec.connections) {
            self.error(file, at.field("connections"), "between 1 and 16", None);
        }
        if spec.retry_interval < std::time::Duration::from_millis(100) {
            self.error(file, at.field("retry_interval"), "at least 100ms", None);
        }
        if spec.url.is_empty() {
            self.error(file, at.field("url"), "must not be empty", None);
        }
        (self.errors.len() == before).then(|| RedisSettings {
            url: spec.url.clone(),
            timeout: spec.timeout,
            connections: spec.connections,
            retry_interval: spec.retry_interval,
            key_prefix: spec.key_prefix.clone(),
        })
    }

    /// The route's limits: its own `rate_limits`, or the defaults when it has none. `has_auth`:
    /// the route verifies tokens, so claim keys can be read.
    pub(super) fn route_rate_limits(
        &mut self,
        file: &Path,
        at: &KeyPath,
        spec: &RouteSpec,
        has_auth: bool,
    ) -> RouteRateLimits {
        let Some(limiting) = self.rate_limiting.clone() else {
            return RouteRateLimits::default();
        };
        let parsed = match &spec.rate_limits {
            None => limiting.defaults.clone(),
            Some(own) => {
                let at = at.field("rate_limits");
                let mut parsed = Vec::new();
                for (i, limit) in own.iter().enumerate() {
                    let at = at.index(i);
                    let Some(p) = self.parse_limit(file, &at, limit) else {
                        continue;
                    };
                    if matches!(p.key, KeyKind::Claim(_)) && !has_auth {
                        let msg = "a claim key needs verified tokens on this route";
                        let hint = Some("set auth.mode required or optional".into());
                        self.error(file, at.field("key"), msg, hint);
                        continue;
                    }
                    parsed.push(p);
                }
                self.check_unique_names(file, &at, own);
                parsed
            }
        };
        let limits: Vec<RouteLimit> = parsed
            .into_iter()
            .map(|p| {
                let counters = (
                    metrics::RATE_LIMIT_DECISIONS
                        .with_label_values(&[&spec.name, &p.name, "allowed"]),
                    metrics::RATE_LIMIT_DECISIONS
                        .with_label_values(&[&spec.name, &p.name, "limited"]),
                );
                RouteLimit::new(
                    &spec.name,
                    &p.name,
                    p.key,
                    p.quota,
                    p.count,
                    p.period_secs,
                    counters,
                )
            })
            .collect();
        if limits.is_empty() {
            return RouteRateLimits::default();
        }
        RouteRateLimits::new(
            limiting.limiter.clone(),
            limits,
            limiting.headers_on_success,
        )
    }

    fn check_unique_names(&mut self, file: &Path, at: &KeyPath, limits: &[RateLimitSpec]) {
        for (i, limit) in limits.iter().enumerate() {
            if limits[..i].iter().any(|l| l.name == limit.name) {
                let msg = format!("limit name {:?} is used twice in this list", limit.name);
                self.error(file, at.index(i).field("name"), msg, None);
            }
        }
    }

    fn parse_limit(
        &mut self,
        file: &Path,
        at: &KeyPath,
        spec: &RateLimitSpec,
    ) -> Option<ParsedLimit> {
        let before = self.errors.len();
        // The name goes into a label and, quoted, into a structured header field.
        let name_ok = !spec.name.is_empty()
            && spec.name.len() <= 64
            && spec
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            let msg = format!("{:?} is not a limit name", spec.name);
            let hint = Some("1 to 64 of A-Z a-z 0-9 - _ .".into());
            self.error(file, at.field("name"), msg, hint);
        }
        let key = match parse_key(&spec.key, &self.identity_namespace) {
            Ok(key) => Some(key),
            Err((msg, hint)) => {
                self.error(file, at.field("key"), msg, Some(hint));
                None
            }
        };
        let rate = match parse_rate(&spec.rate) {
            Some(rate) => Some(rate),
            None => {
                let msg = format!("{:?} is not a rate", spec.rate);
                self.error(file, at.field("rate"), msg, Some(RATE_HINT.into()));
                None
            }
        };
        let (count, period_secs) = rate?;
        let burst = spec.burst.unwrap_or(count);
        let quota = Quota::new(count, period_secs * 1_000_000, burst);
        if quota.is_none() {
            let msg = if burst == 0 {
                "at least 1"
            } else {
                "more than one request per microsecond cannot be measured"
            };
            let field = if burst == 0 { "burst" } else { "rate" };
            self.error(file, at.field(field), msg, None);
        }
        if self.errors.len() > before {
            return None;
        }
        Some(ParsedLimit {
            name: spec.name.clone(),
            key: key?,
            quota: quota?,
            count,
            period_secs,
        })
    }
}

/// `10/s` → (10, 1); units s, m, h, d.
fn parse_rate(text: &str) -> Option<(u32, u64)> {
    let (count, unit) = text.trim().split_once('/')?;
    let count = count.trim().parse::<u32>().ok().filter(|&c| c > 0)?;
    let period = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    Some((count, period))
}

/// A `key`, refusing headers a client could use to pose as someone else.
fn parse_key(
    text: &str,
    identity_namespace: &IdentityNamespace,
) -> Result<KeyKind, (String, String)> {
    match text {
        "client_ip" => return Ok(KeyKind::ClientIp),
        "route" => return Ok(KeyKind::Route),
        "sub" => return Ok(KeyKind::Claim("sub".into())),
        _ => {}
    }
    if let Some(claim) = text.strip_prefix("claim:") {
        if claim.is_empty() {
            return Err(("name the claim".into(), "claim:sub".into()));
        }
        return Ok(KeyKind::Claim(claim.into()));
    }
    let Some(header) = text.strip_prefix("header:") else {
        return Err((format!("{text:?} is not a key"), KEY_HINT.into()));
    };
    let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
        (
            format!("{header:?} is not a header name"),
            KEY_HINT.to_string(),
        )
    })?;
    let lower = name.as_str();
    if identity_namespace.contains(lower) {
        return Err((
            format!("{header:?} is in auth.identity_namespace: a client can write it before the gateway strips it"),
            "key on the verified claim instead, e.g. claim:sub".into(),
        ));
    }
    match lower {
        "authorization" | "cookie" => Err((
            format!("{header:?} carries credentials, not an identity"),
            "key on the verified claim instead, e.g. claim:sub".into(),
        )),
        "x-forwarded-for" | "forwarded" | "x-real-ip" => Err((
            format!("{header:?} is written by the client unless a trusted proxy wrote it"),
            "use client_ip with trusted_proxies".into(),
        )),
        _ => Ok(KeyKind::Header(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_count_and_unit() {
        assert_eq!(parse_rate("10/s"), Some((10, 1)));
        assert_eq!(parse_rate("600/m"), Some((600, 60)));
        assert_eq!(parse_rate(" 1000 / h "), Some((1000, 3600)));
        assert_eq!(parse_rate("5/d"), Some((5, 86_400)));
        for bad in ["10", "10/sec", "0/s", "-1/s", "x/s", "10/", "/s"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_refuse_forgeable_identity_headers() {
        let ns = IdentityNamespace::new(&["X-User-".to_string()]);
        assert_eq!(parse_key("client_ip", &ns), Ok(KeyKind::ClientIp));
        assert_eq!(parse_key("sub", &ns), Ok(KeyKind::Claim("sub".into())));
        assert_eq!(
            parse_key("claim:tenant", &ns),
            Ok(KeyKind::Claim("tenant".into()))
        );
        assert_eq!(
            parse_key("header:X-Api-Key", &ns),
            Ok(KeyKind::Header(HeaderName::from_static("x-api-key")))
        );
        let (msg, hint) = parse_key("header:x-user-id", &ns).unwrap_err();
        assert!(msg.contains("identity_namespace") && hint.contains("claim:"));
        assert!(parse_key("header:Authorization", &ns).is_err());
        assert!(parse_key("header:X-Forwarded-For", &ns)
            .unwrap_err()
            .1
            .contains("trusted_proxies"));
        assert!(parse_key("ip", &ns).is_err());
        assert!(parse_key("claim:", &ns).is_err());
        assert!(parse_key("header:bad header", &ns).is_err());
    }
}
