//! Account locks shared by every instance and kept across restarts. The per-process
//! `lockout::Lockout` still reserves each attempt's slot before its check (the parallel-guess
//! race) and keeps the per-address budgets; the store holds what must outlive one process:
//! each account's failure count and lock.

use std::time::Duration;

use sqlx::Row;

use super::{to_i64, to_u64, unavailable, Store, StoreError};
use crate::lockout::Policy;

/// An account's lock as the store knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountLock {
    /// Nothing recorded.
    Clear,
    /// Failures recorded (or a lock that is over): a success clears them.
    Failing,
    /// Locked for this long still.
    Locked(Duration),
}

fn millis(now: Duration) -> i64 {
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Whether `account` (see `lockout::Account::stored_key`) is locked at `now` (since the epoch).
    pub async fn account_lock(
        &self,
        account: &str,
        now: Duration,
    ) -> Result<AccountLock, StoreError> {
        const OP: &str = "lockout";
        let account = account.to_string();
        self.run(OP, move |pool| async move {
            let until: Option<i64> =
                sqlx::query_scalar("SELECT locked_until_ms FROM lockout WHERE account = $1")
                    .bind(account)
                    .fetch_optional(&pool)
                    .await
                    .map_err(unavailable(OP))?;
            Ok(match until {
                None => AccountLock::Clear,
                Some(until) if until > millis(now) => {
                    AccountLock::Locked(Duration::from_millis(to_u64(until - millis(now))))
                }
                Some(_) => AccountLock::Failing,
            })
        })
        .await
    }

    /// Counts a failure; the `max_failures`-th in a row locks the account for
    /// [`Policy::lock_for`]. Returns the lock it set, if any.
    pub async fn account_failed(
        &self,
        account: &str,
        now: Duration,
        policy: Policy,
    ) -> Result<Option<Duration>, StoreError> {
        const OP: &str = "lockout";
        let account = account.to_string();
        self.run(OP, move |pool| async move {
            let mut tx = pool.begin().await.map_err(unavailable(OP))?;
            // The write comes first: it takes the row (and SQLite's write lock) before reading.
            let row = sqlx::query(
                "INSERT INTO lockout (account, failures, locks, locked_until_ms, last_seen) VALUES ($1, 1, 0, 0, $2) \
                 ON CONFLICT (account) DO UPDATE SET failures = lockout.failures + 1, last_seen = $2 \
                 RETURNING failures, locks",
            )
            .bind(&account)
            .bind(to_i64(now.as_secs()))
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable(OP))?;
            let failures: i64 = row.try_get(0).map_err(unavailable(OP))?;
            let locks: i64 = row.try_get(1).map_err(unavailable(OP))?;
            let mut locked = None;
            if failures >= i64::from(policy.max_failures) {
                let locks = locks + 1;
                let delay = policy.lock_for(u32::try_from(locks).unwrap_or(u32::MAX));
                sqlx::query(
                    "UPDATE lockout SET failures = 0, locks = $2, locked_until_ms = $3 WHERE account = $1",
                )
                .bind(&account)
                .bind(locks)
                .bind(millis(now + delay))
                .execute(&mut *tx)
                .await
                .map_err(unavailable(OP))?;
                locked = Some(delay);
            }
            tx.commit().await.map_err(unavailable(OP))?;
            Ok(locked)
        })
        .await
    }

    /// A correct secret clears the account.
    pub async fn account_succeeded(&self, account: &str) -> Result<(), StoreError> {
        const OP: &str = "lockout";
        let account = account.to_string();
        self.run(OP, move |pool| async move {
            sqlx::query("DELETE FROM lockout WHERE account = $1")
                .bind(account)
                .execute(&pool)
                .await
                .map_err(unavailable(OP))?;
            Ok(())
        })
        .await
    }
}
