//! Key sets kept fresh (issue #11): unknown kids refetch once, single-flight, under a cooldown;
//! a newly published key verifies on first use; failures keep the last good keys and expose
//! their age; /readyz waits for every issuer; ETags give 304s; a reload that leaves the issuer
//! alone keeps its key set; a verified token is checked once.
//!
//! The fake IdP runs on its own thread and counts every request, so "how often did the gateway
//! fetch" is read at the peer, not trusted from the gateway's own metrics alone.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::idp::{series, with, FakeIdp, TestKey};
use support::{client, eventually, Echo, Gateway, READY_TIMEOUT};
use tokio::task::JoinSet;

const ISSUER: &str = "demo";

fn fetches(result: &str) -> String {
    series(
        "gatehouse_jwks_fetches_total",
        &[("issuer", ISSUER), ("result", result)],
    )
}

fn age() -> String {
    series("gatehouse_jwks_age_seconds", &[("issuer", ISSUER)])
}

/// How the issuer's key set is fetched: through discovery or straight from its JWKS URL.
#[derive(Clone, Copy)]
enum Source {
    Discovery,
    JwksUrl,
}

/// A gateway trusting `idp` as issuer `demo`, one required route `/documents/*`, with these
/// `refresh` settings (YAML mapping body) and any `extra_routes` appended.
fn config(idp: &FakeIdp, echo: &Echo, source: Source, refresh: &str, extra_routes: &str) -> String {
    let jwks_url = match source {
        Source::Discovery => String::new(),
        Source::JwksUrl => format!("      jwks_url: {}\n", idp.jwks_url()),
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
{jwks_url}      audiences: [documents-api]
      refresh: {refresh}
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
{extra_routes}"#,
        issuer = idp.issuer(),
        echo = echo.addr(),
    )
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

/// A valid token never sent before (its own `jti`), so the verified-token cache cannot answer
/// for it: the key set itself is used.
fn fresh_token(key: &TestKey, idp: &FakeIdp) -> String {
    let jti = format!("{:032x}", rand::random::<u128>());
    key.sign(&with(&idp.claims(), json!({ "jti": jti })))
}

async fn status(c: &reqwest::Client, url: String, token: &str) -> u16 {
    c.get(url)
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_kid_flood_makes_at_most_a_few_jwks_fetches() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    // A long max-age: every fetch after the first one is an unknown-kid refetch.
    idp.set_max_age(3600);
    let echo = Echo::start("echo");
    let refresh = "{min_interval: 1s, max_interval: 1h, unknown_kid_cooldown: 1s}";
    let gw = Gateway::start(&[(
        "gatehouse.yaml",
        &config(&idp, &echo, Source::JwksUrl, refresh, ""),
    )]);
    wait_ready(&gw).await;
    let before = idp.jwks_requests();

    let stranger = TestKey::es256("stranger");
    let tokens: Vec<String> = (0..300)
        .map(|_| {
            let kid = format!("random-{:016x}", rand::random::<u64>());
            stranger.with_kid(&kid).sign(&idp.claims())
        })
        .collect();
    let c = client();
    let started = Instant::now();
    let mut flood = JoinSet::new();
    for token in tokens {
        let (c, url) = (c.clone(), gw.url("/documents/1"));
        flood.spawn(async move { status(&c, url, &token).await });
    }
    let mut statuses = Vec::new();
    while let Some(s) = flood.join_next().await {
        statuses.push(s.expect("a request task"));
    }
    let elapsed = started.elapsed();
    assert!(
        statuses.iter().all(|s| *s == 401),
        "every random kid is refused: {:?}",
        statuses.iter().filter(|s| **s != 401).collect::<Vec<_>>()
    );

    // One single-flight refetch per cooldown (1 s) the flood lasted, plus one of slack.
    let grown = idp.jwks_requests() - before;
    eprintln!("unknown-kid flood: 300 requests in {elapsed:?}, {grown} JWKS fetches");
    let allowed = 2 + elapsed.as_secs();
    assert!(
        (1..=allowed).contains(&grown),
        "300 unknown kids in {elapsed:?} made {grown} JWKS fetches (allowed 1..={allowed})"
    );

    let unknown = series(
        "gatehouse_auth_outcomes_total",
        &[("route", "documents"), ("outcome", "unknown_kid")],
    );
    eventually("300 unknown_kid outcomes", READY_TIMEOUT, || async {
        gw.metric(&unknown).await == 300.0
    })
    .await;
    // Still healthy: a good token passes at once.
    assert_eq!(
        status(&c, gw.url("/documents/1"), &fresh_token(&key, &idp)).await,
        200
    );
    assert_eq!(readyz(&gw).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newly_published_key_verifies_on_its_first_use() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    // Only the unknown-kid path can find the new key: no scheduled refresh for an hour.
    idp.set_max_age(3600);
    let echo = Echo::start("echo");
    let refresh = "{min_interval: 1s, max_interval: 1h, unknown_kid_cooldown: 1s}";
    let gw = Gateway::start(&[(
        "gatehouse.yaml",
        &config(&idp, &echo, Source::JwksUrl, refresh, ""),
    )]);
    wait_ready(&gw).await;
    let c = client();
    assert_eq!(
        status(&c, gw.url("/documents/1"), &fresh_token(&key, &idp)).await,
        200
    );

    // Right after the start-up fetch: the cooldown only spaces fetches asked for by unknown
    // kids, so a scheduled fetch never holds a new key back.
    let rotated = TestKey::es256("k2");
    idp.publish(&rotated);
    let before = idp.jwks_requests();
    let started = Instant::now();
    let first_use = status(&c, gw.url("/documents/1"), &fresh_token(&rotated, &idp)).await;
    let elapsed = started.elapsed();
    eprintln!("first use of a newly published key answered in {elapsed:?}");
    assert_eq!(first_use, 200, "the new key verifies on its first use");
    assert!(
        elapsed < Duration::from_secs(1),
        "first use took {elapsed:?}"
    );
    assert_eq!(idp.jwks_requests() - before, 1, "one refetch found the key");
    // Known from now on: no further fetch.
    assert_eq!(
        status(&c, gw.url("/documents/1"), &fresh_token(&rotated, &idp)).await,
        200
    );
    assert_eq!(idp.jwks_requests() - before, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_idp_leaves_the_last_keys_in_use_and_their_age_grows() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    idp.set_max_age(1);
    let echo = Echo::start("echo");
    // A low ceiling keeps the backoff short, so recovery shows within the test's patience.
    let refresh = "{min_interval: 1s, max_interval: 10s}";
    let gw = Gateway::start(&[(
        "gatehouse.yaml",
        &config(&idp, &echo, Source::JwksUrl, refresh, ""),
    )]);
    wait_ready(&gw).await;
    let c = client();
    let url = gw.url("/documents/1");
    assert_eq!(status(&c, url.clone(), &fresh_token(&key, &idp)).await, 200);

    idp.set_unavailable(true);
    let down_since = Instant::now();
    let down_requests = idp.jwks_requests();
    eventually("JWKS fetch errors counted", READY_TIMEOUT, || async {
        gw.metric(&fetches("error")).await >= 2.0
    })
    .await;
    eventually(
        "the key set's age grows past 3 s",
        READY_TIMEOUT,
        || async { gw.metric(&age()).await >= 3.0 },
    )
    .await;

    // The last good keys still verify new tokens, and the gateway stays ready.
    assert_eq!(status(&c, url.clone(), &fresh_token(&key, &idp)).await, 200);
    let (ready, body) = readyz(&gw).await;
    assert_eq!(ready, 200, "stale keys keep the gateway ready: {body}");

    // Retries back off rather than hammer the IdP: never more than one a second.
    let attempts = idp.jwks_requests() - down_requests;
    let window = down_since.elapsed().as_secs() + 1;
    assert!(
        attempts <= window,
        "{attempts} JWKS requests in {window} s of outage"
    );
    let stderr = gw.stderr();
    assert!(
        stderr
            .lines()
            .any(|l| (l.contains("WARN") || l.contains("ERROR"))
                && (l.contains(ISSUER) || l.contains(&idp.issuer()))),
        "the failed fetch is logged, naming the issuer:\n{stderr}"
    );

    // The IdP comes back: the age falls again.
    idp.set_unavailable(false);
    eventually(
        "the key set refreshed after recovery",
        READY_TIMEOUT,
        || async { gw.metric(&age()).await < 2.0 },
    )
    .await;
    assert_eq!(status(&c, url, &fresh_token(&key, &idp)).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_waits_until_every_issuer_has_a_key_set() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::stopped(&[&key]);
    let echo = Echo::start("echo");
    // Short backoff ceiling so the retry after recovery comes soon.
    let refresh = "{min_interval: 1s, max_interval: 5s}";
    let gw = Gateway::start(&[(
        "gatehouse.yaml",
        &config(&idp, &echo, Source::Discovery, refresh, ""),
    )]);

    let (ready, body) = readyz(&gw).await;
    assert_eq!(ready, 503, "not ready without keys: {body}");
    assert_eq!(body["ready"], false, "{body}");
    let waiting: Vec<String> = body["waiting_for"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().into())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        waiting.iter().any(|w| w.contains("auth.issuers.demo")),
        "waiting_for names the issuer: {body}"
    );
    // Meanwhile a token cannot be judged: 503 (see tests/auth_rejections.rs, no_key_set).
    let c = client();
    assert_eq!(
        status(&c, gw.url("/documents/1"), &fresh_token(&key, &idp)).await,
        503
    );

    idp.resume();
    eventually("/readyz 200 once the IdP is up", READY_TIMEOUT, || async {
        readyz(&gw).await.0 == 200
    })
    .await;
    assert_eq!(readyz(&gw).await.1["ready"], true);
    assert!(idp.discovery_requests() >= 1, "discovery was used");
    assert_eq!(
        status(&c, gw.url("/documents/1"), &fresh_token(&key, &idp)).await,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_jwks_answers_304_and_counts_not_modified() {
    let (k1, k2) = (TestKey::es256("k1"), TestKey::rs256("k2"));
    let idp = FakeIdp::start(&[&k1, &k2]);
    idp.set_max_age(1);
    let echo = Echo::start("echo");
    let refresh = "{min_interval: 1s, max_interval: 1h}";
    let gw = Gateway::start(&[(
        "gatehouse.yaml",
        &config(&idp, &echo, Source::JwksUrl, refresh, ""),
    )]);
    wait_ready(&gw).await;

    eventually("two 304 refreshes", READY_TIMEOUT, || async {
        gw.metric(&fetches("not_modified")).await >= 2.0
    })
    .await;
    assert!(
        idp.not_modified_answers() >= 2,
        "the gateway sent If-None-Match with the ETag"
    );
    assert_eq!(gw.metric(&fetches("updated")).await, 1.0, "one full fetch");
    let keys = series("gatehouse_jwks_keys", &[("issuer", ISSUER)]);
    assert_eq!(gw.metric(&keys).await, 2.0);
    assert!(
        gw.metric(&age()).await < 5.0,
        "a 304 confirms the keys: the age restarts"
    );

    // A changed key set (new ETag) is fetched in full again.
    let k3 = TestKey::es256("k3");
    idp.publish(&k3);
    eventually("the new key set fetched", READY_TIMEOUT, || async {
        gw.metric(&keys).await == 3.0
    })
    .await;
    assert_eq!(gw.metric(&fetches("updated")).await, 2.0);
    let c = client();
    for key in [&k1, &k2, &k3] {
        assert_eq!(
            status(&c, gw.url("/documents/1"), &fresh_token(key, &idp)).await,
            200,
            "{} verifies",
            key.kid()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_leaves_the_issuer_alone_keeps_its_key_set() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    idp.set_max_age(3600);
    let echo = Echo::start("echo");
    let refresh = "{min_interval: 1s, max_interval: 1h}";
    let gw = Gateway::start(&[(
        "gatehouse.yaml",
        &config(&idp, &echo, Source::Discovery, refresh, ""),
    )]);
    wait_ready(&gw).await;
    let c = client();
    assert_eq!(
        status(&c, gw.url("/documents/1"), &fresh_token(&key, &idp)).await,
        200
    );
    let before = (idp.discovery_requests(), idp.jwks_requests());

    let unrelated = "  - name: other\n    match:\n      path_prefix: /other/\n    upstream: echo\n";
    gw.write(
        "gatehouse.yaml",
        &config(&idp, &echo, Source::Discovery, refresh, unrelated),
    );
    eventually("the new route is live", READY_TIMEOUT, || async {
        c.get(gw.url("/other/x"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(gw.config_version().await, 2);

    // Absence of a fetch needs a while to show: watch the IdP for 2 s.
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        assert_eq!(
            (idp.discovery_requests(), idp.jwks_requests()),
            before,
            "the reload refetched an unchanged issuer's keys"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status(&c, gw.url("/documents/1"), &fresh_token(&key, &idp)).await,
        200
    );
    assert_eq!(readyz(&gw).await.0, 200);
    assert_eq!(gw.metric(&fetches("updated")).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_token_is_verified_once_and_then_served_from_the_cache() {
    let key = TestKey::es256("k1");
    let idp = FakeIdp::start(&[&key]);
    let echo = Echo::start("echo");
    let gw = Gateway::start(&[(
        "gatehouse.yaml",
        &config(&idp, &echo, Source::JwksUrl, "{}", ""),
    )]);
    wait_ready(&gw).await;
    let c = client();
    let token = fresh_token(&key, &idp);
    for _ in 0..50 {
        assert_eq!(status(&c, gw.url("/documents/1"), &token).await, 200);
    }
    let hits = r#"gatehouse_verified_token_cache_total{result="hit"}"#;
    let misses = r#"gatehouse_verified_token_cache_total{result="miss"}"#;
    eventually("49 cache hits", READY_TIMEOUT, || async {
        gw.metric(hits).await >= 49.0
    })
    .await;
    assert!(gw.metric(misses).await >= 1.0);
}
