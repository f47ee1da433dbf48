//! One line at a time to standard output or a file, written by a dedicated thread behind a
//! bounded queue. A caller never waits: when the writer falls behind (a slow disk, a blocked
//! stdout), the line is dropped and counted, so a request or an async worker never stalls on a
//! log. Access logs, the audit log and the decision log all go through it.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use prometheus::IntCounter;

/// Where the lines go.
pub enum Sink {
    Stdout,
    /// A file, created 0600 with its directory (logs name users and clients), that rotates by
    /// size: `log` → `log.1` → … → `log.{keep}`.
    Rotating {
        path: PathBuf,
        max_bytes: u64,
        keep: usize,
    },
}

impl Sink {
    /// A log destination as the services' files write it: `-` is standard output, anything
    /// else a file rotating by size.
    pub fn log(destination: &str, max_bytes: u64, keep: usize) -> Self {
        match destination {
            "-" => Sink::Stdout,
            path => Sink::Rotating {
                path: PathBuf::from(path),
                max_bytes,
                keep,
            },
        }
    }
}

#[derive(Clone)]
pub struct LineWriter {
    tx: SyncSender<String>,
    dropped: IntCounter,
}

impl LineWriter {
    /// Opens the sink (errors here, not on the first line) and starts the writer thread.
    pub fn start(
        name: &str,
        sink: Sink,
        queue: usize,
        dropped: IntCounter,
    ) -> std::io::Result<Self> {
        let mut out = Output::open(sink)?;
        let (tx, rx) = sync_channel(queue.max(1));
        let thread_name = name.to_string();
        std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || write_lines(&rx, &mut out, &thread_name))?;
        Ok(Self { tx, dropped })
    }

    /// Queues one line (without its newline). Never blocks.
    pub fn write(&self, line: String) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped.inc(),
            Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
                tracing::error!("a log writer thread is gone");
            }
        }
    }
}

fn write_lines(rx: &Receiver<String>, out: &mut Output, name: &str) {
    while let Ok(line) = rx.recv() {
        let mut result = out.write_line(&line);
        // Batch whatever queued up meanwhile, then flush once.
        while let Ok(line) = rx.try_recv() {
            result = result.and(out.write_line(&line));
        }
        if let Err(e) = result.and(out.flush()) {
            tracing::error!(error = %e, writer = name, "log write failed");
        }
    }
}

enum Output {
    Stdout(BufWriter<std::io::Stdout>),
    Rotating(RotatingFile),
}

impl Output {
    fn open(sink: Sink) -> std::io::Result<Self> {
        Ok(match sink {
            Sink::Stdout => Output::Stdout(BufWriter::with_capacity(64 * 1024, std::io::stdout())),
            Sink::Rotating {
                path,
                max_bytes,
                keep,
            } => {
                let file = open_append(&path)?;
                let written = file.metadata()?.len();
                Output::Rotating(RotatingFile {
                    out: BufWriter::new(file),
                    path,
                    written,
                    max_bytes,
                    keep,
                })
            }
        })
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Output::Stdout(out) => writeln!(out, "{line}"),
            Output::Rotating(f) => f.write_line(line),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Stdout(out) => out.flush(),
            Output::Rotating(f) => f.out.flush(),
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

struct RotatingFile {
    out: BufWriter<File>,
    path: PathBuf,
    written: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let size = line.len() as u64 + 1;
        if self.written > 0 && self.written + size > self.max_bytes {
            self.rotate()?;
        }
        writeln!(self.out, "{line}")?;
        self.written += size;
        Ok(())
    }

    /// `log.{n-1}` → `log.{n}`, …, `log` → `log.1`; beyond `keep` files the oldest is deleted.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.out = BufWriter::new(open_append(&self.path)?);
        self.written = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> IntCounter {
        IntCounter::new("t_dropped", "t").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rotation_keeps_the_configured_number_of_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("decisions.log");
        let mut f = RotatingFile {
            out: BufWriter::new(open_append(&path).unwrap_or_else(|e| panic!("{e}"))),
            path: path.clone(),
            written: 0,
            max_bytes: 100,
            keep: 2,
        };
        for i in 0..20 {
            f.write_line(&format!("{i:040}"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        f.out.flush().unwrap_or_else(|e| panic!("{e}"));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        // 41 bytes a line, 100 per file: two lines each; the last line written is in the live file.
        assert!(read(&path).contains(&format!("{:040}", 19)));
        assert_eq!(read(&path).lines().count(), 2);
        assert!(read(&numbered(1)).contains(&format!("{:040}", 17)));
        assert!(read(&numbered(2)).contains(&format!("{:040}", 15)));
        assert!(!numbered(3).exists());
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let dropped = counter();
        let writer = LineWriter::start(
            "t",
            Sink::log(path.to_str().unwrap_or_default(), u64::MAX, 1),
            2,
            dropped.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // With a queue of 2 a tight loop outruns the writer thread; the loop must still finish
        // at once (a blocking send would wait on the disk for every line).
        let started = std::time::Instant::now();
        for i in 0..10_000 {
            writer.write(format!("line {i}"));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let written = |_: ()| {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .count() as u64
        };
        // Every line is either written or counted as dropped.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while written(()) + dropped.get() < 10_000 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(written(()) + dropped.get(), 10_000);
    }

    #[test]
    fn log_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub/audit.log");
        let _w = LineWriter::start(
            "t",
            Sink::log(path.to_str().unwrap_or_default(), u64::MAX, 1),
            4,
            counter(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
