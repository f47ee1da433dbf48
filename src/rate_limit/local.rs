//! The per-process limiter: each key's GCRA state (one TAT) in a bounded concurrent map.
//!
//! Why not governor's keyed limiter: its keyed stores (DashMap, HashMap) grow without bound, its
//! TAT counts from each limiter's private start so an outside sweeper cannot tell an idle key,
//! and it cannot check several limits all-or-nothing. The state is one `u64` per key; what takes
//! care is the map, and that is `quick_cache` (already used for verified tokens): sharded
//! locks (no global lock; a hit takes one shard's read lock, the update is a CAS on the key's
//! own atomic), an entry-count bound (`max_keys`) with a scan-resistant eviction, so a flood of
//! new keys evicts other new keys before busy ones.
//!
//! Idle keys expire twice over: a TAT in the past means the same as no entry (see
//! [`gcra::decide`]), and a sweeper thread removes such entries every [`SWEEP_EVERY`] so memory
//! follows the active keys, not the peak.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;
use quick_cache::Equivalent;

use super::gcra::{self, Quota};
use super::{Check, KeyRef, Outcome};

/// How often idle keys are removed.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The clock TATs count from: one origin for the whole process, so every store (and a store
/// carried across reloads) reads the same time.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_us() -> u64 {
    u64::try_from(ORIGIN.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A key as stored: the limit's id and the owned key value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StoredKey {
    limit: u64,
    value: OwnedKey,
}

/// [`KeyRef`] owned. Variant order and field types match `KeyRef`'s, so both hash alike (a
/// lookup borrows; only an insert allocates).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum OwnedKey {
    Whole,
    Ip(std::net::IpAddr),
    Text(Box<[u8]>),
    Digest([u8; 32]),
}

/// The borrowed form used for lookups.
struct Lookup<'a> {
    limit: u64,
    value: &'a KeyRef<'a>,
}

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.limit.hash(state);
        self.value.hash(state);
    }
}

impl Equivalent<StoredKey> for Lookup<'_> {
    fn equivalent(&self, key: &StoredKey) -> bool {
        self.limit == key.limit
            && match (self.value, &key.value) {
                (KeyRef::Whole, OwnedKey::Whole) => true,
                (KeyRef::Ip(a), OwnedKey::Ip(b)) => a == b,
                (KeyRef::Text(a), OwnedKey::Text(b)) => *a == &**b,
                (KeyRef::Digest(a), OwnedKey::Digest(b)) => a == b,
                _ => false,
            }
    }
}

impl Lookup<'_> {
    fn to_owned(&self) -> StoredKey {
        StoredKey {
            limit: self.limit,
            value: match *self.value {
                KeyRef::Whole => OwnedKey::Whole,
                KeyRef::Ip(ip) => OwnedKey::Ip(ip),
                KeyRef::Text(t) => OwnedKey::Text(t.into()),
                KeyRef::Digest(d) => OwnedKey::Digest(d),
            },
        }
    }
}

/// Every local limit's keys, bounded together by `max_keys`.
pub struct LocalStore {
    cells: Cache<StoredKey, Arc<AtomicU64>>,
    max_keys: usize,
    sweeper_started: AtomicBool,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("keys", &self.cells.len())
            .finish()
    }
}

impl LocalStore {
    pub fn new(max_keys: usize) -> Arc<LocalStore> {
        Arc::new(LocalStore {
            cells: Cache::new(max_keys.max(1)),
            max_keys,
            sweeper_started: AtomicBool::new(false),
        })
    }

