//! Authorization callouts end to end, in embedded mode: the gateway asks the policy service
//! linked into its own process (`embedded: {authz}`) whether each request may pass, with the
//! shipped policies (conf/policies) copied into the test's directory, tokens from the real
//! issuer (also embedded), and the echo upstream.
//!
//! Given alice (roles admin, editor; department engineering) and bob (role viewer; sales), and
//! routes that name documents as `/users/{owner}/documents/{id}`, the shipped policies say:
//! owners view, edit and delete their documents; editors and admins view any; admins edit and
//! delete any; nobody creates; a viewer reads nothing but their own documents. Requests come
//! from loopback, which working_hours.yaml counts as the office network, so the answers do not
//! depend on the hour the test runs at.

mod support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::issuer::{echoed, sample, upstream_header, wait_ready, Issuer};
use support::policy_service::{
    decisions_for, documents_with_view_roles, shipped, shipped_files, wait_access_line,
    wait_decision, wait_metric, write_authz, AuthzPorts,
};
use support::{client, error_body, Echo, Gateway};

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
  authz: authz.yaml
@AUTH@
authz:
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
      mode: embedded
      resource:
        type: document
        id: "{id}"
        owner: "{owner}"
        attributes:
          tenant: "header:X-Tenant"
          revision: "query:rev"
          department: "claim:department"
          kind: report
      principal_attributes: [department]
  - name: documents-explained
    match: {path: "/explained/users/{owner}/documents/{id}"}
    upstream: echo
    auth: {mode: required}
    authz:
      resource: {type: document, id: "{id}", owner: "{owner}"}
      expose_reason: true
  - name: documents-open
    match: {path: "/open/users/{owner}/documents/{id}"}
    upstream: echo
    auth: {mode: optional}
    authz:
      resource: {type: document, id: "{id}", owner: "{owner}"}
"#;

/// One gateway with the issuer and the policy service inside, and an echo upstream.
struct Stack {
    gw: Gateway,
    authz: AuthzPorts,
    alice: String,
    bob: String,
    _echo: Echo,
}

impl Stack {
    /// `policies`: the policy directory's files; `cache_entries`: 0 turns the decision cache off.
    async fn start(policies: &[(&str, String)], cache_entries: usize) -> Stack {
        let issuer = Issuer::new();
        let authz = AuthzPorts::new();
        let echo = Echo::start("echo");
        let dir = tempfile::tempdir().expect("temp dir");
        write_authz(dir.path(), authz, policies);
        let config = GATEWAY
            .replace("@AUTH@", &issuer.auth_section("", ""))
            .replace("@CACHE@", &cache_entries.to_string())
            .replace("@ECHO@", &echo.addr());
        let gw = Gateway::start_prepared(
            dir,
            &[
                ("gatehouse.yaml", &config),
                ("identity.yaml", &issuer.identity_yaml("")),
            ],
        );
        issuer.wait_serving().await;
        authz.wait_serving().await;
        wait_ready(&gw).await;
        let scope = "openid documents:read";
        let alice = issuer
            .password_token("alice", "alice-password", scope)
            .await;
        let bob = issuer.password_token("bob", "bob-password", scope).await;
        Stack {
            gw,
            authz,
            alice,
            bob,
            _echo: echo,
        }
    }

    fn decision_log(&self) -> PathBuf {
        self.gw.path("decisions.log")
    }

    /// `method path` as the holder of `token` (None: anonymous), with `X-Request-Id: id`.
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        id: &str,
    ) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = client()
            .request(method, self.gw.url(path))
            .header("X-Request-Id", id);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request through the gateway")
    }

    async fn metrics(&self) -> String {
        self.gw.metrics().await
    }
}

/// The one decision id the upstream received.
fn decision_id(echo: &Value) -> String {
    let ids = upstream_header(echo, "x-gatehouse-decision-id");
    assert_eq!(ids.len(), 1, "one decision id upstream: {ids:?}");
    ids.into_iter().next().expect("a decision id")
}

