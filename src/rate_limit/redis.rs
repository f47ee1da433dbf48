//! Limits shared by every gateway that points at one Redis.
//!
//! A check is one round trip: `EVALSHA` of [`SCRIPT`] (loaded when a connection opens; the
//! `redis` crate reloads it by itself after a `NOSCRIPT`, e.g. when Redis restarted) over a
//! multiplexed connection taken round-robin from a few. Redis' clock decides, so gateways need not
//! agree on the time.
//!
//! Redis is never waited for beyond `timeout`. Any error or timeout marks it down: the caller
//! falls back to the local store, the outage is logged once (not per request), and a background
//! task reconnects every `retry_interval` until Redis answers `PING` again, then logs the
//! recovery. While down, requests do not touch Redis at all, so an outage costs no latency.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::{Check, KeyRef, Outcome};
use crate::metrics;

/// The GCRA script (see `gcra.lua` and [`super::gcra`]).
pub const SCRIPT: &str = include_str!("gcra.lua");

/// `rate_limiting.redis`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    /// Longest wait for one check's answer; then the check is answered locally.
    pub timeout: Duration,
    /// Multiplexed connections, used round-robin.
    pub connections: usize,
    /// How often a lost Redis is tried again.
    pub retry_interval: Duration,
    /// Prefixed to every key, so several gateway fleets can share one Redis.
    pub key_prefix: String,
}

/// Connections are opened (and their I/O driven) on a small runtime of their own: the proxy's
/// runtimes are per listener and per thread, and a connection must not die with one of them.
static RUNTIME: LazyLock<Option<tokio::runtime::Runtime>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("rate-limit-redis")
        .enable_all()
        .build()
        .map_err(
            |e| tracing::error!(error = %e, "cannot start the Redis runtime; limiting locally"),
        )
        .ok()
});

pub struct RedisLimiter {
    settings: RedisSettings,
    client: redis::Client,
    script: redis::Script,
    /// `None` while Redis is down (or not reached yet).
    connections: ArcSwapOption<Vec<MultiplexedConnection>>,
    next: AtomicUsize,
    /// Whether the last contact succeeded; flips are logged.
    reachable: AtomicBool,
    reconnecting: AtomicBool,
    /// Whether the first contact was logged (success or failure): a Redis unreachable from the
    /// start is logged once too, like a later outage.
    first_contact_logged: AtomicBool,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("timeout", &self.settings.timeout)
            .field("reachable", &self.reachable.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Why a check could not be answered by Redis: the `kind` label of
/// `gatehouse_rate_limit_redis_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFailure {
    Timeout,
    Connection,
    /// Redis answered with an error or an answer the script never gives.
    Reply,
}

impl RedisFailure {
    pub fn label(self) -> &'static str {
        match self {
            RedisFailure::Timeout => "timeout",
            RedisFailure::Connection => "connection",
            RedisFailure::Reply => "reply",
        }
    }
}

impl RedisLimiter {
    /// Does not connect: [`RedisLimiter::start`] does, once the snapshot is running.
    pub fn new(settings: RedisSettings) -> Result<Arc<RedisLimiter>, redis::RedisError> {
        let client = redis::Client::open(settings.url.as_str())?;
        Ok(Arc::new(RedisLimiter {
            settings,
            client,
            script: redis::Script::new(SCRIPT),
            connections: ArcSwapOption::empty(),
            next: AtomicUsize::new(0),
            reachable: AtomicBool::new(false),
            reconnecting: AtomicBool::new(false),
            first_contact_logged: AtomicBool::new(false),
        }))
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Connects in the background (a no-op while connected or connecting).
    pub fn start(self: &Arc<Self>) {
        if self.connections.load().is_none() {
            self.reconnect();
        }
    }

    /// The answer from Redis, or `None` when it is down, slow or failing (the caller then
    /// answers locally).
    pub async fn check(self: &Arc<Self>, checks: &[Check<'_>]) -> Option<Outcome> {
        let mut connection = self.pick()?;
        let mut invocation = self.script.prepare_invoke();
        for check in checks {
            invocation.key(self.key(check));
        }
        for check in checks {
            invocation
                .arg(check.quota.interval_us)
                .arg(check.quota.tolerance_us);
        }
        let answer = tokio::time::timeout(
            self.settings.timeout,
            invocation.invoke_async::<Vec<i64>>(&mut connection),
        )
        .await;
        let failure = match answer {
            Ok(Ok(reply)) => match parse(&reply, checks.len()) {
                Some(outcome) => return Some(outcome),
                None => RedisFailure::Reply,
            },
            Ok(Err(e)) if is_connection_error(&e) => RedisFailure::Connection,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "rate-limit script failed");
                RedisFailure::Reply
            }
            Err(_) => RedisFailure::Timeout,
        };
        self.failed(failure);
        None
    }

    fn pick(&self) -> Option<MultiplexedConnection> {
        let connections = self.connections.load();
        let list = connections.as_ref()?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % list.len().max(1);
        list.get(i).cloned()
    }

