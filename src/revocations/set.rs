//! The revocations learned from one issuer's feed: `jti`s, and subjects revoked up to a time.
//!
//! Read by every request that carries a token of the issuer, written by the one follower task.
//! Both maps are sharded hash maps (dashmap: one read lock per shard, taken for the lookup alone,
//! never across an await), so a check is at most two hash lookups, and none at all while the set
//! is empty: the counts are plain atomics the follower keeps exact (it is the only writer).

use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use super::page::Entry;

/// A subject revoked for every token issued at or before `before` (logout everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubjectCutoff {
    before: u64,
    exp: u64,
}

/// What [`RevocationSet::apply`] did with a page's entries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Entries already past `exp` (plus the issuer's leeway) when they arrived: nothing to keep.
    pub expired: usize,
    /// Entries beyond the cap that were dropped to make room (the soonest to expire first).
    pub evicted: usize,
}

#[derive(Debug, Default)]
pub struct RevocationSet {
    /// `jti` → `exp`.
    jtis: DashMap<Box<str>, u64>,
    subjects: DashMap<Box<str>, SubjectCutoff>,
    jti_count: AtomicUsize,
    subject_count: AtomicUsize,
}

impl RevocationSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Revocations held, by kind: `(jti, subject)`.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.jti_count.load(Ordering::Relaxed),
            self.subject_count.load(Ordering::Relaxed),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.counts() == (0, 0)
    }

    /// Whether a token with this `jti`, `sub` and `iat` is revoked. A token without `jti` can only
    /// be matched by subject; a token without `iat` is matched by any cutoff of its subject (its
    /// age cannot be told, so it is not given the benefit of the doubt).
    pub fn revokes(&self, jti: Option<&str>, sub: &str, iat: Option<u64>) -> bool {
        let (jtis, subjects) = self.counts();
        if jtis > 0 && jti.is_some_and(|j| self.jtis.contains_key(j)) {
            return true;
        }
        subjects > 0
            && self
                .subjects
                .get(sub)
                .is_some_and(|cut| iat.is_none_or(|iat| iat <= cut.before))
    }

    /// Adds a page's entries; those already past `exp + leeway` at `now` are skipped (the issuer
    /// may forget them, and no token they name would pass the `exp` check any more). Then keeps
    /// the set within `cap` entries (see [`RevocationSet::enforce_cap`]).
    pub fn apply(&self, entries: &[Entry], now: u64, leeway: u64, cap: usize) -> Applied {
        let mut applied = Applied::default();
        for entry in entries {
            match entry {
                Entry::Jti { jti, exp } => {
                    if exp.saturating_add(leeway) < now {
                        applied.expired += 1;
                        continue;
                    }
                    let mut added = false;
                    self.jtis
                        .entry(jti.as_str().into())
                        .and_modify(|e| *e = (*e).max(*exp))
                        .or_insert_with(|| {
                            added = true;
                            *exp
                        });
                    if added {
                        self.jti_count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Entry::Subject { sub, before, exp } => {
                    if exp.saturating_add(leeway) < now {
                        applied.expired += 1;
                        continue;
                    }
                    // A later entry for the same subject supersedes: the max of each (contract).
                    let mut added = false;
                    self.subjects
                        .entry(sub.as_str().into())
                        .and_modify(|c| {
                            c.before = c.before.max(*before);
                            c.exp = c.exp.max(*exp);
                        })
                        .or_insert_with(|| {
                            added = true;
                            SubjectCutoff {
                                before: *before,
                                exp: *exp,
                            }
                        });
                    if added {
                        self.subject_count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        applied.evicted = self.enforce_cap(cap);
        applied
    }

    /// Forgets every entry whose `exp + leeway` is before `now`. Returns how many went.
    pub fn sweep(&self, now: u64, leeway: u64) -> usize {
        self.retain_expiring_after(now.saturating_sub(leeway).saturating_sub(1))
    }

    /// Above `cap` entries, drops the ones that expire soonest until a tenth of the cap is free
    /// again (so a full set is not re-scanned on every page). Those are the least harmful to
    /// forget: the tokens they revoke stop passing the `exp` check soonest. Returns how many went.
    pub fn enforce_cap(&self, cap: usize) -> usize {
        let (jtis, subjects) = self.counts();
        let held = jtis + subjects;
        if held <= cap {
            return 0;
        }
        let keep = cap - cap / 10;
        let mut exps: Vec<u64> = self.jtis.iter().map(|e| *e.value()).collect();
        exps.extend(self.subjects.iter().map(|e| e.value().exp));
        let drop = exps.len().saturating_sub(keep);
        if drop == 0 {
            return 0;
        }
        // Everything expiring at or before the drop-th soonest exp goes (ties may take a few more).
        let (_, threshold, _) = exps.select_nth_unstable(drop - 1);
        self.retain_expiring_after(*threshold)
    }

    /// Keeps only entries with `exp > threshold`; returns how many were removed.
    fn retain_expiring_after(&self, threshold: u64) -> usize {
        let before = self.counts();
        let mut removed_jtis = 0;
        self.jtis.retain(|_, exp| {
            let keep = *exp > threshold;
            removed_jtis += usize::from(!keep);
            keep
        });
        let mut removed_subjects = 0;
        self.subjects.retain(|_, cut| {
            let keep = cut.exp > threshold;
            removed_subjects += usize::from(!keep);
            keep
        });
        self.jti_count
            .store(before.0 - removed_jtis, Ordering::Relaxed);
        self.subject_count
            .store(before.1 - removed_subjects, Ordering::Relaxed);
        removed_jtis + removed_subjects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jti(id: &str, exp: u64) -> Entry {
        Entry::Jti {
            jti: id.into(),
            exp,
        }
    }

    fn subject(sub: &str, before: u64, exp: u64) -> Entry {
        Entry::Subject {
            sub: sub.into(),
            before,
            exp,
        }
    }

    const CAP: usize = 1_000_000;

    #[test]
    fn an_empty_set_revokes_nothing() {
        let set = RevocationSet::new();
        assert!(set.is_empty());
        assert!(!set.revokes(Some("a"), "alice", Some(1)));
        assert!(!set.revokes(None, "alice", None));
    }

    #[test]
    fn a_jti_entry_revokes_that_token_only() {
        let set = RevocationSet::new();
        set.apply(&[jti("t1", 2000)], 1000, 0, CAP);
        assert!(set.revokes(Some("t1"), "alice", Some(900)));
        assert!(!set.revokes(Some("t2"), "alice", Some(900)));
        assert!(
            !set.revokes(None, "alice", Some(900)),
            "no jti: subject only"
        );
        assert_eq!(set.counts(), (1, 0));
    }

    #[test]
    fn a_subject_entry_revokes_tokens_issued_up_to_before() {
        let set = RevocationSet::new();
        set.apply(&[subject("alice", 500, 2000)], 1000, 0, CAP);
        assert!(set.revokes(Some("x"), "alice", Some(500)), "iat == before");
        assert!(set.revokes(None, "alice", Some(100)));
        assert!(
            !set.revokes(None, "alice", Some(501)),
            "issued after the cutoff"
        );
        assert!(!set.revokes(None, "bob", Some(100)));
        assert!(
            set.revokes(None, "alice", None),
            "no iat: cannot be told apart"
        );
    }

    #[test]
    fn a_later_subject_entry_keeps_the_max_before_and_exp() {
        let set = RevocationSet::new();
        set.apply(&[subject("alice", 500, 3000)], 1000, 0, CAP);
        set.apply(&[subject("alice", 700, 2000)], 1000, 0, CAP);
        set.apply(&[subject("alice", 600, 2500)], 1000, 0, CAP);
        assert_eq!(set.counts(), (0, 1));
        assert!(set.revokes(None, "alice", Some(700)));
        assert!(!set.revokes(None, "alice", Some(701)));
        // exp stayed 3000: swept only after it.
        assert_eq!(set.sweep(2999, 0), 0);
        assert_eq!(set.sweep(3001, 0), 1);
        assert!(set.is_empty());
    }

    #[test]
    fn entries_are_kept_until_exp_plus_leeway() {
        let set = RevocationSet::new();
        let applied = set.apply(&[jti("old", 900), jti("late", 990)], 1000, 30, CAP);
        assert_eq!(applied.expired, 1, "900 + 30 < 1000");
        assert_eq!(set.counts(), (1, 0));
        assert_eq!(set.sweep(1020, 30), 0, "990 + 30 is not before 1020");
        assert!(set.revokes(Some("late"), "a", None));
        assert_eq!(set.sweep(1021, 30), 1);
        assert!(!set.revokes(Some("late"), "a", None));
    }

    #[test]
    fn beyond_the_cap_the_soonest_to_expire_go_first() {
        let set = RevocationSet::new();
        let entries: Vec<Entry> = (0..10).map(|i| jti(&format!("t{i}"), 2000 + i)).collect();
        let applied = set.apply(&entries, 1000, 0, 10);
        assert_eq!(applied.evicted, 0);
        let applied = set.apply(&[subject("alice", 1, 5000)], 1000, 0, 10);
        // 11 held, cap 10: down to 9.
        assert_eq!(applied.evicted, 2);
        assert_eq!(set.counts(), (8, 1));
        assert!(!set.revokes(Some("t0"), "x", None));
        assert!(!set.revokes(Some("t1"), "x", None));
        assert!(set.revokes(Some("t2"), "x", None));
        assert!(set.revokes(None, "alice", Some(1)));
    }
}
