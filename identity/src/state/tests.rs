//! The store's rules against a real SQLite file (PostgreSQL runs the same statements in the
//! integration tests).

use std::time::Duration;

use super::*;
use crate::grants::{AuthorizationCode, PendingAuthorization, PendingRefusal, RefreshGrant};
use crate::lockout::Policy;

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&StateUrl::Sqlite(dir.path().join("state.db"))).unwrap()
}

fn code(expires_at: u64) -> AuthorizationCode {
    AuthorizationCode {
        client_id: "c".into(),
        redirect_uri: "r".into(),
        username: "alice".into(),
        scope: vec![],
        audience: "a".into(),
        nonce: None,
        code_challenge: None,
        auth_time: 0,
        issued_at: Some(0),
        expires_at,
    }
}

fn grant(family: &str, expires_at: u64) -> RefreshGrant {
    RefreshGrant {
        family: family.into(),
        client_id: "c".into(),
        username: "alice".into(),
        scope: vec![],
        audience: "a".into(),
        auth_time: 0,
        expires_at,
    }
}

fn access(jti: &str, expires_at: u64) -> FamilyAccess {
    FamilyAccess {
        jti: jti.into(),
        expires_at,
    }
}

fn jtis(page: &FeedPage) -> Vec<String> {
    page.entries
        .iter()
        .filter_map(|e| match e {
            FeedEntry::Jti { jti, .. } => Some(jti.clone()),
            FeedEntry::Subject { .. } => None,
        })
        .collect()
}

/// A code check that admits the code with a first refresh token valid until `until`.
fn admit_until(
    until: u64,
) -> impl FnOnce(&AuthorizationCode) -> Result<Admission<()>, Refusal<&'static str>> {
    move |code: &AuthorizationCode| {
        Ok(Admission {
            refresh: Some(RefreshGrant {
                // Ignored: the refresh token always joins the family the redemption starts.
                family: "elsewhere".into(),
                client_id: code.client_id.clone(),
                username: code.username.clone(),
                scope: code.scope.clone(),
                audience: code.audience.clone(),
                auth_time: code.auth_time,
                expires_at: until,
            }),
            found: (),
        })
    }
}

/// Redeems `value` at `now` into family `family`, recording access token `jti`, with a first
/// refresh token (see [`admit_until`]).
async fn redeem(
    store: &Store,
    value: &str,
    now: u64,
    family: &str,
    jti: &str,
) -> Redemption<(), &'static str> {
    store
        .redeem_code(value, now, family, access(jti, 100), admit_until(500))
        .await
        .unwrap()
}

/// The refresh token of a redemption that committed.
fn redeemed(redemption: Redemption<(), &'static str>) -> String {
    match redemption {
        Redemption::Redeemed {
            refresh: Some(value),
            ..
        } => value,
        other => panic!("not redeemed with a refresh token: {other:?}"),
    }
}

#[tokio::test]
async fn a_replayed_code_revokes_its_family_and_the_feed_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let value = store.put_code(&code(60)).await.unwrap();
    let first = redeem(&store, &value, 1, "f", "a1").await;
    let Redemption::Redeemed {
        code: redeemed_code,
        refresh: Some(refresh),
        found: (),
    } = first
    else {
        panic!("not redeemed: {first:?}");
    };
    assert_eq!(*redeemed_code, code(60));
    // The refresh token the check asked for, in the redemption's family.
    assert_eq!(
        store.peek_refresh(&refresh, 2).await.unwrap(),
        Some(grant("f", 500))
    );
    assert!(!store.is_revoked("a1", "alice", 1, 2).await.unwrap());

    assert_eq!(
        redeem(&store, &value, 2, "f2", "a2").await,
        Redemption::Reused
    );
    assert!(store.is_revoked("a1", "alice", 1, 2).await.unwrap());
    assert!(store.peek_refresh(&refresh, 2).await.unwrap().is_none());
    let page = store.feed_page(0, 100, 2).await.unwrap();
    assert_eq!(jtis(&page), ["a1"]);
    assert_eq!(page.cursor, 1);
    // Unknown and expired codes.
    assert_eq!(
        redeem(&store, "nonsense", 2, "f3", "x").await,
        Redemption::Unknown
    );
    let late = store.put_code(&code(60)).await.unwrap();
    assert_eq!(
        redeem(&store, &late, 60, "f4", "y").await,
        Redemption::Expired
    );
}

