//! The issuer on HTTPS (`tls:`): discovery over TLS, and the SSO and login-binding cookies
//! marked `Secure`.
//! A certificate that cannot be loaded is a clear start-up error, not a panic.

mod support;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use support::{standard_directory, Identity};

/// A self-signed certificate for `localhost`, written as `idp.crt` / `idp.key`.
fn write_certificate(identity: &Identity) -> reqwest::Certificate {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(identity.path("idp.crt"), cert.cert.pem()).unwrap();
    std::fs::write(identity.path("idp.key"), cert.signing_key.serialize_pem()).unwrap();
    reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap()
}

fn https_extra(port: u16) -> String {
    format!("issuer: https://localhost:{port}\ntls:\n  cert: idp.crt\n  key: idp.key\n")
}

#[tokio::test]
async fn over_tls_the_sso_cookies_are_secure() {
    // The port goes into the config, so prepare twice: once to learn it, once with it.
    let probe = Identity::prepare("", &standard_directory());
    let extra = https_extra(probe.port);
    probe.write_config(&extra, &standard_directory());
    let mut identity = probe;
    let root = write_certificate(&identity);
    identity.spawn();

    let browser = reqwest::Client::builder()
        .add_root_certificate(root)
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", identity.port);
    let doc: serde_json::Value = browser
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], base.as_str());
    assert_eq!(doc["token_endpoint"], format!("{base}/token"));

    let verifier = URL_SAFE_NO_PAD.encode([7u8; 32]);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let form = browser
        .get(format!("{base}/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", "spa"),
            ("redirect_uri", "http://127.0.0.1:2/callback"),
            ("scope", "openid"),
            ("state", "s1"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    // The cookie binding the pending login to this browser is Secure too.
    let binding = form.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(binding.starts_with("gatehouse_sso_login="), "{binding}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(
            binding.contains(attribute),
            "{attribute} missing in {binding}"
        );
    }
    let html = form.text().await.unwrap();
    let marker = r#"name="request" value=""#;
    let start = html.find(marker).expect("a login form") + marker.len();
    let request = &html[start..start + html[start..].find('"').unwrap()];

    let login = browser
        .post(format!("{base}/login"))
        .form(&[
            ("request", request),
            ("username", "alice"),
            ("password", "alice-password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing in {cookie}"
        );
    }
    let location = login.headers()["location"].to_str().unwrap();
    assert!(
        location.contains("iss=https%3A%2F%2Flocalhost"),
        "{location}"
    );
}

#[test]
fn an_unreadable_certificate_stops_start_up_with_a_clear_error() {
    let identity = Identity::prepare(&https_extra(1), &standard_directory());
    std::fs::write(identity.path("idp.crt"), "not a certificate").unwrap();
    std::fs::write(identity.path("idp.key"), "not a key").unwrap();
    let out = std::process::Command::new(support::BIN)
        .arg("--config")
        .arg(identity.config_path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("idp.crt"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
