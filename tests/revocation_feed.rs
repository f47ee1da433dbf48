//! The gateway follows each issuer's revocation feed (issue #13, gateway half): given a gateway
//! trusting the fake IdP, whose feed the test writes to, when the IdP revokes a token (its `jti`)
//! or a subject (its tokens issued up to a time), the gateway refuses them within two seconds,
//! cached or not, and nothing else; it keeps what it knows while the feed is down, starts over
//! without failing open when the feed is replaced or reset, is not ready before its first full
//! sync, never shows the feed secret, and refuses broken `revocations:` settings with located
//! errors.
//!
//! The fake IdP counts every feed request, so "the gateway started over" is read at the peer.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::idp::{jti_entry, now, series, with, FakeIdp, TestKey, FEED_CLIENT_ID, FEED_SECRET};
use support::{client, eventually, Echo, Gateway, READY_TIMEOUT};

const ISSUER: &str = "demo";

/// The contract: a revoked token is refused within this long of its entry (poll every 200 ms).
const REFUSED_WITHIN: Duration = Duration::from_secs(2);

/// How the gateway finds the feed secret.
enum Secret<'a> {
    /// `client_secret_file: feed.secret`.
    File,
    /// `client_secret_env: <variable>`.
    Env(&'a str),
}

/// A gateway trusting `idp` as `demo`, with its feed polled every 200 ms; one required route
/// `/documents/`, and `extra` appended to the routes.
fn config(idp: &FakeIdp, echo: &Echo, secret: &Secret, extra: &str) -> String {
    let secret = match secret {
        Secret::File => "client_secret_file: feed.secret".to_string(),
        Secret::Env(variable) => format!("client_secret_env: {variable}"),
    };
    format!(
        r#"{{SERVER}}
listeners:
  - address: 127.0.0.1:{{HTTP}}
admin:
  address: 127.0.0.1:{{ADMIN}}
auth:
  issuers:
    {ISSUER}:
      issuer: {issuer}
      jwks_url: {jwks}
      audiences: [documents-api]
      revocations:
        url: {feed}
        client_id: {FEED_CLIENT_ID}
        {secret}
        poll_interval: 200ms
        timeout: 1s
upstreams:
  echo:
    targets: ["{echo}"]
routes:
  - name: documents
    match:
      path_prefix: /documents/
    upstream: echo
    auth:
      mode: required
{extra}"#,
        issuer = idp.issuer(),
        jwks = idp.jwks_url(),
        feed = idp.feed_url(),
        echo = echo.addr(),
    )
}

fn start(idp: &FakeIdp, echo: &Echo) -> Gateway {
    Gateway::start(&[
        ("gatehouse.yaml", &config(idp, echo, &Secret::File, "")),
        ("feed.secret", &format!("{FEED_SECRET}\n")),
    ])
}

