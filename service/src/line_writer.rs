//! One line at a time to standard output or a file, written by a dedicated thread behind a
//! bounded queue. A caller never waits: when the writer falls behind (a slow disk, a blocked
//! stdout), the line is dropped and counted, so a request or an async worker never stalls on a
//! log. Access logs, the audit log and the decision log all go through it.
//!
//! **Wake-ups are batched.** Waking a sleeping thread is a system call (a futex wake, then a
//! context switch on the other core); done for every line it cost the caller more than building
//! the line. Here a caller copies its line into one shared buffer under a mutex and wakes the
//! writer only when the writer is parked (nothing was queued for [`PARK_AFTER`]) or the queue is
//! half full. Otherwise the writer wakes by itself every [`TICK`], swaps the shared buffer for
//! its empty one and writes everything queued with one `write` per file. Under load that is one
//! wake-up per tick instead of one per line; an idle log costs nothing.
//!
//! **Serialising into a reused buffer.** [`LineWriter::write_with`] hands the caller this
//! thread's scratch buffer to serialise into (`serde_json::to_writer`, `write!`), so a line costs
//! no allocation of its own: the bytes are copied once into the queue, and the queue's buffers
//! are reused from batch to batch.
//!
//! What it guarantees:
//! - the caller never waits on the disk, only for a short critical section (copying its line);
//! - bounded: at most `queue` lines wait; a line beyond that is dropped and counted;
//! - lines are written in the order they were queued (one caller's lines in its own order);
//! - promptly: a line is written at most [`TICK`] after it was queued, plus the time to write
//!   the batch it is in (a parked writer is woken at once);
//! - a file is created 0600 and rotates by size between whole lines;
//! - on shutdown, dropping the last handle writes what is queued and waits for it to be written
//!   (up to [`SHUTDOWN_WAIT`], for a stalled disk). A process that exits without dropping its
//!   handles loses at most the last [`TICK`] of lines: services give in-flight requests a grace
//!   period of a second or more before they exit.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use prometheus::IntCounter;

/// How long a busy writer sleeps between batches: the bound on how late a queued line is written.
/// 10 ms, not 1: with the gateway's JSON access log on, 1000 wake-ups a second on the other core
/// cost 4.6 µs of CPU per request at 30k req/s (36 against 31 µs, interleaved), far more than
/// the wake-ups themselves. nginx's buffered access log waits seconds.
pub const TICK: Duration = Duration::from_millis(10);

/// After this long without a line the writer parks until the next line wakes it.
pub const PARK_AFTER: Duration = Duration::from_millis(10);

/// How long dropping the last handle waits for the queued lines to be written.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Queue buffers keep this capacity once written, or twice what their batch used if more, so a
/// steady rate does not grow them again from the same size at every batch; a burst's capacity is
/// given back after the next, smaller batch.
const RETAINED_QUEUE_BYTES: usize = 256 * 1024;

/// A thread's scratch buffer above this capacity (after an unusually long line) is given back.
const RETAINED_SCRATCH_BYTES: usize = 64 * 1024;

thread_local! {
    /// Where [`LineWriter::write_with`] serialises on this thread, reused from line to line.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

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

/// A handle on one writer thread and its queue; clones share them. Dropping the last one
/// writes what is queued and stops the thread.
#[derive(Clone)]
pub struct LineWriter {
    handle: Arc<Handle>,
}

struct Handle {
    queue: Arc<Queue>,
    writer: Thread,
    dropped: IntCounter,
}

struct Queue {
    pending: Mutex<Pending>,
    /// Signalled when the writer thread has written its last batch and stopped.
    stopped: Condvar,
    /// Lines that may wait.
    capacity: usize,
}

struct Pending {
    lines: Lines,
    writer: WriterState,
    /// The last handle is gone: write what is left and stop.
    closed: bool,
    stopped: bool,
}

/// What the writer thread is doing, so that a caller knows whether it must wake it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WriterState {
    /// Taking or writing a batch: it looks at the queue again before it sleeps.
    Busy,
    /// Asleep for at most one [`TICK`].
    Ticking,
    /// Asleep until woken: the next line wakes it.
    Parked,
}

