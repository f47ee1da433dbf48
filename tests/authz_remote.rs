//! Authorization callouts in remote mode: the gateway asks a `gatehouse-authz` service over HTTP
//! (`authz.remote`), fails closed when it is down or slow, opens a circuit after repeated
//! failures and closes it once the service answers again, caches answers, and flushes them
//! when an answer carries a new policy-set version.
//!
//! The service is a second gateway process serving only `embedded: {authz}`
//! ([`PolicyService`]); it is killed and started again on the same ports. A "slow" service is a
//! listener in the test that accepts connections and never answers.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::issuer::{echoed, sample, upstream_header, wait_ready, Issuer};
use support::policy_service::{
    decisions_for, documents_with_view_roles, shipped, wait_access_line, wait_decision,
    PolicyService,
};
use support::{client, dead_port, error_body, eventually, metric_value, Echo, Gateway};

/// Authorization results by route and result. The contract named this
/// `gatehouse_authz_decisions_total{route,result}`, but gatehouse-authz, linked into the same
/// process (one registry), already registers that name with the labels `{policy,result}`; the
/// gateway counts its stage under this name instead.
const ROUTE_AUTHZ: &str = "gatehouse_route_authz_total";

const GATEWAY: &str = r#"{SERVER}
listeners:
  - address: 127.0.0.1:{HTTP}
admin:
  address: 127.0.0.1:{ADMIN}
embedded:
  identity: identity.yaml
@AUTH@
authz:
  remote:
    url: @URL@
    timeout: @TIMEOUT@
    circuit_failures: 3
    circuit_open_for: @OPEN_FOR@
    pool_size: 4
  cache: {max_entries: @CACHE@, allow_ttl: 60s, deny_ttl: 60s}
upstreams:
  echo:
    targets: ["@ECHO@"]
routes:
  - name: documents
    match: {path: "/users/{owner}/documents/{id}"}
    upstream: echo
    auth: {mode: required}
    authz:
      mode: remote
      resource: {type: document, id: "{id}", owner: "{owner}"}
  - name: documents-fail-open
    match: {path: "/fail-open/users/{owner}/documents/{id}"}
    upstream: echo
    auth: {mode: required}
    authz:
      mode: remote
      resource: {type: document, id: "{id}", owner: "{owner}"}
      fail_open: true
  - name: documents-500
    match: {path: "/status-500/users/{owner}/documents/{id}"}
    upstream: echo
    auth: {mode: required}
    authz:
      mode: remote
      resource: {type: document, id: "{id}", owner: "{owner}"}
      failure_status: 500
"#;

/// The remote settings a test varies.
struct Remote<'a> {
    url: &'a str,
    timeout: &'a str,
    open_for: &'a str,
    cache_entries: usize,
}

/// The gateway under test, with the issuer inside it and an echo upstream.
struct Stack {
    gw: Gateway,
    alice: String,
    bob: String,
    _echo: Echo,
}

impl Stack {
    async fn start(remote: Remote<'_>) -> Stack {
        let issuer = Issuer::new();
        let echo = Echo::start("echo");
        let config = GATEWAY
            .replace("@AUTH@", &issuer.auth_section("", ""))
            .replace("@URL@", remote.url)
            .replace("@TIMEOUT@", remote.timeout)
            .replace("@OPEN_FOR@", remote.open_for)
            .replace("@CACHE@", &remote.cache_entries.to_string())
            .replace("@ECHO@", &echo.addr());
        let gw = Gateway::start(&[
            ("gatehouse.yaml", &config),
            ("identity.yaml", &issuer.identity_yaml("")),
        ]);
        issuer.wait_serving().await;
        wait_ready(&gw).await;
        let scope = "openid documents:read";
        let alice = issuer
            .password_token("alice", "alice-password", scope)
            .await;
        let bob = issuer.password_token("bob", "bob-password", scope).await;
        Stack {
            gw,
            alice,
            bob,
            _echo: echo,
        }
    }