    /// The bound it was built with.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Keys held now (idle ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Checks every limit of `checks` at once: allowed only if all allow, and then each one
    /// counts the request; refused, none does. Two requests racing on one key may both see room
    /// in the first pass; the second pass (compare-and-swap per key) settles who got it.
    pub fn check(self: &Arc<Self>, checks: &[Check<'_>]) -> Outcome {
        self.start_sweeper();
        let now = now_us();
        let cells: Vec<Arc<AtomicU64>> = checks.iter().map(|c| self.cell(c)).collect();
        for (i, (check, cell)) in checks.iter().zip(&cells).enumerate() {
            if let Err(wait) = gcra::decide(check.quota, now, stored(cell)) {
                return Outcome::refused(i, wait);
            }
        }
        let mut tats = Vec::with_capacity(checks.len());
        for (i, (check, cell)) in checks.iter().zip(&cells).enumerate() {
            match update(cell, check.quota, now) {
                Ok(tat) => tats.push(tat),
                Err(wait) => return Outcome::refused(i, wait),
            }
        }
        Outcome::allowed(now, tats)
    }

    fn cell(&self, check: &Check<'_>) -> Arc<AtomicU64> {
        let lookup = Lookup {
            limit: check.limit_id,
            value: &check.key,
        };
        if let Some(cell) = self.cells.get(&lookup) {
            return cell;
        }
        // Two requests creating the same key at once may each insert a cell and the later one
        // wins: at worst one extra request of a brand-new key gets through, once.
        let cell = Arc::new(AtomicU64::new(0));
        self.cells.insert(lookup.to_owned(), cell.clone());
        cell
    }

    /// Removes keys whose TAT has passed: they hold nothing a new entry would not.
    pub fn sweep(&self) {
        let now = now_us();
        self.cells
            .retain(|_, cell| cell.load(Ordering::Relaxed) > now);
    }

    /// The sweeper runs from the first check (a `gatehouse validate` never starts one) until the
    /// store is dropped (a reload that changes `max_keys` replaces it).
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let store: Weak<LocalStore> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("rate-limit-sweep".into())
            .spawn(move || loop {
                std::thread::sleep(SWEEP_EVERY);
                match store.upgrade() {
                    Some(store) => store.sweep(),
                    None => return,
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the rate-limit sweeper; idle keys stay until evicted");
        }
    }
}

/// The stored TAT; 0 is "never set" (TATs are always past the origin's first microsecond).
fn stored(cell: &AtomicU64) -> Option<u64> {
    Some(cell.load(Ordering::Acquire)).filter(|&t| t != 0)
}

fn update(cell: &AtomicU64, quota: &Quota, now: u64) -> Result<u64, u64> {
    let mut current = cell.load(Ordering::Acquire);
    loop {
        let tat = gcra::decide(quota, now, Some(current).filter(|&t| t != 0))?;
        match cell.compare_exchange_weak(current, tat, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(tat),
            Err(changed) => current = changed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(count: u32, burst: u32) -> Quota {
        Quota::new(count, 60_000_000, burst).unwrap()
    }

    #[test]
    fn keys_and_limits_are_separate() {
        let store = LocalStore::new(1000);
        let q = quota(1, 2);
        let a = KeyRef::Text(b"alice");
        let b = KeyRef::Text(b"bob");
        let check = |id, key: &KeyRef<'_>| {
            store
                .check(&[Check {
                    name: "test",
                    limit_id: id,
                    key: key.clone(),
                    quota: &q,
                }])
                .is_allowed()
        };
        assert!(check(1, &a) && check(1, &a));
        assert!(!check(1, &a), "alice used her burst of 2");
        assert!(check(1, &b), "bob has his own");
        assert!(check(2, &a), "another limit keeps its own count");
    }

    #[test]
    fn a_refusal_by_one_limit_uses_up_none() {
        let store = LocalStore::new(1000);
        let (roomy, tight) = (quota(100, 100), quota(1, 1));
        let key = KeyRef::Ip("192.0.2.1".parse().unwrap());
        let both = || {
            store.check(&[
                Check {
                    name: "test",
                    limit_id: 1,
                    key: key.clone(),
                    quota: &roomy,
                },
                Check {
                    name: "test",
                    limit_id: 2,
                    key: key.clone(),
                    quota: &tight,
                },
            ])
        };
        assert!(both().is_allowed());
        for _ in 0..10 {
            let refused = both();
            assert_eq!(refused.refused_by(), Some(1));
        }
        // The roomy limit counted only the one allowed request.
        let alone = store.check(&[Check {
            name: "test",
            limit_id: 1,
            key: key.clone(),
            quota: &roomy,
        }]);
        assert_eq!(alone.remaining(0, &roomy), Some(98));
    }

    #[test]
    fn memory_is_bounded_and_idle_keys_are_swept() {
        let store = LocalStore::new(1000);
        let q = Quota::new(1000, 1_000, 1).unwrap(); // 1 ms interval: keys idle quickly
        for i in 0..20_000u32 {
            let ip = std::net::IpAddr::from(i.to_be_bytes());
            store.check(&[Check {
                name: "test",
                limit_id: 7,
                key: KeyRef::Ip(ip),
                quota: &q,
            }]);
        }
        assert!(store.len() <= 1100, "bounded by max_keys: {}", store.len());
        std::thread::sleep(Duration::from_millis(5));
        store.sweep();
        assert!(store.is_empty(), "idle keys are removed");
    }
}
