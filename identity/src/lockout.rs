//! Brute-force protection for password logins, per username and per client IP.
//!
//! The race that let parallel guesses through in other IdPs: every request checks "locked?",
//! all see "no", then all verify. Here an attempt reserves its slot *before* the password is
//! checked: `failures + in_flight` may never exceed `max_failures`, so however many guesses
//! arrive at once, at most `max_failures` are ever evaluated before the lock. Each lock lasts
//! `base_delay × 2^(locks − 1)`, capped at `max_delay`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::LockoutFile;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Ip(IpAddr),
}

#[derive(Debug, Default)]
struct Counter {
    failures: u32,
    in_flight: u32,
    locks: u32,
    locked_until: Option<Instant>,
    last_seen: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_failures: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl From<&LockoutFile> for Policy {
    fn from(f: &LockoutFile) -> Self {
        Self {
            max_failures: f.max_failures,
            base_delay: f.base_delay,
            max_delay: f.max_delay,
        }
    }
}

#[derive(Default)]
pub struct Lockout {
    counters: Arc<Mutex<HashMap<Key, Counter>>>,
}

/// Permission to check one password. Dropping it unrecorded counts as a failure, so an attempt
/// abandoned mid-check (client hung up) still uses up its slot.
pub struct Attempt {
    counters: Arc<Mutex<HashMap<Key, Counter>>>,
    keys: Vec<Key>,
    policy: Policy,
    recorded: bool,
}

/// What a failed attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    Counted,
    /// This failure locked the user or IP.
    Locked,
}

const SIZE_LIMIT: usize = 100_000;

impl Lockout {
    /// Reserves an attempt for `username` from `ip`, or says how long they are locked out.
    pub fn begin(
        &self,
        username: &str,
        ip: Option<IpAddr>,
        policy: Policy,
    ) -> Result<Attempt, Duration> {
        let now = Instant::now();
        let mut keys = vec![Key::User(username.to_lowercase())];
        if let Some(ip) = ip {
            keys.push(Key::Ip(ip));
        }
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > SIZE_LIMIT {
            map.retain(|_, c| {
                c.in_flight > 0 || c.last_seen.is_some_and(|t| now - t < policy.max_delay)
            });
        }
        let mut wait = Duration::ZERO;
        for key in &keys {
            if let Some(c) = map.get(key) {
                if let Some(until) = c.locked_until.filter(|u| *u > now) {
                    wait = wait.max(until - now);
                } else if c.failures + c.in_flight >= policy.max_failures {
                    // Slots are all taken by attempts still being checked: one of them will lock.
                    wait = wait.max(policy.base_delay);
                }
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for key in &keys {
            let c = map.entry(key.clone()).or_default();
            if c.locked_until.is_some_and(|u| u <= now) {
                c.locked_until = None;
            }
            c.in_flight += 1;
            c.last_seen = Some(now);
        }
        Ok(Attempt {
            counters: self.counters.clone(),
            keys,
            policy,
            recorded: false,
        })
    }
}

impl Attempt {
    /// A correct password clears the user's failures; the IP's count only decays, so one valid
    /// account cannot launder guesses against others from the same address.
    pub fn succeeded(mut self) {
        self.recorded = true;
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for key in &self.keys {
            if let Some(c) = map.get_mut(key) {
                c.in_flight = c.in_flight.saturating_sub(1);
                if matches!(key, Key::User(_)) {
                    c.failures = 0;
                    c.locks = 0;
                }
            }
        }
    }

    pub fn failed(mut self) -> FailureOutcome {
        self.recorded = true;
        self.record_failure()
    }

    fn record_failure(&self) -> FailureOutcome {
        let now = Instant::now();
        let mut outcome = FailureOutcome::Counted;
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for key in &self.keys {
            let c = map.entry(key.clone()).or_default();
            c.in_flight = c.in_flight.saturating_sub(1);
            c.failures += 1;
            c.last_seen = Some(now);
            if c.failures >= self.policy.max_failures {
                c.locks += 1;
                c.failures = 0;
                let factor = 1u32
                    .checked_shl(c.locks.saturating_sub(1).min(20))
                    .unwrap_or(u32::MAX);
                let delay = self
                    .policy
                    .base_delay
                    .saturating_mul(factor)
                    .min(self.policy.max_delay);
                c.locked_until = Some(now + delay);
                outcome = FailureOutcome::Locked;
            }
        }
        outcome
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.recorded {
            let _ = self.record_failure();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        max_failures: 3,
        base_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(25),
    };

    #[test]
    fn parallel_attempts_cannot_exceed_the_limit() {
        let lockout = Lockout::default();
        // Ten attempts begin before any is checked: only three get a slot.
        let attempts: Vec<_> = (0..10)
            .filter_map(|_| lockout.begin("Alice", None, POLICY).ok())
            .collect();
        assert_eq!(attempts.len(), 3);
        let outcomes: Vec<_> = attempts.into_iter().map(Attempt::failed).collect();
        assert_eq!(outcomes.last(), Some(&FailureOutcome::Locked));
        let wait = lockout.begin("alice", None, POLICY).err().unwrap();
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10));
    }

    #[test]
    fn success_resets_the_user_but_not_the_ip() {
        let lockout = Lockout::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        lockout.begin("bob", Some(ip), POLICY).unwrap().failed();
        lockout.begin("bob", Some(ip), POLICY).unwrap().failed();
        lockout.begin("bob", Some(ip), POLICY).unwrap().succeeded();
        // bob is clear, but the IP has two failures: one more from it locks it.
        lockout.begin("carol", Some(ip), POLICY).unwrap().failed();
        assert!(lockout.begin("dave", Some(ip), POLICY).is_err());
        assert!(lockout.begin("bob", None, POLICY).is_ok());
    }

    #[test]
    fn an_abandoned_attempt_counts_as_a_failure() {
        let lockout = Lockout::default();
        for _ in 0..3 {
            drop(lockout.begin("eve", None, POLICY).unwrap());
        }
        assert!(lockout.begin("eve", None, POLICY).is_err());
    }
}