#[tokio::test]
async fn a_redeemed_code_is_kept_while_its_refresh_token_lives() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let value = store.put_code(&code(60)).await.unwrap();
    redeemed(redeem(&store, &value, 1, "f", "a1").await);
    // The access token expires at 100, the refresh token at 500: a sweep in between keeps the
    // code, so a replay still finds it and revokes the family.
    store.sweep(200, Duration::from_secs(0)).await.unwrap();
    assert_eq!(
        redeem(&store, &value, 200, "f2", "a2").await,
        Redemption::Reused
    );
}

#[tokio::test]
async fn a_code_without_a_refresh_token_still_starts_a_family_a_replay_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let value = store.put_code(&code(60)).await.unwrap();
    let first = store
        .redeem_code(
            &value,
            1,
            "f",
            access("a1", 100),
            |_: &AuthorizationCode| {
                Ok::<_, Refusal<()>>(Admission {
                    refresh: None,
                    found: (),
                })
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(first, Redemption::Redeemed { refresh: None, .. }),
        "{first:?}"
    );
    assert_eq!(
        redeem(&store, &value, 2, "f2", "a2").await,
        Redemption::Reused
    );
    assert!(store.is_revoked("a1", "alice", 1, 2).await.unwrap());
}

#[tokio::test]
async fn a_code_its_check_keeps_writes_nothing_and_stays_redeemable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let value = store.put_code(&code(60)).await.unwrap();
    let refused = store
        .redeem_code(
            &value,
            1,
            "f",
            access("a1", 100),
            |_: &AuthorizationCode| {
                Err::<Admission<()>, _>(Refusal::KeepToken("the user no longer exists"))
            },
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        Redemption::Refused(Refusal::KeepToken("the user no longer exists"))
    );
    // Redeemed once, as if the refused request never happened,
    let refresh = redeemed(redeem(&store, &value, 2, "f2", "a2").await);
    assert!(store.peek_refresh(&refresh, 2).await.unwrap().is_some());
    // and the refused request started no family: "f" holds nothing to revoke.
    store.revoke_family("f", 3).await.unwrap();
    assert!(jtis(&store.feed_page(0, 10, 3).await.unwrap()).is_empty());
    assert!(!store.is_revoked("a1", "alice", 1, 3).await.unwrap());
}

#[tokio::test]
async fn a_code_refused_as_stolen_is_spent_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let value = store.put_code(&code(60)).await.unwrap();
    let refused = store
        .redeem_code(
            &value,
            1,
            "f",
            access("a1", 100),
            |_: &AuthorizationCode| {
                Err::<Admission<()>, _>(Refusal::RevokeFamily("PKCE verification failed"))
            },
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        Redemption::Refused(Refusal::RevokeFamily("PKCE verification failed"))
    );
    // Spent: a second try, even a right one, is a replay,
    assert_eq!(
        redeem(&store, &value, 2, "f2", "a2").await,
        Redemption::Reused
    );
    // and nothing was issued from it: the refused request's access token was never recorded.
    assert!(jtis(&store.feed_page(0, 10, 2).await.unwrap()).is_empty());
}

#[tokio::test]
async fn a_store_failure_mid_code_redemption_leaves_the_code_redeemable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let value = store.put_code(&code(60)).await.unwrap();
    // The fault: storing the family's first refresh token fails, after the code was marked
    // redeemed and the family started with its access token, in the same transaction.
    exec(
        &store,
        "CREATE TRIGGER fault BEFORE INSERT ON refresh_tokens \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
    .await;
    let failed = store
        .redeem_code(&value, 1, "f", access("a1", 100), admit_until(500))
        .await
        .unwrap_err();
    assert!(matches!(failed, StoreError::Unavailable { .. }), "{failed}");
    exec(&store, "DROP TRIGGER fault").await;
    // The client's retry with the same code is no replay: it is redeemed, and the family lives.
    let refresh = redeemed(redeem(&store, &value, 2, "f2", "a2").await);
    assert!(store.peek_refresh(&refresh, 2).await.unwrap().is_some());
    assert!(!store.is_revoked("a2", "alice", 1, 2).await.unwrap());
    // The failed attempt left nothing: its family "f" holds no access token.
    store.revoke_family("f", 3).await.unwrap();
    assert!(jtis(&store.feed_page(0, 10, 3).await.unwrap()).is_empty());
    // Single use holds: a replay now revokes the retry's family.
    assert_eq!(
        redeem(&store, &value, 3, "f3", "a3").await,
        Redemption::Reused
    );
    assert_eq!(jtis(&store.feed_page(0, 10, 3).await.unwrap()), ["a2"]);
}

