//! Brute-force protection for passwords and client secrets: a lock per account, and a budget
//! per client IP that comes back over time.
//!
//! **Accounts** (a username at the login form and the password grant; a client id at the
//! back-channel endpoints). The race that let parallel guesses through in other IdPs: every
//! request checks "locked?", all see "no", then all verify. Here an attempt reserves its slot
//! *before* the secret is checked: `failures + in_flight` may never exceed `max_failures`, so
//! however many guesses arrive at once, at most `max_failures` are ever evaluated before the
//! lock. Each lock lasts `base_delay × 2^(locks − 1)`, capped at `max_delay`, and refuses even
//! the right secret (except a client secret that verified before this lock: it is no guess, see
//! `client_auth`); a success clears the account.
//!
//! **Addresses.** One IP may be a NAT or the gateway, with many people behind it, so its
//! failures must not lock anyone else out. Each IP has a budget of `ip_max_failures` failures
//! that leaks back continuously over `ip_window` (a leaky bucket: one failure comes back every
//! `ip_window / ip_max_failures`). Under the budget an address is not limited at all: five
//! wrong guesses at other accounts do not stop alice. An address that has spent it is
//! throttled: its attempts are refused (429 with `Retry-After`, nothing checked, nothing
//! counted) until failures leak back, so a source guessing across many accounts is held to
//! `ip_max_failures` per `ip_window`, and only then are the people behind it refused too.
//! A success does not refill the budget, so one valid account cannot launder guesses at others.
//! Passwords and client secrets have a budget each per address: a service with a bad secret
//! does not stop logins through the same gateway, nor the reverse.
//!
//! These counters are the process's own. Each account's failures and lock are also kept in the
//! state store (`state/lockout.rs`), which every instance reads before an attempt and which
//! outlives a restart: see [`crate::issuer::Issuer::shared_lock`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::LockoutFile;

/// Whose secret an attempt presents.
#[derive(Debug, Clone, Copy)]
pub enum Account<'a> {
    /// A username: compared without case, as logins are.
    User(&'a str),
    /// A client id, exactly as sent (known or not: unknown ids lock like known ones, so the
    /// answers do not tell which exist).
    Client(&'a str),
}

/// Usernames and client ids are separate accounts (and separate budgets per address). Names
/// are kept as a SHA-256 prefix: they come from the client, up to a whole request body long,
/// and the map must not grow with their length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum AccountKey {
    User([u8; 16]),
    Client([u8; 16]),
}

fn digest(name: &str) -> [u8; 16] {
    let mut prefix = [0; 16];
    prefix.copy_from_slice(&Sha256::digest(name.as_bytes())[..16]);
    prefix
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Secret {
    Password,
    ClientSecret,
}

impl Account<'_> {
    /// The account's key in the state store: the same SHA-256 prefix, in hex.
    pub fn stored_key(self) -> String {
        match self.key() {
            AccountKey::User(d) => format!("u:{}", hex::encode(d)),
            AccountKey::Client(d) => format!("c:{}", hex::encode(d)),
        }
    }

    fn key(self) -> AccountKey {
        match self {
            Account::User(name) => AccountKey::User(digest(&name.to_lowercase())),
            Account::Client(id) => AccountKey::Client(digest(id)),
        }
    }

    fn secret(self) -> Secret {
        match self {
            Account::User(_) => Secret::Password,
            Account::Client(_) => Secret::ClientSecret,
        }
    }
}

#[derive(Debug)]
struct AccountCounter {
    failures: u32,
    in_flight: u32,
    locks: u32,
    locked_until: Option<Instant>,
    last_seen: Instant,
}

/// An address's spent budget: `spent` failures as of `at`, leaking back since.
#[derive(Debug)]
struct AddressBudget {
    spent: f64,
    at: Instant,
    in_flight: u32,
}

impl AddressBudget {
    /// Brings `spent` up to `now`.
    fn leak(&mut self, now: Instant, policy: &Policy) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.spent = (self.spent - elapsed * policy.ip_refill_per_sec()).max(0.0);
        self.at = now;
    }
}

impl AccountCounter {
    /// Nothing to remember: the entry can go.
    fn is_clear(&self) -> bool {
        self.failures == 0 && self.in_flight == 0 && self.locks == 0
    }
}

#[derive(Debug, Default)]
struct Counters {
    accounts: HashMap<AccountKey, AccountCounter>,
    addresses: HashMap<(Secret, IpAddr), AddressBudget>,
    /// When the maps may next be pruned: a prune walks them all, so at most once a second.
    next_prune: Option<Instant>,
}

