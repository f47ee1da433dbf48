//! Test support: real `gatehouse` processes on ephemeral loopback ports.
//!
//! Every process is killed when its handle drops; readiness is polled, never slept for. When a
//! test panics, the gateway's stderr is printed so the failure explains itself.

#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod idp;
pub mod issuer;
pub mod policy_service;
mod polling;
pub mod redis;
#[allow(dead_code)]
pub mod slow_clients;
// Not every test file uses every helper.
#[allow(unused_imports)]
pub use polling::{connections_to, eventually, free_port, metric_value, READY_TIMEOUT};

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// Waits until something listens on `port` (a listener of a process already started).
pub fn wait_for_listener(port: u16, what: &str) {
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until `child` listens on `port`; when it exits first, panics with its stderr (read from
/// `stderr` when given), so a refused config explains itself.
fn wait_for_port(port: u16, child: &mut Child, what: &str, stderr: Option<&Path>) {
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = stderr.map(read_to_string).unwrap_or_default();
            panic!("{what} exited early with {status}\n{text}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not listen on port {port} within {READY_TIMEOUT:?}");
}

/// A loopback port that refuses connections for as long as the guard lives: a "dead" target.
///
/// `free_port()` releases its port, so another test's server could take it and bring a dead
/// target to life. This socket is bound but never listening instead: the kernel answers a
/// connection attempt with a reset (ECONNREFUSED, as for a stopped server), and no one else can
/// bind the port until the guard drops. A listener that merely never accepts would not do: the
/// kernel completes handshakes into its backlog, so connections would succeed.
///
/// Keep the guard in a named binding for the whole test: `let _ = dead_port()` frees it at once.
#[must_use = "the port is only reserved while the guard lives"]
pub struct DeadPort {
    pub port: u16,
    _reservation: tokio::net::TcpSocket,
}

impl DeadPort {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

pub fn dead_port() -> DeadPort {
    // Without SO_REUSEADDR (tokio's `TcpSocket` leaves it off), nobody can bind the port.
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("bind an ephemeral port");
    let port = socket.local_addr().expect("bound address").port();
    let refused = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.kind());
    assert_eq!(
        refused.err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a bound, non-listening port refuses connections"
    );
    // std's listener sets SO_REUSEADDR, as servers do; the reservation must hold against it.
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_err(),
        "a reserved port cannot be taken by a server"
    );
    DeadPort {
        port,
        _reservation: socket,
    }
}

/// A stand-alone echo upstream (`gatehouse echo`).
pub struct Echo {
    pub port: u16,
    pub name: String,
    child: Child,
}

impl Echo {
    pub fn start(name: &str) -> Echo {
        Self::start_on(name, free_port())
    }

    pub fn start_on(name: &str, port: u16) -> Echo {
        let mut child = Command::new(BIN)
            .args([
                "echo",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--name",
                name,
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn echo");
        wait_for_port(port, &mut child, "echo upstream", None);
        Echo {
            port,
            name: name.into(),
            child,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A gateway process running a config written into its own temporary directory.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub https_port: u16,
    pub admin_port: u16,
    child: Child,
}

/// Ports a config template can name: `{HTTP}`, `{HTTPS}`, `{ADMIN}`, `{DIR}`.
pub struct Ports {
    pub http: u16,
    pub https: u16,
    pub admin: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            http: free_port(),
            https: free_port(),
            admin: free_port(),
        }
    }
}

/// The process settings every test config shares: fast shutdown, its own upgrade socket.
pub fn server_section(dir: &Path) -> String {
    format!(
        "server:\n  threads: 2\n  grace_period: 0s\n  shutdown_timeout: 2s\n  upgrade_sock: {d}/upgrade.sock\n  pid_file: {d}/gatehouse.pid\n",
        d = dir.display()
    )
}

impl Gateway {
    /// Writes `files` (name, contents) into a new directory and starts the gateway on
    /// `gatehouse.yaml`. Placeholders `{HTTP}`, `{HTTPS}`, `{ADMIN}`, `{DIR}` and `{SERVER}` (the
    /// shared server section) are filled in.
    pub fn start(files: &[(&str, &str)]) -> Gateway {
        Self::start_prepared(tempfile::tempdir().expect("temp dir"), files)
    }

    /// As [`Gateway::start`], in a directory the test has already put files in (certificates).
    pub fn start_prepared(dir: tempfile::TempDir, files: &[(&str, &str)]) -> Gateway {
        let ports = Ports::new();
        for (name, contents) in files {
            write(dir.path(), name, &fill(contents, &ports, dir.path()));
        }
        Self::start_in(dir, ports)
    }

    pub fn start_in(dir: tempfile::TempDir, ports: Ports) -> Gateway {
        Self::start_logging(dir, ports, "info")
    }

    /// As [`Gateway::start_in`], with `RUST_LOG` set to `log`.
    pub fn start_logging(dir: tempfile::TempDir, ports: Ports, log: &str) -> Gateway {
        Self::launch(dir, ports, log, &[])
    }

    /// As [`Gateway::start`], with `RUST_LOG` set to `log` and these environment variables.
    pub fn start_with_env(files: &[(&str, &str)], log: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = Ports::new();
        for (name, contents) in files {
            write(dir.path(), name, &fill(contents, &ports, dir.path()));
        }
        Self::launch(dir, ports, log, env)
    }

    fn launch(dir: tempfile::TempDir, ports: Ports, log: &str, env: &[(&str, &str)]) -> Gateway {
        let stdout = std::fs::File::create(dir.path().join("access.log")).expect("log file");
        let err_path = dir.path().join("gateway.err");
        let stderr = std::fs::File::create(&err_path).expect("log file");
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(dir.path().join("gatehouse.yaml"))
            .env("RUST_LOG", log)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn gateway");
        wait_for_port(ports.admin, &mut child, "gateway admin", Some(&err_path));
        wait_for_port(
            ports.http,
            &mut child,
            "gateway http listener",
            Some(&err_path),
        );
        // Listeners open one by one: a test must not race the TLS listener it configured.
        let config = std::fs::read_to_string(dir.path().join("gatehouse.yaml")).unwrap_or_default();
        if config.contains(&format!(":{}", ports.https)) {
            wait_for_port(
                ports.https,
                &mut child,
                "gateway https listener",
                Some(&err_path),
            );
        }
        Gateway {
            dir,
            http_port: ports.http,
            https_port: ports.https,
            admin_port: ports.admin,
            child,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http_port, path)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Replaces a config file; placeholders are filled as in [`Gateway::start`].
    pub fn write(&self, name: &str, contents: &str) {
        let ports = Ports {
            http: self.http_port,
            https: self.https_port,
            admin: self.admin_port,
        };
        write(
            self.dir.path(),
            name,
            &fill(contents, &ports, self.dir.path()),
        );
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits for the process to exit; returns whether it did within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    pub fn stderr(&self) -> String {
        read_to_string(&self.path("gateway.err"))
    }

    pub fn access_log(&self) -> String {
        read_to_string(&self.path("access.log"))
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin("/metrics"))
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of one sample line of `/metrics`, `name{labels}` exactly as printed; 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    pub async fn config_version(&self) -> u64 {
        let v: serde_json::Value = reqwest::get(self.admin("/config"))
            .await
            .expect("config request")
            .json()
            .await
            .expect("config json");
        v["version"].as_u64().expect("version")
    }
}

impl Gateway {
    /// Kills the process now (a test that needs a dependency gone while others keep running).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- gateway stderr ----\n{}", self.stderr());
        }
    }
}

fn fill(contents: &str, ports: &Ports, dir: &Path) -> String {
    contents
        .replace("{SERVER}", &server_section(dir))
        .replace("{HTTP}", &ports.http.to_string())
        .replace("{HTTPS}", &ports.https.to_string())
        .replace("{ADMIN}", &ports.admin.to_string())
        .replace("{DIR}", &dir.display().to_string())
}

/// Writes atomically (temp file + rename), as editors and config managers do, so the gateway
/// never reads a half-written file.
pub fn write(dir: &Path, name: &str, contents: &str) {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).expect("write config");
    std::fs::rename(&tmp, &path).expect("rename config");
}

/// Runs `gatehouse validate --config <dir>/gatehouse.yaml`: its exit code and standard output
/// (where the configuration's errors are listed).
pub fn validate(dir: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN)
        .args(["validate", "--config"])
        .arg(dir.join("gatehouse.yaml"))
        .output()
        .expect("run gatehouse validate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn read_to_string(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// A client that never reuses connections across tests and never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A self-signed CA and leaf certificates it signs, written as PEM files.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub cert_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("ca cert");
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Writes `<stem>.crt` and `<stem>.key` for `names` into `dir`.
    pub fn issue(&self, dir: &Path, stem: &str, names: &[&str]) {
        self.issue_with(
            rcgen::KeyPair::generate().expect("leaf key"),
            dir,
            stem,
            names,
        );
    }

    /// Like `issue`, with an RSA-2048 key.
    pub fn issue_rsa(&self, dir: &Path, stem: &str, names: &[&str]) {
        use aws_lc_rs::encoding::AsDer;
        let rsa =
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa key");
        let pkcs8 = rsa.as_der().expect("rsa pkcs8");
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &pkcs8.as_ref().to_vec().into(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .expect("rsa key for rcgen");
        self.issue_with(key, dir, stem, names);
    }

    fn issue_with(&self, key: rcgen::KeyPair, dir: &Path, stem: &str, names: &[&str]) {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        std::fs::write(dir.join(format!("{stem}.crt")), cert.pem()).expect("write cert");
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).expect("write key");
    }

    pub fn reqwest_root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).expect("ca pem")
    }
}

/// Checks one of the gateway's own answers (status, JSON, `error` code) and returns its body.
pub async fn error_body(resp: reqwest::Response, status: u16, error: &str) -> serde_json::Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.expect("a JSON error body");
    assert_eq!(body["error"], error);
    body
}
