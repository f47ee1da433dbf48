//! The gateway assertion's key: generated when a route first asks for an assertion, kept 0600 in
//! a 0700 directory, the same across restarts, published on the admin listener at
//! `/.well-known/jwks.json`; and the configuration checks of `auth.assertion` and
//! `routes[].assertion`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use gatehouse::config::{self, LoadMode};
use http::Method;
use serde_json::Value;
use support::{client, eventually, Echo, Gateway, READY_TIMEOUT};

/// An issuer the routes can trust. An assertion needs a route with `auth`; these tests look at the
/// key, not at tokens, so nothing listens at the issuer (its key source only logs failed fetches).
const ISSUER: &str = r#"  issuers:
    demo:
      issuer: http://127.0.0.1:9
      jwks_url: http://127.0.0.1:9/jwks.json
      audiences: [documents-api]
"#;

/// A gateway config with one route to `echo`; `assertion` goes under `auth:`, `route_extra`
/// into the route.
fn config(echo: &Echo, assertion: &str, route_extra: &str) -> String {
    format!(
        r#"{{SERVER}}
listeners:
  - address: 127.0.0.1:{{HTTP}}
admin:
  address: 127.0.0.1:{{ADMIN}}
auth:
{ISSUER}{assertion}
upstreams:
  echo:
    targets: ["{}"]
routes:
  - name: documents
    match:
      path_prefix: /documents
    upstream: echo
    auth: {{mode: optional}}
{route_extra}
"#,
        echo.addr()
    )
}

const WITH_ASSERTION: &str = "    assertion: {audience: documents-backend}";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// GETs the JWKS and checks its shape: one ES256 P-256 signing key, public parts only.
/// Returns the key's `kid`.
async fn fetch_jwks(gw: &Gateway) -> String {
    let resp = client()
        .get(gw.admin("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/jwk-set+json");
    assert_eq!(resp.headers()["cache-control"], "public, max-age=300");
    let jwks: Value = resp.json().await.expect("a JSON key set");
    let keys = jwks["keys"].as_array().expect("a `keys` array");
    assert_eq!(keys.len(), 1, "{jwks}");
    let key = &keys[0];
    assert_eq!(key["kty"], "EC", "{key}");
    assert_eq!(key["crv"], "P-256", "{key}");
    assert_eq!(key["alg"], "ES256", "{key}");
    assert_eq!(key["use"], "sig", "{key}");
    for coordinate in ["x", "y"] {
        assert!(
            key[coordinate].as_str().is_some_and(|v| v.len() == 43),
            "{key}"
        );
    }
    // No private part, under any name.
    let members: Vec<&str> = key
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(!members.contains(&private), "{private} in {key}");
    }
    key["kid"].as_str().expect("a kid").to_string()
}

#[tokio::test]
async fn the_assertion_key_is_served_on_the_admin_listener_and_kept_private_on_disk() {
    let echo = Echo::start("echo");
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&echo, "", WITH_ASSERTION))]);

    let kid = fetch_jwks(&gw).await;
    // The default key_dir, relative to the config file's directory.
    let keys = gw.path("var/gateway/keys");
    assert_eq!(mode(&keys), 0o700);
    assert_eq!(mode(&keys.join(format!("{kid}.pem"))), 0o600);
    assert_eq!(mode(&keys.join("keyring.json")), 0o600);

    let metrics = gw.metrics().await;
    for series in [
        "gatehouse_assertions_signed_total",
        r#"gatehouse_assertion_cache_total{result="hit"}"#,
        r#"gatehouse_assertion_cache_total{result="miss"}"#,
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }
}