    async fn send(&self, method: &str, path: &str, token: &str, id: &str) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        client()
            .request(method, self.gw.url(path))
            .bearer_auth(token)
            .header("X-Request-Id", id)
            .send()
            .await
            .expect("request through the gateway")
    }

    /// `send`, timed.
    async fn timed(&self, path: &str, id: &str) -> (reqwest::Response, Duration) {
        let start = Instant::now();
        let resp = self.send("PUT", path, &self.alice, id).await;
        (resp, start.elapsed())
    }

    async fn circuit_state(&self) -> f64 {
        metric_value(&self.gw.metrics().await, "gatehouse_authz_circuit_state")
    }

    async fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sample(&self.gw.metrics().await, name, labels).unwrap_or(0.0)
    }

    async fn errors(&self, route: &str) -> f64 {
        self.count(ROUTE_AUTHZ, &[("route", route), ("result", "error")])
            .await
    }
}

/// The derived roles and documents policies as shipped, without working_hours.yaml: no
/// condition reads the context, so cached answers do not depend on the second they were asked in.
fn documents_policies() -> Vec<(&'static str, String)> {
    vec![
        ("derived_roles.yaml", shipped("derived_roles.yaml")),
        ("documents.yaml", shipped("documents.yaml")),
    ]
}

fn decision_id(echo: &Value) -> String {
    let ids = upstream_header(echo, "x-gatehouse-decision-id");
    assert_eq!(ids.len(), 1, "one decision id upstream: {ids:?}");
    ids.into_iter().next().expect("a decision id")
}

/// The gateway's answer when the policy service cannot decide.
async fn unavailable(resp: reqwest::Response, status: u16) {
    error_body(resp, status, "authz_unavailable").await;
}