    /// `<prefix><route>/<limit>|<kind>:<value>`; binary-safe, as Redis keys are.
    fn key(&self, check: &Check<'_>) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.settings.key_prefix.len() + 96);
        key.extend_from_slice(self.settings.key_prefix.as_bytes());
        key.extend_from_slice(check.name.as_bytes());
        match &check.key {
            KeyRef::Whole => key.extend_from_slice(b"|route"),
            KeyRef::Ip(ip) => {
                key.extend_from_slice(b"|ip:");
                key.extend_from_slice(ip.to_string().as_bytes());
            }
            KeyRef::Text(text) => {
                key.extend_from_slice(b"|v:");
                key.extend_from_slice(text);
            }
            KeyRef::Digest(digest) => {
                key.extend_from_slice(b"|sha256:");
                key.extend_from_slice(hex::encode(digest).as_bytes());
            }
        }
        key
    }

    fn failed(self: &Arc<Self>, failure: RedisFailure) {
        metrics::RATE_LIMIT_REDIS_ERRORS
            .with_label_values(&[failure.label()])
            .inc();
        // Only the first failure of an outage drops the connections and starts reconnecting.
        if self.connections.swap(None).is_some() {
            if self.reachable.swap(false, Ordering::Relaxed) {
                tracing::warn!(
                    failure = ?failure,
                    timeout = ?self.settings.timeout,
                    "rate limiting: Redis did not answer; limiting per process until it is back"
                );
            }
            metrics::RATE_LIMIT_REDIS_UP.set(0);
            self.reconnect();
        }
    }

    /// Reconnects in the background until Redis answers; single-flight.
    fn reconnect(self: &Arc<Self>) {
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(runtime) = RUNTIME.as_ref() else {
            return;
        };
        let limiter: Weak<RedisLimiter> = Arc::downgrade(self);
        let retry = self.settings.retry_interval;
        runtime.spawn(async move {
            let mut first = true;
            loop {
                if !first {
                    tokio::time::sleep(retry).await;
                }
                first = false;
                // A limiter dropped by a reload stops trying.
                let Some(limiter) = limiter.upgrade() else {
                    return;
                };
                match limiter.connect().await {
                    Ok(connections) => {
                        limiter.connections.store(Some(Arc::new(connections)));
                        limiter.reconnecting.store(false, Ordering::Release);
                        limiter.first_contact_logged.store(true, Ordering::Relaxed);
                        metrics::RATE_LIMIT_REDIS_UP.set(1);
                        if !limiter.reachable.swap(true, Ordering::Relaxed) {
                            tracing::info!("rate limiting: Redis reachable, limits are shared");
                        }
                        return;
                    }
                    Err(e) if !limiter.first_contact_logged.swap(true, Ordering::Relaxed) => {
                        tracing::warn!(error = %e, "rate limiting: Redis unreachable; limiting per process until it is reached");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "rate limiting: Redis still unreachable");
                    }
                }
            }
        });
    }

    async fn connect(&self) -> Result<Vec<MultiplexedConnection>, redis::RedisError> {
        // Connecting is off the request path: give it longer than one check gets.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.settings.timeout.max(Duration::from_secs(1)))
            .set_response_timeout(self.settings.timeout.max(Duration::from_secs(1)));
        let mut connections = Vec::with_capacity(self.settings.connections);
        for _ in 0..self.settings.connections.max(1) {
            let mut connection = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await?;
            connections.push(connection);
        }
        // Loaded once here; checks then send only its SHA (EVALSHA).
        if let Some(connection) = connections.first_mut() {
            self.script.load_async(connection).await?;
        }
        Ok(connections)
    }
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// Reads the script's answer: `{1, now, tat_1..tat_n}` or `{0, i, wait}` (1-based `i`).
fn parse(reply: &[i64], checks: usize) -> Option<Outcome> {
    let number = |i: usize| reply.get(i).and_then(|&v| u64::try_from(v).ok());
    match reply.first()? {
        1 if reply.len() == checks + 2 => {
            let tats = (2..reply.len()).map(number).collect::<Option<Vec<_>>>()?;
            Some(Outcome::allowed(number(1)?, tats))
        }
        0 if reply.len() == 3 => {
            let index = usize::try_from(number(1)?).ok()?.checked_sub(1)?;
            (index < checks).then_some(Outcome::refused(index, number(2)?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_answers_are_read_strictly() {
        assert_eq!(
            parse(&[1, 100, 150, 170], 2),
            Some(Outcome::allowed(100, vec![150, 170]))
        );
        assert_eq!(parse(&[0, 2, 40], 2), Some(Outcome::refused(1, 40)));
        assert_eq!(parse(&[0, 3, 40], 2), None, "no third limit");
        assert_eq!(parse(&[0, 0, 40], 2), None);
        assert_eq!(parse(&[1, 100, 150], 2), None, "a TAT missing");
        assert_eq!(parse(&[1, -5, 150, 170], 2), None);
        assert_eq!(parse(&[], 1), None);
    }
}