#[tokio::test]
async fn the_key_survives_a_restart_on_the_same_key_dir() {
    let echo = Echo::start("echo");
    let keys = tempfile::tempdir().unwrap();
    let key_dir = keys.path().join("gateway");
    let assertion = format!("  assertion:\n    key_dir: {}\n", key_dir.display());
    let yaml = config(&echo, &assertion, WITH_ASSERTION);

    let first = Gateway::start(&[("gatehouse.yaml", &yaml)]);
    let kid = fetch_jwks(&first).await;
    drop(first);

    let second = Gateway::start(&[("gatehouse.yaml", &yaml)]);
    assert_eq!(
        fetch_jwks(&second).await,
        kid,
        "the same key after a restart"
    );
    let pems: Vec<_> = std::fs::read_dir(&key_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pem"))
        .collect();
    assert_eq!(pems.len(), 1, "no second key generated");
    assert_eq!(mode(&key_dir), 0o700);
}

#[tokio::test]
async fn no_key_is_created_until_a_route_asks_for_an_assertion() {
    let echo = Echo::start("echo");
    let gw = Gateway::start(&[("gatehouse.yaml", &config(&echo, "", ""))]);
    let c = client();
    let resp = c
        .get(gw.admin("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    support::error_body(resp, 404, "not_found").await;
    assert!(!gw.path("var").exists(), "no key directory written");

    // A reload that adds the first such route creates the key.
    gw.write("gatehouse.yaml", &config(&echo, "", WITH_ASSERTION));
    let resp = c.post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    eventually("the reload applied", READY_TIMEOUT, || async {
        gw.config_version().await >= 2
    })
    .await;
    let kid = fetch_jwks(&gw).await;
    assert!(gw.path(&format!("var/gateway/keys/{kid}.pem")).exists());

    // Removing the route again keeps the key published: assertions signed meanwhile still verify.
    gw.write("gatehouse.yaml", &config(&echo, "", ""));
    let resp = c.post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    eventually("the second reload applied", READY_TIMEOUT, || async {
        gw.config_version().await >= 3
    })
    .await;
    assert_eq!(fetch_jwks(&gw).await, kid);
}

/// Loads `yaml` (with `routes.yaml` beside it) in `dir` without starting anything.
fn load(dir: &Path, yaml: &str, mode: LoadMode) -> Result<config::Snapshot, String> {
    support::write(dir, "gatehouse.yaml", yaml);
    config::load(&dir.join("gatehouse.yaml"), None, mode).map_err(|e| e.to_string())
}

const UPSTREAMS: &str = r#"upstreams:
  echo:
    targets: ["127.0.0.1:9"]
"#;

/// What a route needs before it may send an assertion.
const ROUTE_AUTH: &str = "    auth: {mode: optional}\n";

#[test]
fn assertion_settings_are_checked_with_their_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:8080
auth:
{ISSUER}  assertion:
    issuer: ""
    ttl: 2h
{UPSTREAMS}routes:
  - name: a
    match: {{path: /a}}
    upstream: echo
{ROUTE_AUTH}    assertion: {{audience: ""}}
"#
    );
    let errors = load(dir.path(), &yaml, LoadMode::CheckOnly).unwrap_err();
    for expected in [
        "auth.assertion.issuer: must not be empty",
        "auth.assertion.ttl: must be at most 1h",
        "routes[0].assertion.audience: must not be empty",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }

    let zero = yaml
        .replace("ttl: 2h", "ttl: 0s")
        .replace("issuer: \"\"", "issuer: gw");
    let errors = load(dir.path(), &zero, LoadMode::CheckOnly).unwrap_err();
    assert!(
        errors.contains("auth.assertion.ttl: must be at least 1s"),
        "{errors}"
    );
}

#[test]
fn a_route_asserts_to_its_upstream_unless_it_names_an_audience() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:8080
auth:
{ISSUER}{UPSTREAMS}routes:
  - name: named
    match: {{path: /named}}
    upstream: echo
{ROUTE_AUTH}    assertion: {{audience: documents-backend}}
  - name: default
    match: {{path: /default}}
    upstream: echo
{ROUTE_AUTH}    assertion: {{}}
  - name: plain
    match: {{path: /plain}}
    upstream: echo
{ROUTE_AUTH}"#
    );
    let audience = |snapshot: &config::Snapshot, path: &str| match snapshot.routes.lookup(
        "localhost",
        path,
        &Method::GET,
    ) {
        gatehouse::routing::RouteLookup::Found { route, .. } => {
            route.policy.assertion_audience.clone()
        }
        _ => panic!("no route for {path}"),
    };
    let checked = load(dir.path(), &yaml, LoadMode::CheckOnly).unwrap();
    assert_eq!(
        audience(&checked, "/named").as_deref(),
        Some("documents-backend")
    );
    assert_eq!(audience(&checked, "/default").as_deref(), Some("echo"));
    assert_eq!(audience(&checked, "/plain"), None);
    // `validate` writes nothing.
    assert!(checked.assertion_signer.is_none());
    assert!(!dir.path().join("var").exists());
    assert_eq!(
        checked.assertion.key_dir,
        dir.path().join("var/gateway/keys")
    );

    // A running load opens the signer; the next one carries the same signer over.
    let running = load(dir.path(), &yaml, LoadMode::Run).unwrap();
    let signer = running.assertion_signer.clone().expect("a signer");
    assert!(dir.path().join("var/gateway/keys").is_dir());
    let path = dir.path().join("gatehouse.yaml");
    let next = config::load(&path, Some(&running), LoadMode::Run).unwrap();
    assert!(Arc::ptr_eq(
        &signer,
        next.assertion_signer.as_ref().unwrap()
    ));
    assert!(!next.process_settings_differ(&running));
    support::write(
        dir.path(),
        "gatehouse.yaml",
        &yaml.replace("auth:\n", "auth:\n  assertion: {ttl: 30s}\n"),
    );
    let changed = config::load(&path, Some(&next), LoadMode::Run).unwrap();
    assert!(
        changed.process_settings_differ(&next),
        "assertion settings apply at restart"
    );
}

#[test]
fn a_key_dir_holding_another_key_ring_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let issuer_keys = dir.path().join("identity-keys");
    gatehouse_identity::keys::KeyRing::open(
        &issuer_keys,
        &[gatehouse_identity::keys::SigningAlg::RS256],
        1,
    )
    .unwrap();
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:8080
auth:
{ISSUER}  assertion: {{key_dir: identity-keys}}
{UPSTREAMS}routes:
  - name: a
    match: {{path: /a}}
    upstream: echo
{ROUTE_AUTH}    assertion: {{}}
"#
    );
    let errors = load(dir.path(), &yaml, LoadMode::Run).unwrap_err();
    assert!(
        errors.contains("auth.assertion.key_dir: cannot open the gateway's assertion key")
            && errors.contains("holds another key ring"),
        "{errors}"
    );
}
