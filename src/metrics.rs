//! Prometheus metrics, registered once in the default registry (the one the admin `/metrics`
//! endpoint gathers from).

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use http::Method;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec,
};

// Registering a metric only fails on a name clash, which is a programming error caught by the
// first test that touches the metric; a panic at start-up is the right outcome.

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_requests_total",
        "Requests answered, by route, method and status class.",
        &["route", "method", "status"]
    )
    .expect("metric registers once")
});

pub static REQUEST_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "gatehouse_request_duration_seconds",
        "Time from request header to the end of the response, by route.",
        &["route"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registers once")
});

pub static UPSTREAM_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_upstream_errors_total",
        "Failed upstream attempts, by pool and kind (connect, response).",
        &["pool", "kind"]
    )
    .expect("metric registers once")
});

pub static HEALTHY_TARGETS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gatehouse_upstream_healthy_targets",
        "Targets currently eligible for traffic, by pool.",
        &["pool"]
    )
    .expect("metric registers once")
});

pub static CONFIG_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_config_reloads_total",
        "Configuration reload attempts, by result (success, failure).",
        &["result"]
    )
    .expect("metric registers once")
});

pub static OPEN_CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gatehouse_downstream_connections_open",
        "Client connections currently open."
    )
    .expect("metric registers once")
});

pub static ACCESS_LOG_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gatehouse_access_log_dropped_total",
        "Access-log lines dropped because the writer fell behind."
    )
    .expect("metric registers once")
});

pub static HEADER_TIMEOUTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gatehouse_request_header_timeouts_total",
        "Client connections closed because a request header did not arrive in time."
    )
    .expect("metric registers once")
});

pub static AUTH_OUTCOMES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_auth_outcomes_total",
        "Token checks on routes with auth, by route and outcome (verified, anonymous, or why refused).",
        &["route", "outcome"]
    )
    .expect("metric registers once")
});

pub static JWKS_FETCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_jwks_fetches_total",
        "JWKS fetches, by issuer and result (updated, not_modified, error).",
        &["issuer", "result"]
    )
    .expect("metric registers once")
});

pub static JWKS_AGE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gatehouse_jwks_age_seconds",
        "Seconds since the issuer last confirmed the key set (-1: never fetched).",
        &["issuer"]
    )
    .expect("metric registers once")
});

pub static JWKS_KEYS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gatehouse_jwks_keys",
        "Keys usable for verification in the issuer's current key set.",
        &["issuer"]
    )
    .expect("metric registers once")
});

pub static REVOCATION_FEED_AGE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gatehouse_revocation_feed_age_seconds",
        "Seconds since the issuer's revocation feed last answered a poll (-1: never).",
        &["issuer"]
    )
    .expect("metric registers once")
});

pub static REVOCATION_FEED_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_revocation_feed_errors_total",
        "Failed polls of the issuer's revocation feed (network, status other than 200, bad answer).",
        &["issuer"]
    )
    .expect("metric registers once")
});

pub static REVOCATIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "gatehouse_revocations",
        "Revocations held from the issuer's feed, by kind (jti, subject).",
        &["issuer", "kind"]
    )
    .expect("metric registers once")
});

pub static TOKEN_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_verified_token_cache_total",
        "Verified-token cache lookups, by result (hit, miss).",
        &["result"]
    )
    .expect("metric registers once")
});

pub static TOKEN_CACHE_HITS: LazyLock<IntCounter> =
    LazyLock::new(|| TOKEN_CACHE.with_label_values(&["hit"]));
pub static TOKEN_CACHE_MISSES: LazyLock<IntCounter> =
    LazyLock::new(|| TOKEN_CACHE.with_label_values(&["miss"]));

pub static ASSERTIONS_SIGNED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gatehouse_assertions_signed_total",
        "Gateway assertions signed (X-Gatehouse-Assertion); cache hits sign nothing."
    )
    .expect("metric registers once")
});

pub static ASSERTION_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_assertion_cache_total",
        "Gateway assertion lookups, by result (hit: reused, miss: signed).",
        &["result"]
    )
    .expect("metric registers once")
});

/// The two `result` series, resolved once: the request path only increments.
pub static ASSERTION_CACHE_HIT: LazyLock<IntCounter> =
    LazyLock::new(|| ASSERTION_CACHE.with_label_values(&["hit"]));
pub static ASSERTION_CACHE_MISS: LazyLock<IntCounter> =
    LazyLock::new(|| ASSERTION_CACHE.with_label_values(&["miss"]));

pub static AUTHZ_DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_route_authz_total",
        "Authorization stage outcomes, by route and result (allow, deny, error, fail_open).",
        &["route", "result"]
    )
    .expect("metric registers once")
});

pub static AUTHZ_CALLOUT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "gatehouse_authz_callout_seconds",
        "Time to get a decision from the policy decision point (cache hits excluded), by mode.",
        &["mode"],
        vec![
            0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
            0.05, 0.1, 0.25, 0.5, 1.0
        ]
    )
    .expect("metric registers once")
});

