//! Expired rows leave in small batches, each its own short statement, so a sweep never holds a
//! lock that requests wait on for long.

use std::time::Duration;

use super::{to_i64, unavailable, Store, StoreError};

const BATCH: i64 = 1000;
const SWEEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Each table, the column that says when a row is no longer needed, and its key.
const TABLES: [(&str, &str, &str); 8] = [
    ("codes", "keep_until", "digest"),
    ("refresh_tokens", "expires_at", "digest"),
    ("family_access", "expires_at", "jti"),
    ("families", "expires_at", "family"),
    ("sessions", "expires_at", "digest"),
    ("pending", "expires_at", "digest"),
    ("revocations", "expires_at", "seq"),
    ("lockout", "last_seen", "account"),
];

impl Store {
    /// Deletes what can no longer be used. Lock rows go once `forget_locks_after` has passed
    /// since their last failure and their lock is over.
    pub async fn sweep(&self, now: u64, forget_locks_after: Duration) -> Result<u64, StoreError> {
        const OP: &str = "sweep";
        let lock_horizon = now.saturating_sub(forget_locks_after.as_secs());
        // Not the per-request deadline: a large backlog takes longer, and requests do not wait on it.
        self.run_within(SWEEP_TIMEOUT, OP, move |pool| async move {
            let mut deleted = 0;
            for (table, column, key) in TABLES {
                let (cutoff, extra) = if table == "lockout" {
                    (lock_horizon, " AND locked_until_ms < $3")
                } else {
                    (now, "")
                };
                // Only this module's constant names go into the text; values are bound.
                let sql = format!(
                    "DELETE FROM {table} WHERE {key} IN \
                     (SELECT {key} FROM {table} WHERE {column} <= $1{extra} LIMIT $2)"
                );
                loop {
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                        .bind(to_i64(cutoff))
                        .bind(BATCH);
                    if table == "lockout" {
                        q = q.bind(to_i64(now.saturating_mul(1000)));
                    }
                    let done = q.execute(&pool).await.map_err(unavailable(OP))?;
                    deleted += done.rows_affected();
                    if done.rows_affected() < u64::try_from(BATCH).unwrap_or(0) {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
            Ok(deleted)
        })
        .await
    }
}
