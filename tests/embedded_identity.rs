//! The identity service embedded in the gateway process (`embedded.identity`), as the demo runs it.

mod support;

use support::{client, free_port, metric_value, Gateway};

fn identity_yaml(port: u16, admin: u16) -> String {
    format!(
        r#"issuer: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
keys:
  dir: keys
audit_log: audit.log
clients:
  - id: svc
    secret_hash: {hash}
    grant_types: [client_credentials]
    audiences: [documents-api]
    scopes: [documents:read]
"#,
        hash = gatehouse_identity::password::hash("svc-secret").unwrap()
    )
}

const GATEWAY: &str = r#"{SERVER}
listeners:
  - address: 127.0.0.1:{HTTP}
admin:
  address: 127.0.0.1:{ADMIN}
embedded:
  identity: identity.yaml
"#;

#[tokio::test]
async fn the_gateway_process_serves_the_issuer_and_its_metrics() {
    let (port, admin) = (free_port(), free_port());
    let gw = Gateway::start(&[
        ("gatehouse.yaml", GATEWAY),
        ("identity.yaml", &identity_yaml(port, admin)),
    ]);
    let issuer = format!("http://127.0.0.1:{port}");
    support::eventually(
        "the embedded issuer answers",
        support::READY_TIMEOUT,
        || {
            let url = format!("{issuer}/.well-known/openid-configuration");
            async move {
                client()
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        },
    )
    .await;
    let doc: serde_json::Value = client()
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], issuer.as_str());

    let resp = client()
        .post(format!("{issuer}/token"))
        .basic_auth("svc", Some("svc-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // One process, one registry: the gateway's /metrics shows the issuer's series too.
    let text = client()
        .get(gw.admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_value(
            &text,
            r#"gatehouse_identity_tokens_issued_total{client="svc",grant="client_credentials"}"#
        ),
        1.0
    );
    // The issuer's keys are in its state store, sealed with the key-encryption key made beside
    // it; no key file is written.
    assert!(gw.path("state.db").exists() && gw.path("kek").exists());
    assert!(!gw.path("keys").exists());
}

#[test]
fn validate_reports_problems_in_the_embedded_identity_file() {
    let dir = tempfile::tempdir().unwrap();
    support::write(
        dir.path(),
        "gatehouse.yaml",
        "listeners:\n  - address: 127.0.0.1:1\nembedded:\n  identity: identity.yaml\n",
    );
    let broken =
        identity_yaml(1, 2).replace("grant_types: [client_credentials]", "grant_types: []");
    support::write(dir.path(), "identity.yaml", &broken);
    let (code, text) = support::validate(dir.path());
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("identity.yaml: clients[0].grant_types: name at least one grant type"),
        "{text}"
    );
}