/// A 403 from the policy decision; returns its body.
async fn forbidden(resp: reqwest::Response, request_id: &str) -> Value {
    let body = error_body(resp, 403, "forbidden").await;
    assert_eq!(body["request_id"], request_id, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

fn count(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(metrics, name, labels).unwrap_or(0.0)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Seconds since the epoch of an RFC 3339 time with whole seconds (`...:SSZ` or `...:SS+01:00`).
fn whole_seconds(time: &str) -> u64 {
    assert!(
        time.len() >= 20 && !time.contains('.'),
        "not an RFC 3339 time in whole seconds: {time:?}"
    );
    let (local, offset) = time.split_at(19);
    let local = humantime::parse_rfc3339(&format!("{local}Z"))
        .unwrap_or_else(|e| panic!("{time}: {e}"))
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let offset_secs = match offset {
        "Z" => 0,
        _ => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (h, m) = offset[1..].split_once(':').expect("an offset ±HH:MM");
            sign * (h.parse::<i64>().expect("hours") * 3600 + m.parse::<i64>().expect("min") * 60)
        }
    };
    (local - offset_secs) as u64
}

/// The seed scenario of issue #12 with the shipped policies, the decision cache off so that
/// every request is a decision of its own.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_policies_decide_the_seed_scenario_end_to_end() {
    let s = Stack::start(&shipped_files(), 0).await;
    let before = unix_now();

    // alice owns document 7 and edits it: forwarded, with the decision's id.
    let resp = client()
        .put(s.gw.url("/users/alice/documents/7?rev=3"))
        .bearer_auth(&s.alice)
        .header("X-Request-Id", "seed-alice-edits-7")
        .header("X-Tenant", "acme")
        // A client's own decision id never reaches the upstream.
        .header("X-Gatehouse-Decision-Id", "forged-by-client")
        .send()
        .await
        .expect("request");
    let echo = echoed(resp).await;
    assert_eq!(echo["method"], "PUT");
    let alice_edit = decision_id(&echo);
    assert_ne!(alice_edit, "forged-by-client");

    // The decision log has the line, with the gateway's request id and the id the upstream got.
    let line = wait_decision(&s.decision_log(), "seed-alice-edits-7").await;
    assert_eq!(line["decision_id"], alice_edit.as_str(), "{line}");
    assert_eq!(line["result"], "allow", "{line}");
    assert_eq!(line["policy_id"], "documents", "{line}");
    assert_eq!(line["rule"], "owner-or-admin-edits", "{line}");
    // What the gateway asked: principal from the verified token, resource from the route,
    // action from the method, context from the request.
    let input = &line["input"];
    assert_eq!(input["action"], "edit", "{line}");
    assert_eq!(input["principal"]["sub"], "alice", "{line}");
    assert_eq!(
        input["principal"]["roles"],
        serde_json::json!(["admin", "editor"]),
        "{line}"
    );
    assert_eq!(
        input["principal"]["attributes"]["department"], "engineering",
        "{line}"
    );
    assert_eq!(input["resource"]["type"], "document", "{line}");
    assert_eq!(input["resource"]["id"], "7", "{line}");
    assert_eq!(input["resource"]["owner"], "alice", "{line}");
    assert_eq!(
        input["resource"]["attributes"],
        serde_json::json!({
            "tenant": "acme", "revision": "3", "department": "engineering", "kind": "report"
        }),
        "{line}"
    );
    let context = &input["context"];
    assert_eq!(context["ip"], "127.0.0.1", "{line}");
    assert_eq!(context["method"], "PUT", "{line}");
    assert!(
        context["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/users/alice/documents/7")),
        "{line}"
    );
    assert_eq!(context["route"], "documents", "{line}");
    let asked_at = whole_seconds(context["time"].as_str().expect("context.time"));
    assert!(
        (before.saturating_sub(1)..=unix_now() + 1).contains(&asked_at),
        "context.time {asked_at} is not now ({before}): {line}"
    );

    // The access log line carries the decision too.
    let access = wait_access_line(&s.gw, "seed-alice-edits-7").await;
    assert_eq!(access["decision_id"], alice_edit.as_str(), "{access}");
    assert_eq!(access["authz"], "allow", "{access}");
    assert_eq!(access["authz_cached"], false, "{access}");

    // bob (viewer) may not edit alice's document: 403, neither policy nor rule named (the
    // route does not expose reasons).
    let resp = s
        .send(
            "PUT",
            "/users/alice/documents/7",
            Some(&s.bob),
            "seed-bob-edits-7",
        )
        .await;
    let body = forbidden(resp, "seed-bob-edits-7").await;
    assert!(body.get("policy").is_none(), "{body}");
    assert!(body.get("rule").is_none(), "{body}");
    let line = wait_decision(&s.decision_log(), "seed-bob-edits-7").await;
    assert_eq!(line["result"], "deny", "{line}");
    assert_eq!(line["input"]["principal"]["sub"], "bob", "{line}");
    assert_eq!(line["input"]["action"], "edit", "{line}");
    let access = wait_access_line(&s.gw, "seed-bob-edits-7").await;
    assert_eq!(access["authz"], "deny", "{access}");
    assert_eq!(access["decision_id"], line["decision_id"], "{access}");
    assert_eq!(access["status"], 403, "{access}");

    // No rule names a viewer editing someone else's document: nothing decided it, so even the
    // route that exposes reasons has no policy or rule to name.
    let resp = s
        .send(
            "PUT",
            "/explained/users/alice/documents/7",
            Some(&s.bob),
            "seed-bob-edits-7-explained",
        )
        .await;
    let body = forbidden(resp, "seed-bob-edits-7-explained").await;
    assert!(
        body.get("rule").is_none_or(Value::is_null),
        "no rule decided: {body}"
    );

    // alice is an admin: she edits and deletes bob's document too, and views it.
    for (method, id, rule) in [
        ("PUT", "seed-alice-edits-bobs", "owner-or-admin-edits"),
        ("DELETE", "seed-alice-deletes-bobs", "owner-or-admin-edits"),
        ("GET", "seed-alice-views-bobs", "editors-and-owners-view"),
    ] {
        let resp = s
            .send(method, "/users/bob/documents/3", Some(&s.alice), id)
            .await;
        let echo = echoed(resp).await;
        let line = wait_decision(&s.decision_log(), id).await;
        assert_eq!(line["decision_id"], decision_id(&echo).as_str(), "{line}");
        assert_eq!(line["rule"], rule, "{line}");
    }

    // No policy lets anyone create a document (POST → create), not even an admin owner.
    let resp = s
        .send(
            "POST",
            "/users/alice/documents/7",
            Some(&s.alice),
            "seed-alice-creates",
        )
        .await;
    forbidden(resp, "seed-alice-creates").await;
    let line = wait_decision(&s.decision_log(), "seed-alice-creates").await;
    assert_eq!(line["input"]["action"], "create", "{line}");

    // A viewer: "viewer" is in no rule's roles, so bob reads only his own documents (as owner).
    let resp = s
        .send(
            "GET",
            "/users/alice/documents/7",
            Some(&s.bob),
            "seed-bob-views-7",
        )
        .await;
    forbidden(resp, "seed-bob-views-7").await;
    let resp = s
        .send(
            "GET",
            "/users/bob/documents/3",
            Some(&s.bob),
            "seed-bob-views-own",
        )
        .await;
    let echo = echoed(resp).await;
    let line = wait_decision(&s.decision_log(), "seed-bob-views-own").await;
    assert_eq!(line["decision_id"], decision_id(&echo).as_str(), "{line}");
    assert_eq!(line["rule"], "editors-and-owners-view", "{line}");

    // An anonymous request on an optional route is asked about as `anonymous`, without roles.
    let resp = s
        .send(
            "GET",
            "/open/users/alice/documents/7",
            None,
            "seed-anonymous",
        )
        .await;
    forbidden(resp, "seed-anonymous").await;
    let line = wait_decision(&s.decision_log(), "seed-anonymous").await;
    assert_eq!(line["input"]["principal"]["sub"], "anonymous", "{line}");
    assert_eq!(
        line["input"]["principal"]["roles"],
        serde_json::json!([]),
        "{line}"
    );
    assert_eq!(
        line["input"]["context"]["route"], "documents-open",
        "{line}"
    );

    // Decisions are counted by route and result; every one was an embedded callout (no cache).
    let metrics = s.metrics().await;
    let decisions = |route, result| {
        count(
            &metrics,
            ROUTE_AUTHZ,
            &[("route", route), ("result", result)],
        )
    };
    assert_eq!(decisions("documents", "allow"), 5.0, "{metrics}");
    assert_eq!(decisions("documents", "deny"), 3.0, "{metrics}");
    assert_eq!(decisions("documents-explained", "deny"), 1.0, "{metrics}");
    assert_eq!(decisions("documents-open", "deny"), 1.0, "{metrics}");
    assert_eq!(decisions("documents", "error"), 0.0, "{metrics}");
    assert_eq!(
        count(
            &metrics,
            "gatehouse_authz_callout_seconds_count",
            &[("mode", "embedded")]
        ),
        10.0,
        "{metrics}"
    );
    // With the cache off nothing is looked up in it.
    assert_eq!(
        count(
            &metrics,
            "gatehouse_authz_cache_total",
            &[("result", "hit")]
        ),
        0.0,
        "{metrics}"
    );
}

