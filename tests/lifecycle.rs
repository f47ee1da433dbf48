//! Process lifecycle and observability: metrics format, graceful shutdown, graceful upgrade.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{client, eventually, Echo, Gateway, READY_TIMEOUT};

fn config(echo: &Echo, server: &str) -> String {
    format!(
        r#"{server}
listeners:
  - address: 127.0.0.1:{{HTTP}}
admin:
  address: 127.0.0.1:{{ADMIN}}
upstreams:
  pool:
    targets: ["{}"]
routes:
  - name: docs
    match:
      path: /documents/{{id}}
    upstream: pool
"#,
        echo.addr()
    )
}

/// Checks the Prometheus text exposition format line by line (names, labels, values).
fn assert_prometheus_text(text: &str) {
    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            assert!(kind == "HELP" || kind == "TYPE", "bad comment: {line}");
            assert!(parts.next().is_some_and(is_name), "bad metric name: {line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "bad type: {line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value: {line}"
        );
        let name = match series.split_once('{') {
            None => series,
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(is_name(k), "bad label name: {line}");
                    assert!(v.starts_with('"'), "unquoted label value: {line}");
                }
                name
            }
        };
        assert!(is_name(name), "bad series name: {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let echo = Echo::start("a");
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&echo, "{SERVER}"))]);
    let c = client();

    let before = gw.metrics().await;
    assert_prometheus_text(&before);
    for name in [
        "gatehouse_config_reloads_total",
        "gatehouse_downstream_connections_open",
        "gatehouse_upstream_healthy_targets",
    ] {
        assert!(
            before.contains(&format!("# TYPE {name}")),
            "{name} missing from the first scrape"
        );
    }

    for _ in 0..3 {
        assert_eq!(
            c.get(gw.url("/documents/1")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(
        c.get(gw.url("/missing")).send().await.unwrap().status(),
        404
    );

    // Metrics are recorded in the logging phase, which runs after the client has its answer.
    let unrouted = r#"gatehouse_requests_total{method="GET",route="-",status="4xx"}"#;
    eventually("the last request is counted", READY_TIMEOUT, || async {
        gw.metric(unrouted).await == 1.0
    })
    .await;
    let after = gw.metrics().await;
    assert_prometheus_text(&after);
    let value = |s: &str| support::metric_value(&after, s);
    assert_eq!(
        value(r#"gatehouse_requests_total{method="GET",route="docs",status="2xx"}"#),
        3.0
    );
    assert_eq!(
        value(r#"gatehouse_requests_total{method="GET",route="-",status="4xx"}"#),
        1.0
    );
    assert_eq!(
        value(r#"gatehouse_request_duration_seconds_count{route="docs"}"#),
        3.0
    );
    assert_eq!(
        value(r#"gatehouse_upstream_healthy_targets{pool="pool"}"#),
        1.0
    );
    // The client keeps its connection alive, and the gauge sees it.
    assert!(value("gatehouse_downstream_connections_open") >= 1.0);

    drop(c);
    eventually("connection gauge falls back", READY_TIMEOUT, || async {
        gw.metric("gatehouse_downstream_connections_open").await == 0.0
    })
    .await;

    let health: serde_json::Value = reqwest::get(gw.admin("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = reqwest::get(gw.admin("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let echo = Echo::start("a");
    let dir = tempfile::tempdir().unwrap();
    let server =
        support::server_section(dir.path()).replace("grace_period: 0s", "grace_period: 3s");
    let mut gw = Gateway::start(&[(
        "gatehouse.yaml",
        &config(&echo, &server).replace("path: /documents/{id}", "path_prefix: /"),
    )]);

    let url = gw.url("/delay/1000");
    let in_flight =
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    // At the upstream: a connection merely accepted, its request not read yet, is closed by a
    // shutdown (Pingora's own rule), so only a request the gateway has passed on is in flight.
    let echo_port = echo.port;
    eventually("request in flight", READY_TIMEOUT, || async move {
        support::connections_to(echo_port) >= 1
    })
    .await;
    let started = Instant::now();
    gw.signal(libc::SIGTERM);

    assert_eq!(
        in_flight.await.unwrap().ok(),
        Some(200),
        "the in-flight request completes"
    );
    assert!(
        gw.wait_exit(Duration::from_secs(15)),
        "the process exits after the grace period"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(gw.stderr().contains("SIGTERM received, gracefully exiting"));
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_upgrade_hands_over_listeners_without_losing_requests() {
    let echo = Echo::start("a");
    let gw = Gateway::start(&[(
        "gatehouse.yaml",
        &config(&echo, "{SERVER}").replace("path: /documents/{id}", "path_prefix: /"),
    )]);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), gw.url("/x"));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A new connection per request: every request exercises the accepting socket.
                let c = client();
                let answered = match c.get(&url).header("connection", "close").send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let counter = if answered { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // The new binary starts with -u, waits for the sockets, and the old one hands them over on SIGQUIT.
    let new_log = gw.path("access-new.log");
    let mut new = Command::new(support::BIN)
        .arg("--config")
        .arg(gw.path("gatehouse.yaml"))
        .arg("--upgrade")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&new_log).unwrap())
        .stderr(std::fs::File::create(gw.path("new.err")).unwrap())
        .spawn()
        .unwrap();
    eventually(
        "new process waits on the upgrade socket",
        READY_TIMEOUT,
        || async { gw.path("upgrade.sock").exists() },
    )
    .await;
    gw.signal(libc::SIGQUIT);
    eventually("the new process serves traffic", READY_TIMEOUT, || async {
        std::fs::read_to_string(&new_log).is_ok_and(|l| l.contains("\"route\":\"docs\""))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let _ = new.kill();
    let _ = new.wait();

    assert!(ok.load(Ordering::Relaxed) > 20);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests lost during the upgrade"
    );
}

/// SIGHUP's default action ends a process. The reload handler is installed before the
/// listeners open, so a SIGHUP sent the moment the admin port accepts reloads instead.
#[tokio::test]
async fn a_sighup_as_soon_as_the_process_listens_reloads_instead_of_killing_it() {
    let echo = Echo::start("a");
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = support::Ports::new();
    let cfg = config(&echo, &support::server_section(dir.path()))
        .replace("{HTTP}", &ports.http.to_string())
        .replace("{ADMIN}", &ports.admin.to_string());
    std::fs::write(dir.path().join("gatehouse.yaml"), cfg).expect("config");
    let err = dir.path().join("gateway.err");
    let mut child = Command::new(support::BIN)
        .arg("--config")
        .arg(dir.path().join("gatehouse.yaml"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("log"))
        .spawn()
        .expect("spawn");
    let killer = scopeguard_kill(child.id());
    let deadline = Instant::now() + READY_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", ports.admin)).is_err() {
        assert!(Instant::now() < deadline, "admin port never opened");
        assert!(child.try_wait().expect("wait").is_none(), "exited early");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    eventually("the SIGHUP is taken as a reload", READY_TIMEOUT, || async {
        std::fs::read_to_string(&err).is_ok_and(|l| l.contains("SIGHUP: reloading config"))
    })
    .await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "SIGHUP killed the gateway"
    );
    let ready = client()
        .get(format!("http://127.0.0.1:{}/readyz", ports.admin))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    drop(killer);
    let _ = child.wait();
}

/// Kills the process when dropped, so a failed assertion leaves nothing running.
fn scopeguard_kill(pid: u32) -> impl Drop {
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) on our own child's pid; harmless if it already exited and was reaped
            // only after this runs.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    Kill(pid)
}