#[tokio::test]
async fn a_store_failure_while_starting_a_family_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    exec(
        &store,
        "CREATE TRIGGER fault BEFORE INSERT ON refresh_tokens \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
    .await;
    let failed = store
        .start_family(&grant("f", 100), access("a0", 50))
        .await
        .unwrap_err();
    assert!(matches!(failed, StoreError::Unavailable { .. }), "{failed}");
    // No family "f" with a0 in it was left behind.
    store.revoke_family("f", 1).await.unwrap();
    assert!(jtis(&store.feed_page(0, 10, 1).await.unwrap()).is_empty());
    exec(&store, "DROP TRIGGER fault").await;
    let first = store
        .start_family(&grant("g", 100), access("b0", 50))
        .await
        .unwrap();
    assert_eq!(
        store.peek_refresh(&first, 1).await.unwrap(),
        Some(grant("g", 100))
    );
    store.revoke_family("g", 2).await.unwrap();
    assert_eq!(jtis(&store.feed_page(0, 10, 2).await.unwrap()), ["b0"]);
}

#[tokio::test]
async fn one_code_redeemed_at_once_many_times_wins_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(&dir));
    let value = store.put_code(&code(60)).await.unwrap();
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let (store, value) = (store.clone(), value.clone());
            tokio::spawn(async move {
                redeem(&store, &value, 1, &format!("f{i}"), &format!("a{i}")).await
            })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        if matches!(r.await.unwrap(), Redemption::Redeemed { .. }) {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

/// A rotation check that renews the redeemed grant as it is.
fn as_is(redeemed: &RefreshGrant) -> Result<Renewal<()>, Refusal<&'static str>> {
    Ok(Renewal {
        grant: redeemed.clone(),
        found: (),
    })
}

/// Rotates `value` at `now`, recording access token `jti`, with [`as_is`].
async fn rotate(store: &Store, value: &str, now: u64, jti: &str) -> Rotation<(), &'static str> {
    store
        .rotate_refresh(value, now, access(jti, 50), as_is)
        .await
        .unwrap()
}

/// The new refresh token of a rotation that committed.
fn rotated(rotation: Rotation<(), &'static str>) -> String {
    match rotation {
        Rotation::Rotated { value, .. } => value,
        other => panic!("not rotated: {other:?}"),
    }
}

