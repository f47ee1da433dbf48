//! The running snapshot and how it is replaced: on file change, on SIGHUP, or on `POST /reload`.
//!
//! Reload = load (parse, validate, compile) → swap. A failed load leaves the running snapshot in
//! place, logs every problem and counts a failure; requests in flight keep the `Arc` they loaded.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use crate::config::{self, ConfigErrors, LoadMode, Snapshot};
use crate::metrics;

#[derive(Debug)]
pub struct ConfigStore {
    path: PathBuf,
    current: ArcSwap<Snapshot>,
    /// Serialises reloads: the file watcher, SIGHUP and the admin endpoint may race.
    reloading: Mutex<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    Applied { version: u64 },
    Unchanged,
}

impl ConfigStore {
    pub fn new(path: &Path, initial: Snapshot) -> Self {
        Self {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(initial),
            reloading: Mutex::new(()),
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn reload(&self) -> Result<ReloadOutcome, ConfigErrors> {
        let _guard = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current();
        let result = config::load(&self.path, Some(&old), LoadMode::Run);
        let new = match result {
            Ok(new) => new,
            Err(errors) => {
                metrics::CONFIG_RELOADS
                    .with_label_values(&["failure"])
                    .inc();
                for e in &errors.0 {
                    tracing::error!(problem = %e, "config reload rejected; the running config stays");
                }
                return Err(errors);
            }
        };
        if new.hash == old.hash {
            return Ok(ReloadOutcome::Unchanged);
        }
        if new.process_settings_differ(&old) {
            tracing::warn!("server, listener and admin settings changed: they apply at the next restart or upgrade");
        }
        let new = Arc::new(new);
        start_pools(&new);
        self.current.store(new.clone());
        metrics::CONFIG_RELOADS
            .with_label_values(&["success"])
            .inc();
        tracing::info!(version = new.version, hash = %new.hash, routes = new.routes.len(), "config reloaded");
        Ok(ReloadOutcome::Applied {
            version: new.version,
        })
    }
}

/// Starts health checks for pools that have none running yet (new ones; reused pools keep theirs).
fn start_pools(snapshot: &Snapshot) {
    for pool in snapshot.pools.values() {
        pool.start_health_checks();
    }
}

/// Background service: starts the first snapshot's health checks, then reloads on file changes
/// and SIGHUP until shutdown.
pub struct ConfigWatcher {
    pub store: Arc<ConfigStore>,
}

/// Editors save by rename and write in bursts: wait for the burst to end before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

#[async_trait]
impl BackgroundService for ConfigWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        start_pools(&self.store.current());
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let mut watched_dirs = Vec::new();
        let mut watcher = match notify::recommended_watcher(
            move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            },
        ) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "cannot watch config files; reload with SIGHUP instead");
                None
            }
        };
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP");
                None
            }
        };
        loop {
            if let Some(w) = watcher.as_mut() {
                watch_dirs(w, &self.store.current(), &mut watched_dirs);
            }
            tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                    continue;
                }
                Some(()) = rx.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP: reloading config");
                }
            }
            // Compiling reads files and may resolve names: keep it off the async workers.
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.reload()).await;
        }
    }
}

/// Watches the directories holding every file of the snapshot (directories, not files: editors
/// replace files by renaming, which would silently end a watch on the file itself).
fn watch_dirs(
    watcher: &mut notify::RecommendedWatcher,
    snapshot: &Snapshot,
    watched: &mut Vec<PathBuf>,
) {
    for file in &snapshot.files {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if watched.contains(&dir) {
            continue;
        }
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => watched.push(dir),
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory"),
        }
    }
}