/// Queued lines: their bytes, each line followed by `\n`, and where each line ends.
#[derive(Default)]
struct Lines {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Lines {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn push(&mut self, line: &[u8]) {
        self.bytes.extend_from_slice(line);
        self.bytes.push(b'\n');
        self.ends.push(self.bytes.len());
    }

    fn clear(&mut self) {
        let keep_bytes = RETAINED_QUEUE_BYTES.max(2 * self.bytes.len());
        let keep_lines = (RETAINED_QUEUE_BYTES / 64).max(2 * self.ends.len());
        self.bytes.clear();
        self.ends.clear();
        self.bytes.shrink_to(keep_bytes);
        self.ends.shrink_to(keep_lines);
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves the lines consistent (pushes and swaps are
        // whole): carry on with them.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Half full: the writer is woken without waiting for its tick, so a burst does not
    /// overflow the queue in between.
    fn urgent(&self, pending: &Pending) -> bool {
        pending.lines.len() >= self.capacity.div_ceil(2)
    }
}

impl LineWriter {
    /// Opens the sink (errors here, not on the first line) and starts the writer thread.
    /// `queue` is how many lines may wait for it.
    pub fn start(
        name: &str,
        sink: Sink,
        queue: usize,
        dropped: IntCounter,
    ) -> std::io::Result<Self> {
        let out = Output::open(sink)?;
        let queue = Arc::new(Queue {
            pending: Mutex::new(Pending {
                lines: Lines::default(),
                writer: WriterState::Busy,
                closed: false,
                stopped: false,
            }),
            stopped: Condvar::new(),
            capacity: queue.max(1),
        });
        let thread_queue = Arc::clone(&queue);
        let thread_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                let _stopped = Stopped(&thread_queue);
                write_lines(&thread_queue, out, &thread_name);
            })?;
        Ok(Self {
            handle: Arc::new(Handle {
                queue,
                writer: thread.thread().clone(),
                dropped,
            }),
        })
    }

    /// Queues one line (without its newline). Never blocks on the writer.
    pub fn write(&self, line: &str) {
        self.push(line.as_bytes());
    }

    /// Queues the line `serialise` writes (without its newline) into this thread's reused
    /// buffer. When it fails, nothing is queued and its error is returned.
    pub fn write_with<F>(&self, serialise: F) -> std::io::Result<()>
    where
        F: FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    {
        let mut serialise = Some(serialise);
        let scratch = SCRATCH.try_with(|scratch| {
            // Busy only if `serialise` itself writes a line: that one gets a buffer of its own.
            let Ok(mut buf) = scratch.try_borrow_mut() else {
                return None;
            };
            buf.clear();
            let result = serialise.take().map_or(Ok(()), |f| f(&mut buf));
            if result.is_ok() {
                self.push(&buf);
            }
            if buf.capacity() > RETAINED_SCRATCH_BYTES {
                *buf = Vec::new();
            }
            Some(result)
        });
        match (scratch, serialise) {
            (Ok(Some(result)), _) => result,
            // Thread-local storage being torn down, or the buffer in use: a fresh buffer.
            (_, Some(serialise)) => {
                let mut buf = Vec::new();
                serialise(&mut buf)?;
                self.push(&buf);
                Ok(())
            }
            (_, None) => Ok(()),
        }
    }

    fn push(&self, line: &[u8]) {
        let queue = &self.handle.queue;
        let mut pending = queue.lock();
        if pending.lines.len() >= queue.capacity || pending.closed {
            drop(pending);
            self.handle.dropped.inc();
            return;
        }
        pending.lines.push(line);
        let wake = match pending.writer {
            WriterState::Parked => true,
            WriterState::Ticking => queue.urgent(&pending),
            WriterState::Busy => false,
        };
        if wake {
            pending.writer = WriterState::Busy;
        }
        drop(pending);
        if wake {
            self.handle.writer.unpark();
        }
    }
}

impl Drop for Handle {
    /// The last handle: the writer writes what is queued and stops; wait for it, up to
    /// [`SHUTDOWN_WAIT`].
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.writer.unpark();
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let mut pending = self.queue.lock();
        while !pending.stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    lines = pending.lines.len(),
                    "a log writer did not finish writing in time; its last lines may be lost"
                );
                return;
            }
            pending = self
                .queue
                .stopped
                .wait_timeout(pending, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Marks the writer stopped when its thread ends, however it ends.
struct Stopped<'a>(&'a Queue);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
        self.0.stopped.notify_all();
    }
}