/// Runs `sql` on the store's pool (the tests' fault hook).
async fn exec(store: &Store, sql: &'static str) {
    store
        .run("test", move |pool| async move {
            sqlx::query(sql)
                .execute(&pool)
                .await
                .map_err(unavailable("test"))?;
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_family() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = store.put_refresh(&grant("f", 100)).await.unwrap();
    let second = rotated(rotate(&store, &first, 1, "a1").await);
    assert_eq!(
        store.peek_refresh(&second, 1).await.unwrap(),
        Some(grant("f", 100))
    );
    assert_eq!(rotate(&store, &first, 2, "a2").await, Rotation::Reused);
    assert!(store.peek_refresh(&second, 2).await.unwrap().is_none());
    assert_eq!(rotate(&store, &second, 2, "a3").await, Rotation::Unknown);
    assert!(store.is_revoked("a1", "alice", 1, 2).await.unwrap());
    let expired = store.put_refresh(&grant("g", 10)).await.unwrap();
    assert_eq!(rotate(&store, &expired, 10, "a4").await, Rotation::Expired);
    assert_eq!(
        rotate(&store, "nonsense", 10, "a5").await,
        Rotation::Unknown
    );
}

#[tokio::test]
async fn a_committed_rotation_spends_the_old_token_and_stores_the_checked_grant() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let wide = RefreshGrant {
        scope: vec!["openid".into(), "documents:read".into()],
        ..grant("f", 100)
    };
    let first = store.put_refresh(&wide).await.unwrap();
    let rotation = store
        .rotate_refresh(&first, 1, access("a1", 50), |redeemed: &RefreshGrant| {
            Ok::<_, Refusal<()>>(Renewal {
                grant: RefreshGrant {
                    scope: vec!["openid".into()],
                    // Ignored: a new token always joins the family of the one it replaces.
                    family: "elsewhere".into(),
                    ..redeemed.clone()
                },
                found: redeemed.username.clone(),
            })
        })
        .await
        .unwrap();
    let narrow = RefreshGrant {
        scope: vec!["openid".into()],
        ..wide
    };
    let Rotation::Rotated { value, renewal } = rotation else {
        panic!("not rotated: {rotation:?}");
    };
    assert_eq!(renewal.grant, narrow);
    assert_eq!(renewal.found, "alice");
    assert!(
        store.peek_refresh(&first, 1).await.unwrap().is_none(),
        "used"
    );
    assert_eq!(store.peek_refresh(&value, 1).await.unwrap(), Some(narrow));
    // The access token went into the family: revoking the family revokes it.
    store.revoke_family("f", 2).await.unwrap();
    assert!(store.is_revoked("a1", "alice", 1, 2).await.unwrap());
}

#[tokio::test]
async fn a_rotation_its_check_refuses_writes_nothing_and_the_token_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = store.put_refresh(&grant("f", 100)).await.unwrap();
    let refused = store
        .rotate_refresh(&first, 1, access("a1", 50), |_: &RefreshGrant| {
            Err::<Renewal<()>, _>(Refusal::KeepToken("invalid_scope"))
        })
        .await
        .unwrap();
    assert_eq!(
        refused,
        Rotation::Refused(Refusal::KeepToken("invalid_scope"))
    );
    assert!(
        store.peek_refresh(&first, 1).await.unwrap().is_some(),
        "still usable"
    );
    // It rotates once, as if the refused request never happened,
    let second = rotated(rotate(&store, &first, 2, "a2").await);
    assert!(
        store.peek_refresh(&first, 2).await.unwrap().is_none(),
        "now used"
    );
    assert!(store.peek_refresh(&second, 2).await.unwrap().is_some());
    // and the refused request's access token was never recorded in the family.
    store.revoke_family("f", 3).await.unwrap();
    assert_eq!(jtis(&store.feed_page(0, 10, 3).await.unwrap()), ["a2"]);
}

#[tokio::test]
async fn a_rotation_refused_as_stolen_revokes_the_family_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = store
        .start_family(&grant("f", 100), access("a0", 50))
        .await
        .unwrap();
    let refused = store
        .rotate_refresh(&first, 1, access("a1", 50), |_: &RefreshGrant| {
            Err::<Renewal<()>, _>(Refusal::RevokeFamily("another client"))
        })
        .await
        .unwrap();
    assert_eq!(
        refused,
        Rotation::Refused(Refusal::RevokeFamily("another client"))
    );
    // Committed: the family's access token is revoked and its refresh token is dead.
    assert!(store.is_revoked("a0", "alice", 1, 2).await.unwrap());
    assert!(store.peek_refresh(&first, 2).await.unwrap().is_none());
    // Spent as well (as before rotations were one transaction): presenting it again is a replay.
    assert_eq!(rotate(&store, &first, 2, "a2").await, Rotation::Reused);
    assert_eq!(jtis(&store.feed_page(0, 10, 2).await.unwrap()), ["a0"]);
}

#[tokio::test]
async fn a_store_failure_mid_rotation_leaves_the_old_token_usable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = store.put_refresh(&grant("f", 100)).await.unwrap();
    // The fault: storing the new token fails, after the old one was marked used and the
    // access token recorded in the same transaction.
    exec(
        &store,
        "CREATE TRIGGER fault BEFORE INSERT ON refresh_tokens \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
    .await;
    let failed = store
        .rotate_refresh(&first, 1, access("a1", 50), as_is)
        .await
        .unwrap_err();
    assert!(matches!(failed, StoreError::Unavailable { .. }), "{failed}");
    exec(&store, "DROP TRIGGER fault").await;
    // The client's retry with the same token is no replay: it rotates, and the family lives.
    let second = rotated(rotate(&store, &first, 2, "a2").await);
    assert!(store.peek_refresh(&second, 2).await.unwrap().is_some());
    assert!(!store.is_revoked("a2", "alice", 1, 2).await.unwrap());
    store.revoke_family("f", 3).await.unwrap();
    assert_eq!(
        jtis(&store.feed_page(0, 10, 3).await.unwrap()),
        ["a2"],
        "a1 never recorded"
    );
}

