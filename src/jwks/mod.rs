//! Issuers' signing keys, kept fresh in the background and published as immutable [`KeySet`]s.
//!
//! One [`KeySource`] per configured issuer. A refresher task fetches the JWKS at start (after
//! discovery when no URL is configured), again after its `Cache-Control: max-age` (clamped to the
//! configured bounds, conditional on the ETag), and on demand when a token names a `kid` the set
//! lacks — once per cooldown, shared by every request that missed meanwhile, so random kids cannot
//! hammer the IdP. A failed fetch keeps the last good keys (stale-if-error) and retries with
//! backoff. A source is carried into the next snapshot when its settings did not change, keys and
//! all; its task holds only the shared state and stops when the last snapshot naming it is gone.

mod fetch;
mod key_set;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use tokio::sync::{watch, Notify};

pub use key_set::{KeySet, KeySetError, VerifyingKey};

use crate::clock::unix_now;
use crate::metrics;
use fetch::{Answer, Fetched};

/// Where an issuer's keys come from and how often to look again.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// The issuer's name in the config (metric label, log field).
    pub name: Arc<str>,
    pub issuer_url: String,
    pub jwks_url: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub min_interval: Duration,
    pub max_interval: Duration,
    pub unknown_kid_cooldown: Duration,
    pub fetch_timeout: Duration,
}

/// The keys of one issuer and the task that refreshes them.
pub struct KeySource {
    shared: Arc<Shared>,
    /// Identifies everything the source was built from, so a reload reuses it exactly when
    /// nothing about it changed.
    pub fingerprint: String,
}

struct Shared {
    settings: SourceSettings,
    client: reqwest::Client,
    keys: ArcSwapOption<KeySet>,
    /// Unix seconds of the last fetch that confirmed the keys (200 or 304); 0 = never.
    confirmed_at: AtomicU64,
    /// Asks the refresher for an early fetch (an unknown `kid`). Permits coalesce: one fetch
    /// answers every miss that arrived before it started.
    wanted: Notify,
    /// Number of fetch attempts begun, and (below) the number of the last one finished: a request
    /// that missed waits for an attempt that began after it asked, whatever its outcome.
    begun: AtomicU64,
    finished: watch::Sender<u64>,
    /// Set when the last snapshot naming this source is dropped.
    stopped: watch::Sender<bool>,
    started: Mutex<bool>,
}

impl Drop for KeySource {
    fn drop(&mut self) {
        self.shared.stopped.send_replace(true);
    }
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySource")
            .field("issuer", &self.shared.settings.name)
            .finish_non_exhaustive()
    }
}

impl KeySource {
    pub fn new(settings: SourceSettings, client: reqwest::Client, fingerprint: String) -> Self {
        KeySource {
            shared: Arc::new(Shared {
                settings,
                client,
                keys: ArcSwapOption::empty(),
                confirmed_at: AtomicU64::new(0),
                wanted: Notify::new(),
                begun: AtomicU64::new(0),
                finished: watch::Sender::new(0),
                stopped: watch::Sender::new(false),
                started: Mutex::new(false),
            }),
            fingerprint,
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.settings.name
    }

    /// The current keys; `None` until the first fetch succeeded.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.shared.keys.load_full()
    }

    /// Seconds since the keys were last confirmed by the issuer; `None` before the first fetch.
    pub fn age_secs(&self) -> Option<u64> {
        match self.shared.confirmed_at.load(Ordering::Relaxed) {
            0 => None,
            at => Some(unix_now().saturating_sub(at)),
        }
    }

    /// A token named a key the set lacks: asks for a fetch (single-flight, within the cooldown)
    /// and waits, bounded, for it to finish. Returns the keys then current.
    pub async fn refetch_for_unknown_kid(&self) -> Option<Arc<KeySet>> {
        let s = &self.shared;
        let mut finished = s.finished.subscribe();
        let asked_after = s.begun.load(Ordering::Acquire);
        s.wanted.notify_one();
        // An attempt already running may have started before the key was published: wait for
        // the next one (at most a running fetch, the cooldown and one more fetch).
        let bound = s.settings.unknown_kid_cooldown + 2 * s.settings.fetch_timeout;
        let _ = tokio::time::timeout(bound, finished.wait_for(|n| *n > asked_after)).await;
        self.keys()
    }

