//! Rate-limit backends: GCRA ([`gcra`]) kept per process ([`local`]) or in Redis ([`redis`]),
//! behind one [`Limiter`].
//!
//! The route stage ([`crate::route_policy::rate_limit`]) turns a request into [`Check`]s (which
//! limit, which key) and asks the limiter; the limiter answers for all of them at once: allowed
//! (each limit counted the request) or refused by one (none counted it). With `backend: redis`
//! every check is one script call to Redis; while Redis cannot answer in time, the same checks
//! run against the local store (counted in `gatehouse_rate_limit_redis_fallbacks_total`) and
//! Redis is tried again in the background, so shared limiting resumes without a restart.

pub mod gcra;
pub mod local;
pub mod redis;

use std::net::IpAddr;
use std::sync::Arc;

pub use gcra::Quota;
pub use local::LocalStore;
pub use redis::{RedisLimiter, RedisSettings};

use crate::metrics;

/// The value a limit is keyed by, borrowed from the request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyRef<'a> {
    /// `key: route`: one bucket for the whole route.
    Whole,
    Ip(IpAddr),
    /// A header or claim value of at most [`MAX_TEXT_KEY`] bytes.
    Text(&'a [u8]),
    /// SHA-256 of a longer value, so a key's size stays bounded whatever a client sends.
    Digest([u8; 32]),
}

/// Longer header and claim values are keyed by their SHA-256.
pub const MAX_TEXT_KEY: usize = 64;

impl<'a> KeyRef<'a> {
    pub fn text(value: &'a [u8]) -> KeyRef<'a> {
        if value.len() <= MAX_TEXT_KEY {
            KeyRef::Text(value)
        } else {
            use sha2::{Digest, Sha256};
            KeyRef::Digest(Sha256::digest(value).into())
        }
    }
}

/// One limit applied to one key.
#[derive(Debug, Clone)]
pub struct Check<'a> {
    /// `<route>/<limit>`: names the limit in Redis keys.
    pub name: &'a str,
    /// A hash of `name` (and the key kind), for the local store.
    pub limit_id: u64,
    pub key: KeyRef<'a>,
    pub quota: &'a Quota,
}

/// The limiter's answer for a set of checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every limit allowed; `tats[i]` is check `i`'s new TAT, on the clock `now` was read from.
    Allowed { now: u64, tats: Vec<u64> },
    /// Check `index` refused; the request may be retried in `wait_us`.
    Refused { index: usize, wait_us: u64 },
}

impl Outcome {
    pub fn allowed(now: u64, tats: Vec<u64>) -> Outcome {
        Outcome::Allowed { now, tats }
    }

    pub fn refused(index: usize, wait_us: u64) -> Outcome {
        Outcome::Refused { index, wait_us }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Outcome::Allowed { .. })
    }

    pub fn refused_by(&self) -> Option<usize> {
        match self {
            Outcome::Refused { index, .. } => Some(*index),
            Outcome::Allowed { .. } => None,
        }
    }

    /// Requests check `i`'s key has left after an allowed request.
    pub fn remaining(&self, i: usize, quota: &Quota) -> Option<u64> {
        match self {
            Outcome::Allowed { now, tats } => Some(gcra::remaining(quota, *now, *tats.get(i)?)),
            Outcome::Refused { .. } => None,
        }
    }

    /// Microseconds until check `i`'s key is full again, after an allowed request.
    pub fn until_full(&self, i: usize) -> Option<u64> {
        match self {
            Outcome::Allowed { now, tats } => Some(gcra::until_full(*now, *tats.get(i)?)),
            Outcome::Refused { .. } => None,
        }
    }
}

/// Where the limits' state lives: always a local store; with `backend: redis` also Redis, which
/// is asked first. Each part is carried across reloads while its settings are unchanged, so a
/// reload does not hand every client a fresh burst.
#[derive(Debug)]
pub struct Limiter {
    pub local: Arc<LocalStore>,
    pub shared: Option<Arc<RedisLimiter>>,
}

impl Limiter {
    pub async fn check(&self, checks: &[Check<'_>]) -> Outcome {
        if let Some(shared) = &self.shared {
            if let Some(outcome) = shared.check(checks).await {
                return outcome;
            }
            metrics::RATE_LIMIT_REDIS_FALLBACKS.inc();
        }
        self.local.check(checks)
    }

    /// Starts connecting to Redis (a no-op for the local backend, or once started).
    pub fn start(&self) {
        if let Some(shared) = &self.shared {
            shared.start();
        }
    }
}
