//! Rate limits shared through a real `redis-server` (started by the test on a free loopback
//! port): two gateway processes enforce one combined limit; when Redis dies mid-run each gateway
//! limits on its own without a single 5xx, and when Redis is back the limit is shared again,
//! without a restart.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::redis::Redis;
use support::{client, eventually, Echo, Gateway, READY_TIMEOUT};

/// `counted`: 20/s for the whole route (burst 20); `shared`: 3 requests, then one a minute —
/// slow enough that who used the burst is plain to see.
fn config(echo: &Echo, redis: &Redis, timeout: &str) -> String {
    format!(
        r#"{{SERVER}}
listeners:
  - address: 127.0.0.1:{{HTTP}}
admin:
  address: 127.0.0.1:{{ADMIN}}
rate_limiting:
  backend: redis
  redis: {{url: "{url}", timeout: {timeout}, retry_interval: 200ms}}
upstreams:
  echo:
    targets: ["{echo}"]
routes:
  - name: counted
    match: {{path_prefix: /counted/}}
    upstream: echo
    rate_limits:
      - {{name: whole-route, key: route, rate: 20/s}}
  - name: shared
    match: {{path_prefix: /shared/}}
    upstream: echo
    rate_limits:
      - {{name: per-ip, key: client_ip, rate: 1/m, burst: 3}}
"#,
        url = redis.url(),
        echo = echo.addr(),
    )
}

async fn redis_up(gw: &Gateway) -> bool {
    gw.metric("gatehouse_rate_limit_redis_up").await == 1.0
}

async fn wait_redis_up(gws: [&Gateway; 2]) {
    for gw in gws {
        eventually("the gateway reaches Redis", READY_TIMEOUT, || redis_up(gw)).await;
    }
}

async fn status(gw: &Gateway, path: &str) -> u16 {
    client()
        .get(gw.url(path))
        .send()
        .await
        .expect("request through the gateway")
        .status()
        .as_u16()
}

/// The statuses `gw` answers `n` requests to `path` with, in order.
async fn statuses(gw: &Gateway, path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(status(gw, path).await);
    }
    out
}

