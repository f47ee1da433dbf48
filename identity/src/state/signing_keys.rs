//! The signing keys' rows, for the key ring (`keys::stored`), which seals and opens them: here a
//! sealed key is opaque text. Every change to the keys is one transaction that first moves
//! `meta.keys_version` from the version the writer read to the next one (a compare-and-set):
//! two instances that both decide to rotate cannot both publish a next key, because the second
//! finds the version moved and writes nothing. Instances poll the version to see changes.
//!
//! These calls block the calling thread (see [`Store::run_blocking`]): the key ring is
//! synchronous and runs at start-up or on the blocking pool.

use sqlx::Row;

use super::{to_i64, to_u64, unavailable, Store, StoreError};

/// One row of `signing_keys`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub kid: String,
    pub alg: String,
    pub state: String,
    pub created_at: u64,
    pub signs_from: Option<u64>,
    pub retired_at: Option<u64>,
    /// The private half, sealed with the key-encryption key (`keys::kek`).
    pub sealed_key: String,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Every key row, and the version they were read at.
#[derive(Debug)]
pub struct KeyRows {
    pub version: u64,
    pub rows: Vec<KeyRow>,
}

/// What a versioned write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysWritten {
    /// Written; the keys are at this version now.
    At(u64),
    /// The version had moved: another instance changed the keys first. Nothing was written.
    Conflict,
}

const VERSION: &str = "SELECT value FROM meta WHERE name = 'keys_version'";

fn parse_version(operation: &'static str, text: Option<String>) -> Result<u64, StoreError> {
    let text = text.ok_or(StoreError::Corrupt {
        operation,
        message: "meta has no keys_version row".into(),
    })?;
    text.parse().map_err(|_| StoreError::Corrupt {
        operation,
        message: format!("keys_version {text:?} is not a number"),
    })
}

impl Store {
    /// The keys' version: it moves with every change, so an unchanged version means unchanged
    /// keys. One indexed read, made every second by every instance.
    pub fn keys_version(&self) -> Result<u64, StoreError> {
        const OP: &str = "keys_version";
        self.run_blocking(OP, move |pool| async move {
            let text: Option<String> = sqlx::query_scalar(VERSION)
                .fetch_optional(&pool)
                .await
                .map_err(unavailable(OP))?;
            parse_version(OP, text)
        })
    }

    /// Every key row, oldest first. The version is read first: the rows are at least that new,
    /// so a write based on them can only fail its compare-and-set, never undo a newer change.
    pub fn signing_keys(&self) -> Result<KeyRows, StoreError> {
        const OP: &str = "signing_keys";
        self.run_blocking(OP, move |pool| async move {
            let text: Option<String> = sqlx::query_scalar(VERSION)
                .fetch_optional(&pool)
                .await
                .map_err(unavailable(OP))?;
            let version = parse_version(OP, text)?;
            let rows = sqlx::query(
                "SELECT kid, alg, state, created_at, signs_from, retired_at, sealed_key \
                 FROM signing_keys ORDER BY created_at, kid",
            )
            .fetch_all(&pool)
            .await
            .map_err(unavailable(OP))?;
            let rows = rows
                .iter()
                .map(|r| -> Result<KeyRow, sqlx::Error> {
                    Ok(KeyRow {
                        kid: r.try_get(0)?,
                        alg: r.try_get(1)?,
                        state: r.try_get(2)?,
                        created_at: to_u64(r.try_get(3)?),
                        signs_from: r.try_get::<Option<i64>, _>(4)?.map(to_u64),
                        retired_at: r.try_get::<Option<i64>, _>(5)?.map(to_u64),
                        sealed_key: r.try_get(6)?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable(OP))?;
            Ok(KeyRows { version, rows })
        })
    }

    /// Moves the keys from `version` to the next one: `insert` new rows, `update` the state and
    /// times of existing ones (their sealed key never changes), `delete` rows by kid. All or
    /// nothing, and nothing at all when the version is no longer `version`.
    pub fn write_signing_keys(
        &self,
        version: u64,
        insert: Vec<KeyRow>,
        update: Vec<KeyRow>,
        delete: Vec<String>,
    ) -> Result<KeysWritten, StoreError> {
        const OP: &str = "write_signing_keys";
        self.run_blocking(OP, move |pool| async move {
            let next = version + 1;
            let mut tx = pool.begin().await.map_err(unavailable(OP))?;
            // The compare-and-set comes first: it takes the row lock (SQLite: the write lock), so
            // a concurrent writer waits here and then finds the version moved.
            let moved = sqlx::query(
                "UPDATE meta SET value = $1 WHERE name = 'keys_version' AND value = $2",
            )
            .bind(next.to_string())
            .bind(version.to_string())
            .execute(&mut *tx)
            .await
            .map_err(unavailable(OP))?;
            if moved.rows_affected() != 1 {
                tx.rollback().await.map_err(unavailable(OP))?;
                return Ok(KeysWritten::Conflict);
            }
            for row in insert {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, state, created_at, signs_from, retired_at, sealed_key) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(row.kid)
                .bind(row.alg)
                .bind(row.state)
                .bind(to_i64(row.created_at))
                .bind(row.signs_from.map(to_i64))
                .bind(row.retired_at.map(to_i64))
                .bind(row.sealed_key)
                .execute(&mut *tx)
                .await
                .map_err(unavailable(OP))?;
            }
            for row in update {
                sqlx::query(
                    "UPDATE signing_keys SET state = $1, signs_from = $2, retired_at = $3 WHERE kid = $4",
                )
                .bind(row.state)
                .bind(row.signs_from.map(to_i64))
                .bind(row.retired_at.map(to_i64))
                .bind(row.kid)
                .execute(&mut *tx)
                .await
                .map_err(unavailable(OP))?;
            }
            for kid in delete {
                sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                    .bind(kid)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable(OP))?;
            }
            tx.commit().await.map_err(unavailable(OP))?;
            Ok(KeysWritten::At(next))
        })
    }

    /// The sealed check value that tells whether a key-encryption key is the store's.
    pub fn kek_check(&self) -> Result<Option<String>, StoreError> {
        const OP: &str = "kek_check";
        self.run_blocking(OP, move |pool| async move {
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'kek_check'")
                .fetch_optional(&pool)
                .await
                .map_err(unavailable(OP))
        })
    }

    /// Records `sealed` as the check value unless one is there already (another instance
    /// started first); returns the one that stands.
    pub fn put_kek_check(&self, sealed: String) -> Result<String, StoreError> {
        const OP: &str = "kek_check";
        self.run_blocking(OP, move |pool| async move {
            sqlx::query(
                "INSERT INTO meta (name, value) VALUES ('kek_check', $1) ON CONFLICT (name) DO NOTHING",
            )
            .bind(sealed)
            .execute(&pool)
            .await
            .map_err(unavailable(OP))?;
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'kek_check'")
                .fetch_one(&pool)
                .await
                .map_err(unavailable(OP))
        })
    }
}

#[cfg(test)]
impl Store {
    /// Runs `sql` as it is: tests tamper with rows the way an attacker with the database would.
    pub(crate) fn execute_for_test(&self, sql: &'static str) {
        self.run_blocking("test", move |pool| async move {
            sqlx::query(sql)
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(unavailable("test"))
        })
        .expect("test SQL");
    }
}
