//! Test support: a real `gatehouse-authz` process on ephemeral loopback ports, with its
//! `authz.yaml` and policy directory written into a temporary directory.
//!
//! Readiness is polled (`/healthz` on the admin port, then the decision port), never slept for.
//! The process is killed when its handle drops, and when a test panics its stderr is printed.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "../../../tests/support/polling.rs"]
mod polling;
#[path = "../../../tests/support/slow_clients.rs"]
#[allow(dead_code)]
pub mod slow_clients;
// Not every test file uses every helper.
#[allow(unused_imports)]
pub use polling::{eventually, free_port, metric_value, READY_TIMEOUT};

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse-authz");

/// The directory's policies, as the shipped ones but without comments (tests name lines).
pub const DERIVED_ROLES: &str = r#"derived_roles:
  name: document_roles
  definitions:
    - name: owner
      parent_roles: ["*"]
      when: resource.owner == principal.sub
"#;

pub const DOCUMENTS: &str = r#"resource_policy:
  id: documents
  version: "2026-11-23"
  resource: document
  description: Editors and owners read; owners and admins change.
  import_derived_roles: [document_roles]
  rules:
    - name: editors-and-owners-view
      actions: [view]
      effect: allow
      roles: [editor, admin]
      derived_roles: [owner]
    - name: owner-or-admin-edits
      actions: [edit, delete]
      effect: allow
      roles: [admin]
      derived_roles: [owner]
"#;

pub const WORKING_HOURS: &str = r#"resource_policy:
  id: working-hours
  version: "2026-11-23"
  resource: document
  description: Outside office hours, documents are reachable only from the office network.
  rules:
    - name: outside-hours-outside-office
      actions: ["*"]
      effect: deny
      roles: ["*"]
      when:
        none:
          - ipInRange(context.ip, ["10.0.0.0/8", "192.168.0.0/16"])
          - isWeekday(context.time, "Europe/Paris") && timeBetween(context.time, "08:00", "19:00", "Europe/Paris")
"#;

/// The three files above, as most tests use them.
pub const STANDARD_POLICIES: [(&str, &str); 3] = [
    ("derived_roles.yaml", DERIVED_ROLES),
    ("documents.yaml", DOCUMENTS),
    ("working_hours.yaml", WORKING_HOURS),
];

/// A Monday morning in Paris, from outside the office network: working-hours does not deny.
pub fn office_hours() -> Value {
    json!({"ip": "203.0.113.9", "time": "2026-11-23T10:00:00+01:00"})
}

/// The same Monday at 23:00, from outside the office network: working-hours denies.
pub fn night() -> Value {
    json!({"ip": "203.0.113.9", "time": "2026-11-23T23:00:00+01:00"})
}

/// One question about document `d1` owned by alice.
pub fn ask(sub: &str, roles: &[&str], action: &str, context: Value) -> Value {
    json!({
        "principal": {"sub": sub, "roles": roles},
        "resource": {"type": "document", "id": "d1", "owner": "alice"},
        "action": action,
        "context": context,
    })
}

/// The 1-based line of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
}

enum NotReady {
    Exited(ExitStatus),
    PortTaken,
}

/// A running (or prepared) `gatehouse-authz`.
pub struct Authz {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    /// Top-level keys added to `authz.yaml` after listen/admin/policies.
    extra: String,
    child: Option<Child>,
}

impl Authz {
    /// Starts a service on `policies` (file name, contents) with `extra` config keys.
    pub fn start(extra: &str, policies: &[(&str, &str)]) -> Authz {
        let mut authz = Self::prepare(extra, policies);
        authz.spawn();
        authz
    }

    /// The standard policies and settings small enough to test the limits.
    pub fn standard() -> Authz {
        Self::start(
            "max_body_bytes: 16384\nmax_batch_checks: 5\n",
            &STANDARD_POLICIES,
        )
    }

