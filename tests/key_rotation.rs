//! Key rotation and issuer outages under traffic, with the real issuer as its own process.
//!
//! The issuer runs in a second gateway process that serves nothing but `embedded: {identity}`
//! (the root package's tests can start `gatehouse`, not `gatehouse-identity`), so a test can
//! stop it while the gateway under test keeps serving.
//!
//! Given continuous traffic with fresh tokens, when the issuer rotates its keys (staged, then
//! immediately), no request fails; when the issuer goes away, tokens already issued keep
//! passing on the last good key set, whose age grows, and the gateway stays ready.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::issuer::{jwt_header, sample, wait_ready, Issuer, ISSUER_PROCESS};
use support::{client, eventually, Echo, Gateway, READY_TIMEOUT};

const GATEWAY: &str = r#"{SERVER}
listeners:
  - address: 127.0.0.1:{HTTP}
admin:
  address: 127.0.0.1:{ADMIN}
@AUTH@
upstreams:
  echo:
    targets: ["@ECHO@"]
routes:
  - name: documents
    match: {path: "/documents/{id}"}
    upstream: echo
    auth: {mode: required, scopes: [documents:read]}
"#;

/// A next key is in the JWKS this long (+1 s) before it signs: short, so a staged rotation
/// completes within the test.
const JWKS_MAX_AGE: &str = "  jwks_max_age: 2s\n";

struct Stack {
    gw: Gateway,
    issuer: Issuer,
    issuer_process: Gateway,
    _echo: Echo,
}

/// Starts the issuer process, then the gateway trusting it with `refresh` settings. The
/// verified-token cache is off: every request checks its signature against the key set.
async fn start(refresh: &str) -> Stack {
    let issuer = Issuer::new();
    let issuer_process = Gateway::start(&[
        ("gatehouse.yaml", ISSUER_PROCESS),
        ("identity.yaml", &issuer.identity_yaml(JWKS_MAX_AGE)),
    ]);
    issuer.wait_serving().await;
    let echo = Echo::start("echo");
    let config = GATEWAY
        .replace(
            "@AUTH@",
            &issuer.auth_section(refresh, "  verified_token_cache: 0\n"),
        )
        .replace("@ECHO@", &echo.addr());
    let gw = Gateway::start(&[("gatehouse.yaml", &config)]);
    wait_ready(&gw).await;
    Stack {
        gw,
        issuer,
        issuer_process,
        _echo: echo,
    }
}

/// One request of the traffic loop: the token's key and what the gateway answered.
struct Outcome {
    alg: String,
    kid: String,
    status: u16,
    /// The gateway's error answer, when it was not 200.
    error: Option<String>,
}

/// Sends requests one after another until `stop`, a fresh client_credentials token every three
/// requests, alternating the RS256 and the ES256 client.
async fn traffic(gateway_url: String, issuer: Issuer, stop: Arc<AtomicBool>) -> Vec<Outcome> {
    let http = client();
    let mut outcomes = Vec::new();
    let mut token = String::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if n % 3 == 0 {
            let client_id = if (n / 3) % 2 == 0 {
                "reports-service"
            } else {
                "reports-es"
            };
            token = issuer.service_token(client_id, "reports-secret").await;
        }
        let header = jwt_header(&token);
        let resp = http
            .get(format!("{gateway_url}/documents/{n}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request through the gateway");
        let status = resp.status().as_u16();
        let error = (status != 200).then_some(resp.text().await.unwrap_or_default());
        outcomes.push(Outcome {
            alg: header["alg"].as_str().unwrap_or_default().to_string(),
            kid: header["kid"].as_str().unwrap_or_default().to_string(),
            status,
            error,
        });
        n += 1;
    }
    outcomes
}

async fn rotate(issuer: &Issuer, query: &str) -> serde_json::Value {
    let resp = client()
        .post(issuer.admin(&format!("/keys/rotate{query}")))
        .send()
        .await
        .expect("rotate request");
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.expect("rotation answer");
    assert_eq!(status, 200, "rotation: {body}");
    body
}

