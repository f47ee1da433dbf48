//! The revocation feed: revoked token ids and "every token of subject S issued at or before T"
//! entries, each kept until the tokens it names have expired, numbered in commit order so a
//! poller asking for `seq > cursor` never skips one. Disabled users live here too: disabling
//! is a subject entry plus a row that refuses new logins.

use serde::Serialize;
use sqlx::Row;

use super::grants::{revoke_family_in, REVOKED_CODE};
use super::{to_i64, to_u64, unavailable, Store, StoreError};

/// What one revocation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    Jti {
        jti: String,
        expires_at: u64,
    },
    Subject {
        sub: String,
        issued_before: u64,
        expires_at: u64,
    },
}

/// One entry of `GET /revocations`, in the feed's wire format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FeedEntry {
    Jti { jti: String, exp: u64 },
    Subject { sub: String, before: u64, exp: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    pub entries: Vec<FeedEntry>,
    pub cursor: i64,
    pub more: bool,
    /// The cursor asked for lies beyond the feed's end (a restored backup): start over.
    pub reset: bool,
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// Appends `entries` to the feed inside `tx`. The `feed_head` update takes its row lock until
/// `tx` commits, so sequence numbers are handed out in commit order.
pub(super) async fn append(tx: &mut Tx<'_>, entries: &[Revocation]) -> Result<(), StoreError> {
    const OP: &str = "revoke";
    if entries.is_empty() {
        return Ok(());
    }
    let count = i64::try_from(entries.len()).unwrap_or(i64::MAX);
    let last: i64 =
        sqlx::query_scalar("UPDATE feed_head SET seq = seq + $1 WHERE id = 1 RETURNING seq")
            .bind(count)
            .fetch_one(&mut **tx)
            .await
            .map_err(unavailable(OP))?;
    for (seq, entry) in (last - count + 1..).zip(entries) {
        let (kind, subject, before, expires) = match entry {
            Revocation::Jti { jti, expires_at } => ("jti", jti.as_str(), 0, *expires_at),
            Revocation::Subject {
                sub,
                issued_before,
                expires_at,
            } => ("subject", sub.as_str(), *issued_before, *expires_at),
        };
        sqlx::query(
            "INSERT INTO revocations (seq, kind, subject, issued_before, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(seq)
        .bind(kind)
        .bind(subject)
        .bind(to_i64(before))
        .bind(to_i64(expires))
        .execute(&mut **tx)
        .await
        .map_err(unavailable(OP))?;
    }
    Ok(())
}

impl Store {
    /// Revokes one access token until it expires.
    pub async fn revoke_jti(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        const OP: &str = "revoke";
        let entry = Revocation::Jti {
            jti: jti.to_string(),
            expires_at,
        };
        self.run(OP, move |pool| async move {
            let mut tx = pool.begin().await.map_err(unavailable(OP))?;
            append(&mut tx, &[entry]).await?;
            tx.commit().await.map_err(unavailable(OP))
        })
        .await
    }

    /// Logout everywhere: every token of `sub` issued up to `now` is revoked (for `horizon`
    /// seconds, the longest token lifetime), its refresh families are revoked, its codes not yet
    /// redeemed are spent (see [`Redemption::Revoked`](super::Redemption::Revoked)) and its SSO
    /// sessions end. With `disable`, the user also may not log in again until enabled.
    pub async fn revoke_subject(
        &self,
        sub: &str,
        now: u64,
        horizon: u64,
        disable: bool,
    ) -> Result<(), StoreError> {
        const OP: &str = "revoke_subject";
        let sub = sub.to_string();
        self.run(OP, move |pool| async move {
            let mut tx = pool.begin().await.map_err(unavailable(OP))?;
            if disable {
                sqlx::query(
                    "INSERT INTO disabled_users (username, since) VALUES ($1, $2) ON CONFLICT (username) DO NOTHING",
                )
                .bind(&sub)
                .bind(to_i64(now))
                .execute(&mut *tx)
                .await
                .map_err(unavailable(OP))?;
            }
            // The user's codes not yet redeemed are spent: tokens from them would postdate
            // `now`. This comes before the family scan on purpose: on PostgreSQL it waits for a
            // redemption of one of them already under way, and the scan (a new statement, a new
            // snapshot) then sees the family that redemption started.
            sqlx::query(
                "UPDATE codes SET redeemed_family = $2 WHERE username = $1 AND redeemed_family IS NULL",
            )
            .bind(&sub)
            .bind(REVOKED_CODE)
            .execute(&mut *tx)
            .await
            .map_err(unavailable(OP))?;
            let families: Vec<String> =
                sqlx::query_scalar("SELECT family FROM families WHERE username = $1 AND revoked = 0")
                    .bind(&sub)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable(OP))?;
            for family in &families {
                revoke_family_in(&mut tx, family, now).await?;
            }
            sqlx::query("DELETE FROM sessions WHERE username = $1")
                .bind(&sub)
                .execute(&mut *tx)
                .await
                .map_err(unavailable(OP))?;
            append(
                &mut tx,
                &[Revocation::Subject {
                    sub: sub.clone(),
                    issued_before: now,
                    expires_at: now + horizon,
                }],
            )
            .await?;
            tx.commit().await.map_err(unavailable(OP))
        })
        .await
    }

    /// Lets a disabled user log in again (tokens revoked when it was disabled stay revoked).
    /// False when the user was not disabled.
    pub async fn enable_user(&self, username: &str) -> Result<bool, StoreError> {
        const OP: &str = "enable_user";
        let username = username.to_string();
        self.run(OP, move |pool| async move {
            let done = sqlx::query("DELETE FROM disabled_users WHERE username = $1")
                .bind(username)
                .execute(&pool)
                .await
                .map_err(unavailable(OP))?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    pub async fn is_disabled(&self, username: &str) -> Result<bool, StoreError> {
        const OP: &str = "is_disabled";
        let username = username.to_string();
        self.run(OP, move |pool| async move {
            let row = sqlx::query("SELECT 1 FROM disabled_users WHERE username = $1")
                .bind(username)
                .fetch_optional(&pool)
                .await
                .map_err(unavailable(OP))?;
            Ok(row.is_some())
        })
        .await
    }

    /// Whether a token with this `jti`, `sub` and `iat` has been revoked.
    pub async fn is_revoked(
        &self,
        jti: &str,
        sub: &str,
        iat: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        const OP: &str = "is_revoked";
        let (jti, sub) = (jti.to_string(), sub.to_string());
        self.run(OP, move |pool| async move {
            let row = sqlx::query(
                "SELECT 1 FROM revocations WHERE expires_at > $4 AND \
                 ((kind = 'jti' AND subject = $1) OR (kind = 'subject' AND subject = $2 AND issued_before >= $3)) \
                 LIMIT 1",
            )
            .bind(jti)
            .bind(sub)
            .bind(to_i64(iat))
            .bind(to_i64(now))
            .fetch_optional(&pool)
            .await
            .map_err(unavailable(OP))?;
            Ok(row.is_some())
        })
        .await
    }

    /// Live entries after `after`, at most `limit`, in feed order.
    pub async fn feed_page(
        &self,
        after: i64,
        limit: i64,
        now: u64,
    ) -> Result<FeedPage, StoreError> {
        const OP: &str = "feed";
        self.run(OP, move |pool| async move {
            let head: i64 = sqlx::query_scalar("SELECT seq FROM feed_head WHERE id = 1")
                .fetch_one(&pool)
                .await
                .map_err(unavailable(OP))?;
            if after > head {
                return Ok(FeedPage {
                    entries: Vec::new(),
                    cursor: head,
                    more: false,
                    reset: true,
                });
            }
            let rows = sqlx::query(
                "SELECT seq, kind, subject, issued_before, expires_at FROM revocations \
                 WHERE seq > $1 AND expires_at > $2 ORDER BY seq LIMIT $3",
            )
            .bind(after)
            .bind(to_i64(now))
            .bind(limit + 1)
            .fetch_all(&pool)
            .await
            .map_err(unavailable(OP))?;
            let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
            let mut cursor = after;
            let mut entries = Vec::with_capacity(rows.len());
            for row in rows.iter().take(usize::try_from(limit).unwrap_or(0)) {
                cursor = row.try_get(0).map_err(unavailable(OP))?;
                let kind: String = row.try_get(1).map_err(unavailable(OP))?;
                let subject: String = row.try_get(2).map_err(unavailable(OP))?;
                let exp = to_u64(row.try_get(4).map_err(unavailable(OP))?);
                entries.push(match kind.as_str() {
                    "subject" => FeedEntry::Subject {
                        sub: subject,
                        before: to_u64(row.try_get(3).map_err(unavailable(OP))?),
                        exp,
                    },
                    _ => FeedEntry::Jti { jti: subject, exp },
                });
            }
            // Nothing live after `after`: the cursor moves to the head, past expired rows.
            if entries.is_empty() {
                cursor = cursor.max(head);
            }
            Ok(FeedPage {
                entries,
                cursor,
                more,
                reset: false,
            })
        })
        .await
    }
}
