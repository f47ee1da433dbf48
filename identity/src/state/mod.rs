//! Durable identity state in SQL: authorization codes, refresh-token families, SSO sessions,
//! pending authorization requests, the revocation feed, disabled users, account locks and the
//! signing keys. SQLite (one file, the default) or PostgreSQL (several issuer instances share
//! it), through one driver-neutral layer (sqlx's `Any`) and one schema (`migrations/`).
//!
//! Every rule that must hold across instances is enforced by the database, never by a process:
//! single use of a code or refresh token is a conditional `UPDATE`, and feed writers are ordered
//! by a row lock. Requests that need the store fail with [`StoreError`] (answered 503), never by
//! issuing a token on state that was not written.
//!
//! The pool lives on its own small runtime: the issuer is served from several Pingora runtimes
//! (its own, or the gateway's when embedded), and a connection must stay on the reactor that
//! made it. Each operation is spawned there and awaited from wherever it was asked.

mod feed;
mod grants;
mod lockout;
mod signing_keys;
mod sweep;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::MigrateError;
use sqlx::AnyPool;

pub use feed::{FeedEntry, FeedPage, Revocation};
pub use grants::{Admission, FamilyAccess, Redemption, Refusal, Renewal, Rotation};
pub use lockout::AccountLock;
pub use signing_keys::{KeyRow, KeyRows, KeysWritten};

use crate::metrics;

/// An operation that takes longer fails: a request waits for the database no longer than this.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the state lives, as configured in `state:`. Its `Debug` is [`StateUrl::redacted`].
#[derive(Clone, PartialEq, Eq)]
pub enum StateUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StateUrl {
    /// `sqlite://PATH` / `sqlite:PATH` (relative to `base`) or `postgres://…` / `postgresql://…`.
    pub fn parse(text: &str, base: &Path) -> Result<StateUrl, String> {
        if let Some(path) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            if path.is_empty() || path.contains(['?', '#', '%']) {
                return Err("sqlite needs a file path without '?', '#' or '%', e.g. sqlite://../var/identity/state.db".into());
            }
            return Ok(StateUrl::Sqlite(base.join(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            url::Url::parse(text).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
            return Ok(StateUrl::Postgres(text.to_string()));
        }
        Err("must start with sqlite:// or postgres://".into())
    }

    /// For logs: the password of a PostgreSQL URL never appears.
    pub fn redacted(&self) -> String {
        match self {
            StateUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            StateUrl::Postgres(url) => match url::Url::parse(url) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("***"));
                    }
                    u.to_string()
                }
                Err(_) => "postgres://…".into(),
            },
        }
    }
}

impl std::fmt::Debug for StateUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state store is unavailable ({operation}): {source}")]
    Unavailable {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the state store did not answer within {OPERATION_TIMEOUT:?} ({operation})")]
    TimedOut { operation: &'static str },
    #[error("state store data is corrupt ({operation}): {message}")]
    Corrupt {
        operation: &'static str,
        message: String,
    },
}

/// Why the store could not be opened at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("{url}: the database schema is version {found}, newer than this binary knows (up to {known}); run the newer gatehouse-identity, or restore a backup made for this one")]
    SchemaTooNew { url: String, found: i64, known: i64 },
    #[error("{url}: applying the schema migrations failed: {source}")]
    Migrate { url: String, source: MigrateError },
    #[error("{path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the state store's runtime: {0}")]
    Runtime(std::io::Error),
}

pub struct Store {
    pool: AnyPool,
    /// Names this database in the revocation feed: a gateway that sees another id starts over.
    feed_id: String,
    up: AtomicBool,
    /// Counts `put_pending` calls, to check the table's size every so often.
    pending_inserts: AtomicU64,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The runtime every store operation runs on (see the module comment). One per process, never
/// dropped: a runtime may not be dropped from async code, where the issuer's last handle may go.
fn runtime() -> Result<&'static tokio::runtime::Runtime, OpenError> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("identity-state")
        .enable_all()
        .build()
        .map_err(OpenError::Runtime)?;
    // Two threads may get here at once (tests open stores in parallel): the loser's runtime
    // goes without waiting for its workers, the one way async code may drop a runtime.
    if let Err(spare) = RUNTIME.set(rt) {
        spare.shutdown_background();
    }
    RUNTIME
        .get()
        .ok_or_else(|| OpenError::Runtime(std::io::Error::other("no state runtime")))
}

