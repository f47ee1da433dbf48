//! Grants in SQL: codes, refresh tokens in families, sessions and pending authorization
//! requests. See `grants.rs` for what each is; here is how each rule is kept by the database.

use sqlx::{AnyPool, Row};

use super::{digest, feed, to_i64, to_u64, unavailable, Store, StoreError};
use crate::grants::{
    random_value, AuthorizationCode, PendingAuthorization, PendingRefusal, RefreshGrant, Session,
};

/// `codes.redeemed_family` of a code spent without a family: its user was logged out everywhere
/// or disabled (see [`Redemption::Revoked`]). No family is ever named so.
pub(super) const REVOKED_CODE: &str = "";

/// Pending requests kept at most; beyond, the oldest go (anyone may open `/authorize`).
const MAX_PENDING: i64 = 100_000;
/// How often (in inserts) the pending table's size is checked.
const PENDING_CHECK_EVERY: u64 = 256;

/// What a code redemption's check hands back when it accepts the code: the first refresh token
/// of the family it starts, if the client may have one, and what the check found on the way
/// (the endpoint: the user).
#[derive(Debug, PartialEq, Eq)]
pub struct Admission<T> {
    pub refresh: Option<RefreshGrant>,
    pub found: T,
}

/// The outcome of [`Store::redeem_code`].
#[derive(Debug, PartialEq, Eq)]
pub enum Redemption<T, E> {
    /// Committed: the code is spent, its family started with the access token in it and, if
    /// the check asked for one, the family's first refresh token stored: `refresh` is its value.
    /// (The code is boxed: the other outcomes are small.)
    Redeemed {
        code: Box<AuthorizationCode>,
        refresh: Option<String>,
        found: T,
    },
    /// The check refused; its [`Refusal`] says what was written.
    Refused(Refusal<E>),
    Unknown,
    Expired,
    /// Presented a second time: the family it belonged to is now revoked.
    Reused,
    /// Its user was disabled, or logged out everywhere at or after it was issued: the code is
    /// spent (by the revocation, or now) and nothing was issued from it. Decided before the
    /// check runs, whoever presents the code.
    Revoked,
}

/// Why a redemption's check refused the code or refresh token it redeemed, and what the store
/// does then.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal<E> {
    /// Roll back: nothing is written and the code or token stays usable. For a request at fault
    /// while the grant is not (a widened scope, RFC 6749 §6), or a grant that cannot be honoured
    /// now (its user is gone): refusing must not end a session.
    KeepToken(E),
    /// Spend it for good, committed: it was presented by a party it was not issued to (another
    /// client, or without its PKCE verifier), so it may have been stolen, and a second try must
    /// find it used (RFC 9700 §4.5). A refresh token's family is revoked; a code's family holds
    /// nothing yet, so the code alone is spent and a later redemption of it is a replay.
    RevokeFamily(E),
}

/// What a rotation's check hands back when it accepts the redeemed token: the grant of the
/// token that replaces it, and what the check found on the way (the endpoint: the user).
#[derive(Debug, PartialEq, Eq)]
pub struct Renewal<T> {
    pub grant: RefreshGrant,
    pub found: T,
}

/// The outcome of [`Store::rotate_refresh`].
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation<T, E> {
    /// Committed: the old token is used, the access token is in the family and `value` is the
    /// new refresh token, stored for `renewal.grant`.
    Rotated {
        value: String,
        renewal: Renewal<T>,
    },
    /// The check refused; its [`Refusal`] says what was written.
    Refused(Refusal<E>),
    Unknown,
    Expired,
    /// Presented a second time: the family it belonged to is now revoked.
    Reused,
}

/// The access token a redemption issues, recorded in the family in the same transaction: a
/// replay racing the redemption then revokes it too, and never finds a family without it.
#[derive(Debug, Clone)]
pub struct FamilyAccess {
    pub jti: String,
    pub expires_at: u64,
}

fn corrupt(operation: &'static str) -> impl Fn(serde_json::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        operation,
        message: e.to_string(),
    }
}

