//! The issuer: the state behind every endpoint (settings, keys, grants, lockout, audit) and its
//! upkeep (reload, key rotation, pruning). Which endpoint answers a request is decided in
//! `endpoints`, which depends on this module and never the reverse.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use arc_swap::ArcSwap;
use gatehouse_service::{
    LocatedError, LocatedErrors, ReloadGate, ReloadOutcome, Reloadable, Watched, WatchedPath,
};

use crate::audit::{AuditLog, Event};
use crate::clock::now;
use crate::config::{self, Settings};
use crate::hash_gate::HashGate;
use crate::keys::{KeyError, KeyRing, KeyState, Rotation, RotationMode};
use crate::lockout::{Account, Lockout, Policy};
use crate::metrics;
use crate::password::SecretCache;
use crate::state::{AccountLock, Store, StoreError};

/// The issuer's state, shared by every request. Requests are answered by `Issuer::handle`,
/// defined in `endpoints` next to the routing table.
pub struct Issuer {
    config_path: PathBuf,
    settings: ArcSwap<Settings>,
    /// The signing keys, kept in `state` and shared with the other instances.
    pub(crate) keys: KeyRing,
    /// Set while key upkeep cannot reach the store: its failure is logged once, not per tick.
    keys_unreadable: AtomicBool,
    /// Grants, sessions, revocations, account locks and signing keys (see `state`).
    pub(crate) state: Arc<Store>,
    pub(crate) lockout: Lockout,
    pub(crate) secrets: SecretCache,
    /// Bounds the argon2 checks (passwords, client secrets) running and waiting.
    pub(crate) hashing: HashGate,
    pub(crate) audit: AuditLog,
    /// The issuer URL's path ("" or "/prefix"): requests may arrive with or without it.
    base_path: String,
    /// The issuer's own `Arc`, for work that `&self` methods hand to the blocking pool (key
    /// rotation from the admin listener).
    pub(crate) this: Weak<Issuer>,
    /// Serialises and counts reloads: the watcher, SIGHUP and `POST /reload` may race.
    reload_gate: ReloadGate,
    /// Accounts the store said were clear, and when: see [`Issuer::shared_lock`].
    clear_accounts: quick_cache::sync::Cache<String, Instant>,
}

/// How long "this account has no failures" read from the store is trusted: a lock set by another
/// instance is seen here within this. Spares a service's every token request a database read.
const CLEAR_FOR: Duration = Duration::from_secs(1);
/// Accounts remembered as clear at most (a flood of made-up client ids cannot grow it).
const CLEAR_ACCOUNTS: usize = 10_000;