/// Allow and deny through the service, a cache hit after the first call, and a flush when an
/// answer carries a new policy-set version after the service reloaded.
#[tokio::test(flavor = "multi_thread")]
async fn the_remote_service_decides_answers_are_cached_and_a_new_policy_version_flushes_them() {
    let service = PolicyService::start(&documents_policies()).await;
    let s = Stack::start(Remote {
        url: &service.url(),
        timeout: "2s",
        open_for: "5s",
        cache_entries: 1000,
    })
    .await;
    let log = service.decision_log();

    // alice edits her own document: the service decided, the upstream has its decision id, and
    // the service's decision log has the gateway's request id and what the gateway sent.
    let echo = echoed(
        s.send(
            "PUT",
            "/users/alice/documents/7",
            &s.alice,
            "remote-alice-1",
        )
        .await,
    )
    .await;
    let first = decision_id(&echo);
    let line = wait_decision(&log, "remote-alice-1").await;
    assert_eq!(line["decision_id"], first.as_str(), "{line}");
    assert_eq!(line["result"], "allow", "{line}");
    assert_eq!(line["rule"], "owner-or-admin-edits", "{line}");
    let input = &line["input"];
    assert_eq!(input["action"], "edit", "{line}");
    assert_eq!(input["principal"]["sub"], "alice", "{line}");
    assert_eq!(input["resource"]["owner"], "alice", "{line}");
    assert_eq!(input["context"]["ip"], "127.0.0.1", "{line}");
    assert_eq!(input["context"]["method"], "PUT", "{line}");
    assert_eq!(input["context"]["route"], "documents", "{line}");
    assert!(input["context"]["time"].is_string(), "{line}");
    let access = wait_access_line(&s.gw, "remote-alice-1").await;
    assert_eq!(access["authz"], "allow", "{access}");
    assert_eq!(access["authz_cached"], false, "{access}");
    assert_eq!(access["decision_id"], first.as_str(), "{access}");

    // The same request again: a cache hit, not a call. (The contract: "cache hit after the
    // first call" — the first answer is cached, though it is also the one that tells the
    // gateway the set's version and the context fields its conditions read.)
    let hits = s
        .count("gatehouse_authz_cache_total", &[("result", "hit")])
        .await;
    let callouts = s
        .count(
            "gatehouse_authz_callout_seconds_count",
            &[("mode", "remote")],
        )
        .await;
    assert!(callouts >= 1.0, "the first call was timed");
    let echo = echoed(
        s.send(
            "PUT",
            "/users/alice/documents/7",
            &s.alice,
            "remote-alice-2",
        )
        .await,
    )
    .await;
    assert_eq!(
        decision_id(&echo),
        first,
        "a cached answer is the same decision"
    );
    assert_eq!(
        s.count("gatehouse_authz_cache_total", &[("result", "hit")])
            .await,
        hits + 1.0
    );
    assert_eq!(
        s.count(
            "gatehouse_authz_callout_seconds_count",
            &[("mode", "remote")]
        )
        .await,
        callouts,
        "a hit is not a callout"
    );
    let access = wait_access_line(&s.gw, "remote-alice-2").await;
    assert_eq!(access["authz_cached"], true, "{access}");

    // bob (viewer) may not view alice's document: a deny, cached too.
    for id in ["remote-bob-1", "remote-bob-2"] {
        let resp = s.send("GET", "/users/alice/documents/7", &s.bob, id).await;
        let body = error_body(resp, 403, "forbidden").await;
        assert_eq!(body["request_id"], id, "{body}");
    }
    // A barrier: the service's log writer keeps order.
    echoed(
        s.send(
            "GET",
            "/users/alice/documents/9",
            &s.alice,
            "remote-barrier",
        )
        .await,
    )
    .await;
    wait_decision(&log, "remote-barrier").await;
    assert_eq!(decisions_for(&log, "remote-bob-1").len(), 1);
    for id in ["remote-alice-2", "remote-bob-2"] {
        assert!(
            decisions_for(&log, id).is_empty(),
            "{id} reached the service"
        );
    }

    // The service reloads policies under which viewers read any document. The gateway learns
    // the new version from the next answer it gets (a miss), and drops every cached answer.
    let old = service.ports.policy_version().await.expect("version");
    service.write_policy(
        "documents.yaml",
        &documents_with_view_roles("[editor, admin, viewer]"),
    );
    service.ports.wait_version_change(&old).await;
    let flushes = s.count_total("gatehouse_authz_cache_flushes_total").await;
    let echo = echoed(
        s.send(
            "GET",
            "/users/alice/documents/8",
            &s.bob,
            "remote-bob-other",
        )
        .await,
    )
    .await;
    let line = wait_decision(&log, "remote-bob-other").await;
    assert_eq!(line["decision_id"], decision_id(&echo).as_str(), "{line}");
    let flushed = s.count_total("gatehouse_authz_cache_flushes_total").await;
    assert!(
        flushed >= flushes + 1.0,
        "an answer with a new version flushes the cache ({flushes} → {flushed})"
    );
    // bob's cached deny (deny_ttl 60s) is gone: asked again, and allowed.
    let echo = echoed(
        s.send("GET", "/users/alice/documents/7", &s.bob, "remote-bob-3")
            .await,
    )
    .await;
    let line = wait_decision(&log, "remote-bob-3").await;
    assert_eq!(line["decision_id"], decision_id(&echo).as_str(), "{line}");
    assert_eq!(line["result"], "allow", "{line}");
}

impl Stack {
    /// The sum of every series of `name` (an unlabelled counter is one series).
    async fn count_total(&self, name: &str) -> f64 {
        self.gw
            .metrics()
            .await
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                (series == name || series.starts_with(&format!("{name}{{")))
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum()
    }
}