pub static AUTHZ_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_authz_cache_total",
        "Decision cache lookups, by result (hit, miss).",
        &["result"]
    )
    .expect("metric registers once")
});

pub static AUTHZ_CACHE_HITS: LazyLock<IntCounter> =
    LazyLock::new(|| AUTHZ_CACHE.with_label_values(&["hit"]));
pub static AUTHZ_CACHE_MISSES: LazyLock<IntCounter> =
    LazyLock::new(|| AUTHZ_CACHE.with_label_values(&["miss"]));

pub static AUTHZ_CACHE_FLUSHES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gatehouse_authz_cache_flushes_total",
        "Decision cache flushes: the policy set's version changed."
    )
    .expect("metric registers once")
});

pub static AUTHZ_CIRCUIT_STATE: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gatehouse_authz_circuit_state",
        "The remote policy service's circuit: 0 closed, 1 open, 2 half-open (one trial call)."
    )
    .expect("metric registers once")
});

pub static AUTHZ_FAIL_OPEN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_authz_fail_open_total",
        "Requests let through because the policy service failed on a route with fail_open, by route.",
        &["route"]
    )
    .expect("metric registers once")
});

pub static RATE_LIMIT_DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_rate_limit_decisions_total",
        "Rate-limit checks, by route, limit and result (allowed, limited). Series are created \
         when the route is compiled; the request path only increments.",
        &["route", "limit", "result"]
    )
    .expect("metric registers once")
});

pub static RATE_LIMIT_REDIS_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_rate_limit_redis_errors_total",
        "Rate-limit checks Redis did not answer, by kind (timeout, connection, reply).",
        &["kind"]
    )
    .expect("metric registers once")
});

pub static RATE_LIMIT_REDIS_FALLBACKS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gatehouse_rate_limit_redis_fallbacks_total",
        "Rate-limit checks answered by the per-process limiter because Redis was unreachable."
    )
    .expect("metric registers once")
});

pub static RATE_LIMIT_REDIS_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gatehouse_rate_limit_redis_up",
        "1 while the shared (Redis) rate limiter is connected, else 0."
    )
    .expect("metric registers once")
});

/// Touch every metric so `/metrics` lists them all from the first scrape.
pub fn init() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_DURATION);
    LazyLock::force(&UPSTREAM_ERRORS);
    LazyLock::force(&HEALTHY_TARGETS);
    // Both `result` series: the ReloadGate that counts them creates them with the store.
    LazyLock::force(&CONFIG_RELOADS);
    LazyLock::force(&OPEN_CONNECTIONS);
    LazyLock::force(&ACCESS_LOG_DROPPED);
    LazyLock::force(&HEADER_TIMEOUTS);
    LazyLock::force(&AUTH_OUTCOMES);
    LazyLock::force(&JWKS_FETCHES);
    LazyLock::force(&JWKS_AGE);
    LazyLock::force(&JWKS_KEYS);
    LazyLock::force(&REVOCATION_FEED_AGE);
    LazyLock::force(&REVOCATION_FEED_ERRORS);
    LazyLock::force(&REVOCATIONS);
    LazyLock::force(&TOKEN_CACHE_HITS);
    LazyLock::force(&TOKEN_CACHE_MISSES);
    LazyLock::force(&ASSERTIONS_SIGNED);
    LazyLock::force(&ASSERTION_CACHE_HIT);
    LazyLock::force(&ASSERTION_CACHE_MISS);
    LazyLock::force(&RATE_LIMIT_DECISIONS);
    LazyLock::force(&RATE_LIMIT_REDIS_ERRORS);
    LazyLock::force(&RATE_LIMIT_REDIS_FALLBACKS);
    LazyLock::force(&RATE_LIMIT_REDIS_UP);
}

/// Sets the key-set age gauge from `(issuer, age)` pairs at scrape time (`None`: never fetched).
pub fn publish_key_set_ages<'a>(issuers: impl IntoIterator<Item = (&'a str, Option<u64>)>) {
    JWKS_AGE.reset();
    for (name, age) in issuers {
        let age = age.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
        JWKS_AGE.with_label_values(&[name]).set(age);
    }
}

/// What the scrape shows of one issuer's revocation feed.
pub struct FeedState<'a> {
    pub issuer: &'a str,
    /// Seconds since the last successful poll; `None`: never.
    pub age: Option<u64>,
    pub jtis: usize,
    pub subjects: usize,
}

/// Sets the revocation-feed gauges at scrape time from the running snapshot's feeds, so a feed
/// a reload removed disappears, and every configured one (both kinds) is listed from the start.
pub fn publish_revocation_feeds<'a>(feeds: impl IntoIterator<Item = FeedState<'a>>) {
    REVOCATION_FEED_AGE.reset();
    REVOCATIONS.reset();
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    for feed in feeds {
        let age = feed
            .age
            .map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
        REVOCATION_FEED_AGE
            .with_label_values(&[feed.issuer])
            .set(age);
        REVOCATIONS
            .with_label_values(&[feed.issuer, "jti"])
            .set(count(feed.jtis));
        REVOCATIONS
            .with_label_values(&[feed.issuer, "subject"])
            .set(count(feed.subjects));
    }
}