async fn get(gw: &Gateway, token: &str) -> reqwest::Response {
    client()
        .get(gw.url("/documents/1"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request through the gateway")
}

#[tokio::test(flavor = "multi_thread")]
async fn no_request_fails_while_the_issuer_rotates_its_keys_staged_then_immediately() {
    // Default refresh intervals (the JWKS max-age of 2 s is clamped up to 30 s): the new keys
    // reach the gateway through the unknown-kid refetch, not a scheduled refresh.
    let s = start("      refresh: {unknown_kid_cooldown: 1s}\n").await;
    // The route does check tokens (so an all-200 run means something).
    let anonymous = client().get(s.gw.url("/documents/1")).send().await;
    assert_eq!(anonymous.expect("request").status(), 401);
    let before_rs = s
        .issuer
        .service_token("reports-service", "reports-secret")
        .await;
    let before_es = s.issuer.service_token("reports-es", "reports-secret").await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(traffic(s.gw.url(""), s.issuer, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Staged: next keys published now, signing from 2 s + 1 s later.
    let staged = rotate(&s.issuer, "").await;
    assert_eq!(staged["immediate"], false);
    let next_kids: BTreeSet<String> = staged["rotated"]
        .as_array()
        .expect("rotated keys")
        .iter()
        .filter_map(|k| k["kid"].as_str().map(String::from))
        .collect();
    assert_eq!(next_kids.len(), 2, "one next key per algorithm: {staged}");
    // Until tokens signed by both next keys have gone through, and a little longer.
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let rs = s
            .issuer
            .service_token("reports-service", "reports-secret")
            .await;
        let es = s.issuer.service_token("reports-es", "reports-secret").await;
        let signing: BTreeSet<String> = [rs, es]
            .iter()
            .map(|t| {
                jwt_header(t)["kid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        if signing == next_kids {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the next keys never started signing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Immediate (a compromised key): fresh keys sign at once.
    let immediate = rotate(&s.issuer, "?immediate=true").await;
    assert_eq!(immediate["immediate"], true);
    tokio::time::sleep(Duration::from_secs(3)).await;

    stop.store(true, Ordering::Relaxed);
    let outcomes = load.await.expect("traffic task");
    let failures: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 200).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}\n--- gateway stderr ---\n{}",
        failures.len(),
        outcomes.len(),
        failures
            .iter()
            .take(5)
            .map(|o| format!(
                "{} {} → {}: {}",
                o.alg,
                o.kid,
                o.status,
                o.error.as_deref().unwrap_or_default()
            ))
            .collect::<Vec<_>>(),
        s.gw.stderr()
    );
    // The traffic really crossed both rotations: three keys per algorithm signed its tokens.
    let mut kids: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for o in &outcomes {
        kids.entry(&o.alg).or_default().insert(&o.kid);
    }
    for alg in ["RS256", "ES256"] {
        let seen = kids.get(alg).map_or(0, BTreeSet::len);
        assert!(
            seen >= 3,
            "{alg}: tokens from {seen} keys over {} requests: {kids:?}",
            outcomes.len()
        );
    }
    eprintln!("{} requests, all 200, keys seen: {kids:?}", outcomes.len());

    // Tokens signed before both rotations: their keys are retired but still published.
    for token in [&before_rs, &before_es] {
        let resp = get(&s.gw, token).await;
        assert_eq!(
            resp.status(),
            200,
            "{}",
            resp.text().await.unwrap_or_default()
        );
    }
    let metrics = s.gw.metrics().await;
    let fetched = sample(
        &metrics,
        "gatehouse_jwks_fetches_total",
        &[("issuer", "demo"), ("result", "updated")],
    );
    // The start, then one unknown-kid refetch per rotation at least: no scheduled refresh
    // falls within the test (30 s), so the new keys came through that path.
    assert!(
        fetched.is_some_and(|n| n >= 3.0),
        "JWKS fetches with new keys: {fetched:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_issuer_down_issued_tokens_keep_passing_on_the_last_good_keys() {
    // Refresh often, so the outage shows in failed fetches within the test.
    let mut s = start(
        "      refresh: {min_interval: 1s, max_interval: 2s, unknown_kid_cooldown: 1s, fetch_timeout: 1s}\n",
    )
    .await;
    let rs = s
        .issuer
        .service_token("reports-service", "reports-secret")
        .await;
    let es = s.issuer.service_token("reports-es", "reports-secret").await;
    for token in [&rs, &es] {
        assert_eq!(get(&s.gw, token).await.status(), 200);
    }
    let age = |text: &str| sample(text, "gatehouse_jwks_age_seconds", &[("issuer", "demo")]);
    let metrics = s.gw.metrics().await;
    assert!(
        age(&metrics).is_some(),
        "no key-set age for demo:\n{metrics}"
    );
    let errors_before = sample(
        &metrics,
        "gatehouse_jwks_fetches_total",
        &[("issuer", "demo"), ("result", "error")],
    )
    .unwrap_or(0.0);

    // The issuer goes away.
    s.issuer_process.signal(libc::SIGKILL);
    assert!(
        s.issuer_process.wait_exit(Duration::from_secs(10)),
        "the issuer process did not stop"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", s.issuer.port)).is_err(),
        "the issuer still listens"
    );
    let gw = &s.gw;
    eventually(
        "a failed JWKS fetch is counted",
        READY_TIMEOUT,
        || async move {
            let m = gw.metrics().await;
            sample(
                &m,
                "gatehouse_jwks_fetches_total",
                &[("issuer", "demo"), ("result", "error")],
            )
            .unwrap_or(0.0)
                > errors_before
        },
    )
    .await;
    let first = age(&gw.metrics().await).expect("key-set age");

    // Over several failed refreshes: tokens keep passing, the age grows, readiness holds.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for token in [&rs, &es] {
            let resp = get(gw, token).await;
            assert_eq!(
                resp.status(),
                200,
                "a token issued before the outage: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let later = age(&gw.metrics().await).expect("key-set age");
    assert!(
        later >= first + 3.0,
        "the key-set age should grow while no fetch succeeds: {first} then {later}"
    );
    let ready = client()
        .get(gw.admin("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "stale keys keep the gateway ready");
    let body: serde_json::Value = ready.json().await.expect("readyz JSON");
    assert_eq!(body["ready"], true, "{body}");
}
