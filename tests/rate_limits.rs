//! Rate limits with the per-process (local) backend: the rate a client gets, the 429's headers
//! (draft-ietf-httpapi-ratelimit-headers-08), keep-alive after a 429, what each key kind keys
//! on (with real tokens from the embedded issuer for claim keys), `trusted_proxies`, and the
//! config errors.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::issuer::{echoed, sample, upstream_header, wait_ready, Issuer};
use support::{client, error_body, Echo, Gateway, READY_TIMEOUT};

fn gateway(echo: &Echo, top: &str, routes: &str) -> Gateway {
    let config = format!(
        "{{SERVER}}\nlisteners:\n  - address: 127.0.0.1:{{HTTP}}\nadmin:\n  address: 127.0.0.1:{{ADMIN}}\n{top}\nupstreams:\n  echo:\n    targets: [\"{}\"]\nroutes:\n{routes}",
        echo.addr()
    );
    Gateway::start(&[("gatehouse.yaml", &config)])
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(gw.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request through the gateway")
}

/// Given a limit of 40/s (burst 40) on a route, when two clients ask as fast as they can for
/// five seconds, the gateway lets through the burst plus 40 per second, within 5%.
///
/// A burst of one second's count keeps the measurement honest on a loaded 2-core machine: a
/// stall of the client or the gateway shorter than a second loses no allowance, because GCRA
/// lets the client catch up within its tolerance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowed_count_over_a_window_matches_the_rate() {
    let echo = Echo::start("echo");
    let gw = gateway(
        &echo,
        "",
        "  - name: counted\n    match: {path_prefix: /counted/}\n    upstream: echo\n    rate_limits:\n      - {name: whole-route, key: route, rate: 40/s}\n",
    );
    const WINDOW: Duration = Duration::from_secs(5);
    let start = Instant::now();
    let worker = |gw_url: String| async move {
        let http = client();
        let (mut allowed, mut limited, mut last) = (0u64, 0u64, Duration::ZERO);
        while start.elapsed() < WINDOW {
            let resp = http.get(&gw_url).send().await.expect("request");
            last = start.elapsed();
            match resp.status().as_u16() {
                200 => allowed += 1,
                429 => limited += 1,
                other => panic!("unexpected status {other}"),
            }
            // Far above 40/s still, without starving the tests running beside this one.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (allowed, limited, last)
    };
    let url = gw.url("/counted/x");
    let (a, b) = tokio::join!(worker(url.clone()), worker(url));
    let allowed = a.0 + b.0;
    let limited = a.1 + b.1;
    let elapsed = a.2.max(b.2).as_secs_f64();
    // Every request after the first waits for the GCRA clock: burst + rate × elapsed.
    let expected = 40.0 + 40.0 * elapsed;
    let deviation = (allowed as f64 - expected).abs() / expected;
    eprintln!("allowed {allowed} in {elapsed:.2}s (expected {expected:.1}), {limited} limited");
    assert!(
        deviation <= 0.05,
        "allowed {allowed} in {elapsed:.2}s, expected {expected:.0} (off by {:.1}%)",
        deviation * 100.0
    );
    assert!(
        limited > allowed,
        "the clients asked for far more than the rate: {limited} 429s"
    );
    let metrics = gw.metrics().await;
    let counted = |result| {
        sample(
            &metrics,
            "gatehouse_rate_limit_decisions_total",
            &[
                ("route", "counted"),
                ("limit", "whole-route"),
                ("result", result),
            ],
        )
        .unwrap_or(0.0) as u64
    };
    assert_eq!(counted("allowed"), allowed);
    assert_eq!(counted("limited"), limited);
}

/// Sends a GET on an open connection and reads the whole response: (status line, lower-cased
/// headers, body).
fn exchange(stream: &mut TcpStream, path: &str) -> (String, Vec<(String, String)>, String) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("write request");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("a header");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("content-length"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    (
        status.trim_end().to_string(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Given `1/m` with a burst of 2 keyed on the client ip and `headers_on_success`, the first two
/// requests pass and say what is left, the third gets 429 with `Retry-After` and the draft-08
/// fields naming the limit, and the connection stays open for the next request.
#[tokio::test]
async fn a_429_carries_retry_after_and_the_draft_08_fields_and_keeps_the_connection() {
    let echo = Echo::start("echo");
    let gw = gateway(
        &echo,
        "rate_limiting:\n  headers_on_success: true",
        "  - name: tight\n    match: {path_prefix: /tight/}\n    upstream: echo\n    rate_limits:\n      - {name: per-ip, key: client_ip, rate: 1/m, burst: 2}\n  - name: open\n    match: {path_prefix: /open/}\n    upstream: echo\n    rate_limits: []\n",
    );
    let mut conn = TcpStream::connect(("127.0.0.1", gw.http_port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let (status, headers, _) = exchange(&mut conn, "/tight/a");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        Some("\"per-ip\";q=1;w=60")
    );
    assert_eq!(header(&headers, "ratelimit"), Some("\"per-ip\";r=1;t=60"));
    let (status, headers, _) = exchange(&mut conn, "/tight/b");
    assert_eq!(status, "HTTP/1.1 200 OK");
    // Two requests of a 1/m limit: the whole burst is back in two minutes.
    assert_eq!(header(&headers, "ratelimit"), Some("\"per-ip\";r=0;t=120"));

    for _ in 0..2 {
        // On the same connection, twice: a 429 does not close it.
        let (status, headers, body) = exchange(&mut conn, "/tight/c");
        assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
        assert_eq!(header(&headers, "retry-after"), Some("60"));
        assert_eq!(
            header(&headers, "ratelimit-policy"),
            Some("\"per-ip\";q=1;w=60")
        );
        assert_eq!(header(&headers, "ratelimit"), Some("\"per-ip\";r=0;t=60"));
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert_ne!(header(&headers, "connection"), Some("close"));
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(body["error"], "rate_limited");
        assert!(body["message"].as_str().unwrap().contains("per-ip"));
    }
    // A route that opted out of limits (`rate_limits: []`) shows none.
    let (status, headers, _) = exchange(&mut conn, "/open/x");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(header(&headers, "ratelimit"), None);

    let logged = || async {
        gw.access_log()
            .lines()
            .any(|l| l.contains("\"status\":429") && l.contains("\"error\":\"rate_limited\""))
    };
    support::eventually("the access log names the rejection", READY_TIMEOUT, logged).await;
}

/// Given limits keyed on a header, on `sub` and (by default) on the client ip, each client
/// value has its own bucket, a request without the header is keyed by its ip, and a claim limit
/// keys real tokens from the issuer by their subject.
#[tokio::test]
async fn header_and_claim_keys_give_each_value_its_own_bucket() {
    let issuer = Issuer::new();
    let echo = Echo::start("echo");
    let top = format!(
        "embedded:\n  identity: identity.yaml\n{}\nrate_limiting:\n  default:\n    - {{name: per-ip, key: client_ip, rate: 1/m, burst: 1}}",
        issuer.auth_section("", "")
    );
    let routes = "  - name: keyed\n    match: {path_prefix: /keyed/}\n    upstream: echo\n    rate_limits:\n      - {name: per-key, key: \"header:X-Api-Key\", rate: 1/m, burst: 1}\n  - name: users\n    match: {path_prefix: /users/}\n    upstream: echo\n    auth: {mode: required}\n    rate_limits:\n      - {name: per-user, key: sub, rate: 1/m, burst: 1}\n  - name: fallback\n    match: {path_prefix: /fallback/}\n    upstream: echo\n";
    let config = format!(
        "{{SERVER}}\nlisteners:\n  - address: 127.0.0.1:{{HTTP}}\nadmin:\n  address: 127.0.0.1:{{ADMIN}}\n{top}\nupstreams:\n  echo:\n    targets: [\"{}\"]\nroutes:\n{routes}",
        echo.addr()
    );
    let gw = Gateway::start(&[
        ("gatehouse.yaml", &config),
        ("identity.yaml", &issuer.identity_yaml("")),
    ]);
    issuer.wait_serving().await;
    wait_ready(&gw).await;

    let status = |r: reqwest::Response| r.status().as_u16();
    // Header key: one bucket per value; no header → the ip's bucket.
    assert_eq!(
        status(get(&gw, "/keyed/1", &[("x-api-key", "team-a")]).await),
        200
    );
    assert_eq!(
        status(get(&gw, "/keyed/2", &[("x-api-key", "team-a")]).await),
        429
    );
    assert_eq!(
        status(get(&gw, "/keyed/3", &[("x-api-key", "team-b")]).await),
        200
    );
    assert_eq!(status(get(&gw, "/keyed/4", &[]).await), 200);
    assert_eq!(status(get(&gw, "/keyed/5", &[]).await), 429);

    // Claim key: alice and bob each get their own, whatever address they come from.
    let alice = issuer
        .password_token("alice", "alice-password", "documents:read")
        .await;
    let bob = issuer
        .password_token("bob", "bob-password", "documents:read")
        .await;
    let with = |token: &str| format!("Bearer {token}");
    assert_eq!(
        status(get(&gw, "/users/1", &[("authorization", &with(&alice))]).await),
        200
    );
    let refused = get(&gw, "/users/2", &[("authorization", &with(&alice))]).await;
    assert_eq!(refused.headers()["ratelimit"], "\"per-user\";r=0;t=60");
    error_body(refused, 429, "rate_limited").await;
    assert_eq!(
        status(get(&gw, "/users/3", &[("authorization", &with(&bob))]).await),
        200
    );
    // Claim limits run after the token check: no token is a 401, not a 429.
    assert_eq!(status(get(&gw, "/users/4", &[]).await), 401);

    // A route without limits of its own gets the default.
    assert_eq!(status(get(&gw, "/fallback/1", &[]).await), 200);
    assert_eq!(status(get(&gw, "/fallback/2", &[]).await), 429);
}

const TRUSTING: &str = "trusted_proxies: [127.0.0.0/8]";

const PER_IP: &str = "  - name: per-ip\n    match: {path_prefix: /}\n    upstream: echo\n    rate_limits:\n      - {name: per-ip, key: client_ip, rate: 1/m, burst: 1}\n";

/// Given the gateway behind a proxy on 127.0.0.0/8 (`trusted_proxies`), clients are told apart
/// by `X-Forwarded-For` (walked from the right, past trusted hops); without `trusted_proxies`
/// the header is ignored and every request is the socket peer's.
#[tokio::test]
async fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let echo = Echo::start("echo");
    let behind_proxy = gateway(&echo, TRUSTING, PER_IP);
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    let seen = echoed(get(&behind_proxy, "/a", &xff("203.0.113.1")).await).await;
    assert_eq!(upstream_header(&seen, "x-forwarded-for"), ["203.0.113.1"]);
    // A forged leftmost entry does not help: the first untrusted from the right counts.
    let resp = get(
        &behind_proxy,
        "/b",
        &xff("198.51.100.7, 203.0.113.1, 127.0.0.9"),
    )
    .await;
    assert_eq!(resp.status(), 429, "203.0.113.1 again");
    let seen = echoed(get(&behind_proxy, "/c", &xff("203.0.113.2")).await).await;
    assert_eq!(upstream_header(&seen, "x-forwarded-for"), ["203.0.113.2"]);
    // The access log is written after the response, by its own thread.
    let logged = || async {
        behind_proxy
            .access_log()
            .contains("\"client_ip\":\"203.0.113.2\"")
    };
    support::eventually("the access log names the client", READY_TIMEOUT, logged).await;

    let exposed = gateway(&echo, "", PER_IP);
    assert_eq!(get(&exposed, "/a", &xff("203.0.113.1")).await.status(), 200);
    assert_eq!(
        get(&exposed, "/b", &xff("203.0.113.2")).await.status(),
        429,
        "an untrusted peer's X-Forwarded-For is ignored"
    );
}

/// Given limits with a bad rate, an unknown key kind, a header a client could forge, a claim
/// key on a route without tokens and a bad proxy range, `gatehouse validate` names each by its
/// key path.
#[test]
fn config_errors_are_located() {
    let dir = tempfile::tempdir().unwrap();
    support::write(
        dir.path(),
        "gatehouse.yaml",
        r#"listeners:
  - address: 127.0.0.1:1
trusted_proxies: [10.0.0.1/8, nowhere]
rate_limiting:
  backend: redis
  redis: {url: "http://nope", timeout: 5s}
  max_keys: 10
  default:
    - {name: "bad name", key: client_ip, rate: 10/s}
upstreams:
  pool:
    targets: ["127.0.0.1:2"]
routes:
  - name: a
    match: {path_prefix: /}
    upstream: pool
    rate_limits:
      - {name: r, key: client_ip, rate: ten/s}
      - {name: k, key: ip, rate: 1/s}
      - {name: u, key: "header:X-User-ID", rate: 1/s}
      - {name: c, key: "claim:tenant", rate: 1/s}
      - {name: b, key: route, rate: 1/s, burst: 0}
      - {name: r, key: route, rate: 1/s}
"#,
    );
    let (code, text) = support::validate(dir.path());
    assert_eq!(code, Some(1), "{text}");
    for expected in [
        "trusted_proxies[0]: \"10.0.0.1/8\" has host bits set",
        "trusted_proxies[1]: \"nowhere\" is not an IP address",
        "rate_limiting.max_keys: at least 100",
        "rate_limiting.redis.timeout: between 1ms and 1s",
        "rate_limiting.default[0].name: \"bad name\" is not a limit name",
        "routes[0].rate_limits[0].rate: \"ten/s\" is not a rate (hint: <count>/s, /m, /h or /d",
        "routes[0].rate_limits[1].key: \"ip\" is not a key (hint: client_ip, route, header:<name>, claim:<name> or sub)",
        "routes[0].rate_limits[2].key: \"X-User-ID\" is in auth.identity_namespace",
        "(hint: key on the verified claim instead, e.g. claim:sub)",
        "routes[0].rate_limits[3].key: a claim key needs verified tokens on this route",
        "routes[0].rate_limits[4].burst: at least 1",
        "routes[0].rate_limits[5].name: limit name \"r\" is used twice",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// Given a client that used up its burst, when the configuration is reloaded with the limiter's
/// settings unchanged (a route added), the client is still limited: a reload hands out no fresh
/// burst.
#[tokio::test]
async fn a_reload_keeps_the_buckets() {
    let echo = Echo::start("echo");
    let routes = "  - name: tight\n    match: {path_prefix: /tight/}\n    upstream: echo\n    rate_limits:\n      - {name: per-ip, key: client_ip, rate: 1/m, burst: 1}\n";
    let gw = gateway(&echo, "", routes);
    assert_eq!(get(&gw, "/tight/1", &[]).await.status(), 200);
    assert_eq!(get(&gw, "/tight/2", &[]).await.status(), 429);

    let version = gw.config_version().await;
    let more = format!(
        "{routes}  - name: other\n    match: {{path_prefix: /other/}}\n    upstream: echo\n"
    );
    let config = format!(
        "{{SERVER}}\nlisteners:\n  - address: 127.0.0.1:{{HTTP}}\nadmin:\n  address: 127.0.0.1:{{ADMIN}}\n\nupstreams:\n  echo:\n    targets: [\"{}\"]\nroutes:\n{more}",
        echo.addr()
    );
    gw.write("gatehouse.yaml", &config);
    support::eventually("the reload is applied", support::READY_TIMEOUT, || async {
        gw.config_version().await > version
    })
    .await;
    assert_eq!(
        get(&gw, "/other/1", &[]).await.status(),
        200,
        "the new route is live"
    );
    assert_eq!(
        get(&gw, "/tight/3", &[]).await.status(),
        429,
        "still limited"
    );
}
