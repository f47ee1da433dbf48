//! The PostgreSQL test harness itself: a real server starts, serves separate databases, keeps its
//! data across a stop and a start, never runs as root, and leaves nothing behind.

mod support;

use std::time::Instant;

use support::postgres::Postgres;

#[test]
fn databases_created_from_parallel_threads_are_separate() {
    let started = Instant::now();
    let pg = Postgres::start();
    eprintln!("postgres started in {:?}", started.elapsed());

    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| pg.create_database("first"));
        let second = s.spawn(|| pg.create_database("second"));
        (first.join().unwrap(), second.join().unwrap())
    });
    assert_ne!(first, second);
    for url in [&first, &second] {
        assert_eq!(pg.psql(url, "select 1").unwrap(), "1");
    }

    pg.psql(
        &first,
        "create table t (v text); insert into t values ('only in first')",
    )
    .unwrap();
    assert_eq!(pg.psql(&first, "select v from t").unwrap(), "only in first");
    let err = pg.psql(&second, "select v from t").unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn data_survives_a_stop_and_a_start_on_the_same_port() {
    let mut pg = Postgres::start();
    let url = pg.create_database("durable");
    pg.psql(
        &url,
        "create table t (n int); insert into t values (1), (2), (3)",
    )
    .unwrap();
    let port = pg.port();

    pg.stop();
    assert!(pg.pid().is_none());
    let err = pg.psql(&url, "select 1").unwrap_err();
    assert!(err.contains("Connection refused"), "{err}");

    pg.start_again();
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql(&url, "select sum(n) from t").unwrap(), "6");
}

#[test]
fn the_server_runs_unprivileged_and_leaves_nothing_behind() {
    let pg = Postgres::start();
    let pid = pg.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .unwrap();
    assert_ne!(uid, "0", "postgres must not run as root");
    assert_eq!(
        pg.psql(&pg.url(), "select current_user").unwrap(),
        "gatehouse"
    );

    let dir = pg.dir().to_path_buf();
    drop(pg);
    assert!(!dir.exists(), "{} still exists", dir.display());
    // Reaped, so the pid may be someone else's by now, but not our postmaster's.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let dir = dir.to_string_lossy();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&*dir),
        "postgres still runs"
    );
}