fn pending() -> PendingAuthorization {
    PendingAuthorization {
        client_id: "c".into(),
        redirect_uri: "https://c/cb".into(),
        state: "s".into(),
        scope: vec![],
        audience: "a".into(),
        nonce: None,
        code_challenge: None,
        expires_at: 100,
    }
}

#[tokio::test]
async fn a_pending_login_answers_only_its_own_browser_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = store.put_pending(&pending(), "browser-a").await.unwrap();
    for other in [None, Some("browser-b"), Some("")] {
        for take in [false, true] {
            let answer = store.pending(&id, other, 1, take).await.unwrap();
            assert_eq!(answer.err(), Some(PendingRefusal::OtherBrowser));
        }
    }
    assert!(store
        .pending(&id, Some("browser-a"), 1, false)
        .await
        .unwrap()
        .is_ok());
    assert!(store
        .pending(&id, Some("browser-a"), 1, true)
        .await
        .unwrap()
        .is_ok());
    let spent = store
        .pending(&id, Some("browser-a"), 1, true)
        .await
        .unwrap();
    assert_eq!(spent.err(), Some(PendingRefusal::Unknown));
    let late = store.put_pending(&pending(), "browser-a").await.unwrap();
    let expired = store
        .pending(&late, Some("browser-a"), 100, false)
        .await
        .unwrap();
    assert_eq!(expired.err(), Some(PendingRefusal::Unknown));
}

#[tokio::test]
async fn logout_everywhere_revokes_by_subject_and_issue_time_and_ends_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let session = store.put_session("alice", 5, 1000).await.unwrap();
    let refresh = store.put_refresh(&grant("f", 1000)).await.unwrap();
    store.revoke_subject("alice", 10, 900, false).await.unwrap();
    assert!(store.is_revoked("any", "alice", 10, 11).await.unwrap());
    assert!(
        !store.is_revoked("any", "alice", 11, 11).await.unwrap(),
        "issued after"
    );
    assert!(!store.is_revoked("any", "bob", 5, 11).await.unwrap());
    assert!(store.session(&session, 11).await.unwrap().is_none());
    assert!(store.peek_refresh(&refresh, 11).await.unwrap().is_none());
    let page = store.feed_page(0, 10, 11).await.unwrap();
    assert_eq!(
        page.entries,
        [FeedEntry::Subject {
            sub: "alice".into(),
            before: 10,
            exp: 910
        }]
    );
    // Expired entries leave the feed, and the cursor still moves past them.
    let later = store.feed_page(0, 10, 910).await.unwrap();
    assert!(later.entries.is_empty());
    assert_eq!(later.cursor, page.cursor);

    store.revoke_subject("bob", 20, 900, true).await.unwrap();
    assert!(store.is_disabled("bob").await.unwrap());
    let bob = store.put_session("bob", 21, 1000).await.unwrap();
    assert!(store.session(&bob, 22).await.unwrap().is_none(), "disabled");
    assert!(store.enable_user("bob").await.unwrap());
    assert!(!store.enable_user("bob").await.unwrap());
    assert!(store.session(&bob, 22).await.unwrap().is_some());
}

/// A code of `username`, who logged in at `auth_time`, issued at `issued_at` (`None`: by an
/// issuer that did not record it).
fn code_of(username: &str, auth_time: u64, issued_at: Option<u64>) -> AuthorizationCode {
    AuthorizationCode {
        username: username.into(),
        auth_time,
        issued_at,
        ..code(60)
    }
}

/// A check that must not run: the store refuses a revoked code before it.
fn unchecked(_: &AuthorizationCode) -> Result<Admission<()>, Refusal<&'static str>> {
    panic!("the check ran on a revoked code")
}

/// Redeems `value` at `now` as [`redeem`] does, with a check that must not run.
async fn redeem_revoked(store: &Store, value: &str, now: u64) -> Redemption<(), &'static str> {
    store
        .redeem_code(value, now, "never", access("never", 100), unchecked)
        .await
        .unwrap()
}