/// Sets the healthy-target gauge from `(pool name, healthy targets)` pairs of the running
/// snapshot, at scrape time: a pool removed by a reload disappears from the next scrape, whatever
/// its health task was doing. Takes pairs rather than the snapshot so that metrics, which the
/// compiled config itself uses, never depends on the config module.
pub fn publish_pool_health<'a>(pools: impl IntoIterator<Item = (&'a str, usize)>) {
    HEALTHY_TARGETS.reset();
    for (name, healthy) in pools {
        HEALTHY_TARGETS
            .with_label_values(&[name])
            .set(i64::try_from(healthy).unwrap_or(i64::MAX));
    }
}

/// Counts one open client connection for as long as it lives.
pub struct OpenConnection(());

impl OpenConnection {
    pub fn open() -> Self {
        OPEN_CONNECTIONS.inc();
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.dec();
    }
}

const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The methods that get their own `method` label. HTTP lets a client send any token as a method,
/// so labelling by the raw token would let a client create series without bound (and memory
/// with them); every other method is counted under [`OTHER_METHOD`].
const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];
const OTHER_METHOD: &str = "other";

fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

/// Index into a route's method row: a known method's position, or the last slot for all others.
fn method_slot(method: &Method) -> usize {
    METHODS
        .iter()
        .position(|m| m == method)
        .unwrap_or(METHODS.len())
}

fn method_label(slot: usize) -> &'static str {
    METHODS.get(slot).map_or(OTHER_METHOD, Method::as_str)
}

/// One route's metric handles, resolved when the route is compiled so that recording a request
/// is an array index and an atomic add, not a label hash under a lock.
pub struct RouteMetrics {
    route: Arc<str>,
    duration: Histogram,
    /// `[method slot][status class]`, created on first use so unused series are never exported.
    /// The last method slot is `other`.
    requests: [[OnceLock<IntCounter>; STATUS_CLASSES.len()]; METHODS.len() + 1],
    /// Auth outcomes by slot (the caller's fixed outcome index), created on first use.
    auth: [OnceLock<IntCounter>; AUTH_OUTCOME_SLOTS],
    /// Authorization results by slot ([`AUTHZ_RESULTS`]), created on first use.
    authz: [OnceLock<IntCounter>; AUTHZ_RESULTS.len()],
}

/// The `result` labels of `gatehouse_route_authz_total`, by slot.
pub const AUTHZ_RESULTS: [&str; 4] = ["allow", "deny", "error", "fail_open"];

/// Room for every auth outcome a route can record.
pub const AUTH_OUTCOME_SLOTS: usize = 17;

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        Self {
            route: route.into(),
            duration: REQUEST_DURATION.with_label_values(&[route]),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            auth: std::array::from_fn(|_| OnceLock::new()),
            authz: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts one authorization result, one of [`AUTHZ_RESULTS`].
    pub fn record_authz(&self, result: &str) {
        let Some(slot) = AUTHZ_RESULTS.iter().position(|r| *r == result) else {
            return;
        };
        self.authz[slot]
            .get_or_init(|| AUTHZ_DECISIONS.with_label_values(&[&*self.route, result]))
            .inc();
        if result == "fail_open" {
            AUTHZ_FAIL_OPEN.with_label_values(&[&*self.route]).inc();
        }
    }

    /// Counts one auth outcome; `slot` is fixed per `outcome` label, below [`AUTH_OUTCOME_SLOTS`].
    pub fn record_auth(&self, slot: usize, outcome: &'static str) {
        if let Some(counter) = self.auth.get(slot) {
            counter
                .get_or_init(|| AUTH_OUTCOMES.with_label_values(&[&self.route, outcome]))
                .inc();
        }
    }

    pub fn record(&self, method: &Method, status: u16, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
        let (slot, class) = (method_slot(method), status_class(status));
        self.requests[slot][class]
            .get_or_init(|| {
                REQUESTS.with_label_values(&[
                    &self.route,
                    method_label(slot),
                    STATUS_CLASSES[class],
                ])
            })
            .inc();
    }
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .finish()
    }
}

/// Requests that matched no route.
pub static UNROUTED: LazyLock<RouteMetrics> = LazyLock::new(|| RouteMetrics::new("-"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standard_methods_get_their_own_label() {
        for method in &METHODS {
            assert_eq!(method_label(method_slot(method)), method.as_str());
        }
        for token in ["FOOBAR1", "PROPFIND", "get"] {
            let method = Method::from_bytes(token.as_bytes()).expect("a method token");
            assert_eq!(method_label(method_slot(&method)), "other", "{token}");
        }
    }
}
