//! The policy decision service embedded in the gateway process (`embedded.authz`), as the demo
//! runs it.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::{client, free_port, metric_value, server_section, Gateway, Ports};

const DOCUMENTS: &str = r#"resource_policy:
  id: documents
  version: "7"
  resource: document
  rules:
    - name: editors-view
      actions: [view]
      effect: allow
      roles: [editor]
"#;

fn authz_yaml(port: u16, admin: u16) -> String {
    format!("listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin}\npolicies: policies\n")
}

/// `authz.yaml` and its policy directory, laid out as in `conf/`.
fn write_authz(dir: &Path, port: u16, admin: u16, documents: &str) {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    support::write(&dir.join("policies"), "documents.yaml", documents);
    support::write(dir, "authz.yaml", &authz_yaml(port, admin));
}

#[tokio::test]
async fn the_gateway_process_serves_the_authz_api_and_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let (port, admin) = (free_port(), free_port());
    write_authz(dir.path(), port, admin, DOCUMENTS);
    support::write(
        dir.path(),
        "gatehouse.yaml",
        &format!(
            "{}listeners:\n  - address: 127.0.0.1:{}\nadmin:\n  address: 127.0.0.1:{}\nembedded:\n  authz: authz.yaml\n",
            server_section(dir.path()),
            ports.http,
            ports.admin
        ),
    );
    let gw = Gateway::start_in(dir, ports);

    let authorize = format!("http://127.0.0.1:{port}/authz/v1/authorize");
    let question = |roles: &[&str]| {
        json!({
            "principal": {"sub": "bob", "roles": roles},
            "resource": {"type": "document", "id": "d1"},
            "action": "view",
        })
    };
    support::eventually(
        "the embedded authz service answers",
        support::READY_TIMEOUT,
        || {
            let (url, body) = (authorize.clone(), question(&["editor"]));
            async move {
                client()
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        },
    )
    .await;
    let resp = client()
        .post(&authorize)
        .json(&question(&["editor"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let d: Value = resp.json().await.unwrap();
    assert_eq!(d["allow"], true, "{d}");
    assert_eq!(d["policy_id"], "documents");
    assert_eq!(d["policy_version"], "7");
    assert_eq!(d["rule"], "editors-view");
    let d: Value = client()
        .post(&authorize)
        .json(&question(&["viewer"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["allow"], false, "{d}");
    assert_eq!(d["policy_id"], Value::Null);

    // Its own admin listener answers too.
    let health: Value = client()
        .get(format!("http://127.0.0.1:{admin}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["policies"], 1);

    // One process, one registry: the gateway's /metrics shows the decisions too.
    let text = client()
        .get(gw.admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The readiness poll above asked (and was allowed) at least once more.
    assert!(
        metric_value(
            &text,
            r#"gatehouse_authz_decisions_total{policy="documents",result="allow"}"#
        ) >= 2.0,
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            r#"gatehouse_authz_decisions_total{policy="none",result="deny"}"#
        ),
        1.0
    );
    assert_eq!(metric_value(&text, "gatehouse_authz_policies"), 1.0);
}

#[test]
fn validate_reports_a_broken_policy_of_the_embedded_authz_service() {
    let dir = tempfile::tempdir().unwrap();
    support::write(
        dir.path(),
        "gatehouse.yaml",
        "listeners:\n  - address: 127.0.0.1:1\nembedded:\n  authz: authz.yaml\n",
    );
    write_authz(dir.path(), 1, 2, DOCUMENTS);
    let validate = || {
        std::process::Command::new(support::BIN)
            .args(["validate", "--config"])
            .arg(dir.path().join("gatehouse.yaml"))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = validate();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");

    let broken = DOCUMENTS.replace("roles: [editor]", "derived_roles: [owner]");
    let line = broken
        .lines()
        .position(|l| l.contains("derived_roles: [owner]"))
        .unwrap()
        + 1;
    support::write(&dir.path().join("policies"), "documents.yaml", &broken);
    let out = validate();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let expected = format!(
        "{}:{line}: resource_policy.rules[0].derived_roles[0]: unknown derived role \"owner\" (imported: none)",
        dir.path().join("policies/documents.yaml").display()
    );
    assert!(text.contains(&expected), "{expected} in\n{text}");
    assert!(text.contains("1 problem(s) found"), "{text}");
}