#[tokio::test]
async fn logout_everywhere_spends_the_users_codes_not_yet_redeemed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let alice = store.put_code(&code_of("alice", 5, Some(5))).await.unwrap();
    let bob = store.put_code(&code_of("bob", 5, Some(5))).await.unwrap();
    let earlier = store.put_code(&code_of("alice", 5, Some(5))).await.unwrap();
    redeemed(redeem(&store, &earlier, 6, "f", "a1").await);

    store.revoke_subject("alice", 10, 900, false).await.unwrap();
    // Refused before its check, and spent: a second try is refused the same way (no replay, as
    // nothing was issued from it).
    assert_eq!(
        redeem_revoked(&store, &alice, 11).await,
        Redemption::Revoked
    );
    assert_eq!(
        redeem_revoked(&store, &alice, 12).await,
        Redemption::Revoked
    );
    store.revoke_family("never", 12).await.unwrap();
    assert_eq!(
        jtis(&store.feed_page(0, 10, 12).await.unwrap()),
        ["a1"],
        "the code redeemed before the logout had its family revoked; the refused one started none"
    );
    // Still a replay for the code redeemed before.
    assert_eq!(
        redeem(&store, &earlier, 12, "f2", "a2").await,
        Redemption::Reused
    );
    // Another user's code is untouched.
    redeemed(redeem(&store, &bob, 12, "fb", "b1").await);
}

#[tokio::test]
async fn a_code_is_refused_when_its_user_was_revoked_at_or_after_its_issue() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // Codes the revocation does not spend. Two written by an older issuer (no `username` column
    // value, no `issued_at` in the body): one from a login before the logout, one from after.
    let old_before = store.put_code(&code_of("alice", 5, None)).await.unwrap();
    let old_after = store.put_code(&code_of("alice", 11, None)).await.unwrap();
    exec(
        &store,
        "UPDATE codes SET username = NULL, body = replace(body, ',\"issued_at\":null', '')",
    )
    .await;
    let old_body = r#"{"client_id":"c","redirect_uri":"r","username":"alice","scope":[],
        "audience":"a","nonce":null,"code_challenge":null,"auth_time":5,"expires_at":60}"#;
    let old: AuthorizationCode = serde_json::from_str(old_body).unwrap();
    assert_eq!((old.issued_at, old.issued_not_before()), (None, 5));

    store.revoke_subject("alice", 10, 900, false).await.unwrap();
    // Issued while the logout was being written (from a session checked just before): in the
    // same second, or later.
    let same_second = store
        .put_code(&code_of("alice", 5, Some(10)))
        .await
        .unwrap();
    let after = store
        .put_code(&code_of("alice", 5, Some(11)))
        .await
        .unwrap();

    assert_eq!(
        redeem_revoked(&store, &old_before, 11).await,
        Redemption::Revoked
    );
    assert_eq!(
        redeem_revoked(&store, &same_second, 11).await,
        Redemption::Revoked
    );
    redeemed(redeem(&store, &old_after, 11, "f1", "a1").await);
    redeemed(redeem(&store, &after, 11, "f2", "a2").await);

    // A disabled user's code is refused whenever it was issued, and stays spent after enabling.
    store.revoke_subject("bob", 20, 900, true).await.unwrap();
    let while_disabled = store.put_code(&code_of("bob", 21, Some(30))).await.unwrap();
    assert_eq!(
        redeem_revoked(&store, &while_disabled, 31).await,
        Redemption::Revoked
    );
    assert!(store.enable_user("bob").await.unwrap());
    assert_eq!(
        redeem_revoked(&store, &while_disabled, 41).await,
        Redemption::Revoked
    );
    let enabled = store.put_code(&code_of("bob", 40, Some(40))).await.unwrap();
    redeemed(redeem(&store, &enabled, 41, "fb", "b1").await);
}

#[tokio::test]
async fn the_feed_pages_in_order_and_says_reset_past_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..5 {
        store.revoke_jti(&format!("j{i}"), 100).await.unwrap();
    }
    let first = store.feed_page(0, 2, 1).await.unwrap();
    assert_eq!(
        (jtis(&first), first.more),
        (vec!["j0".into(), "j1".into()], true)
    );
    let second = store.feed_page(first.cursor, 10, 1).await.unwrap();
    assert_eq!(jtis(&second), ["j2", "j3", "j4"]);
    assert!(!second.more && !second.reset);
    let nothing = store.feed_page(second.cursor, 10, 1).await.unwrap();
    assert!(nothing.entries.is_empty() && !nothing.reset);
    assert_eq!(nothing.cursor, second.cursor);
    assert!(store.feed_page(99, 10, 1).await.unwrap().reset);
}