impl Store {
    /// Connects, applies the embedded migrations (refusing a schema newer than this binary) and
    /// reads the feed id. Blocks: called once at start-up, before any listener.
    pub fn open(url: &StateUrl) -> Result<Store, OpenError> {
        let rt = runtime()?;
        let url = url.clone();
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(Self::open_async(&url)))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    async fn open_async(url: &StateUrl) -> Result<Store, OpenError> {
        sqlx::any::install_default_drivers();
        let shown = url.redacted();
        let connect = |source| OpenError::Connect {
            url: shown.clone(),
            source,
        };
        let (text, max_connections) = match url {
            StateUrl::Sqlite(path) => {
                let dir = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                create_private_dir(dir)?;
                // The URL is parsed as a URL: a relative path's first segment would be taken for
                // a host. An absolute one is what the operator meant.
                let dir = dir.canonicalize().map_err(|source| OpenError::Directory {
                    path: dir.to_path_buf(),
                    source,
                })?;
                let file = dir.join(path.file_name().unwrap_or_default());
                create_private_file(&file)?;
                (format!("sqlite://{}?mode=rwc", file.display()), 4)
            }
            StateUrl::Postgres(u) => (u.clone(), 8),
        };
        let options = AnyConnectOptions::from_str(&text).map_err(connect)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(OPERATION_TIMEOUT)
            // A dead connection fails its query and is replaced; a ping before every query
            // would double each round trip.
            .test_before_acquire(false)
            // SQLite: writers queue for the lock instead of failing at once; WAL (below) lets
            // readers go on beside the writer, and makes NORMAL sync safe against a crash.
            // Runs once per new connection.
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        sqlx::query("PRAGMA busy_timeout = 2000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(connect)?;
        if matches!(url, StateUrl::Sqlite(_)) {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(connect)?;
        }
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            MigrateError::VersionMissing(found) => OpenError::SchemaTooNew {
                url: shown.clone(),
                found,
                known,
            },
            source => OpenError::Migrate {
                url: shown.clone(),
                source,
            },
        })?;
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ('feed_id', $1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(hex::encode(rand::random::<[u8; 16]>()))
        .execute(&pool)
        .await
        .map_err(connect)?;
        let feed_id: String = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'feed_id'")
            .fetch_one(&pool)
            .await
            .map_err(connect)?;
        metrics::STORE_UP.set(1);
        tracing::info!(state = %shown, "identity state store open");
        Ok(Store {
            pool,
            feed_id,
            up: AtomicBool::new(true),
            pending_inserts: AtomicU64::new(0),
        })
    }

    pub fn feed_id(&self) -> &str {
        &self.feed_id
    }

    /// False after an operation failed, until one succeeds (`/readyz`).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Runs `op` on the store's runtime within [`OPERATION_TIMEOUT`], recording the outcome.
    async fn run<T, F, Fut>(&self, operation: &'static str, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(AnyPool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.run_within(OPERATION_TIMEOUT, operation, op).await
    }

    async fn run_within<T, F, Fut>(
        &self,
        limit: Duration,
        operation: &'static str,
        op: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(AnyPool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let fut = op(self.pool.clone());
        let handle = match runtime() {
            Ok(rt) => rt.spawn(tokio::time::timeout(limit, fut)),
            Err(_) => return self.failed(StoreError::TimedOut { operation }, operation),
        };
        let result = match handle.await {
            Ok(Ok(result)) => result,
            Ok(Err(_elapsed)) => Err(StoreError::TimedOut { operation }),
            Err(_join) => Err(StoreError::TimedOut { operation }),
        };
        self.settle(result, operation)
    }

    /// As [`Store::run`], for synchronous callers that may block (the key ring, on the blocking
    /// pool or at start-up): the operation is spawned on the store's runtime and its answer comes
    /// back over a channel. Never a `block_on`: the caller may itself be inside a runtime.
    fn run_blocking<T, F, Fut>(&self, operation: &'static str, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(AnyPool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let fut = op(self.pool.clone());
        let Ok(rt) = runtime() else {
            return self.failed(StoreError::TimedOut { operation }, operation);
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(tokio::time::timeout(OPERATION_TIMEOUT, fut).await);
        });
        let result = match rx.recv() {
            Ok(Ok(result)) => result,
            // Elapsed, or the task is gone (a panic dropped the sender).
            Ok(Err(_)) | Err(_) => Err(StoreError::TimedOut { operation }),
        };
        self.settle(result, operation)
    }

    /// Records an operation's outcome: up again after a success, counted and logged (once
    /// while it lasts) after a failure.
    fn settle<T>(
        &self,
        result: Result<T, StoreError>,
        operation: &'static str,
    ) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("identity state store reachable again");
                    metrics::STORE_UP.set(1);
                }
                Ok(value)
            }
            Err(e) => self.failed(e, operation),
        }
    }

    fn failed<T>(&self, e: StoreError, operation: &'static str) -> Result<T, StoreError> {
        metrics::STORE_ERRORS.with_label_values(&[operation]).inc();
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::error!(error = %e, "identity state store unavailable: requests that need it answer 503");
            metrics::STORE_UP.set(0);
        } else {
            tracing::debug!(error = %e, "identity state store still unavailable");
        }
        Err(e)
    }

    /// A cheap query: is the database there? Updates [`Store::is_up`].
    pub async fn ping(&self) -> bool {
        self.run("ping", |pool| async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(unavailable("ping"))
        })
        .await
        .is_ok()
    }
}

/// Maps a driver error to [`StoreError::Unavailable`] for `operation`.
fn unavailable(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| StoreError::Unavailable { operation, source }
}

fn create_private_dir(dir: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| OpenError::Directory {
            path: dir.to_path_buf(),
            source,
        })
}

/// Creates the database file readable by the owner only, before SQLite creates it with the
/// process umask: its `-wal` and `-shm` files take the same mode from it.
fn create_private_file(file: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(OpenError::Directory {
            path: file.to_path_buf(),
            source,
        }),
    }
}

/// SHA-256 of an opaque value, hex: what the tables key on.
fn digest(value: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(value.as_bytes()))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests;