/// The writer thread: take everything queued, write it, sleep a tick (or park when idle).
fn write_lines(queue: &Queue, mut out: Output, name: &str) {
    let mut batch = Lines::default();
    let mut idle_since: Option<Instant> = None;
    loop {
        let closed = {
            let mut pending = queue.lock();
            pending.writer = WriterState::Busy;
            std::mem::swap(&mut pending.lines, &mut batch);
            pending.closed
        };
        if batch.is_empty() {
            if closed {
                break;
            }
            idle_since.get_or_insert_with(Instant::now);
        } else {
            if let Err(e) = out.write_batch(&batch) {
                tracing::error!(error = %e, writer = name, "log write failed");
            }
            batch.clear();
            idle_since = None;
        }
        let mut pending = queue.lock();
        if pending.closed || queue.urgent(&pending) {
            continue;
        }
        let idle = idle_since.is_some_and(|t| t.elapsed() >= PARK_AFTER);
        if idle && pending.lines.is_empty() {
            pending.writer = WriterState::Parked;
            drop(pending);
            std::thread::park();
        } else {
            pending.writer = WriterState::Ticking;
            drop(pending);
            std::thread::park_timeout(TICK);
        }
    }
}

enum Output {
    Stdout,
    Rotating(RotatingFile),
}

impl Output {
    fn open(sink: Sink) -> std::io::Result<Self> {
        Ok(match sink {
            Sink::Stdout => Output::Stdout,
            Sink::Rotating {
                path,
                max_bytes,
                keep,
            } => {
                let file = open_append(&path)?;
                let written = file.metadata()?.len();
                Output::Rotating(RotatingFile {
                    file,
                    path,
                    written,
                    max_bytes,
                    keep,
                })
            }
        })
    }

    /// One batch: a single `write` per file (the batch is the buffer).
    fn write_batch(&mut self, lines: &Lines) -> std::io::Result<()> {
        match self {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&lines.bytes)?;
                out.flush()
            }
            Output::Rotating(f) => f.write_batch(lines),
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
    file: File,
    path: PathBuf,
    written: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    /// Writes the batch, rotating before a line that would take the file past `max_bytes`
    /// (a line longer than that gets a file of its own).
    fn write_batch(&mut self, lines: &Lines) -> std::io::Result<()> {
        // `run` is where the bytes not yet written start, `start` where the next line starts.
        let (mut run, mut start) = (0, 0);
        for &end in &lines.ends {
            let size = (end - start) as u64;
            if self.written > 0 && self.written + size > self.max_bytes {
                self.file.write_all(&lines.bytes[run..start])?;
                self.rotate()?;
                run = start;
            }
            self.written += size;
            start = end;
        }
        self.file.write_all(&lines.bytes[run..start])
    }