/// `expose_reason: true` names the deciding policy and rule in the 403; without it neither
/// appears. The shipped policies deny bob's edit by no rule at all, so this test adds an
/// explicit deny rule to documents.yaml.
#[tokio::test(flavor = "multi_thread")]
async fn a_403_names_the_deciding_policy_and_rule_only_where_the_route_allows_it() {
    let documents = format!(
        "{}\n    - name: viewers-never-change\n      actions: [edit, delete]\n      effect: deny\n      roles: [viewer]\n",
        shipped("documents.yaml").trim_end()
    );
    let mut files = shipped_files();
    files.retain(|(n, _)| *n != "documents.yaml");
    files.push(("documents.yaml", documents));
    let s = Stack::start(&files, 0).await;

    let resp = s
        .send(
            "PUT",
            "/explained/users/alice/documents/7",
            Some(&s.bob),
            "explained-bob-edits",
        )
        .await;
    let body = forbidden(resp, "explained-bob-edits").await;
    assert_eq!(body["policy"], "documents", "{body}");
    assert_eq!(body["rule"], "viewers-never-change", "{body}");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("documents") && message.contains("viewers-never-change"),
        "the message names policy and rule: {message}"
    );

    let resp = s
        .send(
            "PUT",
            "/users/alice/documents/7",
            Some(&s.bob),
            "hidden-bob-edits",
        )
        .await;
    let body = forbidden(resp, "hidden-bob-edits").await;
    assert!(body.get("policy").is_none(), "{body}");
    assert!(body.get("rule").is_none(), "{body}");
    assert!(
        !body.to_string().contains("viewers-never-change"),
        "the rule leaked: {body}"
    );
    // Both were decided by that rule, as the decision log says.
    for id in ["explained-bob-edits", "hidden-bob-edits"] {
        let line = wait_decision(&s.decision_log(), id).await;
        assert_eq!(line["rule"], "viewers-never-change", "{line}");
    }
}