    /// Writes the config and the policies but does not start the process.
    pub fn prepare(extra: &str, policies: &[(&str, &str)]) -> Authz {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("policies")).expect("policy dir");
        let authz = Authz {
            dir,
            port: free_port(),
            admin_port: free_port(),
            extra: extra.to_string(),
            child: None,
        };
        for (name, text) in policies {
            authz.write_policy(name, text);
        }
        authz.write_config();
        authz
    }

    fn write_config(&self) {
        let text = format!(
            "listen: 127.0.0.1:{}\nadmin: 127.0.0.1:{}\npolicies: policies\nthreads: 1\n{}",
            self.port, self.admin_port, self.extra
        );
        write(self.dir.path(), "authz.yaml", &text);
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("authz.yaml")
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.path("policies")
    }

    /// A path in the service's directory (decision logs, `stderr.log`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces a policy file as editors do (temp file + rename): the watcher never sees half a
    /// file.
    pub fn write_policy(&self, name: &str, text: &str) {
        write(&self.policy_dir(), name, text);
    }

    fn launch(&self) -> Child {
        Command::new(BIN)
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.path("stderr.log")).expect("stderr file"),
            ))
            .spawn()
            .expect("spawn gatehouse-authz")
    }

    /// Starts the process and waits until both listeners answer. Ports another process took
    /// between `free_port` and the bind are picked again (a few times).
    pub fn spawn(&mut self) {
        for _attempt in 0..3 {
            let mut child = self.launch();
            match self.wait_ready(&mut child) {
                Ok(()) => {
                    self.child = Some(child);
                    return;
                }
                Err(NotReady::PortTaken) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!("gatehouse-authz: a port was taken meanwhile; new ports");
                    self.port = free_port();
                    self.admin_port = free_port();
                    self.write_config();
                }
                Err(NotReady::Exited(status)) => {
                    panic!("gatehouse-authz exited with {status}:\n{}", self.stderr())
                }
            }
        }
        panic!("gatehouse-authz could not bind:\n{}", self.stderr());
    }

    /// Polls until the admin listener is healthy and the decision listener answers as this
    /// service (its policy directory is ours: another process could hold the port).
    fn wait_ready(&self, child: &mut Child) -> Result<(), NotReady> {
        // Pingora logs this and retries the bind for a while, then gives up on that listener
        // without exiting.
        let port_taken = || self.stderr().contains(" is in use");
        let ours = self.policy_dir().display().to_string();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(NotReady::Exited(status));
            }
            if port_taken() {
                return Err(NotReady::PortTaken);
            }
            let healthy = http_get(self.admin_port, "/healthz").is_some_and(|(s, _)| s == 200);
            if healthy
                && http_get(self.port, "/authz/v1/policies")
                    .is_some_and(|(s, body)| s == 200 && body.contains(&ours))
            {
                if port_taken() {
                    return Err(NotReady::PortTaken);
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "gatehouse-authz not ready within {READY_TIMEOUT:?}:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Starts a process that is expected to refuse to start: its exit status.
    pub fn run_expecting_exit(&mut self) -> ExitStatus {
        let mut child = self.launch();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                self.child = Some(child);
                panic!("gatehouse-authz still running:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -HUP <pid>`: reload the policies.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP: {status}");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stderr(&self) -> String {
        read(&self.path("stderr.log"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// POSTs `body` as JSON to the decision listener.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        client()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// POSTs raw bytes (labelled JSON) to the decision listener.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        client()
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST")
    }

    /// One decision; asserts a 200 JSON answer and returns it.
    pub async fn authorize(&self, request: &Value) -> Value {
        ok_json(self.post("/authz/v1/authorize", request).await).await
    }

    pub async fn policies(&self) -> Value {
        ok_json(
            client()
                .get(self.url("/authz/v1/policies"))
                .send()
                .await
                .expect("GET policies"),
        )
        .await
    }

    /// `POST /reload` on the admin listener.
    pub async fn reload(&self) -> reqwest::Response {
        client()
            .post(self.admin("/reload"))
            .send()
            .await
            .expect("POST /reload")
    }

    pub async fn metrics(&self) -> String {
        let resp = client()
            .get(self.admin("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(resp.status(), 200);
        resp.text().await.expect("metrics body")
    }

    /// One sample of `/metrics`, `name{labels}` exactly as printed; 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// The lines of a decision log file in the service's directory, parsed.
    pub fn decision_log(&self, name: &str) -> Vec<Value> {
        read(&self.path(name))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl Drop for Authz {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- gatehouse-authz stderr ----\n{}", self.stderr());
        }
    }
}

/// Checks a 200 JSON answer (with `no-store`) and returns its body.
pub async fn ok_json(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Checks a JSON error answer (status and `error` code) and returns its body.
pub async fn error_json(resp: reqwest::Response, status: u16, error: &str) -> Value {
    let got = resp.status();
    let content_type = resp.headers().get("content-type").cloned();
    let text = resp.text().await.expect("body");
    assert_eq!(got.as_u16(), status, "{text}");
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(body["error"], error, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// Checks a 400 naming `field`; returns the message.
pub async fn invalid(resp: reqwest::Response, field: &str) -> String {
    let body = error_json(resp, 400, "invalid_request").await;
    assert_eq!(body["field"], field, "{body}");
    body["message"].as_str().unwrap_or_default().to_string()
}

/// A client with a timeout that does not follow redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Writes atomically (temp file + rename), as editors and config managers do.
pub fn write(dir: &Path, name: &str, contents: &str) {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
}

/// `gatehouse-authz validate --config <config>`.
pub fn validate(config: &Path) -> Output {
    Command::new(BIN)
        .args(["validate", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run validate")
}

pub fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

pub fn connects(port: u16) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A minimal blocking `GET` for readiness polling (no async runtime needed): status and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}
