//! A real PostgreSQL server for tests: `initdb` into a temporary directory, `postgres` on a free
//! loopback port with durability off, readiness polled with a real query over TCP. The server is
//! shut down (fast, then immediate, then SIGKILL) and the directory removed when the handle drops;
//! when a test panics, the server's log is printed. `scripts/setup.sh` installs PostgreSQL.
//!
//! One server per test (`Postgres::start`), not one per test binary. A start measured about 0.65 s
//! on a quiet 2-core machine (initdb 0.6 s, server ready 0.07 s), 1.2 s with two builds running
//! beside it; copying a template cluster instead of initdb was no faster here (`cp -a` of its
//! 39 MB: 0.45 s). A shared server would outlive the test binary (statics are never dropped), and
//! a test that stops its server must not stop anybody else's. `create_database` gives a test
//! several databases on its one server.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI), the temporary directory is
//! handed to `nobody` and `initdb` and `postgres` run through `setpriv` (util-linux, on every
//! Debian) as `nobody`: nothing needs a home, a shell or a login session, so the existing account
//! serves, and no test has to add a user to the machine. The clients (`psql`) stay root.

use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, READY_TIMEOUT};

/// The superuser `initdb` creates; every database belongs to it and trust auth needs no password.
const USER: &str = "gatehouse";
/// The account the server runs as when the tests run as root.
const UNPRIVILEGED: &str = "nobody";
/// How often a free port can turn out to be taken by the time the server binds it.
const PORT_ATTEMPTS: usize = 3;

