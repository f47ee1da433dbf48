//! The running snapshot and how it is replaced: on file change, on SIGHUP, or on `POST /reload`.
//!
//! Reload = load (parse, validate, compile) → swap. A failed load leaves the running snapshot in
//! place, logs every problem and counts a failure; requests in flight keep the `Arc` they loaded.
//! The watcher and the admin endpoint are the shared kit's; this module says what a reload is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use gatehouse_service::{ReloadGate, ReloadOutcome, Reloadable, Watched, WatchedPath};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{Map, Value};

use crate::config::{self, LoadMode, LocatedErrors, Snapshot};
use crate::metrics;

pub struct ConfigStore {
    path: PathBuf,
    current: ArcSwap<Snapshot>,
    gate: ReloadGate,
}

impl std::fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ConfigStore {
    pub fn new(path: &Path, initial: Snapshot) -> Self {
        Self {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(initial),
            gate: ReloadGate::new(&metrics::CONFIG_RELOADS, "config"),
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    fn load_and_swap(&self) -> Result<ReloadOutcome, LocatedErrors> {
        let old = self.current();
        let new = config::load(&self.path, Some(&old), LoadMode::Run)?;
        if new.hash == old.hash {
            return Ok(ReloadOutcome::Unchanged);
        }
        if new.process_settings_differ(&old) {
            tracing::warn!("server, listener and admin settings changed: they apply at the next restart or upgrade");
        }
        let new = Arc::new(new);
        start_tasks(&new);
        self.current.store(new.clone());
        tracing::info!(version = new.version, hash = %new.hash, routes = new.routes.len(), "config reloaded");
        Ok(ReloadOutcome::Applied)
    }
}

impl Reloadable for ConfigStore {
    fn reload(&self) -> Result<ReloadOutcome, LocatedErrors> {
        self.gate.run(|| self.load_and_swap())
    }

    fn reload_status(&self) -> Map<String, Value> {
        Map::from_iter([("version".into(), self.current().version.into())])
    }
}

impl Watched for ConfigStore {
    /// The directory of every file the snapshot was built from.
    fn watched_paths(&self) -> Vec<WatchedPath> {
        self.current()
            .files
            .iter()
            .map(|f| WatchedPath::dir_of(f))
            .collect()
    }
}

/// Starts the snapshot's background work that is not running yet: health checks of new pools and
/// refreshers of new key sources (carried-over ones keep theirs).
fn start_tasks(snapshot: &Snapshot) {
    for pool in snapshot.pools.values() {
        pool.start_health_checks();
    }
    snapshot.start_key_refresh();
}

/// Background service: runs the first snapshot's health checks and key refreshers on its runtime
/// until shutdown; later snapshots start theirs when they are swapped in.
pub struct FirstSnapshotTasks {
    pub store: Arc<ConfigStore>,
}

#[async_trait]
impl BackgroundService for FirstSnapshotTasks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        start_tasks(&self.store.current());
        while shutdown.changed().await.is_ok() && !*shutdown.borrow() {}
    }
}
