//! Test support: a real `gatehouse-identity` process on ephemeral loopback ports, with a config
//! written to a temporary directory. The process is killed when the handle drops; readiness is
//! polled, never slept for. When a test panics, the issuer's stderr is printed.

#![allow(dead_code)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod browser_flow;
#[path = "../../../tests/support/polling.rs"]
mod polling;
pub mod postgres;
#[path = "../../../tests/support/slow_clients.rs"]
#[allow(dead_code)]
pub mod slow_clients;
// Not every test file uses every helper.
#[allow(unused_imports)]
pub use polling::{eventually, free_port, metric_value, READY_TIMEOUT};

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse-identity");
/// argon2id hashes of the test secrets, computed once per test binary.
pub fn hash_of(secret: &str) -> String {
    static CACHE: OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap();
    map.entry(secret.to_string())
        .or_insert_with(|| gatehouse_identity::password::hash(secret).unwrap())
        .clone()
}

/// The users and clients most tests use. Secrets are `<id>-secret`, passwords `<name>-password`.
pub fn standard_directory() -> String {
    format!(
        r#"
users:
  - username: alice
    password_hash: {alice}
    email: alice@example.com
    name: Alice
    roles: [admin, editor]
    attributes: {{department: engineering, level: 3}}
  - username: bob
    password_hash: {bob}
    email: bob@example.com
    roles: [viewer]
clients:
  - id: reports
    secret_hash: {reports}
    grant_types: [client_credentials]
    audiences: [documents-api, search-api]
    scopes: [documents:read, documents:write]
    roles: [service]
  - id: web
    secret_hash: {web}
    grant_types: [authorization_code, refresh_token]
    redirect_uris: [http://127.0.0.1:1/callback]
    post_logout_redirect_uris: [http://127.0.0.1:1/bye]
    audiences: [documents-api]
    scopes: [openid, email, documents:read]
  - id: spa
    grant_types: [authorization_code, refresh_token]
    redirect_uris: [http://127.0.0.1:2/callback]
    audiences: [documents-api]
    scopes: [openid, documents:read]
    signing_alg: ES256
  - id: cli
    secret_hash: {cli}
    grant_types: [password, refresh_token]
    audiences: [documents-api]
    scopes: [openid, documents:read]
"#,
        alice = hash_of("alice-password"),
        bob = hash_of("bob-password"),
        reports = hash_of("reports-secret"),
        web = hash_of("web-secret"),
        cli = hash_of("cli-secret"),
    )
}

/// A test key-encryption key: `byte` × 32, base64.
pub fn kek_text(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

pub struct Identity {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    child: Option<Child>,
}

impl Identity {
    /// Starts an issuer whose config is the standard settings plus `extra` (top-level YAML keys
    /// that are not in the standard part, e.g. `lockout:`) plus `directory` (users and clients).
    pub fn start(extra: &str, directory: &str) -> Identity {
        let mut identity = Self::prepare(extra, directory);
        identity.spawn();
        identity
    }

    /// An issuer on the state store `state` (a URL) whose key-encryption key is `kek` × 32 bytes
    /// (file `kek.b64`, 0600): instances given the same `state` and `kek` share one issuer's
    /// state and keys. `extra` as in [`Identity::start`], without `keys:` or `state:`. Not
    /// started yet.
    pub fn prepare_on_state(extra: &str, directory: &str, state: &str, kek: u8) -> Identity {
        let extra = format!(
            "{extra}\nstate: {state}\nkeys:\n  dir: keys\n  encryption_key: {{file: kek.b64}}\n"
        );
        let identity = Identity::prepare(&extra, directory);
        let path = identity.path("kek.b64");
        std::fs::write(&path, format!("{}\n", kek_text(kek))).expect("write the KEK");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("KEK mode");
        identity
    }

    /// Writes the config but does not start the process yet (tests add files first).
    pub fn prepare(extra: &str, directory: &str) -> Identity {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let admin_port = free_port();
        let identity = Identity {
            dir,
            port,
            admin_port,
            child: None,
        };
        identity.write_config(extra, directory);
        identity
    }

    pub fn config_text(&self, extra: &str, directory: &str) -> String {
        let has = |k: &str| extra.lines().any(|l| l.starts_with(k));
        let mut text = format!(
            "listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin}\naudit_log: audit.log\n",
            port = self.port,
            admin = self.admin_port
        );
        if !has("issuer:") {
            text.push_str(&format!("issuer: http://127.0.0.1:{}\n", self.port));
        }
        if !has("keys:") {
            text.push_str("keys:\n  dir: keys\n");
        }
        text.push_str(extra);
        text.push('\n');
        text.push_str(directory);
        text
    }

    pub fn write_config(&self, extra: &str, directory: &str) {
        let text = self.config_text(extra, directory);
        // Write then rename, as editors do: the watcher must never see half a file.
        let tmp = self.dir.path().join(".identity.yaml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("rename config");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("identity.yaml")
    }

    /// Runs `gatehouse-identity validate` on the written config: its exit code and output.
    pub fn validate(&self) -> (Option<i32>, String) {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(self.config_path())
            .arg("validate")
            .output()
            .expect("validate");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn spawn(&mut self) {
        self.launch();
        self.wait_ready();
    }

    /// Starts the process without waiting for it to listen.
    pub fn launch(&mut self) {
        let child = Command::new(BIN)
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.path().join("stderr.log")).expect("stderr file"),
            ))
            .spawn()
            .expect("spawn gatehouse-identity");
        self.child = Some(child);
    }

    /// Waits until both listeners accept connections.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).is_ok()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "gatehouse-identity exited with {status}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "gatehouse-identity not ready:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: sending a signal to our own child process.
            unsafe {
                libc::kill(c.id() as i32, signal);
            }
        }
    }

    /// The issuer's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How the process ended, or `None` while it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn stderr(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.path("stderr.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The audit log's lines, parsed.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.path("audit.log")).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Asks for a client_credentials token with HTTP Basic authentication.
    pub async fn service_token(
        &self,
        client_id: &str,
        secret: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(extra);
        client()
            .post(self.url("/token"))
            .basic_auth(client_id, Some(secret))
            .form(&form)
            .send()
            .await
            .expect("token request")
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gatehouse-identity stderr ---\n{}", self.stderr());
        }
        self.stop();
    }
}

/// A client that never follows redirects (tests look at each hop) and keeps no cookies.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A browser: keeps cookies, never follows redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("browser")
}

/// Checks an RFC 6749 error answer: status, JSON content type, `error` code, a description,
/// and `no-store`. Returns the body.
pub async fn oauth_error(resp: reqwest::Response, status: u16, error: &str) -> serde_json::Value {
    assert_eq!(
        resp.status().as_u16(),
        status,
        "status of an `{error}` answer"
    );
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body: serde_json::Value = resp.json().await.expect("JSON error body");
    assert_eq!(body["error"], error, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert!(body.get("access_token").is_none());
    body
}

/// Resident memory of process `pid` (`VmRSS` in /proc/<pid>/status), in KiB; `None` once the
/// process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
