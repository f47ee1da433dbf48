//! Reloads a [`Reloadable`] when one of its files changes or the process gets SIGHUP.
//!
//! The SIGHUP handler is installed when the watcher is built, before the server starts and
//! reports ready: SIGHUP's default action ends the process, so a handler installed only when the
//! background service starts would leave a window in which a reload signal kills the service.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use signal_hook::consts::SIGHUP;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::reload::Reloadable;

/// A directory to watch. Directories, not files: editors save by renaming a new file over the
/// old one, which silently ends a watch on the file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedPath {
    pub dir: PathBuf,
    pub recursive: bool,
    /// Only changes to this file name count (e.g. `identity.yaml` in `conf/`).
    pub only: Option<OsString>,
}

impl WatchedPath {
    /// The directory holding `file`, counting changes to that file alone.
    pub fn file(file: &std::path::Path) -> Self {
        Self {
            dir: parent_dir(file),
            recursive: false,
            only: file.file_name().map(|n| n.to_os_string()),
        }
    }

    /// Every change under `dir`.
    pub fn tree(dir: &std::path::Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            recursive: true,
            only: None,
        }
    }

    /// Every change in the directory holding `file` (not below it).
    pub fn dir_of(file: &std::path::Path) -> Self {
        Self {
            dir: parent_dir(file),
            recursive: false,
            only: None,
        }
    }
}

fn parent_dir(file: &std::path::Path) -> PathBuf {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What the files of a [`Reloadable`] are; asked again after every reload, since a new
/// configuration may name new files.
pub trait Watched: Reloadable {
    fn watched_paths(&self) -> Vec<WatchedPath>;
}

enum Trigger {
    FileChanged,
    Hangup,
}

pub struct FileWatcher<T: ?Sized> {
    target: Arc<T>,
    what: &'static str,
    tx: UnboundedSender<Trigger>,
    /// Taken by the background service when it starts.
    rx: Mutex<Option<UnboundedReceiver<Trigger>>>,
}

/// Editors save by rename and write in bursts: wait for the burst to end before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

impl<T: Watched + ?Sized> FileWatcher<T> {
    /// Installs the SIGHUP handler now; file watching starts with the background service.
    pub fn new(target: Arc<T>, what: &'static str) -> Self {
        let (tx, rx) = unbounded_channel();
        listen_for_hangup(tx.clone(), what);
        Self {
            target,
            what,
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// A notify watcher whose events count when they touch a watched file; `filters` is read on
    /// every event, so it can grow as the configuration names new directories.
    fn file_events(
        &self,
        filters: Arc<Mutex<Vec<WatchedPath>>>,
    ) -> Option<notify::RecommendedWatcher> {
        let tx = self.tx.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            let watched = filters.lock().unwrap_or_else(|p| p.into_inner());
            let counts = watched.iter().any(|w| match &w.only {
                None => true,
                Some(name) => event
                    .paths
                    .iter()
                    .any(|p| p.file_name() == Some(name.as_os_str())),
            });
            if counts {
                let _ = tx.send(Trigger::FileChanged);
            }
        });
        watcher
            .inspect_err(|e| {
                tracing::error!(error = %e, what = self.what, "cannot watch files; reload with SIGHUP or POST /reload instead")
            })
            .ok()
    }
}

fn listen_for_hangup(tx: UnboundedSender<Trigger>, what: &'static str) {
    let mut signals = match signal_hook::iterator::Signals::new([SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, what, "cannot listen for SIGHUP");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                if tx.send(Trigger::Hangup).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, what, "cannot start the SIGHUP listener");
    }
}

/// Adds watches for paths not watched yet; failures are logged and retried after the next reload.
fn watch_new(
    watcher: &mut notify::RecommendedWatcher,
    wanted: Vec<WatchedPath>,
    filters: &Mutex<Vec<WatchedPath>>,
) {
    // Never hold `filters` across `watcher.watch`: that call waits for notify's event thread,
    // which may itself be waiting for `filters` in the event callback (a file written in a
    // watched directory at that moment, such as the pid file), and both would wait for ever.
    let lock = || filters.lock().unwrap_or_else(|p| p.into_inner());
    for path in wanted {
        let dir_watched = {
            let watched = lock();
            if watched.contains(&path) {
                continue;
            }
            watched
                .iter()
                .any(|w| w.dir == path.dir && w.recursive == path.recursive)
        };
        if !dir_watched {
            let mode = if path.recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if let Err(e) = watcher.watch(&path.dir, mode) {
                tracing::warn!(dir = %path.dir.display(), error = %e, "cannot watch directory");
                continue;
            }
        }
        lock().push(path);
    }
}

#[async_trait]
impl<T: Watched + ?Sized> BackgroundService for FileWatcher<T> {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let filters: Arc<Mutex<Vec<WatchedPath>>> = Arc::default();
        let mut watcher = self.file_events(filters.clone());
        loop {
            if let Some(w) = watcher.as_mut() {
                watch_new(w, self.target.watched_paths(), &filters);
            }
            tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                    continue;
                }
                trigger = rx.recv() => {
                    let Some(trigger) = trigger else { return };
                    let mut hangup = matches!(trigger, Trigger::Hangup);
                    if !hangup {
                        tokio::time::sleep(DEBOUNCE).await;
                    }
                    // One reload answers everything that queued meanwhile; a SIGHUP among it
                    // is still said (it may follow a file event, such as the pid file written).
                    while let Ok(queued) = rx.try_recv() {
                        hangup |= matches!(queued, Trigger::Hangup);
                    }
                    if hangup {
                        tracing::info!("SIGHUP: reloading {}", self.what);
                    }
                }
            }
            // Loading reads files and may resolve names: keep it off the async workers.
            let target = self.target.clone();
            let _ = tokio::task::spawn_blocking(move || target.reload()).await;
        }
    }
}