impl Counters {
    /// Forgets what can no longer refuse anyone.
    fn prune(&mut self, now: Instant, policy: &Policy) {
        if self.next_prune.is_some_and(|t| now < t) {
            return;
        }
        self.next_prune = Some(now + PRUNE_INTERVAL);
        self.accounts.retain(|_, c| {
            c.in_flight > 0 || now.saturating_duration_since(c.last_seen) < policy.max_delay
        });
        self.addresses.retain(|_, b| {
            b.leak(now, policy);
            b.in_flight > 0 || b.spent > 0.0
        });
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_failures: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub ip_max_failures: u32,
    pub ip_window: Duration,
}

impl Policy {
    /// How long the `locks`-th lock of an account lasts: `base_delay × 2^(locks − 1)`, capped at
    /// `max_delay`. One rule for the process's counters and the shared store's.
    pub fn lock_for(&self, locks: u32) -> Duration {
        let factor = 1u32
            .checked_shl(locks.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    fn ip_refill_per_sec(&self) -> f64 {
        f64::from(self.ip_max_failures) / self.ip_window.as_secs_f64().max(f64::EPSILON)
    }
}

impl From<&LockoutFile> for Policy {
    fn from(f: &LockoutFile) -> Self {
        Self {
            max_failures: f.max_failures,
            base_delay: f.base_delay,
            max_delay: f.max_delay,
            ip_max_failures: f.ip_max_failures,
            ip_window: f.ip_window,
        }
    }
}

#[derive(Default)]
pub struct Lockout {
    counters: Arc<Mutex<Counters>>,
}

/// Permission to check one secret. Recorded with [`Attempt::succeeded`] or
/// [`Attempt::failed`]; dropped unrecorded, it counts as a failure once the check has begun
/// ([`Attempt::checking`]: the client hung up mid-check, and still used its slot) and gives its
/// slot back before (nothing was checked: the request was refused for load, or abandoned in the
/// queue).
pub struct Attempt {
    counters: Arc<Mutex<Counters>>,
    account: AccountKey,
    address: Option<(Secret, IpAddr)>,
    policy: Policy,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reserved,
    Checking,
    Recorded,
}

/// What a failed attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    Counted,
    /// This failure locked the account.
    Locked,
}

/// Entries above which the maps are pruned. Attempts that end clear (a success, a refusal for
/// load) leave no entry, so what accumulates is failures: about 100 bytes each.
const SIZE_LIMIT: usize = 100_000;
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

impl Lockout {
    /// Reserves an attempt for `account` from `ip`, or says how long until one may be made
    /// (the account is locked, or the address is over its budget).
    pub fn begin(
        &self,
        account: Account<'_>,
        ip: Option<IpAddr>,
        policy: Policy,
    ) -> Result<Attempt, Duration> {
        self.begin_at(account, ip, policy, Instant::now())
    }