/// The service is killed: requests fail closed (503 authz_unavailable, counted); after
/// `circuit_failures` failures the circuit opens and stays open for `circuit_open_for` even
/// though the service is back; then one trial call closes it and requests pass again.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_service_fails_closed_opens_the_circuit_and_a_trial_call_closes_it() {
    const OPEN_FOR: Duration = Duration::from_secs(3);
    let mut service = PolicyService::start(&documents_policies()).await;
    let s = Stack::start(Remote {
        url: &service.url(),
        timeout: "1s",
        open_for: "3s",
        // Off: a cached answer would hide the outage.
        cache_entries: 0,
    })
    .await;
    let path = "/users/alice/documents/7";
    echoed(s.send("PUT", path, &s.alice, "dead-before").await).await;
    assert_eq!(
        s.circuit_state().await,
        0.0,
        "closed while the service answers"
    );

    service.kill();
    for i in 0..3 {
        let (resp, _) = s.timed(path, &format!("dead-{i}")).await;
        unavailable(resp, 503).await;
    }
    let opened = Instant::now();
    assert_eq!(s.errors("documents").await, 3.0);
    assert_eq!(s.circuit_state().await, 1.0, "open after 3 failures");
    let access = wait_access_line(&s.gw, "dead-0").await;
    assert_eq!(access["authz"], "error", "{access}");
    assert_eq!(access["status"], 503, "{access}");
    // Open: failed at once.
    let (resp, took) = s.timed(path, "dead-open").await;
    unavailable(resp, 503).await;
    assert!(
        took < Duration::from_millis(500),
        "took {took:?} while open"
    );
    assert_eq!(s.errors("documents").await, 4.0);

    // The service comes back while the circuit is open: no call reaches it until
    // circuit_open_for has passed since the circuit opened.
    service.start_again().await;
    let log = service.decision_log();
    if opened.elapsed() + Duration::from_millis(300) < OPEN_FOR {
        let (resp, _) = s.timed(path, "dead-still-open").await;
        unavailable(resp, 503).await;
    } else {
        eprintln!(
            "the service took {:?} to come back: the open window was not observed with it up",
            opened.elapsed()
        );
    }
    let mut attempt = 0;
    let recovered_after = loop {
        attempt += 1;
        let id = format!("dead-recover-{attempt}");
        let (resp, _) = s.timed(path, &id).await;
        if resp.status() == 200 {
            let echo = echoed(resp).await;
            let line = wait_decision(&log, &id).await;
            assert_eq!(line["decision_id"], decision_id(&echo).as_str(), "{line}");
            break opened.elapsed();
        }
        unavailable(resp, 503).await;
        assert!(
            opened.elapsed() < OPEN_FOR + support::READY_TIMEOUT,
            "the circuit never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        recovered_after + Duration::from_millis(100) >= OPEN_FOR,
        "a call passed {recovered_after:?} after the circuit opened (open for {OPEN_FOR:?})"
    );
    assert_eq!(s.circuit_state().await, 0.0, "closed by the trial call");
    // Nothing was asked while the circuit was open.
    assert!(decisions_for(&log, "dead-still-open").is_empty());
    echoed(s.send("PUT", path, &s.alice, "dead-after").await).await;
}

/// A listener that accepts connections and never answers; counts what it accepted.
struct SilentService {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

async fn silent_service() -> SilentService {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream); // never read, never answered, never closed
        }
    });
    SilentService { port, accepted }
}