/// Given two gateways on one Redis, a client that spends the burst on one is refused by the
/// other, and two clients hammering one gateway each get 20/s between them, not 20/s each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_enforce_one_combined_limit() {
    let redis = Redis::start();
    let echo = Echo::start("echo");
    // A generous timeout: this test is about sharing, not about a slow Redis.
    let a = Gateway::start(&[("gatehouse.yaml", &config(&echo, &redis, "500ms"))]);
    let b = Gateway::start(&[("gatehouse.yaml", &config(&echo, &redis, "500ms"))]);
    wait_redis_up([&a, &b]).await;

    assert_eq!(statuses(&a, "/shared/x", 3).await, [200, 200, 200]);
    let refused = client().get(b.url("/shared/x")).send().await.unwrap();
    assert_eq!(
        refused.status(),
        429,
        "the other gateway saw the burst spent"
    );
    assert_eq!(refused.headers()["ratelimit"], "\"per-ip\";r=0;t=60");

    const WINDOW: Duration = Duration::from_secs(4);
    let start = Instant::now();
    let worker = |url: String| async move {
        let http = client();
        let (mut allowed, mut last) = (0u64, Duration::ZERO);
        while start.elapsed() < WINDOW {
            let code = http.get(&url).send().await.expect("request").status();
            last = start.elapsed();
            match code.as_u16() {
                200 => allowed += 1,
                429 => {}
                other => panic!("unexpected status {other}"),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (allowed, last)
    };
    let ((on_a, t_a), (on_b, t_b)) =
        tokio::join!(worker(a.url("/counted/x")), worker(b.url("/counted/x")));
    let allowed = on_a + on_b;
    let elapsed = t_a.max(t_b).as_secs_f64();
    let expected = 20.0 + 20.0 * elapsed;
    let deviation = (allowed as f64 - expected).abs() / expected;
    eprintln!("allowed {on_a} + {on_b} = {allowed} in {elapsed:.2}s (expected {expected:.1})");
    assert!(
        deviation <= 0.05,
        "allowed {allowed} ({on_a} on a, {on_b} on b) in {elapsed:.2}s, expected {expected:.0} \
         for both together (off by {:.1}%)",
        deviation * 100.0
    );
    assert!(
        on_a > 10 && on_b > 10,
        "both gateways served: {on_a} and {on_b}"
    );
    for gw in [&a, &b] {
        assert_eq!(
            gw.metric("gatehouse_rate_limit_redis_fallbacks_total")
                .await,
            0.0
        );
    }
}

/// Given two gateways on one Redis and a client hammering one of them, when Redis is killed
/// the client never sees a 5xx, each gateway limits on its own (the burst a gateway has not
/// seen is fresh), the outage is counted and logged once; when Redis comes back on the same
/// port, the gateways reconnect by themselves and the limit is shared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_falls_back_locally_and_sharing_resumes() {
    let mut redis = Redis::start();
    let echo = Echo::start("echo");
    let a = Gateway::start(&[("gatehouse.yaml", &config(&echo, &redis, "50ms"))]);
    let b = Gateway::start(&[("gatehouse.yaml", &config(&echo, &redis, "50ms"))]);
    wait_redis_up([&a, &b]).await;

    // Background traffic through the whole scenario: every status it ever sees.
    let seen = Arc::new(Mutex::new(Vec::<u16>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let (seen, stop, url) = (seen.clone(), stop.clone(), a.url("/counted/bg"));
        tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let code = http.get(&url).send().await.expect("request").status();
                seen.lock().unwrap().push(code.as_u16());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    assert_eq!(statuses(&a, "/shared/x", 3).await, [200, 200, 200]);
    assert_eq!(status(&b, "/shared/x").await, 429);

    redis.kill();
    // Each gateway now counts alone: a's local store has not seen this client, nor has b's.
    assert_eq!(statuses(&a, "/shared/x", 4).await, [200, 200, 200, 429]);
    assert_eq!(statuses(&b, "/shared/x", 4).await, [200, 200, 200, 429]);
    for gw in [&a, &b] {
        assert!(!redis_up(gw).await);
        assert!(
            gw.metric("gatehouse_rate_limit_redis_fallbacks_total")
                .await
                >= 4.0
        );
        let errors = gw.metrics().await;
        assert!(
            errors.contains("gatehouse_rate_limit_redis_errors_total{kind="),
            "the failure is counted:\n{errors}"
        );
    }
    // Requests keep flowing meanwhile (and are answered locally, not after a timeout each).
    let before = Instant::now();
    statuses(&a, "/counted/probe", 20).await;
    assert!(
        before.elapsed() < Duration::from_secs(2),
        "an outage must not cost every request the Redis timeout: {:?}",
        before.elapsed()
    );

    redis.run();
    wait_redis_up([&a, &b]).await;
    // Redis restarted empty: the burst is fresh, and shared again.
    assert_eq!(statuses(&a, "/shared/x", 3).await, [200, 200, 200]);
    assert_eq!(
        status(&b, "/shared/x").await,
        429,
        "shared again after the restart"
    );

    stop.store(true, Ordering::Relaxed);
    hammer.await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() > 20,
        "the background client kept going: {}",
        seen.len()
    );
    let unexpected: Vec<_> = seen.iter().filter(|s| !matches!(s, 200 | 429)).collect();
    assert!(
        unexpected.is_empty(),
        "statuses other than 200/429: {unexpected:?}"
    );

    for gw in [&a, &b] {
        let log = gw.stderr();
        let outages = log.matches("Redis did not answer").count();
        assert_eq!(
            outages, 1,
            "the outage is logged once, not per request:\n{log}"
        );
        assert!(
            log.contains("Redis reachable"),
            "the recovery is logged:\n{log}"
        );
    }
}
