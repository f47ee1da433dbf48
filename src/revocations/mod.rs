//! Revocations an issuer publishes, followed in the background (issue #13, gateway half).
//!
//! One [`RevocationFeed`] per issuer with `revocations:`. Its follower task polls the issuer's
//! feed (`GET <url>?after=<cursor>`, client authentication with HTTP Basic) every
//! `poll_interval`, at once again while the answer says `more`, and applies the entries to a
//! [`RevocationSet`] that the JWT stage reads on every request. The set is published with
//! `ArcSwap`, so a start-over (the feed's id changed, or the feed answered `reset`) gathers the
//! new full answer into a fresh set while the current one stays in force, and swaps it in only
//! when complete: the gateway never fails open while it resyncs. A failed poll keeps the set,
//! backs off (1 s, 2 s, 4 s … 30 s, never shorter than `poll_interval`), is counted, and is logged
//! once per change of failure, not on every poll. Entries are forgotten after their `exp` plus
//! the issuer's leeway (a token is accepted that long past its `exp`), by a sweep every
//! [`SWEEP_EVERY`]; at most [`MAX_ENTRIES`] are held (see [`RevocationSet::enforce_cap`]).
//!
//! Like a key source, a feed is carried into the next snapshot when its URL, client id, secret and
//! CA did not change, set, cursor and task included; its poll interval, timeout and leeway are
//! retuned in place when the snapshot that changes them is swapped in. The task holds only the
//! shared state and stops when the last snapshot naming the feed is gone.

mod fetch;
mod page;
mod set;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use tokio::sync::watch;
use tokio::time::Instant;

pub use fetch::{FeedError, PAGE_LIMIT};
pub use page::{Entry, Page, PageError};
pub use set::{Applied, RevocationSet};

use crate::clock::unix_now;
use crate::metrics;

/// Entries (jti and subject together) one issuer's set holds at most: roughly 100–150 MB at
/// typical jti lengths. Beyond it the entries that expire soonest are forgotten, with an error.
pub const MAX_ENTRIES: usize = 1_000_000;

/// How often entries past their `exp` (plus leeway) are dropped.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Longest wait between polls of a failing feed.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A client secret: never printed, not even by `Debug`.
#[derive(Clone)]
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn new(secret: String) -> Self {
        ClientSecret(secret)
    }

    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// What identifies a feed: where it is and who the gateway is there.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// The issuer's name in the config (metric label, log field).
    pub name: Arc<str>,
    pub url: String,
    pub client_id: String,
    pub client_secret: ClientSecret,
}

/// How a feed is polled; may change on a reload without starting the feed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedTuning {
    pub poll_interval: Duration,
    /// One poll, body included.
    pub timeout: Duration,
    /// The issuer's leeway on `exp`, in seconds: entries are kept this long past their `exp`.
    pub leeway: u64,
}

/// One issuer's revocations and the task that follows its feed.
pub struct RevocationFeed {
    shared: Arc<Shared>,
    /// Identifies URL, client id, secret and CA, so a reload reuses the feed exactly when none
    /// of them changed. A hash: the secret itself is not kept twice.
    pub fingerprint: String,
}

struct Shared {
    settings: FeedSettings,
    client: reqwest::Client,
    set: ArcSwap<RevocationSet>,
    tuning: Mutex<FeedTuning>,
    /// Unix seconds of the last successful poll; 0 = never.
    polled_at: AtomicU64,
    /// Set once the first full answer is in (the follower caught up with the feed).
    synced: AtomicBool,
    errors: IntCounter,
    /// Set when the last snapshot naming this feed is dropped.
    stopped: watch::Sender<bool>,
    started: Mutex<bool>,
}

impl Drop for RevocationFeed {
    fn drop(&mut self) {
        self.shared.stopped.send_replace(true);
    }
}

impl std::fmt::Debug for RevocationFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationFeed")
            .field("issuer", &self.shared.settings.name)
            .field("url", &self.shared.settings.url)
            .finish_non_exhaustive()
    }
}