impl Store {
    pub async fn put_code(&self, code: &AuthorizationCode) -> Result<String, StoreError> {
        const OP: &str = "put_code";
        let value = random_value();
        let key = digest(&value);
        let body = serde_json::to_string(code).map_err(corrupt(OP))?;
        let expires = to_i64(code.expires_at);
        let username = code.username.clone();
        self.run(OP, move |pool| async move {
            sqlx::query(
                "INSERT INTO codes (digest, body, expires_at, keep_until, username) \
                 VALUES ($1, $2, $3, $3, $4)",
            )
            .bind(key)
            .bind(body)
            .bind(expires)
            .bind(username)
            .execute(&pool)
            .await
            .map_err(unavailable(OP))?;
            Ok(())
        })
        .await?;
        Ok(value)
    }

    /// Redeems a code (RFC 6749 §4.1.3) in one transaction: spends `value`, starts `family` with
    /// `access` in it and stores the family's first refresh token if `check` asks for one, all
    /// committed together or not at all. A transient failure anywhere therefore leaves the code
    /// redeemable, so a client that retries is not taken for a replay (RFC 6749 §4.1.2: a replay
    /// revokes everything issued from the code).
    ///
    /// A code whose user was disabled, or logged out everywhere at or after the code was issued,
    /// is spent without a family and answers [`Redemption::Revoked`]: the tokens it would issue
    /// postdate the revocation, which therefore would not cover them.
    ///
    /// `check` runs inside the transaction, on the redeemed code, before anything else is
    /// written; its [`Refusal`] says whether the refusal rolls back (the code stays usable) or
    /// spends the code (committed). It is called at most once, on the store's runtime: keep it
    /// short and free of I/O. The refresh token always joins `family`, whatever family `check`
    /// names: a replay of the code revokes that family.
    ///
    /// A second redemption, from any instance, revokes the family the first one started.
    pub async fn redeem_code<T, E, C>(
        &self,
        value: &str,
        now: u64,
        family: &str,
        access: FamilyAccess,
        check: C,
    ) -> Result<Redemption<T, E>, StoreError>
    where
        T: Send + 'static,
        E: Send + 'static,
        C: FnOnce(&AuthorizationCode) -> Result<Admission<T>, Refusal<E>> + Send + 'static,
    {
        const OP: &str = "redeem_code";
        let key = digest(value);
        let family = family.to_string();
        self.run(OP, move |pool| async move {
            let mut tx = pool.begin().await.map_err(unavailable(OP))?;
            // The compare-and-set that makes a code single use across instances; on PostgreSQL
            // a concurrent redemption of the same code waits here for this one's end. The code
            // is kept while the family may hold a live token, so a late replay still revokes it.
            let won = sqlx::query(
                "UPDATE codes SET redeemed_family = $2, keep_until = $4 \
                 WHERE digest = $1 AND redeemed_family IS NULL AND expires_at > $3 RETURNING body",
            )
            .bind(&key)
            .bind(&family)
            .bind(to_i64(now))
            .bind(to_i64(access.expires_at))
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable(OP))?;
            let Some(row) = won else {
                let outcome = code_not_won(&mut tx, &key, now).await?;
                tx.commit().await.map_err(unavailable(OP))?;
                return Ok(outcome);
            };
            let body: String = row.try_get(0).map_err(unavailable(OP))?;
            let code: AuthorizationCode = serde_json::from_str(&body).map_err(corrupt(OP))?;
            // `revoke_subject` spends the user's codes, but not one written by an older issuer
            // (no username column) or one issued from a session checked just before the revocation
            // committed: the code's own issue time decides.
            if user_revoked_since(&mut tx, &code.username, code.issued_not_before()).await? {
                spend_revoked_code(&mut tx, &key).await?;
                tx.commit().await.map_err(unavailable(OP))?;
                return Ok(Redemption::Revoked);
            }
            let Admission { refresh, found } = match check(&code) {
                Ok(admission) => admission,
                Err(Refusal::KeepToken(e)) => {
                    tx.rollback().await.map_err(unavailable(OP))?;
                    return Ok(Redemption::Refused(Refusal::KeepToken(e)));
                }
                Err(Refusal::RevokeFamily(e)) => {
                    // Nothing was issued from the code: spending it is all there is to commit.
                    tx.commit().await.map_err(unavailable(OP))?;
                    return Ok(Redemption::Refused(Refusal::RevokeFamily(e)));
                }
            };
            start_family(&mut tx, &family, &code.username, access.expires_at, &access).await?;
            let refresh = match refresh {
                None => None,
                Some(mut grant) => {
                    grant.family = family;
                    let value = insert_refresh(&mut tx, &grant).await?;
                    keep_code_until(&mut tx, &key, grant.expires_at).await?;
                    Some(value)
                }
            };
            tx.commit().await.map_err(unavailable(OP))?;
            Ok(Redemption::Redeemed {
                code: Box::new(code),
                refresh,
                found,
            })
        })
        .await
    }

    /// Stores a refresh token on its own, starting its family if needed: a test fixture. The
    /// issuer stores a family's first token in the transaction that starts the family
    /// ([`Store::redeem_code`], [`Store::start_family`]) and the next ones by rotation
    /// ([`Store::rotate_refresh`]).
    #[cfg(test)]
    pub async fn put_refresh(&self, grant: &RefreshGrant) -> Result<String, StoreError> {
        const OP: &str = "put_refresh";
        let grant = grant.clone();
        self.run(OP, move |pool| async move {
            let mut tx = pool.begin().await.map_err(unavailable(OP))?;
            sqlx::query(
                "INSERT INTO families (family, username, revoked, expires_at) VALUES ($1, $2, 0, $3) \
                 ON CONFLICT (family) DO NOTHING",
            )
            .bind(&grant.family)
            .bind(&grant.username)
            .bind(to_i64(grant.expires_at))
            .execute(&mut *tx)
            .await
            .map_err(unavailable(OP))?;
            let value = insert_refresh(&mut tx, &grant).await?;
            tx.commit().await.map_err(unavailable(OP))?;
            Ok(value)
        })
        .await
    }

    /// Rotates a refresh token (RFC 9700 §4.14.2) in one transaction: marks `value` used,
    /// records `access` in its family and stores the new token `check` asks for, all committed
    /// together or not at all. A transient failure anywhere therefore leaves `value` usable, so
    /// a client that retries is not taken for a thief.
    ///
    /// `check` runs inside the transaction, on the redeemed grant, before anything is written;
    /// its [`Refusal`] says whether the refusal rolls back (the token stays usable) or revokes
    /// the family (committed). It is called at most once, on the store's runtime: keep it
    /// short and free of I/O. The new token always joins the family of the one it replaces,
    /// whatever family `check` names: reuse detection depends on it.
    ///
    /// A second use of `value`, from any instance, revokes the whole family.
    pub async fn rotate_refresh<T, E, C>(
        &self,
        value: &str,
        now: u64,
        access: FamilyAccess,
        check: C,
    ) -> Result<Rotation<T, E>, StoreError>
    where
        T: Send + 'static,
        E: Send + 'static,
        C: FnOnce(&RefreshGrant) -> Result<Renewal<T>, Refusal<E>> + Send + 'static,
    {
        const OP: &str = "rotate_refresh";
        let key = digest(value);
        self.run(OP, move |pool| async move {
            let mut tx = pool.begin().await.map_err(unavailable(OP))?;
            // The compare-and-set that makes a refresh token single use across instances; on
            // PostgreSQL a concurrent rotation of the same token waits here for this one's end.
            let won = sqlx::query(
                "UPDATE refresh_tokens SET used = 1 WHERE digest = $1 AND used = 0 AND expires_at > $2 \
                 AND family IN (SELECT family FROM families WHERE revoked = 0) RETURNING body",
            )
            .bind(&key)
            .bind(to_i64(now))
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable(OP))?;
            let Some(row) = won else {
                let outcome = refresh_not_won(&mut tx, &key, now).await?;
                tx.commit().await.map_err(unavailable(OP))?;
                return Ok(outcome);
            };
            let body: String = row.try_get(0).map_err(unavailable(OP))?;
            let redeemed: RefreshGrant = serde_json::from_str(&body).map_err(corrupt(OP))?;
            let Renewal { mut grant, found } = match check(&redeemed) {
                Ok(renewal) => renewal,
                Err(Refusal::KeepToken(e)) => {
                    tx.rollback().await.map_err(unavailable(OP))?;
                    return Ok(Rotation::Refused(Refusal::KeepToken(e)));
                }
                Err(Refusal::RevokeFamily(e)) => {
                    revoke_family_in(&mut tx, &redeemed.family, now).await?;
                    tx.commit().await.map_err(unavailable(OP))?;
                    return Ok(Rotation::Refused(Refusal::RevokeFamily(e)));
                }
            };
            grant.family = redeemed.family;
            record_access(&mut tx, &grant.family, &access).await?;
            let value = insert_refresh(&mut tx, &grant).await?;
            tx.commit().await.map_err(unavailable(OP))?;
            Ok(Rotation::Rotated {
                value,
                renewal: Renewal { grant, found },
            })
        })
        .await
    }

    /// The live grant behind a refresh token, for introspection and revocation.
    pub async fn peek_refresh(
        &self,
        value: &str,
        now: u64,
    ) -> Result<Option<RefreshGrant>, StoreError> {
        const OP: &str = "peek_refresh";
        let key = digest(value);
        self.run(OP, move |pool| async move {
            let row = sqlx::query(
                "SELECT r.body FROM refresh_tokens r JOIN families f ON f.family = r.family \
                 WHERE r.digest = $1 AND r.used = 0 AND r.expires_at > $2 AND f.revoked = 0",
            )
            .bind(key)
            .bind(to_i64(now))
            .fetch_optional(&pool)
            .await
            .map_err(unavailable(OP))?;
            match row {
                None => Ok(None),
                Some(row) => {
                    let body: String = row.try_get(0).map_err(unavailable(OP))?;
                    Ok(Some(serde_json::from_str(&body).map_err(corrupt(OP))?))
                }
            }
        })
        .await
    }

    /// Revokes the family's refresh tokens and the access tokens issued in it.
    pub async fn revoke_family(&self, family: &str, now: u64) -> Result<(), StoreError> {
        const OP: &str = "revoke_family";
        let family = family.to_string();
        self.run(OP, move |pool| async move {
            let mut tx = pool.begin().await.map_err(unavailable(OP))?;
            revoke_family_in(&mut tx, &family, now).await?;
            tx.commit().await.map_err(unavailable(OP))
        })
        .await
    }

    /// Starts the family `first.family` (the password grant) for `first.username`, holding
    /// `access` and its first refresh token, stored for `first`, in one transaction: a failure
    /// leaves no family behind. Returns the refresh token.
    pub async fn start_family(
        &self,
        first: &RefreshGrant,
        access: FamilyAccess,
    ) -> Result<String, StoreError> {
        const OP: &str = "start_family";
        let first = first.clone();
        self.run(OP, move |pool| async move {
            let mut tx = pool.begin().await.map_err(unavailable(OP))?;
            start_family(
                &mut tx,
                &first.family,
                &first.username,
                first.expires_at,
                &access,
            )
            .await?;
            let value = insert_refresh(&mut tx, &first).await?;
            tx.commit().await.map_err(unavailable(OP))?;
            Ok(value)
        })
        .await
    }

    /// Starts an SSO session; the returned value goes in the session cookie.
    pub async fn put_session(
        &self,
        username: &str,
        auth_time: u64,
        expires_at: u64,
    ) -> Result<String, StoreError> {
        const OP: &str = "put_session";
        let value = random_value();
        let key = digest(&value);
        let username = username.to_string();
        self.run(OP, move |pool| async move {
            sqlx::query(
                "INSERT INTO sessions (digest, username, auth_time, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(key)
            .bind(username)
            .bind(to_i64(auth_time))
            .bind(to_i64(expires_at))
            .execute(&pool)
            .await
            .map_err(unavailable(OP))?;
            Ok(())
        })
        .await?;
        Ok(value)
    }

    /// The live session behind a cookie value, unless its user has been disabled since.
    pub async fn session(&self, value: &str, now: u64) -> Result<Option<Session>, StoreError> {
        const OP: &str = "session";
        let key = digest(value);
        self.run(OP, move |pool| async move {
            let row = sqlx::query(
                "SELECT s.username, s.auth_time, s.expires_at FROM sessions s \
                 WHERE s.digest = $1 AND s.expires_at > $2 \
                 AND NOT EXISTS (SELECT 1 FROM disabled_users d WHERE d.username = s.username)",
            )
            .bind(key)
            .bind(to_i64(now))
            .fetch_optional(&pool)
            .await
            .map_err(unavailable(OP))?;
            row.map(|row| session_of(&row).map_err(unavailable(OP)))
                .transpose()
        })
        .await
    }

    pub async fn end_session(&self, value: &str) -> Result<Option<Session>, StoreError> {
        const OP: &str = "end_session";
        let key = digest(value);
        self.run(OP, move |pool| async move {
            let row = sqlx::query(
                "DELETE FROM sessions WHERE digest = $1 RETURNING username, auth_time, expires_at",
            )
            .bind(key)
            .fetch_optional(&pool)
            .await
            .map_err(unavailable(OP))?;
            row.map(|row| session_of(&row).map_err(unavailable(OP)))
                .transpose()
        })
        .await
    }

    /// Stores a pending request bound to `browser`, the value of that browser's login-binding
    /// cookie: the id alone, which travels in a form any page can forge, completes nothing.
    pub async fn put_pending(
        &self,
        pending: &PendingAuthorization,
        browser: &str,
    ) -> Result<String, StoreError> {
        const OP: &str = "put_pending";
        let value = random_value();
        let key = digest(&value);
        let browser = digest(browser);
        let body = serde_json::to_string(pending).map_err(corrupt(OP))?;
        let expires = to_i64(pending.expires_at);
        // Anyone can open `/authorize`: every so often the table is held to its cap, oldest
        // (soonest to expire) first.
        let check = self
            .pending_inserts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % PENDING_CHECK_EVERY
            == 0;
        self.run(OP, move |pool| async move {
            sqlx::query(
                "INSERT INTO pending (digest, browser, body, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(key)
            .bind(browser)
            .bind(body)
            .bind(expires)
            .execute(&pool)
            .await
            .map_err(unavailable(OP))?;
            if check {
                cap_pending(&pool).await?;
            }
            Ok(())
        })
        .await?;
        Ok(value)
    }

    /// The pending request `value`, if it is live and `browser` is the cookie it was bound to;
    /// `take` spends it (a pending request completes one login).
    pub async fn pending(
        &self,
        value: &str,
        browser: Option<&str>,
        now: u64,
        take: bool,
    ) -> Result<Result<PendingAuthorization, PendingRefusal>, StoreError> {
        const OP: &str = "pending";
        let key = digest(value);
        let browser = browser.map(digest);
        self.run(OP, move |pool| async move {
            let row = sqlx::query(
                "SELECT browser, body FROM pending WHERE digest = $1 AND expires_at > $2",
            )
            .bind(&key)
            .bind(to_i64(now))
            .fetch_optional(&pool)
            .await
            .map_err(unavailable(OP))?;
            let Some(row) = row else {
                return Ok(Err(PendingRefusal::Unknown));
            };
            let bound: String = row.try_get(0).map_err(unavailable(OP))?;
            let same_browser = browser.is_some_and(|b| {
                bool::from(subtle::ConstantTimeEq::ct_eq(
                    b.as_bytes(),
                    bound.as_bytes(),
                ))
            });
            if !same_browser {
                return Ok(Err(PendingRefusal::OtherBrowser));
            }
            let body: String = row.try_get(1).map_err(unavailable(OP))?;
            let request: PendingAuthorization = serde_json::from_str(&body).map_err(corrupt(OP))?;
            if take {
                // Whoever deletes the row spends it: two submissions race for one login.
                let gone = sqlx::query("DELETE FROM pending WHERE digest = $1")
                    .bind(&key)
                    .execute(&pool)
                    .await
                    .map_err(unavailable(OP))?;
                if gone.rows_affected() == 0 {
                    return Ok(Err(PendingRefusal::Unknown));
                }
            }
            Ok(Ok(request))
        })
        .await
    }
}

fn session_of(row: &sqlx::any::AnyRow) -> Result<Session, sqlx::Error> {
    Ok(Session {
        username: row.try_get(0)?,
        auth_time: to_u64(row.try_get(1)?),
        expires_at: to_u64(row.try_get(2)?),
    })
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

async fn start_family(
    tx: &mut Tx<'_>,
    family: &str,
    username: &str,
    until: u64,
    access: &FamilyAccess,
) -> Result<(), StoreError> {
    const OP: &str = "start_family";
    sqlx::query(
        "INSERT INTO families (family, username, revoked, expires_at) VALUES ($1, $2, 0, $3) \
         ON CONFLICT (family) DO NOTHING",
    )
    .bind(family)
    .bind(username)
    .bind(to_i64(until.max(access.expires_at)))
    .execute(&mut **tx)
    .await
    .map_err(unavailable(OP))?;
    record_access(tx, family, access).await
}

async fn record_access(
    tx: &mut Tx<'_>,
    family: &str,
    access: &FamilyAccess,
) -> Result<(), StoreError> {
    const OP: &str = "record_access";
    sqlx::query("INSERT INTO family_access (jti, family, expires_at) VALUES ($1, $2, $3)")
        .bind(&access.jti)
        .bind(family)
        .bind(to_i64(access.expires_at))
        .execute(&mut **tx)
        .await
        .map_err(unavailable(OP))?;
    extend_family(tx, family, access.expires_at).await
}

/// A family lives as long as the tokens in it: the sweep keeps it until `until` at least.
async fn extend_family(tx: &mut Tx<'_>, family: &str, until: u64) -> Result<(), StoreError> {
    const OP: &str = "extend_family";
    sqlx::query("UPDATE families SET expires_at = $2 WHERE family = $1 AND expires_at < $2")
        .bind(family)
        .bind(to_i64(until))
        .execute(&mut **tx)
        .await
        .map_err(unavailable(OP))?;
    Ok(())
}

/// Stores a new refresh token in its family, unused, and returns its value. The value is drawn
/// inside the transaction: an attempt that fails commits nothing, so a retry (by the client;
/// `run` makes none) draws a value of its own.
async fn insert_refresh(tx: &mut Tx<'_>, grant: &RefreshGrant) -> Result<String, StoreError> {
    const OP: &str = "put_refresh";
    let value = random_value();
    let body = serde_json::to_string(grant).map_err(corrupt(OP))?;
    sqlx::query(
        "INSERT INTO refresh_tokens (digest, family, body, expires_at, used) VALUES ($1, $2, $3, $4, 0)",
    )
    .bind(digest(&value))
    .bind(&grant.family)
    .bind(body)
    .bind(to_i64(grant.expires_at))
    .execute(&mut **tx)
    .await
    .map_err(unavailable(OP))?;
    extend_family(tx, &grant.family, grant.expires_at).await?;
    Ok(value)
}

/// A redeemed code (its digest `key`) is kept until `until` at least: while its family may
/// hold a live token, a replay must still find it and revoke them.
async fn keep_code_until(tx: &mut Tx<'_>, key: &str, until: u64) -> Result<(), StoreError> {
    const OP: &str = "redeem_code";
    sqlx::query("UPDATE codes SET keep_until = $2 WHERE digest = $1 AND keep_until < $2")
        .bind(key)
        .bind(to_i64(until))
        .execute(&mut **tx)
        .await
        .map_err(unavailable(OP))?;
    Ok(())
}

/// Whether `username` is disabled, or was logged out everywhere at or after `since`: the subject
/// revocation covers every token issued up to its `issued_before`, and so the code issued then.
async fn user_revoked_since(
    tx: &mut Tx<'_>,
    username: &str,
    since: u64,
) -> Result<bool, StoreError> {
    const OP: &str = "redeem_code";
    let row = sqlx::query(
        "SELECT 1 FROM disabled_users WHERE username = $1 \
         UNION ALL \
         SELECT 1 FROM revocations WHERE kind = 'subject' AND subject = $1 AND issued_before >= $2 \
         LIMIT 1",
    )
    .bind(username)
    .bind(to_i64(since))
    .fetch_optional(&mut **tx)
    .await
    .map_err(unavailable(OP))?;
    Ok(row.is_some())
}

/// Spends the won code (digest `key`) without a family, kept no longer than it would have lived.
async fn spend_revoked_code(tx: &mut Tx<'_>, key: &str) -> Result<(), StoreError> {
    const OP: &str = "redeem_code";
    sqlx::query("UPDATE codes SET redeemed_family = $2, keep_until = expires_at WHERE digest = $1")
        .bind(key)
        .bind(REVOKED_CODE)
        .execute(&mut **tx)
        .await
        .map_err(unavailable(OP))?;
    Ok(())
}

/// Why the code with digest `key` was not won: never issued, expired, spent by a revocation, or
/// redeemed before (which revokes the family that redemption started, in `tx`).
async fn code_not_won<T, E>(
    tx: &mut Tx<'_>,
    key: &str,
    now: u64,
) -> Result<Redemption<T, E>, StoreError> {
    const OP: &str = "redeem_code";
    let row = sqlx::query("SELECT redeemed_family FROM codes WHERE digest = $1")
        .bind(key)
        .fetch_optional(&mut **tx)
        .await
        .map_err(unavailable(OP))?;
    let Some(row) = row else {
        return Ok(Redemption::Unknown);
    };
    Ok(
        match row
            .try_get::<Option<String>, _>(0)
            .map_err(unavailable(OP))?
        {
            Some(revoked) if revoked == REVOKED_CODE => Redemption::Revoked,
            Some(previous) => {
                revoke_family_in(tx, &previous, now).await?;
                Redemption::Reused
            }
            None => Redemption::Expired,
        },
    )
}

/// Why the refresh token with digest `key` was not won: never issued, expired, or used before
/// (which revokes its family, in `tx`).
async fn refresh_not_won<T, E>(
    tx: &mut Tx<'_>,
    key: &str,
    now: u64,
) -> Result<Rotation<T, E>, StoreError> {
    const OP: &str = "rotate_refresh";
    let row = sqlx::query("SELECT family, used, expires_at FROM refresh_tokens WHERE digest = $1")
        .bind(key)
        .fetch_optional(&mut **tx)
        .await
        .map_err(unavailable(OP))?;
    let Some(row) = row else {
        return Ok(Rotation::Unknown);
    };
    let family: String = row.try_get(0).map_err(unavailable(OP))?;
    let used: i64 = row.try_get(1).map_err(unavailable(OP))?;
    let expires: i64 = row.try_get(2).map_err(unavailable(OP))?;
    Ok(if used != 0 {
        revoke_family_in(tx, &family, now).await?;
        Rotation::Reused
    } else if to_u64(expires) <= now {
        Rotation::Expired
    } else {
        // Unused and live, yet not won: its family is revoked.
        Rotation::Unknown
    })
}

/// Marks the family revoked and moves its access tokens to the revocation feed.
pub(super) async fn revoke_family_in(
    tx: &mut Tx<'_>,
    family: &str,
    now: u64,
) -> Result<(), StoreError> {
    const OP: &str = "revoke_family";
    sqlx::query("UPDATE families SET revoked = 1 WHERE family = $1")
        .bind(family)
        .execute(&mut **tx)
        .await
        .map_err(unavailable(OP))?;
    let rows = sqlx::query(
        "DELETE FROM family_access WHERE family = $1 AND expires_at > $2 RETURNING jti, expires_at",
    )
    .bind(family)
    .bind(to_i64(now))
    .fetch_all(&mut **tx)
    .await
    .map_err(unavailable(OP))?;
    let mut revoked = Vec::with_capacity(rows.len());
    for row in rows {
        let jti: String = row.try_get(0).map_err(unavailable(OP))?;
        let exp: i64 = row.try_get(1).map_err(unavailable(OP))?;
        revoked.push(feed::Revocation::Jti {
            jti,
            expires_at: to_u64(exp),
        });
    }
    feed::append(tx, &revoked).await
}

async fn cap_pending(pool: &AnyPool) -> Result<(), StoreError> {
    const OP: &str = "put_pending";
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pending")
        .fetch_one(pool)
        .await
        .map_err(unavailable(OP))?;
    if count > MAX_PENDING {
        sqlx::query(
            "DELETE FROM pending WHERE digest IN \
             (SELECT digest FROM pending ORDER BY expires_at LIMIT $1)",
        )
        .bind(count - MAX_PENDING)
        .execute(pool)
        .await
        .map_err(unavailable(OP))?;
    }
    Ok(())
}
