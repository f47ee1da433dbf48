//! A real `redis-server` on a free loopback port, in a temporary directory, with persistence
//! off; killed when dropped. `scripts/setup.sh` installs it. Readiness is polled (`PING`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, READY_TIMEOUT};

pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("redis-server"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        let debian = PathBuf::from("/usr/bin/redis-server");
        assert!(
            debian.is_file(),
            "redis-server is not installed: run scripts/setup.sh"
        );
        debian
    })
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        redis.run();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, with empty memory, as after a crash.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.pong() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited early with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server at once (SIGKILL): connections break, state is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server answers `PING` with `+PONG`.
    pub fn pong(&self) -> bool {
        self.command("PING\r\n")
            .is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Sends one inline command and returns the raw reply (one read).
    pub fn command(&self, line: &str) -> Option<String> {
        let addr = ([127, 0, 0, 1], self.port).into();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(line.as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
