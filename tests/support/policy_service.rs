//! The policy decision service (`gatehouse-authz`) for the gateway's authorization tests: its
//! `authz.yaml`, a policy directory with copies of the shipped policies (conf/policies), its
//! decision log, and — for `mode: remote` — the service as a process of its own.
//!
//! The root package's tests can start `gatehouse`, not `gatehouse-authz`, so the remote service
//! is a second gateway process that serves nothing but `embedded: {authz}` (as key_rotation.rs
//! does for the issuer). Its directory (authz.yaml, policies, decision log) outlives the
//! process, so a test can kill the service and start it again on the same ports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{client, eventually, free_port, wait_for_listener, Gateway, READY_TIMEOUT};

/// The shipped policy files a seed scenario copies (policy tests are not copied: they are not
/// what the gateway asks).
pub const SHIPPED: [&str; 3] = ["derived_roles.yaml", "documents.yaml", "working_hours.yaml"];

/// The text of a shipped policy file, `conf/policies/<name>`.
pub fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conf/policies")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `documents.yaml` as shipped, with its view rule's roles replaced by `roles` and its owner
/// derived role kept (`[viewer]` lets bob, a viewer, read anyone's document).
pub fn documents_with_view_roles(roles: &str) -> String {
    let text = shipped("documents.yaml");
    let old = "roles: [editor, admin]      # \"*\" = every principal";
    assert!(text.contains(old), "the shipped view rule changed:\n{text}");
    text.replace(old, &format!("roles: {roles}"))
}

/// Where an authz service listens: its decision API and its admin listener.
#[derive(Debug, Clone, Copy)]
pub struct AuthzPorts {
    pub port: u16,
    pub admin: u16,
}

impl AuthzPorts {
    pub fn new() -> AuthzPorts {
        AuthzPorts {
            port: free_port(),
            admin: free_port(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The running policy set's version (`GET /authz/v1/policies`), once the service answers.
    pub async fn policy_version(&self) -> Option<String> {
        let resp = client()
            .get(format!("{}/authz/v1/policies", self.url()))
            .send()
            .await
            .ok()?;
        let body: Value = resp.json().await.ok()?;
        body["version"].as_str().map(String::from)
    }

    /// Waits until the policy set's version is no longer `old` (a reload was applied).
    pub async fn wait_version_change(&self, old: &str) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(v) = self.policy_version().await {
                if v != old {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the policy set did not reload (still version {old})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the decision API answers.
    pub async fn wait_serving(&self) -> String {
        wait_for_listener(self.port, "the authz service");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(v) = self.policy_version().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "the authz service never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `authz.yaml` for `ports`: policies in `policies/`, one decision-log line per decision in
/// `decisions.log` (both relative to the file).
pub fn authz_yaml(ports: AuthzPorts) -> String {
    format!(
        "listen: 127.0.0.1:{}\nadmin: 127.0.0.1:{}\npolicies: policies\ndecision_log:\n  path: decisions.log\n",
        ports.port, ports.admin
    )
}

/// Writes `authz.yaml` and the policy directory (`files`: name, text) into `dir`.
pub fn write_authz(dir: &Path, ports: AuthzPorts, files: &[(&str, String)]) {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("policy dir");
    for (name, text) in files {
        super::write(&policies, name, text);
    }
    super::write(dir, "authz.yaml", &authz_yaml(ports));
}

/// The shipped policies, as `write_authz` takes them.
pub fn shipped_files() -> Vec<(&'static str, String)> {
    SHIPPED.iter().map(|n| (*n, shipped(n))).collect()
}

/// Every JSON line of a file written so far (a missing file has none).
pub fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits for the first JSON line of `path` that `matches`, and returns it.
pub async fn wait_line(path: &Path, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(line) = json_lines(path).into_iter().find(&matches) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no line for {what} in {}:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The decision-log lines for the gateway request `request_id` (`input.context.request_id`).
pub fn decisions_for(log: &Path, request_id: &str) -> Vec<Value> {
    json_lines(log)
        .into_iter()
        .filter(|l| l["input"]["context"]["request_id"] == request_id)
        .collect()
}

/// Waits for the decision-log line of the gateway request `request_id`.
pub async fn wait_decision(log: &Path, request_id: &str) -> Value {
    wait_line(log, request_id, |l| {
        l["input"]["context"]["request_id"] == request_id
    })
    .await
}

/// Waits for the gateway's JSON access-log line of `request_id`.
pub async fn wait_access_line(gw: &Gateway, request_id: &str) -> Value {
    wait_line(&gw.path("access.log"), request_id, |l| {
        l["request_id"] == request_id
    })
    .await
}

/// A gateway process that serves only the policy service (`embedded: {authz}`), for
/// `mode: remote`. Its authz directory survives [`PolicyService::kill`], so
/// [`PolicyService::start_again`] brings the same service back on the same ports.
pub struct PolicyService {
    pub ports: AuthzPorts,
    /// authz.yaml, policies/, decisions.log.
    pub dir: tempfile::TempDir,
    process: Option<Gateway>,
}

const SERVICE_PROCESS: &str = "{SERVER}listeners:\n  - address: 127.0.0.1:{HTTP}\nadmin:\n  address: 127.0.0.1:{ADMIN}\nembedded:\n  authz: @AUTHZ@\n";

impl PolicyService {
    pub async fn start(files: &[(&str, String)]) -> PolicyService {
        let ports = AuthzPorts::new();
        let dir = tempfile::tempdir().expect("temp dir");
        write_authz(dir.path(), ports, files);
        let mut service = PolicyService {
            ports,
            dir,
            process: None,
        };
        service.start_again().await;
        service
    }

    /// Starts the process (again), on the same ports and directory; waits until it answers.
    pub async fn start_again(&mut self) {
        assert!(self.process.is_none(), "the service is running");
        let authz = self.dir.path().join("authz.yaml");
        let config = SERVICE_PROCESS.replace("@AUTHZ@", &authz.display().to_string());
        self.process = Some(Gateway::start_prepared(
            tempfile::tempdir().expect("temp dir"),
            &[("gatehouse.yaml", &config)],
        ));
        self.ports.wait_serving().await;
    }

    /// Kills the process (SIGKILL: no goodbye), so its port refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.signal(libc::SIGKILL);
            assert!(
                process.wait_exit(Duration::from_secs(10)),
                "the policy service did not stop"
            );
        }
    }

    pub fn url(&self) -> String {
        self.ports.url()
    }

    pub fn policies(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    pub fn decision_log(&self) -> PathBuf {
        self.dir.path().join("decisions.log")
    }

    /// Replaces a policy file (atomically); the service's watcher reloads the set.
    pub fn write_policy(&self, name: &str, text: &str) {
        super::write(&self.policies(), name, text);
    }
}

/// Polls `/metrics` of `gw` until the sample `name{labels}` reaches `at_least`.
pub async fn wait_metric(gw: &Gateway, name: &str, labels: &[(&str, &str)], at_least: f64) {
    let url = gw.admin("/metrics");
    eventually(
        &format!("{name}{labels:?} >= {at_least}"),
        READY_TIMEOUT,
        || {
            let url = url.clone();
            async move {
                let Ok(resp) = client().get(&url).send().await else {
                    return false;
                };
                let text = resp.text().await.unwrap_or_default();
                super::issuer::sample(&text, name, labels).is_some_and(|v| v >= at_least)
            }
        },
    )
    .await;
}
