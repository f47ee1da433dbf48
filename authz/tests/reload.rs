//! Reloads never go back in time. The file watcher, SIGHUP and `POST /reload` may each start a
//! reload while another is still reading the files; a slower attempt that read older files must
//! not store its set over the newer one another attempt stored meanwhile.
//!
//! Left to chance, the window is the few milliseconds a policy set takes to compile, too narrow
//! to catch on every run. The test makes it as wide as it likes instead: a policy file is a named
//! pipe, so the first reload stops in the middle of reading the directory until the test writes
//! into the pipe, and the test decides what happens meanwhile.

mod support;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use gatehouse_authz::{policy, Authorizer};
use gatehouse_service::Reloadable;
use support::{write, DERIVED_ROLES, DOCUMENTS, WORKING_HOURS};

/// `DOCUMENTS`, revised: viewers may read too.
fn documents_v2() -> String {
    DOCUMENTS
        .replace("\"2026-11-23\"", "\"2026-12-01\"")
        .replace("roles: [editor, admin]", "roles: [editor, admin, viewer]")
}

/// Runs `f` on a thread; its result arrives on the returned channel.
fn in_background<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success(), "mkfifo {}: {status}", path.display());
}

#[test]
fn a_slow_reload_never_stores_older_policies_over_newer_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policies = dir.path().to_path_buf();
    for (name, text) in [
        ("derived_roles.yaml", DERIVED_ROLES),
        ("documents.yaml", DOCUMENTS),
        ("working_hours.yaml", WORKING_HOURS),
    ] {
        write(&policies, name, text);
    }
    let authorizer = Arc::new(Authorizer::new(&policies, None).expect("policies load"));

    // working_hours.yaml becomes a pipe. Files are read in path order, so reload A reads
    // documents.yaml (v1), then waits on the pipe until the test writes into it.
    let fifo = policies.join(".working_hours.fifo");
    mkfifo(&fifo);
    std::fs::rename(&fifo, policies.join("working_hours.yaml")).expect("fifo in place");
    let a = {
        let authorizer = authorizer.clone();
        in_background(move || authorizer.reload().is_ok())
    };
    // Opening a pipe for writing waits for its reader: once open, A is inside the pipe.
    let pipe_path = policies.join("working_hours.yaml");
    let pipe = in_background(move || {
        OpenOptions::new()
            .write(true)
            .open(pipe_path)
            .expect("open the pipe")
    })
    .recv_timeout(Duration::from_secs(20))
    .expect("reload A never read working_hours.yaml");

    // Meanwhile working_hours.yaml is a plain file again (A keeps the pipe it opened) and
    // documents.yaml v2 is saved. Reload B reads the v2 set.
    write(&policies, "working_hours.yaml", WORKING_HOURS);
    write(&policies, "documents.yaml", &documents_v2());
    let b = {
        let authorizer = authorizer.clone();
        in_background(move || authorizer.reload().is_ok())
    };
    // Unserialised, B stores v2 at once. Serialised, B waits for A: give it a while, then go on.
    let b_done_first = b.recv_timeout(Duration::from_secs(2)).ok();

    // A now reads the rest of its (older) directory and finishes.
    let mut pipe = pipe;
    pipe.write_all(WORKING_HOURS.as_bytes())
        .expect("feed the pipe");
    drop(pipe);
    assert_eq!(
        a.recv_timeout(Duration::from_secs(20)),
        Ok(true),
        "reload A"
    );
    let b_ok = match b_done_first {
        Some(ok) => ok,
        None => b.recv_timeout(Duration::from_secs(20)).expect("reload B"),
    };
    assert!(b_ok, "reload B");

    let on_disk = policy::load(&policies).expect("the files on disk load");
    let running = authorizer.policies();
    assert_eq!(
        running.hash, on_disk.hash,
        "the running set (documents {}) is not what is on disk (documents {}): an older reload \
         stored its set after a newer one",
        running.policies[0].version, on_disk.policies[0].version
    );
}
