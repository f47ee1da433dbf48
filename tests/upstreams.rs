//! Given upstream pools, when targets are up, down or slow, clients see spread, stickiness,
//! failover and clear 502/503/504 answers.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::{client, dead_port, eventually, Echo, Gateway, READY_TIMEOUT};

fn gateway_with(upstreams: &str) -> Gateway {
    let cfg = format!(
        r#"{{SERVER}}
listeners:
  - address: 127.0.0.1:{{HTTP}}
admin:
  address: 127.0.0.1:{{ADMIN}}
upstreams:
{upstreams}
routes:
  - name: all
    match:
      path_prefix: /
    upstream: pool
"#
    );
    Gateway::start(&[("gatehouse.yaml", &cfg)])
}

async fn served_by(
    c: &reqwest::Client,
    gw: &Gateway,
    path: &str,
    user: Option<&str>,
) -> (u16, String) {
    let mut req = c.get(gw.url(path));
    if let Some(u) = user {
        req = req.header("x-tenant", u);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let server = resp
        .headers()
        .get("x-echo-server")
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    (status, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_requests_over_targets() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let gw = gateway_with(&format!(
        "  pool:\n    targets: [\"{}\", \"{}\"]\n",
        a.addr(),
        b.addr()
    ));
    let c = client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        let (status, server) = served_by(&c, &gw, "/", None).await;
        assert_eq!(status, 200);
        *counts.entry(server).or_default() += 1;
    }
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hash_keeps_each_key_on_one_target() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let gw = gateway_with(&format!(
        "  pool:\n    targets: [\"{}\", \"{}\"]\n    balance: consistent_hash\n    hash_key: header:x-tenant\n",
        a.addr(),
        b.addr()
    ));
    let c = client();
    let mut used = std::collections::HashSet::new();
    for user in 0..16 {
        let user = format!("user-{user}");
        let (_, first) = served_by(&c, &gw, "/", Some(&user)).await;
        for _ in 0..4 {
            let (status, again) = served_by(&c, &gw, "/", Some(&user)).await;
            assert_eq!(status, 200);
            assert_eq!(again, first, "{user} moved between targets");
        }
        used.insert(first);
    }
    assert_eq!(used.len(), 2, "16 keys all hashed to one target");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_eject_a_dead_target_and_bring_it_back() {
    let a = Echo::start("a");
    let mut b = Echo::start("b");
    let b_port = b.port;
    let gw = gateway_with(&format!(
        r#"  pool:
    targets: ["{}", "{}"]
    health_check:
      kind: http
      path: /healthz
      interval: 200ms
      timeout: 500ms
      healthy_threshold: 1
      unhealthy_threshold: 1
"#,
        a.addr(),
        b.addr()
    ));
    let c = client();
    let healthy = r#"gatehouse_upstream_healthy_targets{pool="pool"}"#;
    eventually("both targets healthy", READY_TIMEOUT, || async {
        gw.metric(healthy).await == 2.0
    })
    .await;

    b.stop();
    eventually("b ejected", READY_TIMEOUT, || async {
        gw.metric(healthy).await == 1.0
    })
    .await;
    for _ in 0..10 {
        assert_eq!(served_by(&c, &gw, "/", None).await, (200, "a".to_string()));
    }

    let _b = Echo::start_on("b", b_port);
    eventually("b back", READY_TIMEOUT, || async {
        gw.metric(healthy).await == 2.0
    })
    .await;
    let mut servers = std::collections::HashSet::new();
    for _ in 0..10 {
        let (status, server) = served_by(&c, &gw, "/", None).await;
        assert_eq!(status, 200);
        servers.insert(server);
    }
    assert!(servers.contains("b"), "b gets traffic again: {servers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_is_retried_on_another_target_and_ejected() {
    let a = Echo::start("a");
    let dead = dead_port();
    let gw = gateway_with(&format!(
        "  pool:\n    targets: [\"{}\", \"{}\"]\n",
        dead.addr(),
        a.addr()
    ));
    let c = client();
    for i in 0..10 {
        // Forged forwarding headers: the retried request, like every other, reaches the
        // upstream with the gateway's own, once each.
        let id = format!("rid-{i}");
        let resp = c
            .get(gw.url("/"))
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-request-id", &id)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        let echo: serde_json::Value = resp.json().await.expect("the echo's JSON");
        assert_eq!(echo["server"], "a");
        let headers = &echo["headers"];
        assert_eq!(headers["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
        assert_eq!(headers["x-forwarded-proto"], serde_json::json!(["http"]));
        assert_eq!(headers["x-request-id"], serde_json::json!([id]));
    }
    let connect_errors = gw
        .metric(r#"gatehouse_upstream_errors_total{kind="connect",pool="pool"}"#)
        .await;
    assert_eq!(
        connect_errors, 1.0,
        "ejected after the first refusal, so tried once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_target_gives_502_then_503_while_ejected() {
    let dead = dead_port();
    let gw = gateway_with(&format!(
        "  pool:\n    targets: [\"{}\"]\n    passive:\n      eject_for: 30s\n",
        dead.addr()
    ));
    let c = client();

    let resp = c
        .get(gw.url("/x"))
        .header("x-request-id", "rid-502")
        .send()
        .await
        .unwrap();
    let body = support::error_body(resp, 502, "upstream_unreachable").await;
    assert_eq!(body["request_id"], "rid-502");

    let resp = c.get(gw.url("/x")).send().await.unwrap();
    let body = support::error_body(resp, 503, "no_healthy_upstream").await;
    assert_eq!(body["request_id"].as_str().map(str::len), Some(32));
}

#[tokio::test(flavor = "multi_thread")]
async fn all_targets_down_by_health_check_gives_503() {
    let dead = dead_port();
    let gw = gateway_with(&format!(
        "  pool:\n    targets: [\"{}\"]\n    health_check:\n      kind: tcp\n      interval: 100ms\n      unhealthy_threshold: 1\n",
        dead.addr()
    ));
    let c = client();
    eventually("target marked down", READY_TIMEOUT, || async {
        gw.metric(r#"gatehouse_upstream_healthy_targets{pool="pool"}"#)
            .await
            == 0.0
            && c.get(gw.url("/"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
                == 503
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upstream_gives_504() {
    let a = Echo::start("a");
    let gw = gateway_with(&format!(
        "  pool:\n    targets: [\"{}\"]\n    timeouts:\n      read: 300ms\n",
        a.addr()
    ));
    let c = client();
    let started = std::time::Instant::now();
    let resp = c.get(gw.url("/delay/3000")).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(2500));
    support::error_body(resp, 504, "upstream_timeout").await;
    // A fast request on the same pool still works.
    assert_eq!(
        c.get(gw.url("/delay/10")).send().await.unwrap().status(),
        200
    );
}