/// The decision cache: the same question twice is one decision; a policy reload that changes
/// the answer flushes it. Without working_hours.yaml the set's conditions read no context
/// field, so the time of a request is not part of the key and the test need not race the clock.
#[tokio::test(flavor = "multi_thread")]
async fn a_cached_decision_is_reused_and_a_policy_reload_flushes_the_cache() {
    let files: Vec<_> = shipped_files()
        .into_iter()
        .filter(|(n, _)| *n != "working_hours.yaml")
        .collect();
    let s = Stack::start(&files, 1000).await;
    let log = s.decision_log();
    let hits = |m: &str| count(m, "gatehouse_authz_cache_total", &[("result", "hit")]);
    let misses = |m: &str| count(m, "gatehouse_authz_cache_total", &[("result", "miss")]);
    let callouts = |m: &str| {
        count(
            m,
            "gatehouse_authz_callout_seconds_count",
            &[("mode", "embedded")],
        )
    };

    // alice views her document twice: one decision, used twice.
    let first = echoed(
        s.send("GET", "/users/alice/documents/7", Some(&s.alice), "cache-1")
            .await,
    )
    .await;
    let m1 = s.metrics().await;
    let second = echoed(
        s.send("GET", "/users/alice/documents/7", Some(&s.alice), "cache-2")
            .await,
    )
    .await;
    let m2 = s.metrics().await;
    assert_eq!(hits(&m2), hits(&m1) + 1.0, "{m2}");
    assert_eq!(misses(&m2), misses(&m1), "{m2}");
    assert_eq!(callouts(&m2), callouts(&m1), "a hit is not a callout: {m2}");
    assert_eq!(
        decision_id(&second),
        decision_id(&first),
        "a cached answer is the same decision"
    );
    let access = wait_access_line(&s.gw, "cache-2").await;
    assert_eq!(access["authz"], "allow", "{access}");
    assert_eq!(access["authz_cached"], true, "{access}");
    assert_eq!(
        access["decision_id"],
        decision_id(&first).as_str(),
        "{access}"
    );
    let access = wait_access_line(&s.gw, "cache-1").await;
    assert_eq!(access["authz_cached"], false, "{access}");
    // The context is not part of the key when no condition reads it: another client address
    // asks the same question.
    let from_127_0_0_2 = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let third = echoed(
        from_127_0_0_2
            .get(s.gw.url("/users/alice/documents/7"))
            .bearer_auth(&s.alice)
            .header("X-Request-Id", "cache-3")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(decision_id(&third), decision_id(&first));

    // bob (viewer) may not view it: a cached deny.
    for id in ["cache-bob-1", "cache-bob-2"] {
        let resp = s
            .send("GET", "/users/alice/documents/7", Some(&s.bob), id)
            .await;
        forbidden(resp, id).await;
    }
    // A later decision is a barrier: the log writer keeps order, so once its line is there,
    // any line of the requests above would be too.
    echoed(
        s.send(
            "GET",
            "/users/alice/documents/8",
            Some(&s.alice),
            "cache-barrier",
        )
        .await,
    )
    .await;
    wait_decision(&log, "cache-barrier").await;
    assert_eq!(decisions_for(&log, "cache-1").len(), 1);
    for id in ["cache-2", "cache-3", "cache-bob-2"] {
        assert!(decisions_for(&log, id).is_empty(), "{id} was decided again");
    }
    assert_eq!(decisions_for(&log, "cache-bob-1").len(), 1);

    // Viewers, and only viewers, may view now: bob's answer turns to allow, alice's to deny
    // (she is admin and editor, and owners no longer view) — both within their TTLs.
    let old = s.authz.policy_version().await.expect("a policy version");
    let flushes = count(
        &s.metrics().await,
        "gatehouse_authz_cache_flushes_total",
        &[],
    );
    support::write(
        &s.gw.path("policies"),
        "documents.yaml",
        &documents_with_view_roles("[viewer]").replace(
            "      derived_roles: [owner]\n    - name: owner-or-admin-edits",
            "    - name: owner-or-admin-edits",
        ),
    );
    s.authz.wait_version_change(&old).await;
    wait_metric(
        &s.gw,
        "gatehouse_authz_policy_reloads_total",
        &[("result", "success")],
        1.0,
    )
    .await;

    let echo = echoed(
        s.send(
            "GET",
            "/users/alice/documents/7",
            Some(&s.bob),
            "cache-bob-after",
        )
        .await,
    )
    .await;
    let line = wait_decision(&log, "cache-bob-after").await;
    assert_eq!(line["decision_id"], decision_id(&echo).as_str(), "{line}");
    let resp = s
        .send(
            "GET",
            "/users/alice/documents/7",
            Some(&s.alice),
            "cache-alice-after",
        )
        .await;
    forbidden(resp, "cache-alice-after").await;
    wait_decision(&log, "cache-alice-after").await;
    let metrics = s.metrics().await;
    let flushed = metric_total(&metrics, "gatehouse_authz_cache_flushes_total");
    assert!(flushed >= flushes + 1.0, "{flushed} flushes: {metrics}");
}

/// The total of an unlabelled counter (`name value`), or of all its series.
fn metric_total(metrics: &str, name: &str) -> f64 {
    metrics
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

/// With working_hours.yaml the set reads `context.ip` and `context.time`: a decision is reused
/// only for the same client address within the same second, never across a time window or an
/// address range the policies test.
#[tokio::test(flavor = "multi_thread")]
async fn a_decision_that_depends_on_time_and_address_is_cached_per_second_and_per_ip() {
    let s = Stack::start(&shipped_files(), 1000).await;
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
            .expect("client")
    };
    let (one, two) = (from(1), from(2));
    let ask = |c: &reqwest::Client, id: &str| {
        c.get(s.gw.url("/users/alice/documents/7"))
            .bearer_auth(&s.alice)
            .header("X-Request-Id", id)
            .send()
    };
    let hits = |m: &str| count(m, "gatehouse_authz_cache_total", &[("result", "hit")]);

    // Time is the point here: start right after a second begins, so that a few requests fit
    // in it. A loaded machine may still cross into the next second; then try again.
    let mut same_second_hit = false;
    for attempt in 0..5 {
        wait_for_next_second().await;
        let start = unix_now();
        let h0 = hits(&s.metrics().await);
        let a = decision_id(&echoed(ask(&one, &format!("tw-{attempt}-a")).await.unwrap()).await);
        let b = decision_id(&echoed(ask(&two, &format!("tw-{attempt}-b")).await.unwrap()).await);
        let c = decision_id(&echoed(ask(&one, &format!("tw-{attempt}-c")).await.unwrap()).await);
        let h1 = hits(&s.metrics().await);
        if unix_now() != start {
            continue; // crossed a second: the hit below is not guaranteed
        }
        // Another address is another key, even within the same second.
        assert_ne!(a, b, "127.0.0.2 got 127.0.0.1's decision");
        assert_eq!(c, a, "the same address within the same second is a hit");
        assert_eq!(h1, h0 + 1.0);
        same_second_hit = true;
        break;
    }
    assert!(
        same_second_hit,
        "never managed three requests within a second"
    );

    // The next second is another key.
    let a = decision_id(&echoed(ask(&one, "tw-next-a").await.unwrap()).await);
    wait_for_next_second().await;
    let b = decision_id(&echoed(ask(&one, "tw-next-b").await.unwrap()).await);
    assert_ne!(a, b, "a decision was reused in a later second");
    // (tw-next-a may have been a hit of the loop's last second; tw-next-b cannot be.)
    wait_decision(&s.decision_log(), "tw-next-b").await;
}

/// Sleeps until just after the wall clock's next whole second.
async fn wait_for_next_second() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let into = Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(Duration::from_secs(1) - into + Duration::from_millis(20)).await;
}