async fn readyz(gw: &Gateway) -> (u16, Value) {
    match client().get(gw.admin("/readyz")).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn wait_ready(gw: &Gateway) {
    eventually("/readyz 200", READY_TIMEOUT, || async {
        readyz(gw).await.0 == 200
    })
    .await;
}

/// A valid token of `idp` with this `jti` (and `changes` merged into the claims).
fn token(key: &TestKey, idp: &FakeIdp, jti: &str, changes: Value) -> String {
    let claims = with(&idp.claims(), json!({ "jti": jti }));
    key.sign(&with(&claims, changes))
}

async fn status(gw: &Gateway, token: &str) -> u16 {
    client()
        .get(gw.url("/documents/1"))
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn errors() -> String {
    series(
        "gatehouse_revocation_feed_errors_total",
        &[("issuer", ISSUER)],
    )
}

fn age() -> String {
    series(
        "gatehouse_revocation_feed_age_seconds",
        &[("issuer", ISSUER)],
    )
}

fn held(kind: &str) -> String {
    series(
        "gatehouse_revocations",
        &[("issuer", ISSUER), ("kind", kind)],
    )
}

/// Waits until `token` is refused, within [`REFUSED_WITHIN`] of `since`.
async fn refused_soon(gw: &Gateway, token: &str, since: Instant, what: &str) {
    eventually(what, REFUSED_WITHIN, || async {
        status(gw, token).await == 401
    })
    .await;
    eprintln!("{what}: refused {:?} after the entry", since.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_jti_is_refused_within_two_seconds_even_once_cached() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    // A kind this gateway does not know: ignored, the feed keeps working.
    idp.feed_entry(json!({"kind": "session", "sid": "s-1", "exp": now() + 600}));
    let echo = Echo::start("echo");
    let gw = start(&idp, &echo);
    wait_ready(&gw).await;

    let doomed = token(&key, &idp, "doomed", json!({}));
    let other = token(&key, &idp, "other", json!({}));
    // Verified once, then served from the verified-token cache.
    for _ in 0..3 {
        assert_eq!(status(&gw, &doomed).await, 200);
    }
    assert_eq!(status(&gw, &other).await, 200);

    let entered = Instant::now();
    idp.revoke_jti("doomed", now() + 600);
    refused_soon(&gw, &doomed, entered, "the cached, revoked token").await;

    let resp = client()
        .get(gw.url("/documents/1"))
        .bearer_auth(&doomed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"the token has been revoked\""
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["message"], "the token has been revoked");

    // Any other token still passes, as does a fresh one.
    assert_eq!(status(&gw, &other).await, 200);
    assert_eq!(
        status(&gw, &token(&key, &idp, "fresh", json!({}))).await,
        200
    );

    // A token verified for the first time after the revocation is refused too.
    let entered = Instant::now();
    idp.revoke_jti("never-seen", now() + 600);
    let never_seen = token(&key, &idp, "never-seen", json!({}));
    refused_soon(
        &gw,
        &never_seen,
        entered,
        "a revoked token never seen before",
    )
    .await;

    let revoked = series(
        "gatehouse_auth_outcomes_total",
        &[("route", "documents"), ("outcome", "revoked")],
    );
    eventually("revoked outcomes counted", READY_TIMEOUT, || async {
        gw.metric(&revoked).await >= 3.0
    })
    .await;
    assert_eq!(gw.metric(&held("jti")).await, 2.0);
    assert_eq!(gw.metric(&held("subject")).await, 0.0);
    assert_eq!(gw.metric(&errors()).await, 0.0);
    assert!(gw.metric(&age()).await <= 1.0);
    eventually(
        "the access log names the outcome",
        READY_TIMEOUT,
        || async { gw.access_log().contains("\"revoked\"") },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subject_entry_refuses_that_subjects_older_tokens_only() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    let echo = Echo::start("echo");
    let gw = start(&idp, &echo);
    wait_ready(&gw).await;

    let t = now();
    let cutoff = t - 100;
    let old = token(&key, &idp, "old", json!({"iat": t - 200}));
    let at_cutoff = token(&key, &idp, "at-cutoff", json!({"iat": cutoff}));
    let old_without_jti = key.sign(&with(&idp.claims(), json!({"iat": t - 200})));
    let newer = token(&key, &idp, "newer", json!({"iat": cutoff + 1}));
    let bobs = token(&key, &idp, "bobs", json!({"sub": "bob", "iat": t - 200}));
    for tok in [&old, &at_cutoff, &old_without_jti, &newer, &bobs] {
        assert_eq!(status(&gw, tok).await, 200);
    }

    let entered = Instant::now();
    idp.revoke_subject("alice", cutoff, t + 600);
    refused_soon(&gw, &old, entered, "alice's older token").await;
    assert_eq!(
        status(&gw, &at_cutoff).await,
        401,
        "iat == before is revoked"
    );
    assert_eq!(
        status(&gw, &old_without_jti).await,
        401,
        "a token without jti is matched by subject"
    );
    assert_eq!(status(&gw, &newer).await, 200, "iat > before passes");
    assert_eq!(status(&gw, &bobs).await, 200, "another subject passes");
    assert_eq!(gw.metric(&held("subject")).await, 1.0);

    // A later entry with a later cutoff supersedes: now the newer token goes too.
    idp.revoke_subject("alice", cutoff + 1, t + 600);
    refused_soon(
        &gw,
        &newer,
        Instant::now(),
        "alice's token up to the new cutoff",
    )
    .await;
    assert_eq!(
        gw.metric(&held("subject")).await,
        1.0,
        "one entry per subject"
    );
    let fresh = token(&key, &idp, "fresh", json!({"iat": now()}));
    assert_eq!(status(&gw, &fresh).await, 200, "logged in again: passes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_feed_outage_keeps_known_revocations_and_shows_in_the_metrics() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    let echo = Echo::start("echo");
    let gw = start(&idp, &echo);
    wait_ready(&gw).await;
    let doomed = token(&key, &idp, "doomed", json!({}));
    let fine = token(&key, &idp, "fine", json!({}));
    idp.revoke_jti("doomed", now() + 600);
    refused_soon(&gw, &doomed, Instant::now(), "the revoked token").await;
    assert_eq!(status(&gw, &fine).await, 200);

    // The whole IdP goes away: connections are refused (its keys stay in use, cached).
    idp.stop();
    eventually("three failed polls counted", READY_TIMEOUT, || async {
        gw.metric(&errors()).await >= 3.0
    })
    .await;
    // Logged once per kind of failure (refused; maybe first a dropped connection), not per poll.
    let warnings = || {
        gw.stderr()
            .lines()
            .filter(|l| l.contains("revocation feed poll failed"))
            .count()
    };
    assert!(
        (1..=2).contains(&warnings()),
        "{} warnings for 3 failed polls:\n{}",
        warnings(),
        gw.stderr()
    );
    eventually("the feed's age grows past 2 s", READY_TIMEOUT, || async {
        gw.metric(&age()).await >= 2.0
    })
    .await;
    assert_eq!(status(&gw, &doomed).await, 401, "still refused while down");
    assert_eq!(status(&gw, &fine).await, 200);
    assert_eq!(
        readyz(&gw).await.0,
        200,
        "a synced feed that fails stays ready"
    );

    // It comes back answering 500.
    idp.set_feed_status(Some(500));
    idp.resume();
    let before = gw.metric(&errors()).await;
    eventually("500s counted", READY_TIMEOUT, || async {
        gw.metric(&errors()).await > before
    })
    .await;
    assert_eq!(status(&gw, &doomed).await, 401, "still refused on 500s");
    let aged = gw.metric(&age()).await;

    // The feed answers again: the age drops.
    idp.set_feed_status(None);
    eventually("the feed's age drops again", READY_TIMEOUT, || async {
        gw.metric(&age()).await < aged.min(2.0)
    })
    .await;
    assert_eq!(status(&gw, &doomed).await, 401);
    assert_eq!(status(&gw, &fine).await, 200);

    // The 500s were a new kind of failure: one more line; and the recovery is logged.
    assert!((2..=3).contains(&warnings()), "{}", gw.stderr());
    assert!(gw.stderr().contains("revocation feed answers again"));
}

/// Shared by the two start-over scenarios: `old` is refused; the feed is replaced by `change`
/// and held on the new feed's second page (page size 1), so the gateway is mid-way through
/// the new full answer. Meanwhile `old` stays refused and `pending` (only in the new answer)
/// is not in force yet; once released, the new answer is in force as a whole.
async fn starts_over_without_failing_open(
    idp: &FakeIdp,
    gw: &Gateway,
    old: &str,
    pending: &[&str],
    change: impl FnOnce(),
) {
    refused_soon(gw, old, Instant::now(), "the token revoked on the old feed").await;
    let starts = idp.feed_requests_from_start();
    idp.set_feed_page_size(1);
    idp.hold_feed_at(Some("1"));
    change();
    eventually(
        "the gateway starts over and is held mid-way",
        READY_TIMEOUT,
        || async { idp.feed_requests_from_start() > starts && idp.feed_held() >= 1 },
    )
    .await;
    // Never fail open while resyncing: the old revocations stay in force, watched for a while.
    let watch_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < watch_until {
        assert_eq!(status(gw, old).await, 401, "the old set stays in force");
        for token in pending {
            assert_eq!(
                status(gw, token).await,
                200,
                "half an answer is not in force"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(readyz(gw).await.0, 200, "a resync keeps the gateway ready");

    idp.hold_feed_at(None);
    for token in pending {
        eventually("the new full answer in force", READY_TIMEOUT, || async {
            status(gw, token).await == 401
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_feed_id_starts_over_without_failing_open() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    let exp = now() + 600;
    for jti in ["gone-1", "gone-2", "gone-3"] {
        idp.revoke_jti(jti, exp);
    }
    let echo = Echo::start("echo");
    let gw = start(&idp, &echo);
    wait_ready(&gw).await;
    let gone = token(&key, &idp, "gone-1", json!({}));
    let (n1, n2) = (
        token(&key, &idp, "new-1", json!({})),
        token(&key, &idp, "new-2", json!({})),
    );

    starts_over_without_failing_open(&idp, &gw, &gone, &[&n1, &n2], || {
        // A new database: its own id, other entries, cursors from the start.
        idp.switch_feed(
            "feed-2",
            vec![jti_entry("new-1", exp), jti_entry("new-2", exp)],
        );
    })
    .await;
    // What the new feed does not list is dropped, as the contract says.
    assert_eq!(status(&gw, &gone).await, 200);
    assert_eq!(gw.metric(&held("jti")).await, 2.0);
    assert!(gw.stderr().contains("the feed id changed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_feed_starts_over_without_failing_open() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    let exp = now() + 600;
    for jti in ["r-1", "r-2", "r-3"] {
        idp.revoke_jti(jti, exp);
    }
    let echo = Echo::start("echo");
    let gw = start(&idp, &echo);
    wait_ready(&gw).await;
    let [r1, r2, r3] = ["r-1", "r-2", "r-3"].map(|j| token(&key, &idp, j, json!({})));
    for tok in [&r1, &r2, &r3] {
        refused_soon(&gw, tok, Instant::now(), "a revoked token").await;
    }

    // Restored from a backup holding two entries: the gateway's cursor (3) is beyond the end.
    // While it resyncs, all three stay refused (r-1 and r-2 are in both sets).
    starts_over_without_failing_open(&idp, &gw, &r3, &[], || idp.restore_feed(2)).await;
    eventually("the restored feed in force", READY_TIMEOUT, || async {
        status(&gw, &r3).await == 200
    })
    .await;
    assert_eq!(status(&gw, &r1).await, 401);
    assert_eq!(status(&gw, &r2).await, 401);
    assert_eq!(gw.metric(&held("jti")).await, 2.0);
    assert!(gw.stderr().contains("the feed was reset"));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_are_counted_and_the_secret_never_shows() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    let echo = Echo::start("echo");
    let wrong = "wrong-secret-Zk38qP";
    let variable = "GATEHOUSE_TEST_FEED_SECRET";
    // The most talkative log level: not even debug output may carry the secret.
    let gw = Gateway::start_with_env(
        &[(
            "gatehouse.yaml",
            &config(&idp, &echo, &Secret::Env(variable), ""),
        )],
        "debug",
        &[(variable, wrong)],
    );
    eventually("failed polls counted", READY_TIMEOUT, || async {
        gw.metric(&errors()).await >= 2.0
    })
    .await;
    assert!(idp.feed_unauthorized() >= 2, "the IdP refused the client");
    let (ready, body) = readyz(&gw).await;
    assert_eq!(ready, 503, "never synced: not ready: {body}");
    assert_eq!(gw.metric(&age()).await, -1.0, "never polled successfully");

    // Some traffic, so the access log has lines too. Never synced: which tokens are revoked is
    // unknown, so none passes (fail closed).
    assert_eq!(status(&gw, &token(&key, &idp, "t", json!({}))).await, 503);
    let stderr = gw.stderr();
    assert!(
        stderr.contains("401") && stderr.contains("check client_id"),
        "the failure says why:\n{stderr}"
    );
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{FEED_CLIENT_ID}:{wrong}"))
    };
    let output = format!("{stderr}\n{}", gw.access_log());
    for secret in [wrong, basic.as_str()] {
        assert!(
            !output.contains(secret),
            "the secret ({secret}) appears in the gateway's output"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_waits_for_the_first_full_sync() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    let exp = now() + 600;
    for jti in ["a", "b", "c"] {
        idp.revoke_jti(jti, exp);
    }
    idp.set_feed_page_size(1);
    idp.set_feed_status(Some(500));
    let echo = Echo::start("echo");
    let gw = start(&idp, &echo);

    let keys = series("gatehouse_jwks_keys", &[("issuer", ISSUER)]);
    eventually("the key set fetched", READY_TIMEOUT, || async {
        gw.metric(&keys).await == 1.0
    })
    .await;
    eventually("a failed poll", READY_TIMEOUT, || async {
        gw.metric(&errors()).await >= 1.0
    })
    .await;
    let (ready, body) = readyz(&gw).await;
    assert_eq!(ready, 503, "keys but no revocations: not ready: {body}");
    assert_eq!(body["ready"], false);
    let waiting = body["waiting_for"].to_string();
    assert!(
        waiting.contains("auth.issuers.demo.revocations"),
        "waiting_for names the feed: {body}"
    );
    // Before the sync the metrics list the feed already.
    assert_eq!(gw.metric(&age()).await, -1.0);
    assert!(gw.metrics().await.contains(&held("subject")));

    idp.set_feed_status(None);
    wait_ready(&gw).await;
    // Ready means caught up: every page is in (three pages of one entry).
    for jti in ["a", "b", "c"] {
        assert_eq!(status(&gw, &token(&key, &idp, jti, json!({}))).await, 401);
    }
    assert_eq!(gw.metric(&held("jti")).await, 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_the_feed_and_its_position() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    idp.revoke_jti("doomed", now() + 600);
    let echo = Echo::start("echo");
    let gw = start(&idp, &echo);
    wait_ready(&gw).await;
    let doomed = token(&key, &idp, "doomed", json!({}));
    refused_soon(&gw, &doomed, Instant::now(), "the revoked token").await;
    let starts = idp.feed_requests_from_start();

    // An unrelated route and a slower poll: same URL, client and secret, same feed.
    let unrelated = "  - name: other\n    match:\n      path_prefix: /other/\n    upstream: echo\n";
    let reloaded = config(&idp, &echo, &Secret::File, unrelated)
        .replace("poll_interval: 200ms", "poll_interval: 300ms");
    gw.write("gatehouse.yaml", &reloaded);
    eventually("the new route is live", READY_TIMEOUT, || async {
        client()
            .get(gw.url("/other/x"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(readyz(&gw).await.0, 200, "the carried feed is still synced");
    assert_eq!(status(&gw, &doomed).await, 401);
    let requests = idp.feed_requests();
    let entered = Instant::now();
    idp.revoke_jti("later", now() + 600);
    let later = token(&key, &idp, "later", json!({}));
    refused_soon(&gw, &later, entered, "a token revoked after the reload").await;
    assert!(idp.feed_requests() > requests, "still polling");
    assert_eq!(
        idp.feed_requests_from_start(),
        starts,
        "the reload did not start the feed over"
    );

    // A new secret is a new client: a new feed, synced from the beginning.
    let moved =
        config(&idp, &echo, &Secret::File, unrelated).replace("feed.secret", "feed2.secret");
    gw.write("feed2.secret", "another-secret");
    gw.write("gatehouse.yaml", &moved);
    eventually(
        "the new client is refused at the feed",
        READY_TIMEOUT,
        || async { idp.feed_unauthorized() >= 1 },
    )
    .await;
    let (ready, _) = readyz(&gw).await;
    assert_eq!(ready, 503, "a new feed must sync first");
}

/// `gatehouse validate` on a config whose demo issuer has this `revocations:` body.
fn validate(revocations: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    support::write(dir.path(), "feed.secret", "s3cret\n");
    support::write(dir.path(), "empty.secret", " \n");
    support::write(
        dir.path(),
        "gatehouse.yaml",
        &format!(
            r#"listeners:
  - address: 127.0.0.1:8080
auth:
  issuers:
    demo:
      issuer: http://127.0.0.1:9400
      audiences: [documents-api]
      revocations:
{revocations}
"#
        ),
    );
    let out = std::process::Command::new(support::BIN)
        .args(["validate", "--config"])
        .arg(dir.path().join("gatehouse.yaml"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    text
}

#[test]
fn broken_revocation_settings_are_located_errors() {
    let at = "auth.issuers.demo.revocations";
    let text = validate(
        r#"        url: not-a-url
        client_id: "gate:way"
        client_secret_file: feed.secret
        client_secret_env: FEED_SECRET_SET
        poll_interval: 0s
        timeout: 0s"#,
        &[("FEED_SECRET_SET", "x")],
    );
    for expected in [
        format!("{at}.url: \"not-a-url\" is not an http(s) URL"),
        format!("{at}.client_id: \"gate:way\" is not a client id"),
        format!("{at}: give client_secret_file or client_secret_env, not both"),
        format!("{at}.poll_interval: 0s is outside 100ms..60s"),
        format!("{at}.timeout: must be longer than 0s"),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }

    let text = validate(
        "        client_id: gateway\n        client_secret_file: feed.secret",
        &[],
    );
    assert!(
        text.contains(&format!("{at}: missing field `url`")),
        "missing url:\n{text}"
    );

    let text = validate(
        "        url: http://127.0.0.1:9400/revocations\n        client_id: gateway\n        poll_interval: 2m",
        &[],
    );
    assert!(
        text.contains(&format!("{at}: the client secret is missing")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{at}.poll_interval: 2m is outside")),
        "{text}"
    );

    let text = validate(
        "        url: http://127.0.0.1:9400/revocations\n        client_id: gateway\n        client_secret_env: GATEHOUSE_TEST_UNSET_SECRET",
        &[],
    );
    assert!(
        text.contains(&format!(
            "{at}.client_secret_env: environment variable \"GATEHOUSE_TEST_UNSET_SECRET\""
        )),
        "{text}"
    );

    let text = validate(
        "        url: http://127.0.0.1:9400/revocations\n        client_id: gateway\n        client_secret_file: empty.secret",
        &[],
    );
    assert!(
        text.contains(&format!(
            "{at}.client_secret_file: the client secret is empty"
        )),
        "{text}"
    );
    let text = validate(
        "        url: http://127.0.0.1:9400/revocations\n        client_id: gateway\n        client_secret_file: missing.secret",
        &[],
    );
    assert!(
        text.contains(&format!("{at}.client_secret_file: cannot read")),
        "{text}"
    );
    assert!(!text.contains("s3cret"));
}