impl RevocationFeed {
    pub fn new(
        settings: FeedSettings,
        tuning: FeedTuning,
        client: reqwest::Client,
        fingerprint: String,
    ) -> Self {
        // The series exists (at 0) from the start, so a scrape shows it before the first error.
        let errors = metrics::REVOCATION_FEED_ERRORS.with_label_values(&[settings.name.as_ref()]);
        RevocationFeed {
            shared: Arc::new(Shared {
                settings,
                client,
                set: ArcSwap::from_pointee(RevocationSet::new()),
                tuning: Mutex::new(tuning),
                polled_at: AtomicU64::new(0),
                synced: AtomicBool::new(false),
                errors,
                stopped: watch::Sender::new(false),
                started: Mutex::new(false),
            }),
            fingerprint,
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.settings.name
    }

    /// The set in force. Cheap (no allocation, no lock): for one request's check.
    pub fn current(&self) -> arc_swap::Guard<Arc<RevocationSet>> {
        self.shared.set.load()
    }

    /// Whether the follower has caught up with the feed once (what `/readyz` waits for).
    pub fn synced(&self) -> bool {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// Seconds since the last successful poll; `None` before the first.
    pub fn age_secs(&self) -> Option<u64> {
        match self.shared.polled_at.load(Ordering::Relaxed) {
            0 => None,
            at => Some(unix_now().saturating_sub(at)),
        }
    }

    /// Revocations held, `(jti, subject)`.
    pub fn counts(&self) -> (usize, usize) {
        self.current().counts()
    }

    /// Applies `tuning` (the snapshot being swapped in has the say) and starts the follower on
    /// the current runtime, once; a feed carried over from the previous snapshot keeps its task.
    pub fn start(&self, tuning: FeedTuning) {
        *self.shared.tuning.lock().unwrap_or_else(|p| p.into_inner()) = tuning;
        let mut started = self
            .shared
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *started {
            return;
        }
        *started = true;
        tokio::spawn(Follower::new(self.shared.clone()).run());
    }
}

impl Shared {
    fn tuning(&self) -> FeedTuning {
        *self.tuning.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What to do after a poll that succeeded.
enum Next {
    /// A further page is ready (`more`), or the feed started over: poll again at once.
    Now,
    /// Caught up: wait `poll_interval`.
    Wait,
}

/// The follower task's own state: where in which feed it is.
struct Follower {
    shared: Arc<Shared>,
    /// The feed id of the answers so far.
    feed: Option<String>,
    /// The last cursor answered; `None`: from the beginning.
    cursor: Option<String>,
    /// A start-over in progress: the new full answer gathers here while the set in force stays.
    pending: Option<RevocationSet>,
    /// Started over since last caught up: a second start-over before catching up (two feeds
    /// answering in turn behind one address) waits `poll_interval` instead of hammering them.
    restarted: bool,
    failures: u32,
    /// The kind of failure last logged; `None` while polls succeed.
    failing: Option<String>,
    last_sweep: Instant,
}

impl Follower {
    fn new(shared: Arc<Shared>) -> Self {
        Follower {
            shared,
            feed: None,
            cursor: None,
            pending: None,
            restarted: false,
            failures: 0,
            failing: None,
            last_sweep: Instant::now(),
        }
    }

    async fn run(mut self) {
        let mut stopped = self.shared.stopped.subscribe();
        loop {
            if *stopped.borrow() {
                return;
            }
            let tuning = self.shared.tuning();
            let wait = match self.poll(tuning).await {
                Ok(Next::Now) => Duration::ZERO,
                Ok(Next::Wait) => tuning.poll_interval,
                Err(error) => self.failed(&error, tuning),
            };
            if self.last_sweep.elapsed() >= SWEEP_EVERY {
                self.sweep(tuning.leeway);
            }
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // Only ever sent once, with `true`.
                _ = stopped.changed() => return,
            }
        }
    }

    /// One poll, applied.
    async fn poll(&mut self, tuning: FeedTuning) -> Result<Next, FeedError> {
        let shared = self.shared.clone();
        let settings = &shared.settings;
        let page = fetch::poll(
            &shared.client,
            settings,
            self.cursor.as_deref(),
            tuning.timeout,
        )
        .await?;
        let next = self.take(page, tuning)?;
        shared.polled_at.store(unix_now(), Ordering::Relaxed);
        self.failures = 0;
        if self.failing.take().is_some() {
            tracing::info!(issuer = %settings.name, "revocation feed answers again");
        }
        Ok(next)
    }

    /// Applies one answer: start over, or add its entries and move the cursor.
    fn take(&mut self, page: Page, tuning: FeedTuning) -> Result<Next, FeedError> {
        let shared = self.shared.clone();
        let name = &shared.settings.name;
        let feed_changed = self.feed.as_deref().is_some_and(|f| f != page.feed);
        if page.reset || feed_changed {
            if page.reset && self.cursor.is_none() {
                return Err(FeedError::Protocol {
                    url: shared.settings.url.clone(),
                    message: "`reset` answered to a request from the beginning",
                });
            }
            let reason = if feed_changed {
                "the feed id changed"
            } else {
                "the feed was reset"
            };
            let (jti, subject) = shared.set.load().counts();
            tracing::warn!(issuer = %name, reason, jti, subject,
                "revocation feed starts over; the revocations in force stay until the new full answer is in");
            self.pending = Some(RevocationSet::new());
            self.feed = Some(page.feed);
            let again = std::mem::replace(&mut self.restarted, true);
            if self.cursor.take().is_some() {
                return Ok(if again { Next::Wait } else { Next::Now });
            }
            // Asked from the beginning already: this answer is the new feed's first page.
        } else {
            self.feed = Some(page.feed);
        }

        let live = shared.set.load();
        let target: &RevocationSet = self.pending.as_ref().unwrap_or(&live);
        let applied = target.apply(&page.entries, unix_now(), tuning.leeway, MAX_ENTRIES);
        if applied.evicted > 0 {
            tracing::error!(issuer = %name, evicted = applied.evicted, cap = MAX_ENTRIES,
                "revocation set full: the entries that expire soonest were forgotten");
        }
        if page.malformed > 0 {
            tracing::warn!(issuer = %name, skipped = page.malformed,
                "revocation feed entries without their required fields were skipped");
        }
        if page.unknown > 0 {
            tracing::debug!(issuer = %name, skipped = page.unknown,
                "revocation feed entries of unknown kinds were ignored");
        }
        let advanced = self.cursor.as_deref() != Some(page.cursor.as_str());
        self.cursor = Some(page.cursor);
        // `more` without progress would only fetch the same page again: treat it as caught up.
        if page.more && advanced {
            return Ok(Next::Now);
        }
        drop(live);
        self.restarted = false;
        if let Some(complete) = self.pending.take() {
            let (jti, subject) = complete.counts();
            shared.set.store(Arc::new(complete));
            tracing::info!(issuer = %name, jti, subject, "revocation feed resynced");
        }
        if !shared.synced.swap(true, Ordering::AcqRel) {
            let (jti, subject) = shared.set.load().counts();
            tracing::info!(issuer = %name, jti, subject, "revocation feed synced");
        }
        Ok(Next::Wait)
    }

    /// Counts the failure, logs it when it is a new kind of failure, and says when to retry.
    fn failed(&mut self, error: &FeedError, tuning: FeedTuning) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.shared.errors.inc();
        let retry = backoff(self.failures, tuning.poll_interval);
        let kind = error.kind();
        if self.failing.as_deref() != Some(kind.as_str()) {
            tracing::warn!(issuer = %self.shared.settings.name, %error, retry_in = ?retry,
                synced = self.shared.synced.load(Ordering::Relaxed),
                "revocation feed poll failed; the revocations known so far stay in force \
                 (logged again when the failure changes or ends)");
            self.failing = Some(kind);
        }
        retry
    }

    fn sweep(&mut self, leeway: u64) {
        self.last_sweep = Instant::now();
        let now = unix_now();
        let mut dropped = self.shared.set.load().sweep(now, leeway);
        if let Some(pending) = &self.pending {
            dropped += pending.sweep(now, leeway);
        }
        if dropped > 0 {
            tracing::debug!(issuer = %self.shared.settings.name, dropped, "expired revocations forgotten");
        }
    }
}

/// 1 s, 2 s, 4 s … up to 30 s, and never shorter than the poll interval.
fn backoff(failures: u32, poll_interval: Duration) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(5);
    Duration::from_secs(secs)
        .min(MAX_BACKOFF)
        .max(poll_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let poll = Duration::from_millis(200);
        let waits: Vec<u64> = (1..=8).map(|f| backoff(f, poll).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(1, Duration::from_secs(5)), Duration::from_secs(5));
    }

    fn feed() -> RevocationFeed {
        let settings = FeedSettings {
            name: "unit".into(),
            url: "http://127.0.0.1:9/revocations".into(),
            client_id: "gateway".into(),
            client_secret: ClientSecret::new("s".into()),
        };
        let tuning = FeedTuning {
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            leeway: 0,
        };
        RevocationFeed::new(settings, tuning, reqwest::Client::new(), "fp".into())
    }

    fn page(feed: &str, cursor: &str, more: bool, reset: bool, jtis: &[&str]) -> Page {
        Page {
            feed: feed.into(),
            cursor: cursor.into(),
            more,
            reset,
            entries: jtis
                .iter()
                .map(|j| Entry::Jti {
                    jti: j.to_string(),
                    exp: unix_now() + 600,
                })
                .collect(),
            unknown: 0,
            malformed: 0,
        }
    }

    #[test]
    fn a_start_over_keeps_the_set_in_force_until_the_new_answer_is_complete() {
        let feed = feed();
        let tuning = feed.shared.tuning();
        let mut follower = Follower::new(feed.shared.clone());
        let revoked = |jti: &str| feed.current().revokes(Some(jti), "x", None);

        // `reset` to a request from the beginning breaks the contract: an error, not a loop.
        let reset = follower.take(page("A", "0", false, true, &[]), tuning);
        assert!(matches!(reset, Err(FeedError::Protocol { .. })));

        // The first full answer arrives in two pages; it is in force as it comes.
        let first = follower.take(page("A", "1", true, false, &["a1"]), tuning);
        assert!(matches!(first, Ok(Next::Now)));
        assert!(revoked("a1") && !feed.synced());
        let last = follower.take(page("A", "2", false, false, &["a2"]), tuning);
        assert!(matches!(last, Ok(Next::Wait)));
        assert!(feed.synced());
        assert_eq!(follower.cursor.as_deref(), Some("2"));

        // Another database: start over from the beginning at once ...
        let changed = follower.take(page("B", "7", false, false, &["ignored"]), tuning);
        assert!(matches!(changed, Ok(Next::Now)));
        assert_eq!(follower.cursor, None);
        assert!(revoked("a1") && !revoked("ignored"));
        // ... its first page gathers aside ...
        let partial = follower.take(page("B", "1", true, false, &["b1"]), tuning);
        assert!(matches!(partial, Ok(Next::Now)));
        assert!(revoked("a1") && revoked("a2") && !revoked("b1"));
        // ... and a second start-over before catching up waits a poll interval.
        let flapped = follower.take(page("A", "2", false, false, &[]), tuning);
        assert!(matches!(flapped, Ok(Next::Wait)));
        assert!(revoked("a1"), "still in force");
        // Caught up with the new answer: it replaces the old set as a whole.
        let complete = follower.take(page("A", "1", false, false, &["a3"]), tuning);
        assert!(matches!(complete, Ok(Next::Wait)));
        assert!(revoked("a3") && !revoked("a1") && !revoked("b1"));
        assert_eq!(feed.counts(), (1, 0));

        // `reset` later on: start over, same feed id.
        let reset = follower.take(page("A", "1", false, true, &[]), tuning);
        assert!(matches!(reset, Ok(Next::Now)));
        assert!(revoked("a3"));
        let again = follower.take(page("A", "1", false, false, &["a4"]), tuning);
        assert!(matches!(again, Ok(Next::Wait)));
        assert!(revoked("a4") && !revoked("a3"));
    }

    #[test]
    fn the_secret_is_never_printed() {
        let settings = FeedSettings {
            name: "demo".into(),
            url: "http://127.0.0.1:9400/revocations".into(),
            client_id: "gateway".into(),
            client_secret: ClientSecret::new("s3cret-value".into()),
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("gateway"));
    }
}