#[tokio::test]
async fn failures_lock_an_account_in_the_store_and_a_success_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let policy = Policy {
        max_failures: 3,
        base_delay: Duration::from_secs(30),
        max_delay: Duration::from_secs(90),
        ip_max_failures: 100,
        ip_window: Duration::from_secs(600),
    };
    let t = Duration::from_secs(1_000);
    assert_eq!(
        store.account_lock("u:1", t).await.unwrap(),
        AccountLock::Clear
    );
    assert_eq!(store.account_failed("u:1", t, policy).await.unwrap(), None);
    assert_eq!(
        store.account_lock("u:1", t).await.unwrap(),
        AccountLock::Failing
    );
    assert_eq!(store.account_failed("u:1", t, policy).await.unwrap(), None);
    let locked = store.account_failed("u:1", t, policy).await.unwrap();
    assert_eq!(locked, Some(Duration::from_secs(30)));
    assert_eq!(
        store
            .account_lock("u:1", t + Duration::from_secs(10))
            .await
            .unwrap(),
        AccountLock::Locked(Duration::from_secs(20))
    );
    // The next lock doubles; the cap holds.
    let t2 = t + Duration::from_secs(31);
    assert_eq!(
        store.account_lock("u:1", t2).await.unwrap(),
        AccountLock::Failing
    );
    for _ in 0..2 {
        store.account_failed("u:1", t2, policy).await.unwrap();
    }
    assert_eq!(
        store.account_failed("u:1", t2, policy).await.unwrap(),
        Some(Duration::from_secs(60))
    );
    store.account_succeeded("u:1").await.unwrap();
    assert_eq!(
        store.account_lock("u:1", t2).await.unwrap(),
        AccountLock::Clear
    );
}

#[tokio::test]
async fn state_survives_a_reopen_and_expired_rows_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let session = store.put_session("alice", 1, 100).await.unwrap();
    let refresh = store.put_refresh(&grant("f", 100)).await.unwrap();
    store.revoke_jti("gone", 100).await.unwrap();
    let feed = store.feed_id().to_string();
    drop(store);
    use std::os::unix::fs::PermissionsExt;
    // The -wal file is gone once the last connection closes; while there, it is private too.
    for file in ["state.db", "state.db-wal"] {
        if let Ok(meta) = std::fs::metadata(dir.path().join(file)) {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
        }
    }

    let store = open(&dir);
    assert_eq!(store.feed_id(), feed, "the feed keeps its id");
    assert!(store.session(&session, 2).await.unwrap().is_some());
    assert!(store.peek_refresh(&refresh, 2).await.unwrap().is_some());
    assert!(store.is_revoked("gone", "x", 0, 2).await.unwrap());
    assert_eq!(store.sweep(50, Duration::from_secs(60)).await.unwrap(), 0);
    assert!(store.sweep(100, Duration::from_secs(60)).await.unwrap() >= 4);
    assert!(store.session(&session, 2).await.unwrap().is_none());
    assert!(!store.is_revoked("gone", "x", 0, 2).await.unwrap());
}

#[test]
fn a_schema_newer_than_the_binary_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = StateUrl::Sqlite(dir.path().join("state.db"));
    let store = Store::open(&url).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        store
            .run("test", |pool| async move {
                sqlx::query(
                    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                     VALUES (9999, 'from the future', 1, x'00', 0)",
                )
                .execute(&pool)
                .await
                .map_err(unavailable("test"))?;
                Ok(())
            })
            .await
            .unwrap();
    });
    drop(store);
    let err = Store::open(&url).err().unwrap().to_string();
    assert!(
        err.contains("schema is version 9999, newer than this binary"),
        "{err}"
    );
}

#[test]
fn state_urls_parse_and_never_show_a_password() {
    let base = std::path::Path::new("/etc/gatehouse");
    assert_eq!(
        StateUrl::parse("sqlite://../var/s.db", base).unwrap(),
        StateUrl::Sqlite(base.join("../var/s.db"))
    );
    assert!(StateUrl::parse("sqlite://", base).is_err());
    assert!(StateUrl::parse("sqlite://a.db?mode=ro", base).is_err());
    assert!(StateUrl::parse("mysql://x", base).is_err());
    let pg = StateUrl::parse("postgres://gh:s3cret@db:5432/identity", base).unwrap();
    assert!(!pg.redacted().contains("s3cret"));
    assert!(!format!("{pg:?}").contains("s3cret"));
}
