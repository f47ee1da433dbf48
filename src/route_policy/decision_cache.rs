//! Authorization decisions already made, so a busy client costs one policy evaluation (or one
//! callout) per TTL, not one per request.
//!
//! The key holds everything the decision read: the policy set's version, the principal (sub,
//! roles, attributes), the resource, the action, and the context fields the set's conditions read
//! (the time to the second, which is also the time the policies were given; the client ip; any
//! other field). A policy that reads no time or ip therefore shares one entry across them; one that
//! does, never across a window or range it tests. Allows and denies have their own TTLs. When the
//! set's version changes, every entry goes at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use quick_cache::sync::Cache;

use crate::authz_callout::Answer;
use crate::metrics;

#[derive(Clone)]
struct Entry {
    answer: Answer,
    until: Instant,
}

pub struct DecisionCache {
    entries: Option<Cache<String, Entry>>,
    allow_ttl: Duration,
    deny_ttl: Duration,
    /// The policy set version the entries were decided under.
    version: ArcSwap<String>,
    /// Identifies the settings, so a reload keeps the cache when they did not change.
    pub fingerprint: String,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache").finish_non_exhaustive()
    }
}

impl DecisionCache {
    /// `capacity` 0 turns the cache off.
    pub fn new(
        capacity: usize,
        allow_ttl: Duration,
        deny_ttl: Duration,
        fingerprint: String,
    ) -> Self {
        DecisionCache {
            entries: (capacity > 0).then(|| Cache::new(capacity)),
            allow_ttl,
            deny_ttl,
            version: ArcSwap::from_pointee(String::new()),
            fingerprint,
        }
    }

    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The version entries are keyed under now (remote: the latest one an answer carried).
    pub fn current_version(&self) -> Arc<String> {
        self.version.load_full()
    }

    /// Notes the policy set's version; a change flushes every entry.
    pub fn observe_version(&self, version: &str) {
        if self.version.load().as_str() == version {
            return;
        }
        let previous = self.version.swap(Arc::new(version.to_string()));
        if let Some(entries) = &self.entries {
            entries.clear();
            // The first version seen replaces nothing: no flush to report.
            if !previous.is_empty() {
                metrics::AUTHZ_CACHE_FLUSHES.inc();
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<Answer> {
        let entries = self.entries.as_ref()?;
        match entries.get(key) {
            Some(entry) if entry.until > Instant::now() => {
                metrics::AUTHZ_CACHE_HITS.inc();
                Some(entry.answer)
            }
            Some(_) => {
                entries.remove(key);
                metrics::AUTHZ_CACHE_MISSES.inc();
                None
            }
            None => {
                metrics::AUTHZ_CACHE_MISSES.inc();
                None
            }
        }
    }

    /// Keeps `answer` under `key` (built with `keyed_version`), unless the set changed meanwhile.
    pub fn insert(&self, key: String, keyed_version: &str, answer: &Answer) {
        let Some(entries) = &self.entries else { return };
        if answer.set_version.as_deref() != Some(keyed_version) {
            return;
        }
        let ttl = if answer.allow {
            self.allow_ttl
        } else {
            self.deny_ttl
        };
        if ttl.is_zero() {
            return;
        }
        entries.insert(
            key,
            Entry {
                answer: answer.clone(),
                until: Instant::now() + ttl,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(allow: bool, version: &str) -> Answer {
        Answer {
            allow,
            decision_id: "d".into(),
            reason: "r".into(),
            policy: None,
            rule: None,
            set_version: Some(version.into()),
        }
    }

    #[test]
    fn entries_live_for_their_ttl_and_go_with_the_version() {
        let cache = DecisionCache::new(10, Duration::from_secs(60), Duration::ZERO, String::new());
        cache.observe_version("v1");
        cache.insert("k".into(), "v1", &answer(true, "v1"));
        assert!(cache.get("k").is_some());
        cache.insert("deny".into(), "v1", &answer(false, "v1"));
        assert!(
            cache.get("deny").is_none(),
            "deny_ttl 0: denies are not kept"
        );
        cache.insert("late".into(), "v1", &answer(true, "v2"));
        assert!(
            cache.get("late").is_none(),
            "decided by another set version"
        );
        cache.observe_version("v2");
        assert!(cache.get("k").is_none(), "a new version flushes");
    }
}