pub struct Postgres {
    port: u16,
    bin: PathBuf,
    psql: PathBuf,
    /// `(uid, gid)` the server runs as; `None` when the tests are not root.
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
    /// Dropped last: holds `data/`, `run/` (the Unix socket) and `postgres.log`.
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Creates a cluster in a new temporary directory and starts a server on a free port.
    pub fn start() -> Postgres {
        let (bin, psql) = binaries();
        // SAFETY: geteuid has no preconditions.
        let run_as = (unsafe { libc::geteuid() } == 0).then(unprivileged_ids);
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-pg-")
            .tempdir_in(temp_base(run_as.is_some()))
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("run")).expect("socket dir");
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), &dir.path().join("run")] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to nobody");
            }
        }
        let mut pg = Postgres {
            port: 0,
            bin,
            psql,
            run_as,
            child: None,
            dir,
        };
        pg.initdb();
        for attempt in 1..=PORT_ATTEMPTS {
            pg.port = free_port();
            match pg.run() {
                Ok(()) => return pg,
                Err(taken) if attempt < PORT_ATTEMPTS => {
                    eprintln!("postgres: {taken}; another port")
                }
                Err(taken) => panic!("postgres: {taken}, {PORT_ATTEMPTS} times (log below)"),
            }
        }
        unreachable!()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The temporary directory (cluster, socket, log); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `postgres` database (always there).
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// Creates an empty database `name` (lower-case letters, digits, `_`) and returns its URL.
    /// Safe from parallel threads: the harness never connects to `template1`, which
    /// `CREATE DATABASE` copies (and refuses to while someone is connected to it).
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name.len() < 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database name {name:?}: lower-case letters, digits and _ only"
        );
        self.psql(&self.url(), &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        self.database_url(name)
    }

    /// Runs `sql` with `psql` against `url` (unaligned, tuples only: one line per row, `|` between
    /// columns) and returns its output, or its error text when psql fails.
    pub fn psql(&self, url: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(&self.psql);
        // Our URL, not the caller's PG* environment (PGSSLMODE, PGOPTIONS, ...), decides.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        let out = cmd
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {}: {e}", self.psql.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
        }
    }

    /// Fast shutdown (SIGINT: clients are disconnected, a checkpoint is written). Data stays.
    pub fn stop(&mut self) {
        assert!(self.child.is_some(), "postgres is not running");
        self.shut_down();
    }

    /// Starts the stopped server again: same port, same data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "postgres is already running");
        if let Err(taken) = self.run() {
            panic!("postgres cannot start again: {taken} (log below)");
        }
    }

    /// The server's log. Printed when a test panics while the handle lives, so the harness's
    /// own panics do not repeat it.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn database_url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for a server program, its output appended to `log` in the temporary directory:
    /// as `nobody` through `setpriv` when we are root. The working directory is ours too:
    /// PostgreSQL's programs read it at start and fail if they cannot.
    fn server_command(&self, program: &str, log: &Path) -> Command {
        let program = self.bin.join(program);
        let mut cmd = match self.run_as {
            None => Command::new(program),
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program);
                cmd
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file);
        cmd
    }

    fn initdb(&self) {
        let log = self.dir.path().join("initdb.log");
        let status = self
            .server_command("initdb", &log)
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-A",
                "trust",
                "-U",
                USER,
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .status()
            .unwrap_or_else(|e| panic!("run initdb (setpriv as root): {e}"));
        assert!(
            status.success(),
            "initdb failed ({status}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Starts the server on `self.port` and waits until it answers a query over TCP. `Err` when
    /// the port turned out to be taken; any other failure panics.
    fn run(&mut self) -> Result<(), String> {
        let log_start = self.log().len();
        let child = self
            .server_command("postgres", &self.log_path())
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path().join("run"))
            .args(["-c", "listen_addresses=127.0.0.1"])
            // Test data: nothing has to survive a machine crash.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .spawn()
            .unwrap_or_else(|e| panic!("spawn postgres: {e}"));
        self.child = Some(child);
        // Ready = our server answers over TCP. It is asked which data directory it serves, since
        // until ours has failed to bind, the port may belong to someone else's server.
        let probe = format!("{}?connect_timeout=5", self.url());
        let ours = self.data_dir();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                self.child = None;
                let log = self.log();
                if log
                    .get(log_start..)
                    .is_some_and(|new| new.contains("Address already in use"))
                {
                    return Err(format!("port {} is taken", self.port));
                }
                panic!("postgres exited with {status} (log below)");
            }
            if self
                .psql(&probe, "SHOW data_directory")
                .is_ok_and(|d| Path::new(&d) == ours)
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "postgres not ready after {READY_TIMEOUT:?} (log below)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Fast shutdown; if the server hangs, immediate shutdown (the postmaster SIGQUITs and then
    /// SIGKILLs its children), then SIGKILL. Backends are their own process groups, so stopping
    /// them is left to the postmaster rather than done by a group kill.
    fn shut_down(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        for signal in [libc::SIGINT, libc::SIGQUIT] {
            // SAFETY: signalling our own child, not yet reaped, so the pid is still its.
            unsafe { libc::kill(child.id() as i32, signal) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            if !log.is_empty() {
                eprintln!(
                    "--- postgres log ({}) ---\n{log}",
                    self.log_path().display()
                );
            }
        }
        self.shut_down();
    }
}

/// The directory holding `initdb` and `postgres` (of the same installation), and `psql`.
/// Debian keeps them in /usr/lib/postgresql/<version>/bin, off PATH; the newest version wins.
fn binaries() -> (PathBuf, PathBuf) {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: Result<Vec<u32>, _> =
                e.file_name().to_str()?.split('.').map(str::parse).collect();
            Some((version.ok()?, e.path().join("bin")))
        })
        .collect();
    debian.sort();
    let candidates = on_path
        .iter()
        .cloned()
        .chain(debian.into_iter().rev().map(|(_, bin)| bin))
        .chain([PathBuf::from("/usr/local/bin")]);
    let initdb = candidates
        .map(|dir| dir.join("initdb"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed (no initdb on PATH or in \
                 /usr/lib/postgresql/*/bin): run scripts/setup.sh"
            )
        });
    // A symlink on PATH (/usr/local/bin/initdb) leads to the installation's own directory.
    let initdb = initdb.canonicalize().unwrap_or(initdb);
    let bin = initdb.parent().expect("initdb's directory").to_path_buf();
    assert!(
        bin.join("postgres").is_file(),
        "no postgres beside {}: run scripts/setup.sh",
        initdb.display()
    );
    let psql = std::iter::once(bin.clone())
        .chain(on_path)
        .map(|dir| dir.join("psql"))
        .find(|p| p.is_file())
        .expect("psql is not installed: run scripts/setup.sh");
    (bin, psql)
}

/// `nobody`'s uid and gid, from /etc/passwd.
fn unprivileged_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let ids = passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == UNPRIVILEGED).then_some(())?;
        let _password = fields.next();
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    });
    ids.unwrap_or_else(|| {
        panic!("tests run as root but there is no user {UNPRIVILEGED:?} to run PostgreSQL as")
    })
}

/// Where the temporary directory goes. `nobody` must be able to reach it: TMPDIR unless one of
/// its ancestors is closed to others (e.g. under /root), then /tmp.
fn temp_base(for_nobody: bool) -> PathBuf {
    let base = std::env::temp_dir();
    let open = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    let reachable = base.canonicalize().is_ok_and(|b| b.ancestors().all(open));
    if for_nobody && !reachable {
        PathBuf::from("/tmp")
    } else {
        base
    }
}