    /// Starts the refresher on the current runtime, once; a source carried over from the
    /// previous snapshot keeps the task it has.
    pub fn start(&self) {
        let mut started = self
            .shared
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *started {
            return;
        }
        *started = true;
        tokio::spawn(refresh(self.shared.clone()));
    }
}

/// The refresher: fetch, publish, sleep until the next due time or an unknown-kid request.
async fn refresh(shared: Arc<Shared>) {
    let settings = &shared.settings;
    let mut stopped = shared.stopped.subscribe();
    let mut jwks_url = settings.jwks_url.clone();
    let mut etag: Option<String> = None;
    let mut failures: u32 = 0;
    // When the last fetch asked for by an unknown kid ran: the cooldown counts from there, so a
    // new key's first use right after a scheduled fetch is not held back.
    let mut last_on_demand: Option<tokio::time::Instant> = None;
    loop {
        let attempt_started = tokio::time::Instant::now();
        let attempt = shared.begun.fetch_add(1, Ordering::AcqRel) + 1;
        let next_in = match fetch_once(&shared, &mut jwks_url, &mut etag).await {
            Ok(max_age) => {
                failures = 0;
                max_age
                    .unwrap_or(settings.max_interval)
                    .clamp(settings.min_interval, settings.max_interval)
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                metrics::JWKS_FETCHES
                    .with_label_values(&[settings.name.as_ref(), "error"])
                    .inc();
                let retry = backoff(failures, settings.max_interval);
                tracing::warn!(issuer = %settings.name, %error, retry_in = ?retry,
                    stale_keys_kept = shared.keys.load().is_some(), "JWKS fetch failed");
                if jwks_url.is_some() && settings.jwks_url.is_none() {
                    // Discover again next time: the IdP may have moved its keys.
                    jwks_url = None;
                }
                retry
            }
        };
        shared.finished.send_replace(attempt);

        let due = attempt_started + next_in;
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = shared.wanted.notified() => {
                // However many asked, no more than one such fetch per cooldown.
                if let Some(at) = last_on_demand {
                    tokio::time::sleep_until(at + settings.unknown_kid_cooldown).await;
                }
                last_on_demand = Some(tokio::time::Instant::now());
            }
            // Only ever sent once, with `true`.
            _ = stopped.changed() => return,
        }
    }
}

/// One discovery (when needed) and JWKS request; publishes a changed set. Returns the max-age.
async fn fetch_once(
    shared: &Shared,
    jwks_url: &mut Option<String>,
    etag: &mut Option<String>,
) -> Result<Option<Duration>, String> {
    let settings = &shared.settings;
    let client = &shared.client;
    let url = match jwks_url {
        Some(url) => url.clone(),
        None => {
            let url = fetch::discover(client, &settings.issuer_url)
                .await
                .map_err(|e| e.to_string())?;
            *jwks_url = Some(url.clone());
            url
        }
    };
    // A conditional request only makes sense while we hold the keys that ETag names.
    let known = etag.as_deref().filter(|_| shared.keys.load().is_some());
    let Answer { fetched, max_age } = fetch::jwks(client, &url, known)
        .await
        .map_err(|e| e.to_string())?;
    let result = match fetched {
        Fetched::NotModified => "not_modified",
        Fetched::Document { body, etag: tag } => {
            let previous = shared.keys.load_full();
            let set = KeySet::parse(&body, &settings.algorithms, previous.as_deref())
                .map_err(|e| format!("{url}: {e}"))?;
            let count = set.len();
            shared.keys.store(Some(Arc::new(set)));
            *etag = tag;
            metrics::JWKS_KEYS
                .with_label_values(&[settings.name.as_ref()])
                .set(count as i64);
            tracing::info!(issuer = %settings.name, keys = count, "JWKS updated");
            "updated"
        }
    };
    shared.confirmed_at.store(unix_now(), Ordering::Relaxed);
    metrics::JWKS_FETCHES
        .with_label_values(&[settings.name.as_ref(), result])
        .inc();
    Ok(max_age)
}

/// 1 s, 2 s, 4 s … up to a minute (and never past the normal refresh interval).
fn backoff(failures: u32, max_interval: Duration) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(6);
    Duration::from_secs(secs)
        .min(Duration::from_secs(60))
        .min(max_interval.max(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let max = Duration::from_secs(900);
        let waits: Vec<u64> = (1..=9).map(|f| backoff(f, max).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(5, Duration::from_secs(10)).as_secs(), 10);
    }
}