    fn begin_at(
        &self,
        account: Account<'_>,
        ip: Option<IpAddr>,
        policy: Policy,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let key = account.key();
        let address = ip.map(|ip| (account.secret(), ip));
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if counters.accounts.len() + counters.addresses.len() > SIZE_LIMIT {
            counters.prune(now, &policy);
        }
        let mut wait = Duration::ZERO;
        if let Some(c) = counters.accounts.get(&key) {
            if let Some(until) = c.locked_until.filter(|u| *u > now) {
                wait = wait.max(until - now);
            } else if c.failures + c.in_flight >= policy.max_failures {
                // Slots are all taken by attempts still being checked: one of them will lock.
                wait = wait.max(policy.base_delay);
            }
        }
        if let Some(b) = address.and_then(|a| counters.addresses.get_mut(&a)) {
            b.leak(now, &policy);
            // This attempt may fail too: it is let in only if the budget can take that.
            let over = b.spent + f64::from(b.in_flight) + 1.0 - f64::from(policy.ip_max_failures);
            if over > 0.0 {
                wait = wait.max(Duration::from_secs_f64(over / policy.ip_refill_per_sec()));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        let c = counters
            .accounts
            .entry(key.clone())
            .or_insert(AccountCounter {
                failures: 0,
                in_flight: 0,
                locks: 0,
                locked_until: None,
                last_seen: now,
            });
        if c.locked_until.is_some_and(|u| u <= now) {
            c.locked_until = None;
        }
        c.in_flight += 1;
        c.last_seen = now;
        if let Some(a) = address {
            let b = counters.addresses.entry(a).or_insert(AddressBudget {
                spent: 0.0,
                at: now,
                in_flight: 0,
            });
            b.in_flight += 1;
        }
        Ok(Attempt {
            counters: self.counters.clone(),
            account: key,
            address,
            policy,
            state: State::Reserved,
        })
    }
}

impl Attempt {
    /// The secret is being checked from now on: if the attempt is dropped unrecorded after
    /// this, it counts as a failure.
    pub fn checking(&mut self) {
        self.state = State::Checking;
    }

    /// A correct secret clears the account's failures; the address's budget only comes back
    /// with time, so one valid account cannot launder guesses against others from it.
    pub fn succeeded(mut self) {
        self.state = State::Recorded;
        self.settle(|account, _| {
            account.failures = 0;
            account.locks = 0;
        });
    }

    pub fn failed(mut self) -> FailureOutcome {
        self.state = State::Recorded;
        self.record_failure(Instant::now())
    }

    fn record_failure(&self, now: Instant) -> FailureOutcome {
        let policy = self.policy;
        let mut outcome = FailureOutcome::Counted;
        self.settle(|account, address| {
            account.failures += 1;
            account.last_seen = now;
            if account.failures >= policy.max_failures {
                account.locks += 1;
                account.failures = 0;
                account.locked_until = Some(now + policy.lock_for(account.locks));
                outcome = FailureOutcome::Locked;
            }
            if let Some(b) = address {
                b.leak(now, &policy);
                b.spent += 1.0;
            }
        });
        outcome
    }

    /// Ends the attempt's reservation, then applies `record` to the account and the address;
    /// entries left with nothing to remember are removed.
    fn settle(&self, record: impl FnOnce(&mut AccountCounter, Option<&mut AddressBudget>)) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let Counters {
            accounts,
            addresses,
            ..
        } = &mut *counters;
        let mut address = self.address.and_then(|a| addresses.get_mut(&a));
        if let Some(b) = address.as_deref_mut() {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
        if let Some(account) = accounts.get_mut(&self.account) {
            account.in_flight = account.in_flight.saturating_sub(1);
            record(account, address);
            if account.is_clear() {
                accounts.remove(&self.account);
            }
        }
        if let Some(a) = self.address {
            if addresses
                .get(&a)
                .is_some_and(|b| b.in_flight == 0 && b.spent <= 0.0)
            {
                addresses.remove(&a);
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        match self.state {
            State::Checking => {
                let _ = self.record_failure(Instant::now());
            }
            // Nothing was checked: give the slot back.
            State::Reserved => self.settle(|_, _| {}),
            State::Recorded => {}
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
        ip_max_failures: 10,
        ip_window: Duration::from_secs(100),
    };

    fn ip() -> Option<IpAddr> {
        Some("192.0.2.1".parse().unwrap())
    }

    fn fail(lockout: &Lockout, account: Account<'_>, at: Instant) -> FailureOutcome {
        let mut attempt = lockout.begin_at(account, ip(), POLICY, at).unwrap();
        attempt.checking();
        attempt.state = State::Recorded;
        attempt.record_failure(at)
    }

    #[test]
    fn parallel_attempts_cannot_exceed_the_limit() {
        let lockout = Lockout::default();
        // Ten attempts begin before any is checked: only three get a slot.
        let attempts: Vec<_> = (0..10)
            .filter_map(|_| lockout.begin(Account::User("Alice"), None, POLICY).ok())
            .collect();
        assert_eq!(attempts.len(), 3);
        let outcomes: Vec<_> = attempts.into_iter().map(Attempt::failed).collect();
        assert_eq!(outcomes.last(), Some(&FailureOutcome::Locked));
        let wait = lockout
            .begin(Account::User("alice"), None, POLICY)
            .err()
            .unwrap();
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10));
    }

    #[test]
    fn each_lock_of_an_account_lasts_twice_as_long_up_to_the_maximum() {
        let lockout = Lockout::default();
        let mut now = Instant::now();
        for expected in [10, 20, 25] {
            for _ in 0..3 {
                fail(&lockout, Account::Client("reports"), now);
            }
            let wait = lockout
                .begin_at(Account::Client("reports"), None, POLICY, now)
                .err()
                .unwrap();
            assert_eq!(wait, Duration::from_secs(expected));
            now += wait;
        }
    }

    #[test]
    fn failures_at_other_accounts_do_not_lock_out_the_people_behind_an_address() {
        let lockout = Lockout::default();
        let now = Instant::now();
        for i in 0..5 {
            fail(&lockout, Account::User(&format!("nobody{i}")), now);
        }
        let alice = lockout.begin_at(Account::User("alice"), ip(), POLICY, now);
        assert!(alice.is_ok());
    }

    #[test]
    fn an_address_over_its_budget_waits_for_failures_to_leak_back() {
        let lockout = Lockout::default();
        let start = Instant::now();
        for i in 0..10 {
            fail(&lockout, Account::User(&format!("user{i}")), start);
        }
        // Ten spent: the eleventh waits for one to come back (100 s / 10 = 10 s each), and a
        // right password from the same address waits too.
        let wait = lockout
            .begin_at(Account::User("alice"), ip(), POLICY, start)
            .err()
            .unwrap();
        assert_eq!(wait, Duration::from_secs(10));
        let later = start + Duration::from_secs(5);
        let wait = lockout
            .begin_at(Account::User("alice"), ip(), POLICY, later)
            .err()
            .unwrap();
        assert!(wait.abs_diff(Duration::from_secs(5)) < Duration::from_millis(1));
        // Another address, and client secrets from this one, are not affected.
        let other: Option<IpAddr> = Some("192.0.2.2".parse().unwrap());
        assert!(lockout
            .begin_at(Account::User("alice"), other, POLICY, start)
            .is_ok());
        assert!(lockout
            .begin_at(Account::Client("reports"), ip(), POLICY, start)
            .is_ok());
        // Once one failure has leaked back, one attempt is let in; after the whole window, all.
        let one_back = start + Duration::from_millis(10_500);
        let attempt = lockout
            .begin_at(Account::User("alice"), ip(), POLICY, one_back)
            .unwrap();
        assert!(lockout
            .begin_at(Account::User("bob"), ip(), POLICY, one_back)
            .is_err());
        drop(attempt);
        let window_later = start + POLICY.ip_window + Duration::from_secs(1);
        let attempts: Vec<_> = (0..10)
            .map(|i| lockout.begin_at(Account::User(&format!("u{i}")), ip(), POLICY, window_later))
            .collect();
        assert!(attempts.iter().all(Result::is_ok));
    }

    #[test]
    fn success_resets_the_account_but_not_the_address() {
        let lockout = Lockout::default();
        let now = Instant::now();
        fail(&lockout, Account::User("bob"), now);
        fail(&lockout, Account::User("bob"), now);
        lockout
            .begin_at(Account::User("bob"), ip(), POLICY, now)
            .unwrap()
            .succeeded();
        // bob is clear: three more failures are needed to lock him;
        fail(&lockout, Account::User("bob"), now);
        fail(&lockout, Account::User("bob"), now);
        assert!(lockout
            .begin_at(Account::User("bob"), None, POLICY, now)
            .is_ok());
        // but the address keeps all four failures: six more and it is throttled.
        for i in 0..6 {
            fail(&lockout, Account::User(&format!("user{i}")), now);
        }
        assert!(lockout
            .begin_at(Account::User("carol"), ip(), POLICY, now)
            .is_err());
    }

    #[test]
    fn usernames_and_client_ids_are_separate_accounts() {
        let lockout = Lockout::default();
        let now = Instant::now();
        for _ in 0..3 {
            fail(&lockout, Account::Client("reports"), now);
        }
        assert!(lockout
            .begin_at(Account::Client("reports"), None, POLICY, now)
            .is_err());
        assert!(lockout
            .begin_at(Account::User("reports"), None, POLICY, now)
            .is_ok());
    }

    #[test]
    fn an_attempt_abandoned_before_its_check_gives_its_slot_back_and_after_it_counts() {
        let lockout = Lockout::default();
        for _ in 0..5 {
            drop(lockout.begin(Account::User("eve"), ip(), POLICY).unwrap());
        }
        // Nothing was checked, so nothing is remembered either.
        let counters = lockout.counters.lock().unwrap();
        assert!(counters.accounts.is_empty() && counters.addresses.is_empty());
        drop(counters);
        for _ in 0..3 {
            let mut attempt = lockout.begin(Account::User("eve"), ip(), POLICY).unwrap();
            attempt.checking();
        }
        assert!(lockout.begin(Account::User("eve"), None, POLICY).is_err());
    }
}