impl Issuer {
    pub fn start(config_path: &Path) -> anyhow::Result<Arc<Self>> {
        metrics::init();
        let settings = config::load(config_path)
            .map_err(|e| anyhow::anyhow!("invalid identity configuration:\n{e}"))?;
        let p = &settings.process;
        let state = Arc::new(Store::open(&p.state).context("opening the identity state store")?);
        let keys = KeyRing::open_in_store(
            state.clone(),
            &p.encryption_key,
            p.keys_dir.as_deref(),
            &p.algorithms,
            now(),
        )
        .map_err(|e| match e {
            // A key-encryption key problem is the configuration's: say which key.
            KeyError::Kek(e) => anyhow::anyhow!(
                "{}",
                LocatedError::new(config_path, p.encryption_key.key_path(), e.to_string())
            ),
            e => anyhow::Error::new(e).context("opening the signing keys"),
        })?;
        let audit = AuditLog::open(&p.audit_log, p.audit_rotation)
            .with_context(|| format!("opening the audit log {}", p.audit_log))?;
        let base_path = url::Url::parse(&p.issuer)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let hashing = HashGate::new(p.hash_concurrency, p.hash_queue);
        let issuer = Arc::new_cyclic(|this| Self {
            this: this.clone(),
            config_path: config_path.to_path_buf(),
            settings: ArcSwap::from_pointee(settings),
            keys,
            keys_unreadable: AtomicBool::new(false),
            state,
            lockout: Lockout::default(),
            secrets: SecretCache::default(),
            hashing,
            audit,
            base_path,
            reload_gate: ReloadGate::new(&metrics::CONFIG_RELOADS, "config"),
            clear_accounts: quick_cache::sync::Cache::new(CLEAR_ACCOUNTS),
        });
        issuer.publish_key_gauges();
        Ok(issuer)
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// `path` without the issuer URL's path prefix: requests may arrive with or without it.
    pub(crate) fn local_path<'a>(&self, path: &'a str) -> &'a str {
        path.strip_prefix(self.base_path.as_str())
            .filter(|p| p.starts_with('/'))
            .unwrap_or(path)
    }

    /// Reads the file again and swaps the settings in; a broken file changes nothing. The gate
    /// around it counts the attempt and logs every problem.
    fn load_and_swap(&self) -> Result<ReloadOutcome, LocatedErrors> {
        let old = self.settings();
        let new = config::load(&self.config_path)?;
        if new.hash == old.hash {
            return Ok(ReloadOutcome::Unchanged);
        }
        if new.process != old.process {
            tracing::warn!(
                "issuer, listeners, keys, audit_log and limits settings apply at the next restart"
            );
        }
        tracing::info!(
            users = new.users.len(),
            clients = new.clients.len(),
            "identity configuration reloaded"
        );
        self.settings.store(Arc::new(new));
        Ok(ReloadOutcome::Applied)
    }

    /// Rotates the signing keys and audits it. Staged (the default) publishes next keys that
    /// sign once `keys.jwks_max_age` has passed; `immediate` signs with fresh keys at once.
    pub fn rotate_keys(&self, reason: &str, immediate: bool) -> Result<Rotation, KeyError> {
        let mode = if immediate {
            RotationMode::Immediate
        } else {
            RotationMode::Staged {
                publish_for: self.settings().process.jwks_max_age,
            }
        };
        let rotation = self.keys.rotate(now(), mode)?;
        if rotation.iter().any(|c| c.created) {
            metrics::KEY_ROTATIONS.inc();
        }
        for c in rotation.iter().filter(|c| c.created) {
            let alg = c.alg.as_str();
            // A next key replaces nothing yet: its `key_rotation` comes when it starts signing.
            let (event, retired_kid) = if c.state == KeyState::Next {
                tracing::info!(alg, kid = %c.kid, signs_from = c.signs_from, reason, "next signing key published");
                ("key_published", None)
            } else {
                tracing::info!(alg, kid = %c.kid, reason, "signing key rotated at once");
                ("key_rotation", c.replaces.as_deref())
            };
            self.audit.record(Event {
                event,
                outcome: "success",
                reason: Some(reason),
                kid: Some(&c.kid),
                retired_kid,
                ..Event::default()
            });
            if let Some(withdrawn) = &c.withdrawn {
                tracing::info!(alg, kid = %withdrawn, "waiting next key withdrawn");
                self.audit.record(Event {
                    event: "key_withdrawn",
                    outcome: "success",
                    reason: Some(reason),
                    kid: Some(withdrawn),
                    ..Event::default()
                });
            }
        }
        self.publish_key_gauges();
        Ok(rotation)
    }

    /// Next keys that are due start signing.
    fn activate_due_keys(&self, now: u64) {
        let activated = match self.keys.activate_due(now) {
            Ok(a) => a,
            Err(e) => return self.key_upkeep_failed("activating the next signing keys", &e),
        };
        for a in &activated {
            tracing::info!(alg = a.alg.as_str(), kid = %a.kid, "next signing key now signs");
            self.audit.record(Event {
                event: "key_rotation",
                outcome: "success",
                reason: Some("next key due"),
                kid: Some(&a.kid),
                retired_kid: a.retired.as_deref(),
                ..Event::default()
            });
        }
    }

    /// Periodic key upkeep: next keys that are due start signing, scheduled rotation, retired
    /// keys leaving the JWKS. (Expired state is swept by the server's sweeper.)
    ///
    /// First it picks up what other instances changed (a cheap version read; the keys are read
    /// again only when it moved). A store that does not answer skips the tick: the keys held in
    /// memory keep signing and verifying, and the next tick tries again.
    pub fn tick(&self) {
        let settings = self.settings();
        let now = now();
        match self.keys.refresh(now) {
            Ok(changed) => {
                if self.keys_unreadable.swap(false, Ordering::Relaxed) {
                    tracing::info!("signing keys readable in the state store again");
                }
                if changed {
                    tracing::debug!("signing keys reloaded: another instance changed them");
                }
            }
            Err(e) => return self.key_upkeep_failed("reading the signing keys", &e),
        }
        self.activate_due_keys(now);
        if let Some(every) = settings.process.rotate_every {
            if self.keys.rotation_due(now, every) {
                if let Err(e) = self.rotate_keys("schedule", false) {
                    self.key_upkeep_failed("scheduled key rotation", &e);
                }
            }
        }
        let t = &settings.tokens;
        let retention = t.access_token_ttl.max(t.id_token_ttl) + settings.process.jwks_max_age;
        match self.keys.prune(now, retention) {
            Ok(dropped) => {
                for kid in &dropped {
                    tracing::info!(kid = %kid, "retired signing key left the JWKS");
                }
            }
            Err(e) => self.key_upkeep_failed("pruning retired keys", &e),
        }
        // Every tick: a change may also come from a reload after another instance's write.
        self.publish_key_gauges();
    }

    /// Logs a failed key upkeep step: a store that stays unreachable is logged once (the store
    /// counts every failure), any other failure every time.
    fn key_upkeep_failed(&self, what: &str, e: &KeyError) {
        if !matches!(e, KeyError::Store(_)) {
            tracing::error!(error = %e, "{what} failed");
        } else if !self.keys_unreadable.swap(true, Ordering::Relaxed) {
            tracing::error!(error = %e, "{what} failed: the signing keys held in memory stay in use; retrying every second");
        } else {
            tracing::debug!(error = %e, "{what} failed again");
        }
    }

    /// Deletes expired grants, sessions, revocations and idle locks. Failures are counted by
    /// the store and retried at the next sweep.
    pub async fn sweep(&self) {
        let forget_locks_after = self.settings().lockout.max_delay;
        match self.state.sweep(now(), forget_locks_after).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "expired identity state swept"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired identity state failed"),
        }
    }

    /// The shared, durable side of an account's lockout: `Err(wait)` while the store says the
    /// account is locked (by any instance, before any restart). An account the store found clear
    /// less than [`CLEAR_FOR`] ago is taken as still clear without asking again; any failure
    /// recorded here forgets that at once.
    pub(crate) async fn shared_lock(
        &self,
        account: Account<'_>,
    ) -> Result<Result<AccountLock, Duration>, StoreError> {
        let key = account.stored_key();
        if self
            .clear_accounts
            .get(&key)
            .is_some_and(|at| at.elapsed() < CLEAR_FOR)
        {
            return Ok(Ok(AccountLock::Clear));
        }
        match self.state.account_lock(&key, since_epoch()).await? {
            AccountLock::Locked(wait) => Ok(Err(wait)),
            AccountLock::Clear => {
                self.clear_accounts.insert(key, Instant::now());
                Ok(Ok(AccountLock::Clear))
            }
            failing => {
                self.clear_accounts.remove(&key);
                Ok(Ok(failing))
            }
        }
    }

    /// Records a checked secret in the store: a failure counts (and may lock the account for
    /// every instance: returns true then), a success clears what `before` showed.
    pub(crate) async fn record_shared(
        &self,
        account: Account<'_>,
        before: AccountLock,
        succeeded: bool,
        policy: Policy,
    ) -> Result<bool, StoreError> {
        let key = account.stored_key();
        if succeeded {
            if before != AccountLock::Clear {
                self.state.account_succeeded(&key).await?;
            }
            return Ok(false);
        }
        self.clear_accounts.remove(&key);
        Ok(self
            .state
            .account_failed(&key, since_epoch(), policy)
            .await?
            .is_some())
    }

    /// The longest any token lives: how long a subject revocation must be kept.
    pub(crate) fn token_horizon(&self) -> u64 {
        let t = &self.settings().tokens;
        t.access_token_ttl.max(t.id_token_ttl).as_secs()
    }

    fn publish_key_gauges(&self) {
        let set = self.keys.current();
        for state in KeyState::ALL {
            metrics::ACTIVE_KEYS
                .with_label_values(&[state.as_str()])
                .set(set.count(state) as i64);
        }
    }
}

impl Reloadable for Issuer {
    /// Re-reads identity.yaml. `POST /reload` answers `{"result": "applied" | "unchanged"}`
    /// and nothing more: the issuer has no version number to report.
    fn reload(&self) -> Result<ReloadOutcome, LocatedErrors> {
        self.reload_gate.run(|| self.load_and_swap())
    }
}

impl Watched for Issuer {
    /// identity.yaml alone: the key-encryption key file is read at start-up only.
    fn watched_paths(&self) -> Vec<WatchedPath> {
        vec![WatchedPath::file(&self.config_path)]
    }
}

/// Wall-clock time since the epoch, for locks that other instances and restarts must read.
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}