    /// `log.{n-1}` → `log.{n}`, …, `log` → `log.1`; beyond `keep` files the oldest is deleted.
    fn rotate(&mut self) -> std::io::Result<()> {
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
        self.file = open_append(&self.path)?;
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

    fn file_writer(path: &Path, queue: usize, dropped: &IntCounter) -> LineWriter {
        LineWriter::start(
            "t",
            Sink::log(path.to_str().unwrap_or_default(), u64::MAX, 1),
            queue,
            dropped.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotation_keeps_the_configured_number_of_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("decisions.log");
        let mut f = RotatingFile {
            file: open_append(&path).unwrap_or_else(|e| panic!("{e}")),
            path: path.clone(),
            written: 0,
            max_bytes: 100,
            keep: 2,
        };
        // In batches of 1, 2, 3, … lines: rotation falls inside batches and between them.
        let mut i = 0;
        for size in 1.. {
            let mut batch = Lines::default();
            for _ in 0..size {
                if i < 20 {
                    batch.push(format!("{i:040}").as_bytes());
                    i += 1;
                }
            }
            if batch.is_empty() {
                break;
            }
            f.write_batch(&batch).unwrap_or_else(|e| panic!("{e}"));
        }
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        // 41 bytes a line, 100 per file: two lines each; the last line written is in the live file.
        assert_eq!(read(&path), format!("{:040}\n{:040}\n", 18, 19));
        assert_eq!(read(&numbered(1)), format!("{:040}\n{:040}\n", 16, 17));
        assert_eq!(read(&numbered(2)), format!("{:040}\n{:040}\n", 14, 15));
        assert!(!numbered(3).exists());
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let dropped = counter();
        let writer = file_writer(&path, 2, &dropped);
        // With a queue of 2 a tight loop outruns the writer thread; the loop must still finish
        // at once (a blocking send would wait on the disk for every line).
        let started = Instant::now();
        for i in 0..10_000 {
            writer.write(&format!("line {i}"));
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(dropped.get() > 0, "a queue of 2 held 10 000 lines");
        // Every line is either written or counted as dropped.
        drop(writer);
        assert_eq!(read(&path).lines().count() as u64 + dropped.get(), 10_000);
    }

    #[test]
    fn a_burst_within_the_bound_is_written_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let dropped = counter();
        // Four callers queue 2 000 lines each at once, the writer asleep or not: 8 000 lines
        // never exceed the queue, so none may be lost.
        let writer = file_writer(&path, 8_000, &dropped);
        std::thread::scope(|s| {
            for t in 0..4 {
                let writer = writer.clone();
                s.spawn(move || {
                    for i in 0..2_000 {
                        writer.write(&format!("{t} {i:04}"));
                    }
                });
            }
        });
        // Dropping the last handle writes what is queued before it returns.
        drop(writer);
        assert_eq!(dropped.get(), 0);
        let text = read(&path);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8_000);
        for t in 0..4 {
            let own: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("{t} ")))
                .collect();
            let expected: Vec<String> = (0..2_000).map(|i| format!("{t} {i:04}")).collect();
            assert_eq!(own, expected, "caller {t}'s lines out of order or lost");
        }
    }

    /// How long `line` takes to appear in the file once queued.
    fn time_to_disk(writer: &LineWriter, path: &Path, line: &str) -> Duration {
        let queued = Instant::now();
        writer.write(line);
        while !read(path).contains(line) {
            assert!(
                queued.elapsed() < Duration::from_secs(5),
                "{line:?} not written after 5 s"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        queued.elapsed()
    }

    #[test]
    fn a_line_is_written_promptly_whether_the_writer_is_busy_or_idle() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let writer = file_writer(&path, 1024, &counter());
        let mut busy = Vec::new();
        let mut idle = Vec::new();
        for i in 0..10 {
            // Right after another line: the writer is ticking, nobody wakes it.
            busy.push(time_to_disk(&writer, &path, &format!("busy {i}")));
            // After the caller went quiet for longer than PARK_AFTER: the writer is parked and
            // the line wakes it.
            std::thread::sleep(PARK_AFTER * 3);
            idle.push(time_to_disk(&writer, &path, &format!("idle {i}")));
        }
        busy.sort();
        idle.sort();
        eprintln!("time to disk: busy {busy:?}; idle {idle:?}");
        // The design bound is TICK plus the write; medians leave room for a loaded test machine.
        assert!(busy[5] < Duration::from_millis(50), "busy: {busy:?}");
        assert!(idle[5] < Duration::from_millis(50), "idle: {idle:?}");
    }

    #[test]
    fn write_with_queues_what_was_serialised_and_nothing_on_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let dropped = counter();
        let writer = file_writer(&path, 16, &dropped);
        writer
            .write_with(|buf| {
                serde_json::to_writer(buf, &serde_json::json!({"a": 1})).map_err(Into::into)
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let failed = writer.write_with(|buf| {
            buf.extend_from_slice(b"half a line");
            Err(std::io::Error::other("no"))
        });
        assert!(failed.is_err());
        // The buffer is reused: the next line does not start with what the failed one left.
        writer
            .write_with(|buf| write!(buf, "line {}", 2))
            .unwrap_or_else(|e| panic!("{e}"));
        drop(writer);
        assert_eq!(read(&path), "{\"a\":1}\nline 2\n");
        assert_eq!(dropped.get(), 0);
    }

    #[test]
    fn log_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub/audit.log");
        let _w = file_writer(&path, 4, &counter());
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