/// A service that accepts and never answers: each call fails after `timeout` (503), and once
/// the circuit is open calls fail at once without connecting.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_service_times_out_and_the_open_circuit_fails_fast() {
    const TIMEOUT: Duration = Duration::from_millis(600);
    let silent = silent_service().await;
    let s = Stack::start(Remote {
        url: &format!("http://127.0.0.1:{}", silent.port),
        timeout: "600ms",
        open_for: "60s",
        cache_entries: 1000,
    })
    .await;
    let path = "/users/alice/documents/7";
    for i in 0..3 {
        let (resp, took) = s.timed(path, &format!("slow-{i}")).await;
        unavailable(resp, 503).await;
        assert!(
            took >= TIMEOUT - Duration::from_millis(50),
            "failed after {took:?}, before the {TIMEOUT:?} timeout"
        );
        assert!(
            took < TIMEOUT + Duration::from_secs(3),
            "failed after {took:?}, long after the {TIMEOUT:?} timeout"
        );
    }
    assert!(silent.accepted.load(Ordering::SeqCst) >= 1, "it was called");
    assert_eq!(s.errors("documents").await, 3.0);
    assert_eq!(s.circuit_state().await, 1.0, "open after 3 timeouts");

    let connections = silent.accepted.load(Ordering::SeqCst);
    for i in 0..3 {
        let (resp, took) = s.timed(path, &format!("slow-open-{i}")).await;
        unavailable(resp, 503).await;
        assert!(
            took < TIMEOUT / 2,
            "took {took:?} with the circuit open: not failing fast"
        );
    }
    // (A call would have waited for the timeout, so these never connected.)
    assert_eq!(silent.accepted.load(Ordering::SeqCst), connections);
    assert_eq!(s.errors("documents").await, 6.0);
}

/// `fail_open: true` lets requests through while the service is unreachable, counted and
/// logged each time; other routes keep failing closed, with their own `failure_status`.
#[tokio::test(flavor = "multi_thread")]
async fn fail_open_forwards_while_the_service_is_down_and_counts_every_use() {
    let dead = dead_port();
    let s = Stack::start(Remote {
        url: &format!("http://{}", dead.addr()),
        timeout: "1s",
        open_for: "60s",
        cache_entries: 1000,
    })
    .await;

    for i in 0..5 {
        let id = format!("open-{i}");
        let resp = s
            .send("PUT", "/fail-open/users/bob/documents/3", &s.bob, &id)
            .await;
        let echo = echoed(resp).await;
        assert_eq!(echo["path"], "/fail-open/users/bob/documents/3");
        let access = wait_access_line(&s.gw, &id).await;
        assert_eq!(access["authz"], "fail_open", "{access}");
    }
    let metrics = s.gw.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "gatehouse_authz_fail_open_total",
            &[("route", "documents-fail-open")]
        ),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            ROUTE_AUTHZ,
            &[("route", "documents-fail-open"), ("result", "fail_open")]
        ),
        Some(5.0),
        "{metrics}"
    );
    // A WARN line per use, naming the route, never the token.
    let gw = &s.gw;
    eventually("five fail-open warnings", support::READY_TIMEOUT, || {
        let stderr = gw.stderr();
        async move {
            stderr
                .lines()
                .filter(|l| l.contains("WARN") && l.contains("documents-fail-open"))
                .count()
                >= 5
        }
    })
    .await;
    let signature = s.bob.rsplit('.').next().expect("a signature");
    assert!(
        !s.gw.stderr().contains(signature),
        "a token reached the log"
    );

    // The same service, another route: fail closed, with that route's status.
    let resp = s
        .send(
            "PUT",
            "/status-500/users/bob/documents/3",
            &s.bob,
            "closed-500",
        )
        .await;
    unavailable(resp, 500).await;
    let resp = s
        .send("PUT", "/users/bob/documents/3", &s.bob, "closed-503")
        .await;
    unavailable(resp, 503).await;
    assert_eq!(
        s.count(
            "gatehouse_authz_fail_open_total",
            &[("route", "documents-fail-open")]
        )
        .await,
        5.0
    );
    // Failures are not cached: the fail-open route still counts each use.
    echoed(
        s.send(
            "PUT",
            "/fail-open/users/bob/documents/3",
            &s.bob,
            "open-again",
        )
        .await,
    )
    .await;
    assert_eq!(
        s.count(
            "gatehouse_authz_fail_open_total",
            &[("route", "documents-fail-open")]
        )
        .await,
        6.0
    );
    drop(dead);
}
