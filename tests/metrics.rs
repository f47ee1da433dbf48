//! Metric labels come from a bounded set: whatever method token a client invents, `/metrics`
//! never grows a series named after it.

mod support;

use reqwest::Method;
use support::{client, eventually, Echo, Gateway, READY_TIMEOUT};

/// Sum of every `gatehouse_requests_total` sample whose labels contain all of `labels`.
fn requests_total(metrics: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("gatehouse_requests_total{"))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| labels.iter().all(|label| series.contains(label)))
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn invented_methods_are_counted_as_other_not_as_their_own_series() {
    let echo = Echo::start("a");
    let gw = Gateway::start(&[(
        "gatehouse.yaml",
        &format!(
            r#"{{SERVER}}
listeners:
  - address: 127.0.0.1:{{HTTP}}
admin:
  address: 127.0.0.1:{{ADMIN}}
upstreams:
  a:
    targets: ["{}"]
routes:
  - name: api
    match:
      path_prefix: /api/
    upstream: a
"#,
            echo.addr()
        ),
    )]);
    let c = client();
    // Routed and unrouted requests: both record through a route's metric handles.
    let sent = [
        ("FOOBAR1", "/api/x"),
        ("FOOBAR2", "/api/y"),
        ("FOOBAR1", "/api/z"),
        ("FOOBAR2", "/nowhere"),
        ("GET", "/api/x"),
    ];
    for (method, path) in sent {
        let method = Method::from_bytes(method.as_bytes()).expect("a method token");
        let resp = c
            .request(method.clone(), gw.url(path))
            .send()
            .await
            .expect("an answer");
        assert_ne!(resp.status(), 400, "{method} is a valid token");
    }

    // Metrics are recorded in the logging phase, after the answer went out: wait until every
    // request is counted, whatever its labels, before judging the labels.
    eventually("every request counted", READY_TIMEOUT, || async {
        requests_total(&gw.metrics().await, &[]) >= sent.len() as f64
    })
    .await;
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("FOOBAR"),
        "a client-chosen method became a label:\n{metrics}"
    );
    assert_eq!(
        requests_total(&metrics, &[r#"method="other""#, r#"route="api""#]),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        requests_total(&metrics, &[r#"method="other""#, r#"route="-""#]),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        requests_total(&metrics, &[r#"method="GET""#, r#"route="api""#]),
        1.0,
        "{metrics}"
    );
}
